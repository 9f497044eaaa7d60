"""Models side by side: one row per model, from the tracked results alone (pure: ``results.ModelRun`` values in,
one JSON-ready document out; ``python -m benchmark compare`` prints it).

Per model: test accuracy per SliCK category at EARLY_STOP and CONVERGENCE on the reference mixture (the D nearest
50% Unknown, mean over its seeds; ``report_html.reference_mixture``), fitting speed (epochs until 50% of each
category's train examples are fitted, mean over every variant that got there), the linear model's β's with
their 95% intervals, and the verdict on each of the paper's findings.
"""

from __future__ import annotations

import math

from benchmark.categories import CATEGORIES
from benchmark.report_html import reference_mixture
from benchmark.results import ModelRun

GROUPS = ("all", *CATEGORIES)
STOPS = ("early_stop", "convergence")


def _mean(values: list[float | None]) -> float | None:
    usable = [v for v in values if v is not None and not math.isnan(v)]
    return sum(usable) / len(usable) if usable else None


def model_row(model: ModelRun) -> dict:
    mixture = reference_mixture(model)
    runs = model.children_of(mixture or "")
    accuracy = {stop: {group: _mean([c.metrics.get(f"{stop}/test/acc/{group}") for c in runs]) for group in GROUPS}
                for stop in STOPS}
    fitting = {}
    for category in (*CATEGORIES, "Known"):
        key = f"fit/epochs_to_50pct/{category}"
        with_category = [c for c in model.children if f"train/acc/{category}" in c.metrics or key in c.metrics]
        reached = [c.metrics[key] for c in with_category if key in c.metrics and not math.isnan(c.metrics[key])]
        fitting[category] = {"mean": _mean(reached), "runs": len(reached),
                             "never": len(with_category) - len(reached)}
    linear = model.linear()
    betas = {name: {"value": linear.get(name), "ci_low": linear.get(f"{name}_ci_low"),
                    "ci_high": linear.get(f"{name}_ci_high")} for name in ("beta0", "beta_kn", "beta_unk")}
    return {"model": model.base_model, "label": model.label, "experiment": model.experiment,
            "parameters": model.model_params, "knowledge_source": model.knowledge_source, "run_id": model.run_id,
            "variants": len(model.children), "reference_mixture": mixture, "reference_runs": len(runs),
            "accuracy": accuracy, "fit_epochs_50pct": fitting,
            "linear": {**betas, "r2": linear.get("r2")} if linear else {},
            "findings": {f["name"]: f["verdict"] for f in model.findings}}


def compare(models: list[ModelRun]) -> dict:
    """The cross-model document: ``models`` (one row each, see ``model_row``), and the finding names in order."""
    rows = [model_row(m) for m in models]
    findings: list[str] = []
    for row in rows:
        findings += [name for name in row["findings"] if name not in findings]
    return {"experiments": sorted({m.experiment for m in models}), "categories": list(GROUPS),
            "findings": findings, "models": rows}
