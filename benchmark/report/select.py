"""What the report and the comparison show, chosen from ``results.ModelRun`` values (pure: no HTML, no MLflow).

Which mixture stands for a model (``reference_mixture``, ``p_true_mixture``), its per-epoch curves, the
most-common-answer baseline per relation, P(True) against SliCK, the paper's Table 2 cells and the fitting speed
per category; ``build`` renders them, ``compare`` puts them side by side.
"""

from __future__ import annotations

import math

import polars as pl

from benchmark.analyse.baselines import majority_accuracy, with_most_common
from benchmark.analyse.p_true import mean_correct, p_true_vs_slick
from benchmark.analyse.stats import mean_ci
from benchmark.categories import CATEGORIES
from benchmark.record import STOPS, acc_metric, best_tag, fit_metric
from benchmark.results import ModelRun

GROUPS = ("all", *CATEGORIES)  # the paper's Table 2 columns: accuracy on each category of test question


def reference_mixture(model: ModelRun) -> str | None:
    """The mixture a per-model figure or column is shown for: the D with an Unknown share nearest 50% that has
    both Known and Unknown examples (the paper's Fig. 1 set), else D_Natural, else the first mixture."""
    mixed = [c for c in model.children if c.kind == "unknown_fraction" and c.unknown_fraction is not None
             and 0 < c.unknown_fraction < 1]
    if mixed:
        return min(mixed, key=lambda c: (abs(c.unknown_fraction - 0.5), c.unknown_fraction)).mixture
    for kind in ("natural", "unknown_fraction", "single_category"):
        found = [c for c in model.children if c.kind == kind]
        if found:
            return found[0].mixture
    return model.children[0].mixture if model.children else None


def p_true_mixture(model: ModelRun) -> str | None:
    """The fine-tuned model P(True) and SliCK are judged on: D_Natural (the natural mix of facts) where the suite
    has it, else the D with the fewest Unknown examples, else the reference mixture."""
    natural = [c for c in model.children if c.kind == "natural"]
    if natural:
        return natural[0].mixture
    sets = [c for c in model.children if c.kind == "unknown_fraction" and c.unknown_fraction is not None]
    if sets:
        return min(sets, key=lambda c: c.unknown_fraction).mixture
    return reference_mixture(model)


def mean_history(model: ModelRun, mixture: str | None) -> pl.DataFrame:
    """Per epoch, the mean over the mixture's runs (seeds) of every per-epoch metric."""
    histories = [c.history for c in model.children_of(mixture or "") if c.history is not None and c.history.height]
    if not histories:
        return pl.DataFrame({"epoch": []})
    columns = sorted({c for h in histories for c in h.columns if c != "epoch"})
    aligned = [h.select("epoch", *[pl.col(c).cast(pl.Float64) if c in h.columns else pl.lit(None, pl.Float64).alias(c)
                                   for c in columns]) for h in histories]
    return pl.concat(aligned).group_by("epoch").agg(pl.all().mean()).sort("epoch")


def epochs_to_fit(model: ModelRun, category: str) -> list[float]:
    """Per run (every variant) that got there: epochs until 50% of ``category``'s train examples were fitted."""
    values = [c.metrics.get(fit_metric(category)) for c in model.children]
    return [v for v in values if v is not None and not math.isnan(v)]


def unknown_sweeps(models: list[ModelRun]) -> dict[str, pl.DataFrame]:
    """Per model label: its D and D_Known mixtures (the paper's Fig. 3), for the models that have any."""
    sweeps = {m.label: m.mixtures.filter(pl.col("kind").is_in(["unknown_fraction", "known_only"]))
              for m in models if m.mixtures is not None}
    return {k: v for k, v in sweeps.items() if v.height}


def relation_baseline(categories: pl.DataFrame, split: str = "test") -> pl.DataFrame:
    """Per relation: the most common normalised train answer (all splits where a relation has no train
    questions, e.g. OOD relations) and the accuracy of always answering it on the ``split`` questions; also the
    base model's mean greedy accuracy there (mean P_Correct(T=0)) and its SliCK Unknown share."""
    return (with_most_common(categories).filter(pl.col("split") == split)
            .group_by("relation")
            .agg(questions=pl.len(), ood=pl.col("ood").first(), most_common=pl.col("most_common").first(),
                 majority_accuracy=majority_accuracy(),
                 base_greedy_accuracy=pl.col("p_correct_greedy").mean(),
                 unknown_share=(pl.col("category") == "Unknown").mean())
            .sort("ood", "relation"))


def p_true_results(model: ModelRun) -> dict[str, dict]:
    """``p_true.p_true_vs_slick`` at each checkpoint on the P(True) mixture's runs (mean over seeds)."""
    mixture = p_true_mixture(model)
    if model.categories is None or "p_true" not in model.categories.columns or mixture is None:
        return {}
    if model.categories["p_true"].drop_nulls().len() == 0:
        return {}
    predictions = [c.predictions for c in model.children_of(mixture) if c.predictions is not None]
    out = {}
    for stop in STOPS:
        correct = mean_correct(predictions, stop)
        if correct.height:
            out[stop] = {**p_true_vs_slick(model.categories, correct), "mixture": mixture,
                         "runs": len(predictions)}
    return out


def single_category_table(models: list[ModelRun]) -> tuple[list[str], list[tuple[str, str, str]], dict]:
    """Rows (mixtures), columns (model label, stop, test-question group: all and each category) and cells
    {(row, column): (accuracy, ci_low, ci_high, p, best)}: accuracy and its 95% t-interval across seeds (from each
    run's ``<stop>/test/acc/<group>``), and the paper's test of the mixture against the best one on that group's
    questions (Holm-adjusted p where the run has it)."""
    rows: list[str] = []
    cells: dict = {}
    columns = [(m.label, stop, group) for m in models for stop in STOPS for group in GROUPS]
    for model in models:
        if model.mixtures is None:
            continue
        mixtures = model.mixtures["mixture"].to_list()
        rows += [m for m in mixtures if m not in rows]
        for stop in STOPS:
            tests = model.significance(stop)
            best = model.tags.get(best_tag(stop))
            for mixture in mixtures:
                test = tests.get(mixture, {})
                for group in GROUPS:
                    values = [c.metrics.get(acc_metric("test", group, stop)) for c in model.children_of(mixture)]
                    values = [v for v in values if v is not None]
                    suffix = "" if group == "all" else f"_{group}"
                    p = test.get(f"p_holm{suffix}", test.get(f"p{suffix}"))
                    cells[(mixture, (model.label, stop, group))] = (*mean_ci(values), p, mixture == best) \
                        if values else (None, None, None, p, mixture == best)
    return rows, columns, cells
