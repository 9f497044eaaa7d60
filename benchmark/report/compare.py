"""Models side by side: one row per model, from the tracked results alone (pure: ``results.ModelRun`` values in,
one JSON-ready document out; ``python -m benchmark compare`` prints it).

Per model: test accuracy per SliCK category at EARLY_STOP and CONVERGENCE on the reference mixture (the D nearest
50% Unknown, mean over its seeds; ``select.reference_mixture``), fitting speed (epochs until 50% of each
category's train examples are fitted, mean over every variant that got there), the linear model's β's with
their 95% intervals, and the verdict on each of the paper's findings.
"""

from __future__ import annotations

import math
from pathlib import Path

from benchmark.categories import CATEGORIES
from benchmark.record import STOPS, acc_metric, fit_metric
from benchmark.report.select import GROUPS, epochs_to_fit, reference_mixture
from benchmark.results import ModelRun


def _mean(values: list[float | None]) -> float | None:
    usable = [v for v in values if v is not None and not math.isnan(v)]
    return sum(usable) / len(usable) if usable else None


def model_row(model: ModelRun) -> dict:
    mixture = reference_mixture(model)
    runs = model.children_of(mixture or "")
    accuracy = {stop: {group: _mean([c.metrics.get(acc_metric("test", group, stop)) for c in runs]) for group in GROUPS}
                for stop in STOPS}
    fitting = {}
    for category in (*CATEGORIES, "Known"):
        key = fit_metric(category)
        with_category = [c for c in model.children if acc_metric("train", category) in c.metrics or key in c.metrics]
        reached = epochs_to_fit(model, category)
        fitting[category] = {"mean": _mean(reached), "runs": len(reached),
                             "never": len(with_category) - len(reached)}
    linear, record = model.linear(), model.record
    betas = {name: {"value": linear.get(name), "ci_low": linear.get(f"{name}_ci_low"),
                    "ci_high": linear.get(f"{name}_ci_high")} for name in ("beta0", "beta_kn", "beta_unk")}
    return {"model": model.base_model, "label": model.label, "experiment": model.experiment,
            "parameters": model.model_params, "knowledge_source": model.knowledge_source, "run_id": model.run_id,
            "variants": len(model.children), "reference_mixture": mixture, "reference_runs": len(runs),
            "accuracy": accuracy, "fit_epochs_50pct": fitting,
            "linear": {**betas, "r2": linear.get("r2")} if linear else {},
            "findings": {f.name: f.verdict for f in model.findings},
            "settings": {"suite": record.suite_file or "", "epochs": record.epochs,
                         "seeds": record.seed_list if record.seeds is not None else None, "key": record.settings_key}}


def compare(models: list[ModelRun]) -> dict:
    """The cross-model document: ``models`` (one row each, see ``model_row``), and the finding names in order."""
    rows = [model_row(m) for m in models]
    findings: list[str] = []
    for row in rows:
        findings += [name for name in row["findings"] if name not in findings]
    return {"experiments": sorted({m.experiment for m in models}), "categories": list(GROUPS),
            "findings": findings, "models": rows, "warning": _mixed_settings(rows)}


def _mixed_settings(rows: list[dict]) -> str | None:
    """A line when the rows were run with different suite settings (one model at 30 epochs beside another at 3):
    ``compare`` sets each model's latest finished run side by side, whatever it was run with."""
    keyed = all(r["settings"]["key"] for r in rows)  # runs logged before the key was: what they do say

    def settings(row: dict) -> tuple:
        s = row["settings"]
        return (s["key"],) if keyed else (s["epochs"], s["seeds"], Path(s["suite"]).name)

    if len({settings(r) for r in rows}) <= 1:
        return None
    shown = "; ".join(f"{r['label']}: {Path(r['settings']['suite']).name or '?'}, {r['settings']['epochs']} epochs, "
                      f"seeds {r['settings']['seeds']}" for r in rows)
    return ("these models were run with different suite settings, so their rows are not like for like (" + shown +
            "); run the same suite for each (a ladder: the suite key models), or compare one experiment per setting")
