"""The report's sections, in page order (``SECTIONS``): each writes its heading, text, tables and figures for every
model side by side onto a ``page._Page`` (the paper's figure or table in the heading).

A section takes ``(page, models)``; what it shows is chosen in ``select``, how it is escaped and written in
``page``. A section with nothing to show says so in a line, so the page always has every heading it links to.
"""

from __future__ import annotations

import datetime as dt
import math

import numpy as np

from benchmark.analyse.p_true import AUROC_MARGIN
from benchmark.categories import CATEGORIES
from benchmark.record import INTERVAL_SUFFIXES, STOPS, Finding, acc_metric, chosen_on_tag, slick_count
from benchmark.report import figures
from benchmark.report.page import _interval, _num, _Page
from benchmark.report.select import (
    epochs_to_fit,
    mean_history,
    p_true_results,
    reference_mixture,
    relation_baseline,
    single_category_table,
    unknown_sweeps,
)
from benchmark.results import PAPER_LINEAR, ModelRun, format_params

SIGNIFICANCE = 0.05
BETAS = ("beta0", "beta_kn", "beta_unk")
NUMERICS = (("pinned", "numerics.pinned"), ("CPU", "numerics.cpu"), ("ISA flags", "numerics.isa"),
            ("ATen kernels", "numerics.aten_capability"), ("MKL branch", "numerics.mkl_cbwr"),
            ("torch", "numerics.torch"), ("MKL", "numerics.mkl"), ("oneDNN", "numerics.onednn"),
            ("precision", "numerics.dtype"), ("device", "numerics.device"))
VERDICT_RULE = ("Each verdict comes from a 95% interval: holds = it excludes the null in the paper's direction, "
                "contradicted = in the opposite direction, not shown = neither, or no interval (e.g. one seed), or a "
                "precondition failed (a run not fitted ≥ 99% at CONVERGENCE, a control that forgets more than 2 "
                "points, a D_Known not step-matched, fewer than 10 variants for the linear model): the evidence names "
                "it. A finding about every fraction holds only if every fraction passes (Holm over the fractions; "
                "TOST at α/m for an equality); the rows below each model's evidence show them.")
FRACTION_HEADER = ["finding", "% Unknown", "estimate and interval", "interval level", "Holm p", "verdict"]


# -- overview and models -------------------------------------------------------------------------------------
def overview(page: _Page, models: list[ModelRun]) -> None:
    """What the page covers and how to read its numbers."""
    page.text(f"{len(models)} model(s): {', '.join(m.label for m in models) or 'none'}. Built "
              f"{dt.datetime.now(dt.UTC).strftime('%Y-%m-%d %H:%M UTC')} from the MLflow store: for each model, "
              "its latest FINISHED parent run in each experiment. Accuracies are fractions (0.02 = 2 points); "
              "intervals are 95%: across seeds for a mixture (none with one seed), over test questions where "
              "the text says so.", note=True)


def model_table(page: _Page, models: list[ModelRun]) -> None:
    """One row per model: its size, knowledge source, run and SliCK's train categories."""
    page.heading("Models", "models")
    page.table(["model", "parameters", "knowledge source", "experiment", "parent run", "variants", "seed list",
                "epochs", "SliCK train " + " / ".join(CATEGORIES)],
               [[m.base_model, format_params(m.model_params), m.knowledge_source, m.experiment, m.run_id,
                 str(len(m.children)), m.record.seed_list, str(m.record.epochs or ""),
                 " / ".join(_num(m.metrics.get(slick_count(c)), 0) for c in CATEGORIES)] for m in models],
               numeric_from=5)
    if not models:
        page.text("No finished suite runs were found in the store.")


def numeric_environment(page: _Page, models: list[ModelRun]) -> None:
    """Where each model's numbers were computed, and what another machine may expect of them (benchmark.numerics)."""
    recorded = [m for m in models if "numerics.reproducible" in m.tags]
    if not recorded:
        return
    page.heading("Numeric environment", "numerics")
    page.table(["model", *[label for label, _ in NUMERICS]],
               [[m.label, *[m.tags.get(tag, "") for _, tag in NUMERICS]] for m in recorded], numeric_from=99,
               wrap=True)
    for model in recorded:
        page.text(f"{model.label}: {model.tags['numerics.reproducible']}.", note=True)


# -- findings ------------------------------------------------------------------------------------------------
def findings(page: _Page, models: list[ModelRun]) -> None:
    """The paper's findings as verdicts, one column per model, then each model's evidence."""
    page.heading("The paper's findings, judged on each model", "findings")
    page.text(VERDICT_RULE, note=True)
    labels = [m.label for m in models]
    names: list[str] = []
    for model in models:
        names += [f.name for f in model.findings if f.name not in names]
    verdicts = {(m.label, f.name): f for m in models for f in m.findings}
    statements = {f.name: f.statement for m in models for f in m.findings}
    page.table(["the paper's finding", *labels],
               [[statements[name], *[verdicts[(lbl, name)].verdict if (lbl, name) in verdicts else "–"
                                     for lbl in labels]] for name in names], numeric_from=99, wrap=True)
    for model in models:
        rows = [[f.name, f.verdict, f.evidence] for f in model.findings]
        if rows:
            with page.details(model.label, "evidence"):
                page.table(["finding", "verdict", "the interval that decides it"], rows, numeric_from=99)
                _finding_rows(page, model.findings)


def _finding_rows(page: _Page, findings: list[Finding]) -> None:
    """The per-fraction tests behind each per-fraction verdict: a finding holds only if every row does."""
    rows = [[f.name, r.get("label", ""), _interval(r.get("estimate"), r.get("ci_low"), r.get("ci_high")),
             _num(100 * r["confidence"], 1) + "%" if r.get("confidence") is not None else "–",
             _num(r.get("p_holm"), 3), r.get("verdict", "")] for f in findings for r in f.rows]
    if rows:
        page.table(FRACTION_HEADER, rows, numeric_from=2)


# -- Fig. 1, Fig. 3a, Fig. 3b, Table 1 -----------------------------------------------------------------------
def fitting_speed(page: _Page, models: list[ModelRun]) -> None:
    """Train fitting per category per epoch on each model's reference mixture, and epochs to 50% fitted."""
    page.heading("Fitting speed per category (paper Fig. 1)", "fitting")
    mixture_of = {m.label: reference_mixture(m) or "" for m in models}
    curves = {m.label: mean_history(m, mixture_of[m.label]) for m in models}
    curves = {k: v for k, v in curves.items() if v.height}
    if not curves:
        page.text("No per-epoch histories in these runs.")
        return
    page.figure("fitting_by_category", lambda: figures.fitting_by_category(curves, mixture_of),
                "train fitting per SliCK category per epoch")

    def mean_epochs(model: ModelRun, category: str) -> str:
        values = epochs_to_fit(model, category)
        return _num(sum(values) / len(values), 1) if values else "–"

    page.text("Epochs until 50% of a category's train examples are fitted, mean over the runs that reached "
              "it (fit/epochs_to_50pct/<Category>, every variant):", note=True)
    page.table(["model", *CATEGORIES, "Known"],
               [[m.label, *[mean_epochs(m, c) for c in (*CATEGORIES, "Known")]] for m in models])


def unknown_sweep(page: _Page, models: list[ModelRun]) -> None:
    """Test accuracy against the realised share of Unknown examples, per mixture."""
    sweeps = unknown_sweeps(models)
    page.heading("Accuracy against the % Unknown (paper Fig. 3a)", "sweep")
    if not sweeps:
        page.text("These runs have no % Unknown sets.")
        return
    page.figure("unknown_sweep", lambda: figures.unknown_sweep_models(sweeps), "accuracy against realised % Unknown")
    rows = [[label, record["mixture"], _num(record.get("realised_unknown_fraction")), str(record.get("seeds", "")),
             *[_interval(*(record.get(acc_metric("test", stop=s) + suffix) for suffix in INTERVAL_SUFFIXES))
               for s in STOPS]]
            for label, table in sweeps.items() for record in table.sort("kind", "unknown_fraction").iter_rows(named=True)]
    page.table(["model", "mixture", "% Unknown (realised)", "seeds", "EARLY_STOP test acc", "CONVERGENCE test acc"],
               rows, numeric_from=2)


def d_against_d_known(page: _Page, models: list[ModelRun]) -> None:
    """D against D_Known (the same set without its Unknown examples); nothing where ``unknown_sweep`` found no sets."""
    sweeps = unknown_sweeps(models)
    if not sweeps:
        return
    page.heading("D against D_Known (paper Fig. 3b)", "d-known")
    page.figure("d_vs_d_known", lambda: figures.d_vs_d_known(sweeps), "D against D_Known")
    page.text("D_Known is D with its Unknown examples removed: the gap D − D_Known is what the Unknown examples "
              "do. The paper: nearly equal at EARLY_STOP, D below D_Known at CONVERGENCE.", note=True)


def linear_model(page: _Page, models: list[ModelRun]) -> None:
    """The linear model's coefficients with their intervals, next to the paper's."""
    page.heading("The linear model next to the paper's (Table 1)", "linear")
    fits = {m.label: m.linear() for m in models if m.linear()}
    if not fits:
        page.text("No linear model was fitted in these runs (it needs at least two variants).")
        return
    page.figure("linear_model", lambda: figures.linear_coefficients(fits, PAPER_LINEAR), "linear model coefficients")
    rows = [["paper (PaLM 2-M, in-distribution)", *[f"{PAPER_LINEAR[b]:g}" for b in BETAS],
             f"{PAPER_LINEAR['r2']:g}", "", ""]]
    for model in models:
        for split, name in (("in_distribution", "in-distribution"), ("ood", "OOD")):
            if fit := model.linear(split):
                rows.append([f"{model.label} ({name})",
                             *[_interval(100 * fit[b], 100 * fit[f"{b}_ci_low"], 100 * fit[f"{b}_ci_high"], 1)
                               for b in BETAS], _num(fit.get("r2"), 2), _num(fit.get("n"), 0), ""])
    page.text("Accuracy = β0 + β_kn·N_kn/|D| + β_unk·N_unk/|D| over every (variant, epoch); coefficients in "
              "accuracy points (×100) with 95% CR2 cluster-robust intervals over variants (Bell-McCaffrey degrees of "
              "freedom).", note=True)
    page.table(["", "β0", "β_kn", "β_unk", "R²", "points", ""], rows)


# -- Table 2 -------------------------------------------------------------------------------------------------
def mixtures_against_best(page: _Page, models: list[ModelRun]) -> None:
    """Every mixture's accuracy per test-question category, tested against the best mixture."""
    page.heading("Every mixture against the best one (paper Table 2)", "mixtures")
    rows, columns, cells = single_category_table(models)
    if not rows:
        page.text("No per-mixture summaries in these runs.")
        return
    chosen = {m.tags.get(chosen_on_tag(stop), "test") for m in models for stop in STOPS}
    page.text("In-distribution test accuracy on all test questions and on each SliCK category of them (the "
              "paper's columns), mean over seeds [95% CI across seeds]. best = the best mixture at that stopping "
              + ("point by dev accuracy (chosen on dev questions, tested on test questions)" if chosen == {"dev"}
                 else "point by test accuracy (no dev accuracy recorded: the choice favours it, so the tests "
                      "against it are optimistic)")
              + "; every category column is tested against that same mixture. * = significantly worse than it: "
              "the paper's test (test questions shuffled into 100 parts) with every seed kept (seeds and parts "
              f"both random), Holm-adjusted over the mixtures compared, p < {SIGNIFICANCE}.", note=True)
    for stop in STOPS:
        shown = [c for c in columns if c[1] == stop]
        header = ["mixture", *[f"{label} {figures.STOP_NAMES[stop]} {group}" for label, _, group in shown]]
        page.table(header, [[mixture, *[_table_2_cell(cells.get((mixture, column))) for column in shown]]
                            for mixture in rows])
    page.figure("mixtures_heatmap", lambda: _mixtures_heatmap(rows, columns, cells), "accuracy per mixture and model")


def _mark(p: float | None, best: bool) -> str:
    if best:
        return "best"
    if p is not None and not math.isnan(p) and p < SIGNIFICANCE:
        return "*"
    return ""


def _table_2_cell(cell: tuple | None) -> str:
    return "–" if cell is None else f"{_interval(*cell[:3])} {_mark(cell[3], cell[4])}".strip()


def _mixtures_heatmap(rows: list[str], columns: list[tuple[str, str, str]], cells: dict):
    """Table 2's accuracy on all test questions, one column per (model, stop), each cell marked as in the table."""
    overall = [c for c in columns if c[2] == "all"]
    values = np.full((len(rows), len(overall)), np.nan)
    notes = [[""] * len(overall) for _ in rows]
    for i, mixture in enumerate(rows):
        for j, column in enumerate(overall):
            cell = cells.get((mixture, column))
            if cell is not None and cell[0] is not None:
                values[i, j] = cell[0]
                mark = _mark(cell[3], cell[4])
                notes[i][j] = f"{cell[0]:.3f}" + (f"\n{mark}" if mark else "")
    names = [f"{label}\n{figures.STOP_NAMES[stop]}" for label, stop, _ in overall]
    return figures.heatmap(values, rows, names, notes, "Test accuracy per mixture (best / * p < 0.05 vs best)",
                           cmap="viridis", colorbar="test accuracy")


# -- Fig. 5 --------------------------------------------------------------------------------------------------
def p_true_against_slick(page: _Page, models: list[ModelRun]) -> None:
    """P(True) and SliCK judged alike: accuracy after fine-tuning on the questions each calls Unknown."""
    page.heading("P(True) against SliCK (paper Fig. 5)", "p-true")
    page.text("P(True) (Kadavath et al.) asks the base model, zero-shot, 'Question: <q> / Proposed Answer: <gold> / "
              "Is the proposed answer: (A) True (B) False / The proposed answer is:' and compares the next-token "
              "probabilities of the first tokens of ' True' and ' False'. As in the paper, each method is judged by "
              "the post-fine-tuning test accuracy on the questions it calls Unknown, at equal coverage: SliCK's "
              "Unknown test questions against the same number of questions P(True) ranks least likely true. Lower "
              "accuracy = the method found facts the model really does not know.", note=True)
    comparisons = {m.label: p_true_results(m) for m in models}
    comparisons = {k: v for k, v in comparisons.items() if v}
    if not comparisons:
        page.text("No P(True) scores in these runs (P(True) off, or the tokenizer cannot tell ' True' from ' False').")
        return
    page.text("Both sets are drawn from the same test questions, so the difference is paired: a bootstrap over "
              "those questions redraws them once for both methods. A winner is named only where that interval "
              "excludes 0 and P(True) separates Known from Unknown questions at all (its AUROC interval above "
              f"0.5 and the AUROC at least {0.5 + AUROC_MARGIN:.2f}); otherwise P(True) is not ranked. Intervals "
              "are over test questions, given the fine-tuned runs.", note=True)
    page.figure("p_true_vs_slick", lambda: figures.p_true_vs_slick(
        {k: v["early_stop"] for k, v in comparisons.items() if "early_stop" in v}),
        "P(True) against SliCK at equal coverage")
    rows = []
    for label, result in comparisons.items():
        for stop, r in result.items():
            rows.append(_p_true_row(label, stop, r))
            if stop == "early_stop":
                page.text(f"{label}, after fine-tuning on {r['mixture']}, EARLY_STOP: " + _p_true_sentence(r))
    page.table(["model", "fine-tuned on", "checkpoint", "Unknown / test questions", "P(True) AUROC Known vs Unknown",
                "SliCK Unknown acc", "P(True) same coverage acc", "P(True) − SliCK (paired)", "overlap",
                "less-known facts found by"], rows, numeric_from=3)


def _p_true_row(label: str, stop: str, r: dict) -> list[str]:
    auc, diff = r["auroc"], r["difference"]
    return [label, r["mixture"], figures.STOP_NAMES[stop], f"{r['n_unknown']} / {r['questions']}",
            _interval(auc["auroc"], auc["ci_low"], auc["ci_high"]),
            _interval(r["slick"]["accuracy"], r["slick"]["ci_low"], r["slick"]["ci_high"]),
            _interval(r["p_true"]["accuracy"], r["p_true"]["ci_low"], r["p_true"]["ci_high"]),
            _interval(diff["diff"], diff["ci_low"], diff["ci_high"]), _num(r["overlap"], 2), r["verdict"]]


def _p_true_sentence(r: dict) -> str:
    """What the P(True) comparison at one checkpoint says, in words: a winner only where the evidence names one."""
    auc, diff = r["auroc"], r["difference"]
    separation = f"AUROC {_interval(auc['auroc'], auc['ci_low'], auc['ci_high'])}"
    if r["verdict"] == "not ranked":
        return (f"P(True) does not separate Known from Unknown questions here ({separation}), so it is not ranked "
                "against SliCK.")
    gap = f"P(True) − SliCK {_interval(diff['diff'], diff['ci_low'], diff['ci_high'])}, paired"
    if r["verdict"] == "no difference shown":
        return f"at SliCK's coverage the two methods' Unknown sets are answered alike ({gap}; {separation})."
    return (f"at SliCK's coverage {r['verdict']} finds the less-known facts: its Unknown set is answered worse "
            f"({gap}; {separation}).")


# -- exposure and relations ----------------------------------------------------------------------------------
def exposure(page: _Page, models: list[ModelRun]) -> None:
    """SliCK's category of each train fact against how often the world model's pretraining stated it."""
    page.heading("SliCK category against pretraining exposure (embedded world)", "exposure")
    confusions = {m.label: m.confusion for m in models if m.confusion is not None and m.confusion.height}
    if not confusions:
        page.text("No exposure data (knowledge source without known pretraining exposure).")
        return
    page.text("How often each train fact was stated in the world model's pretraining corpus (ground truth a real "
              "model does not have), against the category SliCK gives it; relations with a small answer space "
              "are left out (lucky guesses).", note=True)
    page.figure("exposure", lambda: figures.exposure_heatmaps(confusions), "SliCK category by exposure")


def relations(page: _Page, models: list[ModelRun]) -> None:
    """SliCK's categories per relation, and the most-common-answer baseline beside the base model's accuracy."""
    page.heading("Categories per relation and the most-common-answer baseline", "relations")
    counts = {m.label: m.counts_per_relation for m in models if m.counts_per_relation is not None}
    if counts:
        page.figure("relations", lambda: figures.categories_per_relation(counts), "SliCK categories per relation")
    baselines = {m.label: relation_baseline(m.categories) for m in models if m.categories is not None}
    if not baselines:
        return
    page.text("Test split. Baseline: always answer the relation's most common (normalised) train answer. Base "
              "model: its 4-shot greedy accuracy before fine-tuning (mean P_Correct(T=0) over SliCK's prompts), "
              "and the share of questions SliCK calls Unknown.", note=True)
    page.table(["relation", "most common answer", "test questions", "baseline accuracy",
                *[h for label in baselines for h in (f"{label} greedy acc", f"{label} Unknown share")]],
               _relation_rows(baselines), numeric_from=2)


def _relation_rows(baselines: dict) -> list[list[str]]:
    """One row per relation any model has (in the order the models name them); the relation's own columns from
    the first model that has it."""
    by_relation = {label: {r["relation"]: r for r in t.iter_rows(named=True)} for label, t in baselines.items()}
    relations: list[str] = []
    for table in by_relation.values():
        relations += [r for r in table if r not in relations]
    rows = []
    for relation in relations:
        first = next(b[relation] for b in by_relation.values() if relation in b)
        row = [relation + (" (OOD)" if first["ood"] else ""), str(first["most_common"]), str(first["questions"]),
               _num(first["majority_accuracy"])]
        for label in baselines:
            r = by_relation[label].get(relation)
            row += ["–", "–"] if r is None else [_num(r["base_greedy_accuracy"]), _num(r["unknown_share"], 2)]
        rows.append(row)
    return rows


SECTIONS = (overview, model_table, numeric_environment, findings, fitting_speed, unknown_sweep, d_against_d_known,
            linear_model, mixtures_against_best, p_true_against_slick, exposure, relations)
