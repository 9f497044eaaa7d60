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
baseline; and the paper's findings as verdicts with the interval that decides each. Each is one function of
``sections`` (in page order: ``sections.SECTIONS``); what it shows is chosen in ``select``, and ``page`` escapes and
writes it.
"""

from __future__ import annotations

from pathlib import Path

from benchmark.report.page import _Page, _write, safe_slug
from benchmark.report.sections import SECTIONS
from benchmark.results import ModelRun, load_models


def build_report(models: list[ModelRun], out: Path, *, title: str | None = None) -> dict:
    """Write ``index.html``, ``summary.md`` and ``figures/`` into ``out``; returns their (absolute) paths and the
    models it covers."""
    out = out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    page = _Page(out)
    experiments = sorted({m.experiment for m in models})
    title = title or f"slick-bench report: {', '.join(experiments) or 'no runs'}"
    for section in SECTIONS:
        section(page, models)
    document = _write(page, out, title)
    document["models"] = [{"model": m.base_model, "label": m.label, "experiment": m.experiment, "run_id": m.run_id}
                          for m in models]
    return document


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
