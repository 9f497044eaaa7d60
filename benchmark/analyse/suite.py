"""A suite run's analysis, from its finished variants alone: seeds aggregated with intervals, the paper's
significance test, the linear model per swept configuration, and the findings as verdicts: an ``Analysis``, the
type ``benchmark.record`` declares. No MLflow here: ``benchmark.recorder`` writes it to the run, and the tests call
``analyse`` directly.

One set of findings (and one linear model) per swept configuration (a suite without ``sweep:`` has one, labelled
""): the findings compare variants trained alike, never a learning rate with another.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence

import polars as pl

from benchmark.analyse import measures
from benchmark.categories import KNOWN
from benchmark.plan import Variant, sweep_label
from benchmark.record import SEED_METRICS, STOPS, Analysis, acc_metric, best_tag, chosen_on_tag, fit_metric

# Mixture kinds whose size is the |D| of the linear model's fitted shares (IDK and D_Known variants are not).
SIZED_KINDS = ("unknown_fraction", "single_category", "natural")
TEST, OOD = acc_metric("test"), acc_metric("ood")  # the linear model's targets (findings.linear.LINEAR_SPLITS)


def linear_points(histories: dict[str, pl.DataFrame], variants: dict[str, Variant], size: int) -> pl.DataFrame:
    """One row per (variant, epoch): N_kn/|D|, N_unk/|D| fitted at that point, the accuracies, and ``steps``, the
    optimizer steps taken so far (``train/optimizer_steps``; None for runs that did not record it), the
    covariate of the linear model's second fit (``benchmark.analyse.findings.linear_fits``)."""
    rows = []
    for name, history in histories.items():
        variant = variants[name]
        if variant.mixture.kind == "idk_relabel":
            continue  # its Unknown answers are not facts; the paper's linear model leaves it out
        counts = dict(variant.mixture.rows.group_by("category").len().iter_rows())
        for record in history.iter_rows(named=True):
            known = sum((record.get(acc_metric("train", c)) or 0.0) * counts.get(c, 0) for c in KNOWN)
            unknown = (record.get(acc_metric("train", "Unknown")) or 0.0) * counts.get("Unknown", 0)
            rows.append({"variant": name, "epoch": record["epoch"], "known_fitted_share": known / size,
                         "unknown_fitted_share": unknown / size, TEST: record.get(TEST), OOD: record.get(OOD),
                         "steps": record.get("train/optimizer_steps")})
    return pl.DataFrame(rows, schema_overrides={"steps": pl.Float64, OOD: pl.Float64}) if rows else \
        pl.DataFrame()


# A finished run's summary metrics under the names the findings read them by.
_RUN_METRICS = {"epochs_trained": "convergence/epoch", "early_stop_epoch": "early_stop/epoch",
                "final_train_fit": acc_metric("train", stop="convergence"), "steps_per_epoch": "train/steps_per_epoch",
                "optimizer_steps": "train/optimizer_steps", "fit_epochs_known": fit_metric("Known"),
                "fit_epochs_unknown": fit_metric("Unknown"), "early_stop_acc": acc_metric("test", stop="early_stop"),
                "convergence_acc": acc_metric("test", stop="convergence")}


def finished_runs(variants: Sequence[Variant], outcomes: Sequence[Mapping], predictions: Mapping[str, pl.DataFrame]
                  ) -> list[dict]:
    """One row per finished variant in the shape ``benchmark.analyse.findings`` reads, with ``config``, the swept
    settings it was trained with (``sweep_label``), and its per-question correctness at each stop."""
    by_name = {v.name: v for v in variants}
    runs = []
    for outcome in outcomes:
        if outcome["status"] != "FINISHED":
            continue
        variant, metrics = by_name[outcome["name"]], outcome["metrics"]
        params = variant.mixture.params
        row = {"variant": variant.name, "config": sweep_label(variant.swept), "mixture": variant.mixture.name,
               "kind": variant.mixture.kind, "seed": variant.seed, "unknown_fraction": params.get("unknown_fraction"),
               "realised_unknown_fraction": params.get("realized_unknown_fraction"),
               "category": params.get("category"), "n_train_known": params.get("n_known"),
               "n_train_unknown": params.get("n_unknown")}
        row |= {name: metrics.get(metric) for name, metric in _RUN_METRICS.items()}
        for stop in STOPS:
            row[f"{stop}_acc_answered"] = metrics.get(f"{stop}/test/acc_answered")
            row[f"{stop}_answered_fraction"] = metrics.get(f"{stop}/test/answered_fraction")
        for metric in SEED_METRICS:
            row[metric] = metrics.get(metric)
        table = predictions.get(variant.name)
        if table is not None:
            row |= _correctness(table, variant.train.idk_answer)
        runs.append(row)
    return runs


def _correctness(predictions: pl.DataFrame, idk_answer: str | None) -> dict[str, list[bool]]:
    """Per stop, whether each in-distribution test question was answered right (and, for an IDK variant, whether
    it was answered at all)."""
    from benchmark.answers import normalize

    out = {}
    for stop in STOPS:
        part = predictions.filter((pl.col("checkpoint") == stop) & ~pl.col("ood"))
        out[f"{stop}_correct"] = part["correct"].to_list()
        if idk_answer is not None:
            out[f"{stop}_answered"] = [normalize(p) != normalize(idk_answer) for p in part["prediction"]]
    return out


def mixture_summary(runs_table: pl.DataFrame) -> pl.DataFrame:
    """Per mixture: its kind, target and realised (mean over seeds) Unknown share, epochs, and each SEED_METRICS
    mean over seeds with its t-interval."""
    per_mixture = measures.seed_summary(runs_table, SEED_METRICS)
    realised = runs_table.group_by("mixture", maintain_order=True).agg(
        pl.col("kind").first(), pl.col("unknown_fraction").first(), pl.col("realised_unknown_fraction").mean(),
        pl.col("epochs_trained").max())
    return realised.join(per_mixture, on="mixture", how="left")


def significance(runs: list[dict], outcomes: Sequence[Mapping], test: pl.DataFrame
                 ) -> tuple[dict[str, dict[str, dict]], dict[str, str]]:
    """The paper's Table 2 test per stop and swept configuration: every seed kept, the best chosen on its dev
    accuracy (the questions it is tested on do not choose it), Holm over the mixtures, and per test category.
    Returns (stop -> mixture[.config] -> test, the best-mixture tags)."""
    labels = test.filter(~pl.col("ood"))["category"].to_list()
    dev_acc = {(o["name"], stop): o["metrics"].get(acc_metric("dev", stop=stop)) for o in outcomes for stop in STOPS}
    results, best = {}, {}
    for stop in STOPS:
        tests = {}
        for label in dict.fromkeys(r.get("config", "") for r in runs):
            correct: dict[str, list[list[bool]]] = {}
            dev: dict[str, list[float]] = {}
            for run in runs:
                if run.get("config", "") == label and run.get(f"{stop}_correct") is not None \
                        and run["kind"] != "idk_relabel":
                    name = f"{run['mixture']}.{label}" if label else run["mixture"]
                    correct.setdefault(name, []).append(run[f"{stop}_correct"])
                    dev.setdefault(name, []).append(dev_acc.get((run["variant"], stop)))
            select = {n: sum(v) / len(v) for n, v in dev.items() if None not in v}
            found = measures.significance_vs_best(
                correct, select=select if len(select) == len(correct) else None,
                categories=labels if all(len(r[0]) == len(labels) for r in correct.values()) else None)
            if found:
                first = next(iter(found.values()))
                best |= {best_tag(stop, label): first["best"], chosen_on_tag(stop): first["best_chosen_on"]}
            tests |= found
        results[stop] = tests
    return results, best


def linear_models(variants: Sequence[Variant], histories: Mapping[str, pl.DataFrame]
                  ) -> tuple[dict[str, dict[str, dict]], dict[str, pl.DataFrame]]:
    """Per swept configuration: the linear model's fits (``findings.linear_fits``) and the points behind them."""
    from benchmark.analyse.findings import linear_fits

    by_name = {v.name: v for v in variants}
    sizes = [v.mixture.rows.height for v in variants if v.mixture.kind in SIZED_KINDS]
    fits, points = {}, {}
    for label in dict.fromkeys(sweep_label(v.swept) for v in variants):
        members = {v.name for v in variants if sweep_label(v.swept) == label}
        fits[label] = {}
        if not sizes or not any(name in histories for name in members):
            continue
        found = linear_points({n: h for n, h in histories.items() if n in members}, by_name, max(sizes))
        fits[label] = linear_fits(found) if found.height else {}
        if fits[label]:
            points[label] = found
    return fits, points


def analyse(variants: Sequence[Variant], histories: Mapping[str, pl.DataFrame],
            predictions: Mapping[str, pl.DataFrame], outcomes: Sequence[Mapping], test: pl.DataFrame
            ) -> Analysis | None:
    """The analysis of a suite run's finished variants (None when none finished)."""
    from benchmark.analyse.findings import evaluate_findings
    from benchmark.analyse.findings.inputs import FindingsInput

    runs = finished_runs(variants, outcomes, predictions)
    if not runs:
        return None
    tests, best = significance(runs, outcomes, test)
    fits, points = linear_models(variants, histories)
    findings = []
    for label, config_fits in fits.items():
        config_runs = [r for r in runs if r["config"] == label]
        for finding in evaluate_findings(FindingsInput(runs=config_runs, linear=config_fits or None)):
            findings.append(dataclasses.replace(finding, name=f"{finding.name}.{label}") if label else finding)
    analysis = Analysis(runs=runs, mixtures=pl.DataFrame(), significance=tests, best=best, fits=fits, points=points,
                        findings=findings)
    return analysis.model_copy(update={"mixtures": mixture_summary(analysis.runs_table)})
