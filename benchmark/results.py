"""A suite's tracked results, read back from the MLflow store alone (``benchmark.tracking.ResultStore``), so a
report or a comparison works on runs made earlier, on another machine, or on a team server.

One ``ModelRun`` per base model and experiment: the latest FINISHED parent run carrying that ``base_model`` tag,
with its child runs (one per fine-tuning variant). Everything is read through the types the pipeline wrote it
with (``benchmark.record``): the parent's ``ParentRecord`` (its tags), its ``Finding`` verdicts (tags), its
``LinearFit`` and ``SignificanceTest`` metrics and its ``Artifact`` tables (the mixtures' seed means with
t-intervals, SliCK's categories, the exposure confusion, the counts per relation); per child its
``VariantRecord`` (tags), its summary metrics and its history (rebuilt from the metric history when the artifact
is absent) and predictions.

``load_models(..., details=False)`` reads tags and metrics only (what ``compare`` needs: no downloads).
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import polars as pl

from benchmark.analyse.findings import FINDINGS  # the paper's claims in its order (docs/method.md §5)
from benchmark.record import (
    EPOCH_METRIC_PREFIXES,
    Artifact,
    Finding,
    LinearFit,
    ParentRecord,
    SignificanceTest,
    VariantRecord,
    finding_names,
)
from benchmark.tracking import ResultStore, RunRecord, read_table

PAPER_LINEAR = {"beta0": 36.9, "beta_kn": 7.3, "beta_unk": -8.3, "r2": 0.86}  # in-distribution, accuracy points


@dataclass
class ChildRun:
    run_id: str
    name: str
    mixture: str
    kind: str
    seed: int | None
    unknown_fraction: float | None
    metrics: dict[str, float]
    params: dict[str, str]
    history: pl.DataFrame | None = None
    predictions: pl.DataFrame | None = None


@dataclass
class ModelRun:
    """One base model's latest finished suite run in one experiment."""

    experiment: str
    run_id: str
    base_model: str
    model_params: int | None
    knowledge_source: str
    tags: dict[str, str]
    metrics: dict[str, float]
    children: list[ChildRun] = field(default_factory=list)
    mixtures: pl.DataFrame | None = None
    categories: pl.DataFrame | None = None
    confusion: pl.DataFrame | None = None
    counts_per_relation: pl.DataFrame | None = None
    label: str = ""

    @property
    def findings(self) -> list[Finding]:
        """The paper's findings judged on this run (their ``numbers`` are in its findings.json, not here), in the
        paper's order. A suite with ``sweep:`` has one of each per configuration, named
        ``<finding>.<configuration>``."""
        order = list(FINDINGS)

        def position(name: str) -> tuple:
            base, _, config = name.partition(".")
            return (order.index(base) if base in order else len(order), config, name)

        return [Finding.read(self.tags, n, self.run_id) for n in sorted(finding_names(self.tags), key=position)]

    @property
    def record(self) -> ParentRecord:
        """What the parent run says of itself (its suite's keys, file, seeds and epochs), from its tags."""
        return ParentRecord.read(self.tags, self.base_model)

    def linear(self, split: str = "in_distribution") -> dict[str, float]:
        """β0, β_kn, β_unk (with ci_low/ci_high), r2 and n of the linear model; empty when it was not fitted."""
        fit = LinearFit.read(self.metrics, split)
        return {} if fit is None else fit.model_dump(exclude_none=True)

    def significance(self, stop: str) -> dict[str, dict[str, float]]:
        """Per mixture: the paper's paired test against the best mixture at ``stop`` (p, mean_diff)."""
        return SignificanceTest.read(self.metrics, stop)

    def children_of(self, mixture: str) -> list[ChildRun]:
        return [c for c in self.children if c.mixture == mixture]


def _child(record: RunRecord) -> ChildRun:
    variant = VariantRecord.read(record.tags, record.params, record.name)
    return ChildRun(run_id=record.run_id, name=variant.name, mixture=variant.mixture, kind=variant.kind,
                    seed=variant.seed, unknown_fraction=variant.unknown_fraction, metrics=record.metrics,
                    params=record.params)


def _history_from_metrics(store: ResultStore, child: ChildRun) -> pl.DataFrame:
    by_epoch: dict[int, dict] = {}
    for key in child.metrics:
        if key.startswith(EPOCH_METRIC_PREFIXES):
            for step, value in store.metric_history(child.run_id, key):
                if step > 0:
                    by_epoch.setdefault(step, {"epoch": step})[key] = value
    return pl.DataFrame(sorted(by_epoch.values(), key=lambda r: r["epoch"])) if by_epoch else pl.DataFrame()


def _read(store: ResultStore, run_id: str, path: str, into: Path) -> pl.DataFrame | None:
    local = store.artifact(run_id, path, into)
    if local is None:
        return None
    return pl.read_parquet(local) if path.endswith(".parquet") else read_table(local)


def select_parents(parents: list[RunRecord]) -> list[RunRecord]:
    """The latest FINISHED parent per base_model (``parents`` newest first), in order of first appearance."""
    chosen: dict[str, RunRecord] = {}
    for run in sorted(parents, key=lambda r: -r.start_time):
        if run.status == "FINISHED":
            chosen.setdefault(ParentRecord.read(run.tags, run.name).base_model, run)
    return list(chosen.values())


def load_models(experiments: list[str] | None = None, *, details: bool = True,
                store: ResultStore | None = None) -> list[ModelRun]:
    """Every model's latest finished run in the experiments named (default: every experiment with suite runs),
    ordered by experiment, then by parameter count (smallest first), then by name."""
    store = store or ResultStore()
    models: list[ModelRun] = []
    with tempfile.TemporaryDirectory() as tmp:
        for experiment_id, experiment in store.experiments(experiments):
            found = []
            for parent in select_parents(store.parents(experiment_id)):
                identity = ParentRecord.read(parent.tags, parent.name)
                model = ModelRun(experiment=experiment, run_id=parent.run_id, base_model=identity.base_model,
                                 model_params=identity.model_params, knowledge_source=identity.knowledge_source,
                                 tags=parent.tags, metrics=parent.metrics,
                                 children=[_child(r) for r in store.children(experiment_id, parent.run_id)
                                           if r.status == "FINISHED"])
                model.children.sort(key=lambda c: (c.unknown_fraction if c.unknown_fraction is not None else -1,
                                                   c.mixture, c.seed or 0))
                if details:
                    folder = Path(tmp) / parent.run_id
                    model.mixtures = _read(store, parent.run_id, Artifact.MIXTURES, folder)
                    model.categories = _read(store, parent.run_id, Artifact.CATEGORIES, folder)
                    model.confusion = _read(store, parent.run_id, Artifact.CONFUSION, folder)
                    model.counts_per_relation = _read(store, parent.run_id, Artifact.COUNTS_PER_RELATION, folder)
                    for child in model.children:
                        where = Path(tmp) / child.run_id
                        child.history = _read(store, child.run_id, Artifact.HISTORY, where)
                        if child.history is None:
                            child.history = _history_from_metrics(store, child)
                        child.predictions = _read(store, child.run_id, Artifact.PREDICTIONS, where)
                found.append(model)
            found.sort(key=lambda m: (m.model_params is None, m.model_params or 0, m.base_model))
            models.extend(found)
    _label(models)
    return models


def _label(models: list[ModelRun]) -> None:
    """``base_model (1.2M)``; the experiment is added where one model name appears in several experiments."""
    names = [m.base_model for m in models]
    for model in models:
        size = f" ({format_params(model.model_params)})" if model.model_params else ""
        model.label = model.base_model + size + (f" [{model.experiment}]" if names.count(model.base_model) > 1 else "")


def format_params(count: int | None) -> str:
    if not count:
        return "?"
    if count >= 1e9:
        return f"{count / 1e9:.1f}B"
    if count >= 1e6:
        return f"{count / 1e6:.2f}M"
    return f"{count / 1e3:.0f}k"
