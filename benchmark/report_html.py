"""The report: one self-contained HTML page (figures embedded as base64 PNG; no script, stylesheet or font is
fetched) and a Markdown summary, for one model or several side by side, built from the tracking store alone.

    python -m benchmark report [--experiment NAME ...] [--out DIR]

``build_report(models, out)`` writes ``out/index.html``, ``out/summary.md`` and ``out/figures/*.png`` from
``results.ModelRun`` values (no MLflow here); ``report_experiments`` loads them from the store and attaches the
report to each parent run it covers (artifact folder ``report/``; the MLflow UI previews the HTML).

What it shows, per model and side by side (the paper's figure or table in brackets):
fitting speed per category [Fig. 1]; accuracy against the realised % Unknown [Fig. 3a]; D against D_Known
[Fig. 3b]; the linear model next to the paper's values [Table 1]; every mixture's accuracy with the paper's
significance test against the best one [Table 2]; P(True) against SliCK at equal coverage [Fig. 5]; SliCK
category against pretraining exposure (embedded world); categories per relation with the most-common-answer
baseline; and the paper's findings as verdicts with the interval that decides each.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import html
import io
import math
import re
from collections.abc import Callable
from pathlib import Path

import polars as pl

from benchmark import report
from benchmark.analyse import STOPS
from benchmark.answers import normalize
from benchmark.cache import atomic_write_bytes
from benchmark.categories import CATEGORIES
from benchmark.p_true import AUROC_MARGIN, mean_correct, p_true_vs_slick
from benchmark.results import PAPER_LINEAR, ModelRun, format_params, load_models
from benchmark.stats import fmt_interval

SIGNIFICANCE = 0.05
VERDICT_COLOURS = {"holds": "#1b7837", "not shown": "#a6761d", "contradicted": "#b2182b"}
CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:0 auto;max-width:1400px;padding:0 24px 48px;
color:#222;line-height:1.45}
h1{font-size:1.6em;margin-top:24px}h2{font-size:1.25em;margin-top:36px;border-bottom:1px solid #ddd;padding-bottom:4px}
table{border-collapse:collapse;margin:8px 0 16px;font-size:.88em;display:block;max-width:100%;overflow-x:auto}
td:first-child{white-space:nowrap}table.wrap td:first-child{white-space:normal;min-width:20em}th,td{border:1px solid #ddd;padding:3px 8px;text-align:left;
vertical-align:top}th{background:#f4f4f4}td.num{text-align:right;font-variant-numeric:tabular-nums}
img{max-width:100%;height:auto;border:1px solid #eee;margin:6px 0}
.verdict{font-weight:600;white-space:nowrap}.note{color:#555;font-size:.9em}.small{font-size:.8em;color:#666}
details{margin:4px 0 10px}summary{cursor:pointer}
"""


# ---------------------------------------------------------------------------------------------------------------
# Data preparation (pure)
# ---------------------------------------------------------------------------------------------------------------
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


def relation_baseline(categories: pl.DataFrame, split: str = "test") -> pl.DataFrame:
    """Per relation: the most common normalised train answer (all splits where a relation has no train
    questions, e.g. OOD relations) and the accuracy of always answering it on the ``split`` questions; also the
    base model's mean greedy accuracy there (mean P_Correct(T=0)) and its SliCK Unknown share."""
    table = categories.with_columns(gold=pl.col("answer").map_elements(normalize, return_dtype=pl.String))
    train = table.filter(pl.col("split") == "train")
    pool = pl.concat([train, table.filter(~pl.col("relation").is_in(train["relation"].unique().implode()))])
    common = (pool.group_by("relation", "gold").len().sort(["relation", "len", "gold"], descending=[False, True, False])
              .group_by("relation", maintain_order=True).first().select("relation", most_common=pl.col("gold")))
    return (table.filter(pl.col("split") == split).join(common, on="relation")
            .group_by("relation")
            .agg(questions=pl.len(), ood=pl.col("ood").first(), most_common=pl.col("most_common").first(),
                 majority_accuracy=(pl.col("gold") == pl.col("most_common")).mean(),
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


TABLE2_GROUPS = ("all", *CATEGORIES)  # the paper's Table 2 columns: accuracy on each category of test question


def single_category_table(models: list[ModelRun]) -> tuple[list[str], list[tuple[str, str, str]], dict]:
    """Rows (mixtures), columns (model label, stop, test-question group: all and each category) and cells
    {(row, column): (accuracy, ci_low, ci_high, p, best)}: accuracy and its 95% t-interval across seeds (from each
    run's ``<stop>/test/acc/<group>``), and the paper's test of the mixture against the best one on that group's
    questions (Holm-adjusted p where the run has it)."""
    from benchmark.stats import mean_ci

    rows: list[str] = []
    cells: dict = {}
    columns = [(m.label, stop, group) for m in models for stop in STOPS for group in TABLE2_GROUPS]
    for model in models:
        if model.mixtures is None:
            continue
        mixtures = model.mixtures["mixture"].to_list()
        rows += [m for m in mixtures if m not in rows]
        for stop in STOPS:
            tests = model.significance(stop)
            best = model.tags.get(f"best/{stop}")
            for mixture in mixtures:
                test = tests.get(mixture, {})
                for group in TABLE2_GROUPS:
                    values = [c.metrics.get(f"{stop}/test/acc/{group}") for c in model.children_of(mixture)]
                    values = [v for v in values if v is not None]
                    suffix = "" if group == "all" else f"_{group}"
                    p = test.get(f"p_holm{suffix}", test.get(f"p{suffix}"))
                    cells[(mixture, (model.label, stop, group))] = (*mean_ci(values), p, mixture == best) \
                        if values else (None, None, None, p, mixture == best)
    return rows, columns, cells


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


def _mark(p: float | None, best: bool) -> str:
    if best:
        return "best"
    if p is not None and not math.isnan(p) and p < SIGNIFICANCE:
        return "*"
    return ""


# ---------------------------------------------------------------------------------------------------------------
# Building
# ---------------------------------------------------------------------------------------------------------------
def _num(value: float | None, digits: int = 3) -> str:
    return "–" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.{digits}f}"


def _interval(mean, low, high, digits: int = 3) -> str:
    if mean is None or (isinstance(mean, float) and math.isnan(mean)):
        return "–"
    return fmt_interval(mean, float("nan") if low is None else low, float("nan") if high is None else high, digits)


FRACTION_HEADER = ["finding", "% Unknown", "estimate and interval", "interval level", "Holm p", "verdict"]


def _finding_rows(page, findings: list[dict]) -> None:
    """The per-fraction tests behind each per-fraction verdict: a finding holds only if every row does."""
    rows = [[f["name"], r.get("label", ""), _interval(r.get("estimate"), r.get("ci_low"), r.get("ci_high")),
             _num(100 * r["confidence"], 1) + "%" if r.get("confidence") is not None else "–",
             _num(r.get("p_holm"), 3), r.get("verdict", "")] for f in findings for r in f.get("rows") or []]
    if not rows:
        return
    page.html.append(_table_html(FRACTION_HEADER, [[_cell(c) for c in row] for row in rows], numeric_from=2))
    page.md.append(_table_md(FRACTION_HEADER, rows) + "\n")


def _table_html(header: list[str], rows: list[list[str]], numeric_from: int = 1, wrap: bool = False) -> str:
    """``header`` is plain text; ``rows`` are HTML (escaped by the caller). ``wrap``: the first column holds
    sentences, so it wraps and the other columns stay on the page."""
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td class='num'>{c}</td>" if i >= numeric_from else f"<td>{c}</td>"
                                    for i, c in enumerate(row)) + "</tr>" for row in rows)
    return f"<table{' class=wrap' if wrap else ''}><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _md(text) -> str:
    """Text for the Markdown summary: Markdown passes raw HTML through, so ``<``, ``>`` and ``&`` in names (a model,
    a mixture, a finding's evidence) are escaped as in the HTML page; a renderer shows them as written."""
    return html.escape(str(text), quote=False)


def _table_md(header: list[str], rows: list[list[str]]) -> str:
    def clean(text: str) -> str:
        return _md(text).replace("|", "\\|").replace("\n", " ")

    lines = ["| " + " | ".join(clean(h) for h in header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(clean(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def _cell(value) -> str:
    """A table cell as HTML: escaped, a verdict in its colour."""
    text = html.escape(str(value))
    colour = VERDICT_COLOURS.get(str(value))
    return f"<span class='verdict' style='color:{colour}'>{text}</span>" if colour else text


class _Page:
    """Collects HTML and Markdown side by side; figures go to both (embedded / linked)."""

    def __init__(self, out: Path):
        self.out = out
        self.html: list[str] = []
        self.md: list[str] = []
        self.figures: list[str] = []
        (out / "figures").mkdir(parents=True, exist_ok=True)

    def heading(self, text: str, anchor: str) -> None:
        self.html.append(f"<h2 id='{anchor}'>{html.escape(text)}</h2>")
        self.md.append(f"\n## {_md(text)}\n")

    def text(self, text: str, note: bool = False) -> None:
        self.html.append(f"<p class='{'note' if note else ''}'>{html.escape(text)}</p>")
        self.md.append(_md(text) + "\n")

    def table(self, header: list[str], rows: list[list[str]], numeric_from: int = 1, wrap: bool = False) -> None:
        self.html.append(_table_html(header, [[_cell(c) for c in r] for r in rows], numeric_from, wrap))
        self.md.append(_table_md(header, rows) + "\n")

    def figure(self, name: str, build: Callable[[], object], alt: str) -> None:
        try:
            figure = build()
        except Exception as exc:  # one figure that cannot be drawn must not cost the whole report
            self.text(f"({name}: figure not drawn: {type(exc).__name__}: {exc})", note=True)
            return
        buffer = io.BytesIO()
        figure.savefig(buffer, format="png", dpi=100)
        report.close(figure)
        data = buffer.getvalue()
        atomic_write_bytes(self.out / "figures" / f"{name}.png", data)
        self.figures.append(name)
        encoded = base64.b64encode(data).decode("ascii")
        self.html.append(f"<img alt='{html.escape(alt)}' src='data:image/png;base64,{encoded}'>")
        self.md.append(f"![{_md(alt)}](figures/{name}.png)\n")


NUMERICS = (("pinned", "numerics.pinned"), ("CPU", "numerics.cpu"), ("ISA flags", "numerics.isa"),
            ("ATen kernels", "numerics.aten_capability"), ("MKL branch", "numerics.mkl_cbwr"),
            ("torch", "numerics.torch"), ("MKL", "numerics.mkl"), ("oneDNN", "numerics.onednn"),
            ("precision", "numerics.dtype"), ("device", "numerics.device"))


def _numerics_section(page: _Page, models: list[ModelRun]) -> None:
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


def build_report(models: list[ModelRun], out: Path, *, title: str | None = None) -> dict:
    """Write ``index.html``, ``summary.md`` and ``figures/`` into ``out``; returns their (absolute) paths and the
    models it covers."""
    out = out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    page = _Page(out)
    experiments = sorted({m.experiment for m in models})
    title = title or f"slick-bench report: {', '.join(experiments) or 'no runs'}"
    labels = [m.label for m in models]

    # -- overview -------------------------------------------------------------------------------------------
    page.text(f"{len(models)} model(s): {', '.join(labels) or 'none'}. Built "
              f"{dt.datetime.now(dt.UTC).strftime('%Y-%m-%d %H:%M UTC')} from the MLflow store: for each model, "
              "its latest FINISHED parent run in each experiment. Accuracies are fractions (0.02 = 2 points); "
              "intervals are 95%: across seeds for a mixture (none with one seed), over test questions where "
              "the text says so.", note=True)
    page.heading("Models", "models")
    page.table(["model", "parameters", "knowledge source", "experiment", "parent run", "variants", "seed list",
                "epochs", "SliCK train " + " / ".join(CATEGORIES)],
               [[m.base_model, format_params(m.model_params), m.knowledge_source, m.experiment, m.run_id,
                 str(len(m.children)), m.tags.get("seeds", ""), m.tags.get("epochs", ""),
                 " / ".join(_num(m.metrics.get(f"slick/count/{c}"), 0) for c in CATEGORIES)] for m in models],
               numeric_from=5)
    if not models:
        page.text("No finished suite runs were found in the store.")
    _numerics_section(page, models)

    # -- findings -------------------------------------------------------------------------------------------
    page.heading("The paper's findings, judged on each model", "findings")
    page.text("Each verdict comes from a 95% interval: holds = it excludes the null in the paper's direction, "
              "contradicted = in the opposite direction, not shown = neither, or no interval (e.g. one seed), or a "
              "precondition failed (a run not fitted ≥ 99% at CONVERGENCE, a control that forgets more than 2 points, "
              "a D_Known not step-matched, fewer than 10 variants for the linear model): the evidence names it. A "
              "finding about every fraction holds only if every fraction passes (Holm over the fractions; TOST at "
              "α/m for an equality); the rows below each model's evidence show them.",
              note=True)
    names: list[str] = []
    for model in models:
        names += [f["name"] for f in model.findings if f["name"] not in names]
    verdicts = {(m.label, f["name"]): f for m in models for f in m.findings}
    statements = {f["name"]: f["statement"] for m in models for f in m.findings}
    page.table(["the paper's finding", *labels],
               [[statements[name], *[verdicts[(lbl, name)]["verdict"] if (lbl, name) in verdicts else "–"
                                     for lbl in labels]] for name in names], numeric_from=99, wrap=True)
    for model in models:
        rows = [[f["name"], f["verdict"], f["evidence"]] for f in model.findings]
        if rows:
            page.html.append(f"<details open><summary>{html.escape(model.label)}: evidence</summary>")
            page.md.append(f"\n**{_md(model.label)}**\n")
            page.html.append(_table_html(["finding", "verdict", "the interval that decides it"],
                                         [[_cell(c) for c in row] for row in rows], numeric_from=99))
            page.md.append(_table_md(["finding", "verdict", "the interval that decides it"], rows) + "\n")
            _finding_rows(page, model.findings)
            page.html.append("</details>")

    # -- Fig. 1 ---------------------------------------------------------------------------------------------
    page.heading("Fitting speed per category (paper Fig. 1)", "fitting")
    mixture_of = {m.label: reference_mixture(m) or "" for m in models}
    curves = {m.label: mean_history(m, mixture_of[m.label]) for m in models}
    curves = {k: v for k, v in curves.items() if v.height}
    if curves:
        page.figure("fitting_by_category", lambda: report.fitting_by_category(curves, mixture_of),
                    "train fitting per SliCK category per epoch")
        rows = []
        for model in models:
            row = [model.label]
            for category in (*CATEGORIES, "Known"):
                values = [c.metrics.get(f"fit/epochs_to_50pct/{category}") for c in model.children]
                values = [v for v in values if v is not None and not math.isnan(v)]
                row.append(_num(sum(values) / len(values), 1) if values else "–")
            rows.append(row)
        page.text("Epochs until 50% of a category's train examples are fitted, mean over the runs that reached "
                  "it (fit/epochs_to_50pct/<Category>, every variant):", note=True)
        page.table(["model", *CATEGORIES, "Known"], rows)
    else:
        page.text("No per-epoch histories in these runs.")

    # -- Fig. 3 ---------------------------------------------------------------------------------------------
    sweeps = {m.label: m.mixtures.filter(pl.col("kind").is_in(["unknown_fraction", "known_only"]))
              for m in models if m.mixtures is not None}
    sweeps = {k: v for k, v in sweeps.items() if v.height}
    page.heading("Accuracy against the % Unknown (paper Fig. 3a)", "sweep")
    if sweeps:
        page.figure("unknown_sweep", lambda: report.unknown_sweep_models(sweeps), "accuracy against realised % Unknown")
        rows = []
        for label, table in sweeps.items():
            for record in table.sort("kind", "unknown_fraction").iter_rows(named=True):
                rows.append([label, record["mixture"], _num(record.get("realised_unknown_fraction")),
                             str(record.get("seeds", "")),
                             *[_interval(record.get(f"{s}/test/acc/all"), record.get(f"{s}/test/acc/all/ci_low"),
                                         record.get(f"{s}/test/acc/all/ci_high")) for s in STOPS]])
        page.table(["model", "mixture", "% Unknown (realised)", "seeds", "EARLY_STOP test acc", "CONVERGENCE test acc"],
                   rows, numeric_from=2)
        page.heading("D against D_Known (paper Fig. 3b)", "d-known")
        page.figure("d_vs_d_known", lambda: report.d_vs_d_known(sweeps), "D against D_Known")
        page.text("D_Known is D with its Unknown examples removed: the gap D − D_Known is what the Unknown examples "
                  "do. The paper: nearly equal at EARLY_STOP, D below D_Known at CONVERGENCE.", note=True)
    else:
        page.text("These runs have no % Unknown sets.")

    # -- Table 1 --------------------------------------------------------------------------------------------
    page.heading("The linear model next to the paper's (Table 1)", "linear")
    fits = {m.label: m.linear() for m in models if m.linear()}
    if fits:
        page.figure("linear_model", lambda: report.linear_coefficients(fits, PAPER_LINEAR), "linear model coefficients")
        rows = [["paper (PaLM 2-M, in-distribution)", *[f"{PAPER_LINEAR[b]:g}" for b in ("beta0", "beta_kn", "beta_unk")],
                 f"{PAPER_LINEAR['r2']:g}", "", ""]]
        for model in models:
            for split, name in (("in_distribution", "in-distribution"), ("ood", "OOD")):
                fit = model.linear(split)
                if not fit:
                    continue
                rows.append([f"{model.label} ({name})",
                             *[_interval(100 * fit[b], 100 * fit[f"{b}_ci_low"], 100 * fit[f"{b}_ci_high"], 1)
                               for b in ("beta0", "beta_kn", "beta_unk")], _num(fit.get("r2"), 2),
                             _num(fit.get("n"), 0), ""])
        page.text("Accuracy = β0 + β_kn·N_kn/|D| + β_unk·N_unk/|D| over every (variant, epoch); coefficients in "
                  "accuracy points (×100) with 95% CR2 cluster-robust intervals over variants (Bell-McCaffrey degrees of "
                  "freedom).", note=True)
        page.table(["", "β0", "β_kn", "β_unk", "R²", "points", ""], rows)
    else:
        page.text("No linear model was fitted in these runs (it needs at least two variants).")

    # -- Table 2 --------------------------------------------------------------------------------------------
    page.heading("Every mixture against the best one (paper Table 2)", "mixtures")
    rows_, columns, cells = single_category_table(models)
    if rows_:
        chosen = {m.tags.get(f"best/{stop}/chosen_on", "test") for m in models for stop in STOPS}
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
            header = ["mixture", *[f"{label} {report.STOP_NAMES[stop]} {group}" for label, _, group in shown]]
            table_rows = []
            for mixture in rows_:
                row = [mixture]
                for column in shown:
                    cell = cells.get((mixture, column))
                    row.append("–" if cell is None else f"{_interval(*cell[:3])} {_mark(cell[3], cell[4])}".strip())
                table_rows.append(row)
            page.table(header, table_rows)

        def heat():
            import numpy as np

            overall = [c for c in columns if c[2] == "all"]
            values = np.full((len(rows_), len(overall)), np.nan)
            notes = [[""] * len(overall) for _ in rows_]
            for i, mixture in enumerate(rows_):
                for j, column in enumerate(overall):
                    cell = cells.get((mixture, column))
                    if cell is not None and cell[0] is not None:
                        values[i, j] = cell[0]
                        mark = _mark(cell[3], cell[4])
                        notes[i][j] = f"{cell[0]:.3f}" + (f"\n{mark}" if mark else "")
            names = [f"{label}\n{report.STOP_NAMES[stop]}" for label, stop, _ in overall]
            return report.heatmap(values, rows_, names, notes, "Test accuracy per mixture (best / * p < 0.05 vs best)",
                                  cmap="viridis", colorbar="test accuracy")

        page.figure("mixtures_heatmap", heat, "accuracy per mixture and model")
    else:
        page.text("No per-mixture summaries in these runs.")

    # -- Fig. 5 ---------------------------------------------------------------------------------------------
    page.heading("P(True) against SliCK (paper Fig. 5)", "p-true")
    page.text("P(True) (Kadavath et al.) asks the base model, zero-shot, 'Question: <q> / Proposed Answer: <gold> / "
              "Is the proposed answer: (A) True (B) False / The proposed answer is:' and compares the next-token "
              "probabilities of the first tokens of ' True' and ' False'. As in the paper, each method is judged by "
              "the post-fine-tuning test accuracy on the questions it calls Unknown, at equal coverage: SliCK's "
              "Unknown test questions against the same number of questions P(True) ranks least likely true. Lower "
              "accuracy = the method found facts the model really does not know.", note=True)
    comparisons = {m.label: p_true_results(m) for m in models}
    comparisons = {k: v for k, v in comparisons.items() if v}
    if comparisons:
        page.text("Both sets are drawn from the same test questions, so the difference is paired: a bootstrap over "
                  "those questions redraws them once for both methods. A winner is named only where that interval "
                  "excludes 0 and P(True) separates Known from Unknown questions at all (its AUROC interval above "
                  f"0.5 and the AUROC at least {0.5 + AUROC_MARGIN:.2f}); otherwise P(True) is not ranked. Intervals "
                  "are over test questions, given the fine-tuned runs.", note=True)
        page.figure("p_true_vs_slick", lambda: report.p_true_vs_slick(
            {k: v["early_stop"] for k, v in comparisons.items() if "early_stop" in v}),
            "P(True) against SliCK at equal coverage")
        rows = []
        for label, result in comparisons.items():
            for stop, r in result.items():
                auc, diff = r["auroc"], r["difference"]
                rows.append([label, r["mixture"], report.STOP_NAMES[stop], f"{r['n_unknown']} / {r['questions']}",
                             _interval(auc["auroc"], auc["ci_low"], auc["ci_high"]),
                             _interval(r["slick"]["accuracy"], r["slick"]["ci_low"], r["slick"]["ci_high"]),
                             _interval(r["p_true"]["accuracy"], r["p_true"]["ci_low"], r["p_true"]["ci_high"]),
                             _interval(diff["diff"], diff["ci_low"], diff["ci_high"]), _num(r["overlap"], 2),
                             r["verdict"]])
                if stop == "early_stop":
                    page.text(f"{label}, after fine-tuning on {r['mixture']}, EARLY_STOP: " + _p_true_sentence(r))
        page.table(["model", "fine-tuned on", "checkpoint", "Unknown / test questions", "P(True) AUROC Known vs Unknown",
                    "SliCK Unknown acc", "P(True) same coverage acc", "P(True) − SliCK (paired)", "overlap",
                    "less-known facts found by"], rows, numeric_from=3)
    else:
        page.text("No P(True) scores in these runs (P(True) off, or the tokenizer cannot tell ' True' from ' False').")

    # -- exposure -------------------------------------------------------------------------------------------
    page.heading("SliCK category against pretraining exposure (embedded world)", "exposure")
    confusions = {m.label: m.confusion for m in models if m.confusion is not None and m.confusion.height}
    if confusions:
        page.text("How often each train fact was stated in the world model's pretraining corpus (ground truth a real "
                  "model does not have), against the category SliCK gives it; relations with a small answer space "
                  "are left out (lucky guesses).", note=True)
        page.figure("exposure", lambda: report.exposure_heatmaps(confusions), "SliCK category by exposure")
    else:
        page.text("No exposure data (knowledge source without known pretraining exposure).")

    # -- per relation ---------------------------------------------------------------------------------------
    page.heading("Categories per relation and the most-common-answer baseline", "relations")
    counts = {m.label: m.counts_per_relation for m in models if m.counts_per_relation is not None}
    if counts:
        page.figure("relations", lambda: report.categories_per_relation(counts), "SliCK categories per relation")
    baselines = {m.label: relation_baseline(m.categories) for m in models if m.categories is not None}
    if baselines:
        relations: list[str] = []
        for table in baselines.values():
            relations += [r for r in table["relation"].to_list() if r not in relations]
        first = next(iter(baselines.values()))
        by_relation = {label: {r["relation"]: r for r in t.iter_rows(named=True)} for label, t in baselines.items()}
        base = {r["relation"]: r for r in first.iter_rows(named=True)}
        rows = []
        for relation in relations:
            row0 = base.get(relation) or next(b[relation] for b in by_relation.values() if relation in b)
            row = [relation + (" (OOD)" if row0["ood"] else ""), str(row0["most_common"]), str(row0["questions"]),
                   _num(row0["majority_accuracy"])]
            for label in baselines:
                r = by_relation[label].get(relation)
                row += ["–", "–"] if r is None else [_num(r["base_greedy_accuracy"]), _num(r["unknown_share"], 2)]
            rows.append(row)
        page.text("Test split. Baseline: always answer the relation's most common (normalised) train answer. Base "
                  "model: its 4-shot greedy accuracy before fine-tuning (mean P_Correct(T=0) over SliCK's prompts), "
                  "and the share of questions SliCK calls Unknown.", note=True)
        page.table(["relation", "most common answer", "test questions", "baseline accuracy",
                    *[h for label in baselines for h in (f"{label} greedy acc", f"{label} Unknown share")]], rows,
                   numeric_from=2)

    document = _write(page, out, title)
    document["models"] = [{"model": m.base_model, "label": m.label, "experiment": m.experiment, "run_id": m.run_id}
                          for m in models]
    return document


def _write(page: _Page, out: Path, title: str) -> dict:
    contents = " · ".join(f"<a href='#{a}'>{t}</a>" for a, t in (
        ("models", "models"), ("findings", "findings"), ("fitting", "Fig. 1"), ("sweep", "Fig. 3a"),
        ("d-known", "Fig. 3b"), ("linear", "Table 1"), ("mixtures", "Table 2"), ("p-true", "Fig. 5"),
        ("exposure", "exposure"), ("relations", "relations")))
    document = (f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
                f"<meta name='viewport' content='width=device-width,initial-scale=1'><style>{CSS}</style></head>"
                f"<body><h1>{html.escape(title)}</h1><p class='small'>{contents}</p>{''.join(page.html)}</body></html>")
    index = out / "index.html"
    atomic_write_bytes(index, document.encode("utf-8"))  # whole or not at all: a full disk leaves no torn page
    summary = out / "summary.md"
    atomic_write_bytes(summary, (f"# {_md(title)}\n\n" + "\n".join(page.md)).encode("utf-8"))
    return {"index": str(index), "summary": str(summary), "figures": [str(out / "figures" / f"{n}.png")
                                                                      for n in page.figures]}


def safe_slug(name: str, limit: int = 80) -> str:
    """``name`` as one folder name that stays where it is put: kept as it is when it is already one (letters,
    digits, ``-``, ``_``, inner dots; not ``.``/``..`` or hidden; at most ``limit`` characters), else its safe
    characters, cut to ``limit``, with a short hash of the whole name, so names that differ stay apart."""
    if len(name) <= limit and re.fullmatch(r"[A-Za-z0-9_-][A-Za-z0-9_.-]*", name) and name.strip(".") == name:
        return name
    slug = re.sub(r"[^A-Za-z0-9_-]+", "_", name).strip("_")[:limit] or "report"
    return f"{slug}-{hashlib.sha256(name.encode('utf-8', 'surrogatepass')).hexdigest()[:8]}"


def default_out(experiments: list[str] | None) -> Path:
    """``reports/<experiments>``: always one folder inside ``reports/`` (an experiment named ``..`` or with a
    slash, or one too long for the file system, included)."""
    return Path("reports") / safe_slug("-".join(experiments) if experiments else "all")


def report_experiments(experiments: list[str] | None = None, out: Path | None = None, *, log: bool = True,
                       log_to: list[str] | None = None) -> dict:
    """Load every model's latest finished run in ``experiments`` from the store, build the report into ``out``
    (default ``reports/<experiments>/``) and, with ``log``, attach it to the parent runs it covers (or only to
    the run ids in ``log_to``) under the artifact folder ``report/``."""
    from benchmark.tracking import ResultStore

    store = ResultStore()
    models = load_models(experiments, store=store)
    out = out or default_out(experiments)
    document = build_report(models, out)
    document["logged_to"] = []
    if log:
        targets = [m.run_id for m in models if log_to is None or m.run_id in log_to]
        # Only the files this report wrote, never whatever else the folder holds (it may be any folder: --out);
        # the page last, so a run's report/index.html is only ever replaced once its figures are there.
        files = [(Path(f), "report/figures") for f in document["figures"]]
        files += [(Path(document["summary"]), "report"), (Path(document["index"]), "report")]
        for run_id in targets:
            store.log_files(run_id, files)
            document["logged_to"].append(run_id)
    return document
