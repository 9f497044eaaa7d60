"""The run record: every name under which a suite run's results are written to MLflow and read back, and the
typed models they are written from and read into.

The pipeline writes through ``benchmark.recorder`` (and ``plan``, ``pipeline`` for the runs' own tags);
``results``, ``compare``, the report and the CLI read through ``results.ModelRun``. Both sides take every metric,
tag and artifact name from here, so a reader reads exactly what was written, and a new metric is declared once:

- ``ParentRecord``: what a parent run (one per suite, model and settings) says of itself, as tags. It also holds
  the suite, SliCK's categories and the mixtures (``Artifact``) and the ``Analysis``: the seed means
  (``seed_metric``), the ``SignificanceTest`` and ``LinearFit`` metric families, the best mixtures (``best_tag``)
  and each ``Finding`` (``finding_tag``).
- ``VariantRecord``: what a child run (one per variant) says of itself, as tags. It holds the variant's per-epoch
  metrics (``EPOCH_METRIC_PREFIXES``), its summary metrics at each stop, its predictions and its history.

``tests/test_record.py`` writes each through a real MLflow store and reads it back.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from typing import Any, ClassVar, Literal, get_args

import polars as pl
from pydantic import BaseModel, ConfigDict, Field
from pydantic.dataclasses import dataclass

from benchmark.errors import BenchmarkError

# The two points of a fine-tuning run the paper reports: the epoch of best dev accuracy, and the last epoch.
STOPS = ("early_stop", "convergence")
# Per-epoch metrics of a variant (logged at step = epoch); everything else a variant logs is a summary at step 0.
EPOCH_METRIC_PREFIXES = ("train/acc/", "dev/acc/", "test/acc/", "ood/acc/")


def acc_metric(split: str, group: str = "all", stop: str = "") -> str:
    """A variant's accuracy on ``split`` (train, dev, test, ood) over ``group`` (all, Known or a category): per epoch
    (``<split>/acc/<group>``, also its history's column) or at a ``stop`` (``<stop>/<split>/acc/<group>``)."""
    return f"{stop}/{split}/acc/{group}" if stop else f"{split}/acc/{group}"


def fit_metric(category: str, percent: int = 50) -> str:
    """A variant's epochs until ``percent``% of its train examples of ``category`` are fitted (NaN: never)."""
    return f"fit/epochs_to_{percent}pct/{category}"


def slick_count(category: str, relation: str = "") -> str:
    """Questions SliCK put in ``category`` (of one ``relation``, on a categorize run)."""
    return f"slick/count/{relation}/{category}" if relation else f"slick/count/{category}"


# Summary metrics aggregated over seeds on the parent run.
SEED_METRICS = tuple(acc_metric(split, group, stop) for stop in STOPS for split in ("test", "ood")
                     for group in ("all", "Known", "Unknown")) + (acc_metric("train", stop="convergence"),)
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

    model_config = ConfigDict(extra="allow")  # the test's other figures (``accuracy``, ``questions``, ...) travel along
    VALUES: ClassVar[tuple[str, ...]] = ("p", "p_holm", "mean_diff")

    p: float
    p_holm: float
    mean_diff: float
    best: str = Field("", description="the mixture tested against (the best at this stop)")
    best_chosen_on: str = Field("", description='"dev", or "test" when no dev accuracy chose it (optimistic)')
    groups: dict[str, dict] = Field({}, description="per test category: the same test on its questions")

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
    """One fit of the paper's linear model (accuracy ~ β0 + β_kn·N_kn/|D| + β_unk·N_unk/|D| [+ β_steps·steps]):
    what ``stats.linear_model_ci`` computes, the findings judge, the recorder logs and the readers read back
    (``read``: the logged part, TERMS with their intervals, r2 and n). Each β comes with ``_ci_low``/``_ci_high``
    (CR2 over variants, Bell-McCaffrey df) and, where the evidence shows it, the OLS t-interval beside it. A value
    the fit has not is None (MLflow keeps no NaN); the fit's other figures (``rank``, ``target``, ...) travel as
    extras."""

    model_config = ConfigDict(frozen=True, extra="allow")
    TERMS: ClassVar[tuple[str, ...]] = ("beta0", "beta_kn", "beta_unk")

    n: int | None = Field(None, description="points (variant, epoch)")
    n_variants: int | None = Field(None, description="variants: the clusters of the CR2 intervals")
    r2: float | None = None
    beta0: float | None = None
    beta_kn: float | None = Field(None, description="accuracy per the whole set of Known examples fitted")
    beta_unk: float | None = Field(None, description="accuracy per the whole set of Unknown examples fitted")
    beta_steps: float | None = Field(None, description="per 100 optimizer steps (only a fit with steps as a "
                                                       "covariate)")
    beta_kn_plus_unk: float | None = Field(None, description="β_kn + β_unk, with its CR2 interval")
    unk_kn_ratio: float | None = Field(None, description="−β_unk/β_kn, with a Fieller interval (NaN where β_kn "
                                                         "is not distinguishable from 0: unbounded)")
    beta_unk_df: float | None = Field(None, description="Bell-McCaffrey degrees of freedom of β_unk's interval")
    # The intervals, (low, high) per estimate above.
    beta0_ci_low: float | None = None
    beta0_ci_high: float | None = None
    beta_kn_ci_low: float | None = None
    beta_kn_ci_high: float | None = None
    beta_unk_ci_low: float | None = None
    beta_unk_ci_high: float | None = None
    beta_steps_ci_low: float | None = None
    beta_steps_ci_high: float | None = None
    beta_kn_plus_unk_ci_low: float | None = None
    beta_kn_plus_unk_ci_high: float | None = None
    unk_kn_ratio_ci_low: float | None = None
    unk_kn_ratio_ci_high: float | None = None
    beta_kn_ols_ci_low: float | None = None
    beta_kn_ols_ci_high: float | None = None
    beta_unk_ols_ci_low: float | None = None
    beta_unk_ols_ci_high: float | None = None

    def value(self, key: str) -> float:
        """The number under ``key`` as a float; a missing one (None) reads NaN."""
        value = getattr(self, key, None)
        return math.nan if value is None else float(value)

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
        """The fit logged for ``split`` (None when the run has none); an interval not logged reads NaN."""
        base = cls.prefix(split, label)
        if f"{base}/beta_unk" not in metrics:
            return None
        terms = cls.TERMS + (("beta_steps",) if split.endswith("_steps") else ())
        values = {name: metrics[f"{base}/{name}"] for name in (*terms, "r2", "n") if f"{base}/{name}" in metrics}
        for name in terms:
            for side in ("low", "high"):
                values[f"{name}_ci_{side}"] = metrics.get(f"{base}/{name}/ci_{side}", math.nan)
        return cls(**values)


Verdict = Literal["holds", "not shown", "contradicted"]


@dataclass(frozen=True)
class Finding:
    """One of the paper's claims judged on a run: written as the parent's ``finding/<name>`` tags (``tags``),
    read back from them (``read``: everything but ``numbers``, which are in the run's findings.json).

    ``name``: slug for the MLflow tag ``finding/<name>``; ``statement``: the paper's claim; ``verdict``: holds /
    not shown / contradicted; ``evidence``: one line with the numbers and the deciding interval; ``numbers``:
    the figures behind it (metric-name-safe keys; NaN where an interval could not be computed); ``rows``: the
    per-fraction tests behind a per-fraction verdict (``label``, ``estimate``, ``ci_low``, ``ci_high``,
    ``confidence``, ``p``, ``p_holm``, ``n``, ``method``, ``verdict`` and what each finding adds).
    """

    name: str
    statement: str
    verdict: Verdict
    evidence: str
    numbers: dict[str, float] = Field(default_factory=dict)
    rows: tuple[dict[str, Any], ...] = ()

    def tags(self) -> dict[str, str]:
        tags = {finding_tag(self.name): self.verdict, finding_tag(self.name, "evidence"): self.evidence,
                finding_tag(self.name, "statement"): self.statement}
        if self.rows:
            tags[finding_tag(self.name, "rows")] = json.dumps(list(self.rows), allow_nan=True)
        return tags

    @classmethod
    def read(cls, tags: Mapping[str, str], name: str, run: str = "") -> Finding:
        """The finding ``name`` from the tags of ``run``; rows that are not the JSON list they should be read as
        none, a verdict that is none of the three is an error (a report must not show a verdict nobody gave)."""
        verdict = tags[finding_tag(name)]
        if verdict not in get_args(Verdict):
            raise BenchmarkError(f"run {run or '?'}: tag {finding_tag(name)!r} is {verdict!r}; expected one of "
                                 + ", ".join(repr(v) for v in get_args(Verdict)))
        try:
            rows = json.loads(tags.get(finding_tag(name, "rows")) or "[]")
        except ValueError:
            rows = []
        return cls(name, tags.get(finding_tag(name, "statement"), name.replace("_", " ")), verdict,
                   tags.get(finding_tag(name, "evidence"), ""),
                   rows=tuple(r for r in rows if isinstance(r, dict)) if isinstance(rows, list) else ())

    def document(self) -> dict[str, Any]:
        """The finding as plain data (the run's JSON document, the terminal summary)."""
        return {"name": self.name, "statement": self.statement, "verdict": self.verdict, "evidence": self.evidence,
                "numbers": dict(self.numbers), "rows": [dict(r) for r in self.rows]}


def _number(value: str | None) -> float | None:
    try:
        return None if value in (None, "") else float(value)
    except ValueError:
        return None


VARIANT_TAG = "slick.variant"


class VariantRecord(BaseModel):
    """What a variant's (child) run says of itself, as tags: for "Group by" in the MLflow chart view (seeds of one
    mixture aggregate) and for the readers. Its metrics are the per-epoch ``EPOCH_METRIC_PREFIXES`` and the
    summaries at each stop; its artifacts ``Artifact.HISTORY``, ``PREDICTIONS`` and ``CURVES``."""

    model_config = ConfigDict(frozen=True)

    name: str = Field(description='the variant ("unknown_50_seed1", with the swept settings when a suite sweeps)')
    mixture: str = Field(description="the seed-independent fine-tuning set (Mixture.name)")
    kind: str = Field(description="Mixture.kind: unknown_fraction | known_only | single_category | natural | "
                                  "idk_relabel")
    seed: int | None = None
    unknown_fraction: float | None = Field(None, description="the mixture's nominal X (None for kinds without)")
    base_model: str = ""
    knowledge_source: str = ""

    def tags(self) -> dict[str, str]:
        fraction = self.unknown_fraction
        return {"base_model": self.base_model, "knowledge_source": self.knowledge_source, "variant_kind": self.kind,
                "mixture": self.mixture, "seed": "" if self.seed is None else str(self.seed),
                "unknown_fraction": "" if fraction is None else f"{fraction:g}", VARIANT_TAG: self.name}

    @classmethod
    def read(cls, tags: Mapping[str, str], params: Mapping[str, str], run_name: str) -> VariantRecord:
        """From a child run's tags, falling back on its params (runs logged before the tags existed)."""
        seed = _number(tags.get("seed", params.get("seed")))
        return cls(name=tags.get(VARIANT_TAG, run_name), mixture=tags.get("mixture", params.get("mixture", run_name)),
                   kind=tags.get("variant_kind", params.get("kind", "")), seed=None if seed is None else int(seed),
                   unknown_fraction=_number(tags.get("unknown_fraction", params.get("unknown_fraction"))),
                   base_model=tags.get("base_model", ""), knowledge_source=tags.get("knowledge_source", ""))


class ParentRecord(BaseModel):
    """What a suite's parent run (or a ``categorize`` run, which has only the first three) says of itself, as
    tags: the model, the data, the suite's keys and the code. The machine's tags (``numerics.*``,
    ``environment.*``) and SliCK's back-end (``slick.*``) go beside them."""

    model_config = ConfigDict(frozen=True)

    base_model: str
    model_params: int | None = Field(None, description="parameters, when known without loading the model")
    knowledge_source: str = ""
    suite_key: str | None = Field(None, description="the resolved suite's content key")
    settings_key: str | None = Field(None, description="the key of the settings its results depend on")
    code_version: str | None = None
    suite_file: str | None = None
    seeds: tuple[int, ...] | None = None
    epochs: int | None = None

    def tags(self) -> dict[str, str]:
        """Every field set, as text (``seeds`` comma-separated, an unknown ``model_params`` empty)."""
        values = self.model_dump(exclude_none=True)
        values["model_params"] = "" if self.model_params is None else str(self.model_params)
        if self.seeds is not None:
            values["seeds"] = self.seed_list
        return {k: str(v) for k, v in values.items()}

    @property
    def seed_list(self) -> str:
        return ",".join(map(str, self.seeds or ()))

    @classmethod
    def read(cls, tags: Mapping[str, str], run_name: str) -> ParentRecord:
        params, epochs = _number(tags.get("model_params")), _number(tags.get("epochs"))
        seeds = tags.get("seeds")
        return cls(base_model=tags.get("base_model", run_name), model_params=None if params is None else int(params),
                   knowledge_source=tags.get("knowledge_source", ""), suite_key=tags.get("suite_key"),
                   settings_key=tags.get("settings_key"), code_version=tags.get("code_version"),
                   suite_file=tags.get("suite_file"), epochs=None if epochs is None else int(epochs),
                   seeds=None if seeds is None else tuple(int(s) for s in seeds.split(",") if s.strip().isdigit()))


class Analysis(BaseModel):
    """What the analysis of one suite run found (``benchmark.analyse.suite.analyse``), as the recorder writes it to
    the parent run; ``document()`` is its JSON form (the CLI's and the report's)."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    runs: list[dict] = Field(description="one row per finished variant: the findings' input (``finished_runs``)")
    mixtures: pl.DataFrame = Field(description="per mixture: realised Unknown share, epochs, each SEED_METRICS mean "
                                               "with its interval")
    significance: dict[str, dict[str, SignificanceTest]] = Field(description="stop -> mixture[.config] -> the "
                                                                             "paired test against the best")
    best: dict[str, str] = Field(description="the best mixture per stop (and configuration), and what chose it")
    fits: dict[str, dict[str, LinearFit]] = Field(description="configuration label -> split -> linear fit")
    points: dict[str, pl.DataFrame] = Field(description="configuration label -> the linear model's (variant, "
                                                        "epoch) points")
    findings: list[Finding] = Field([], description="in the paper's order, per configuration")

    @property
    def runs_table(self) -> pl.DataFrame:
        """The runs without their per-question lists: one scalar row per variant."""
        scalar = [{k: v for k, v in r.items() if not isinstance(v, list)} for r in self.runs]
        return pl.DataFrame(scalar, infer_schema_length=None)

    def document(self) -> dict:
        linear = {f"{label}/{split}" if label else split: fit.model_dump(exclude_unset=True,
                                                                         exclude={"target", "covariate"})
                  for label, fits in self.fits.items() for split, fit in fits.items()}
        return {
            "mixtures": self.mixtures.to_dicts(),
            "linear": linear,
            "significance": {stop: {name: t.model_dump(include={"p", "p_holm", "mean_diff", "best", "best_chosen_on"})
                                    for name, t in tests.items()} for stop, tests in self.significance.items()},
            "findings": [f.document() for f in self.findings],
        }
