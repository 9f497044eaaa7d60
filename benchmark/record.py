"""The run record: every name under which a suite run's results are written to MLflow and read back.

The pipeline writes through ``benchmark.recorder``; ``results``, ``compare``, the report and the CLI read through
``results.ModelRun``. Both sides take every metric, tag and artifact name from here, so a reader reads exactly
what was written, and a new metric is declared once. ``LinearFit`` and ``SignificanceTest`` are the typed form of
the two families of parent metrics that readers parse back.

A parent run (one per suite, model and settings) holds the suite, SliCK's categories, the mixtures and the
analysis; a child run (one per variant) holds the variant's per-epoch metrics (``EPOCH_METRIC_PREFIXES``), its
summary metrics at each stop, its predictions and its history.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import ClassVar

from pydantic import BaseModel, ConfigDict

# The two points of a fine-tuning run the paper reports: the epoch of best dev accuracy, and the last epoch.
STOPS = ("early_stop", "convergence")
# Per-epoch metrics of a variant (logged at step = epoch); everything else a variant logs is a summary at step 0.
EPOCH_METRIC_PREFIXES = ("train/acc/", "dev/acc/", "test/acc/", "ood/acc/")
# Summary metrics aggregated over seeds on the parent run.
SEED_METRICS = tuple(f"{stop}/{split}/acc/{group}" for stop in STOPS for split in ("test", "ood")
                     for group in ("all", "Known", "Unknown")) + ("convergence/train/acc/all",)
INTERVAL_SUFFIXES = ("", "/ci_low", "/ci_high")  # a mean, then its interval


class Artifact:
    """Artifact paths, relative to a run's artifact root."""

    SUITE = "suite.resolved.yaml"
    CATEGORIES = "slick/categories.parquet"
    CATEGORY_FIGURE = "slick/categories.png"
    COUNTS_PER_RELATION = "slick/counts_per_relation.json"
    RELATIONS = "slick/relations.json"
    CONFUSION = "slick/confusion_exposure.json"
    COMPOSITION = "mixtures/relation_composition.json"
    NOTES = "mixtures/notes.txt"
    RUNS = "summary/runs.parquet"
    MIXTURES = "summary/mixtures.parquet"
    POINTS = "linear/points.parquet"
    FINDINGS = "findings.json"
    SWEEP_FIGURE = "unknown_sweep.png"
    # a variant's
    HISTORY = "history.parquet"
    PREDICTIONS = "predictions.json"
    CURVES = "fitting_curves.png"

    @staticmethod
    def linear_figure(label: str = "") -> str:
        return f"linear_model{'_' + label if label else ''}.png"


def seed_metric(mixture: str, metric: str, suffix: str = "") -> str:
    """A mixture's metric, mean over its seeds (``suffix``: "", "/ci_low" or "/ci_high")."""
    return f"seeds/{mixture}/{metric}{suffix}"


def best_tag(stop: str, label: str = "") -> str:
    """The tag of the best mixture at ``stop`` (per swept configuration ``label``)."""
    return f"best/{stop}" + (f".{label}" if label else "")


def chosen_on_tag(stop: str) -> str:
    """The tag of the split that chose the best mixture at ``stop`` (dev, or test when no dev accuracy exists)."""
    return f"best/{stop}/chosen_on"


def finding_tag(name: str, part: str = "") -> str:
    """A finding's verdict (``part`` ""), or its ``statement``, ``evidence`` or per-fraction ``rows`` (JSON)."""
    return f"finding/{name}" + (f"/{part}" if part else "")


def finding_names(tags: Mapping[str, str]) -> list[str]:
    """The findings judged on a run, as named in its tags (unordered)."""
    return [k.removeprefix("finding/") for k in tags if k.startswith("finding/") and k.count("/") == 1]


def _finite(values: Mapping[str, float | None]) -> dict[str, float]:
    """Only the numbers MLflow can chart: a missing or NaN value is no metric rather than a gap."""
    return {k: v for k, v in values.items() if v is not None and not math.isnan(v)}


class SignificanceTest(BaseModel):
    """The paper's paired test of one mixture against the best at one stop: p, Holm-adjusted p, and the mean
    difference, overall and per test category (``groups``)."""

    model_config = ConfigDict(extra="ignore")
    VALUES: ClassVar[tuple[str, ...]] = ("p", "p_holm", "mean_diff")

    p: float
    p_holm: float
    mean_diff: float
    groups: dict[str, dict] = {}

    @staticmethod
    def prefix(stop: str) -> str:
        return f"significance/{stop}/"

    def metrics(self, stop: str, name: str) -> dict[str, float]:
        base = f"{self.prefix(stop)}{name}/"
        values = {f"{base}{k}": getattr(self, k) for k in self.VALUES}
        for group, g in self.groups.items():
            values |= {f"{base}{k}_{group}": g[k] for k in self.VALUES}
        return _finite(values)

    @classmethod
    def read(cls, metrics: Mapping[str, float], stop: str) -> dict[str, dict[str, float]]:
        """Per mixture, the values logged under ``stop`` (``p``, ``p_holm``, ``mean_diff`` and per group)."""
        out: dict[str, dict[str, float]] = {}
        prefix = cls.prefix(stop)
        for key, value in metrics.items():
            if key.startswith(prefix):
                mixture, _, what = key.removeprefix(prefix).rpartition("/")
                out.setdefault(mixture, {})[what] = value
        return out


# The linear model's splits as fitted (benchmark.analyse.findings.linear_fits), and their metric prefixes.
LINEAR_PREFIXES = {"in_distribution": "", "ood": "/ood", "in_distribution_steps": "/steps", "ood_steps": "/ood/steps"}


class LinearFit(BaseModel):
    """One fit of the paper's linear model (accuracy ~ β0 + β_kn·N_kn/|D| + β_unk·N_unk/|D| [+ β_steps·steps]),
    with percentile intervals over variants."""

    model_config = ConfigDict(extra="ignore")
    TERMS: ClassVar[tuple[str, ...]] = ("beta0", "beta_kn", "beta_unk")

    beta0: float | None = None  # None (here and below): not logged, as MLflow keeps no NaN
    beta_kn: float | None = None
    beta_unk: float
    r2: float | None = None
    n: float | None = None
    beta_steps: float | None = None
    beta0_ci_low: float = math.nan
    beta0_ci_high: float = math.nan
    beta_kn_ci_low: float = math.nan
    beta_kn_ci_high: float = math.nan
    beta_unk_ci_low: float = math.nan
    beta_unk_ci_high: float = math.nan
    beta_steps_ci_low: float | None = None
    beta_steps_ci_high: float | None = None

    @staticmethod
    def prefix(split: str = "in_distribution", label: str = "") -> str:
        return ("linear" + (f"/{label}" if label else "")) + LINEAR_PREFIXES[split]

    def metrics(self, split: str, label: str = "") -> dict[str, float]:
        base = self.prefix(split, label)
        terms = self.TERMS + (("beta_steps",) if split.endswith("_steps") else ())  # only that fit has the covariate
        values = {f"{base}/{name}": getattr(self, name) for name in (*terms, "r2", "n")}
        for name in terms:
            for side in ("low", "high"):
                values[f"{base}/{name}/ci_{side}"] = getattr(self, f"{name}_ci_{side}")
        return _finite(values)

    @classmethod
    def read(cls, metrics: Mapping[str, float], split: str = "in_distribution", label: str = "") -> LinearFit | None:
        """The fit logged for ``split`` (None when the run has none)."""
        base = cls.prefix(split, label)
        if f"{base}/beta_unk" not in metrics:
            return None
        values = {name: metrics[f"{base}/{name}"] for name in (*cls.TERMS, "r2", "n") if f"{base}/{name}" in metrics}
        for name in cls.TERMS:
            for side in ("low", "high"):
                values[f"{name}_ci_{side}"] = metrics.get(f"{base}/{name}/ci_{side}", math.nan)
        return cls(**values)
