"""Reading results back (reports, comparisons): works on any store, on runs made earlier or on a team server.

Every request goes through the writer's retry (``retry.Retrying``, the same ``SLICK_BENCH_TRACKING_TIMEOUT``
budget): a store that is briefly locked or restarting is waited for, and any store failure reads as one line.
``download``, ``logged_table`` and ``metric_history`` serve the writer too (a finished variant's predictions and
history, read back to reuse it).
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import polars as pl

from benchmark.errors import BenchmarkError
from benchmark.tracking import store
from benchmark.tracking.retry import Retrying

# What a reader may do once the store is back (said when it was given up on).
READ_AGAIN = "run the same command again once it is reachable"


class RunRecord:
    """A run as plain Python values (no MLflow objects leave this package)."""

    def __init__(self, run):
        self.run_id: str = run.info.run_id
        self.experiment_id: str = run.info.experiment_id
        self.name: str = run.info.run_name or ""
        self.status: str = run.info.status
        self.start_time: int = run.info.start_time or 0
        self.tags: dict[str, str] = dict(run.data.tags)
        self.params: dict[str, str] = dict(run.data.params)
        self.metrics: dict[str, float] = dict(run.data.metrics)

    def __repr__(self) -> str:
        return f"RunRecord({self.name!r}, {self.run_id}, {self.status})"


def download(client, retrying: Retrying, run_id: str, path: str, into: Path) -> Path | None:
    """Download one artifact file of a run into the folder ``into``; None when the run has no such artifact."""
    folder = str(Path(path).parent) if Path(path).parent != Path(".") else None
    listed = retrying(f"list the artifacts of run {run_id}", client.list_artifacts, run_id, folder)
    if path not in {a.path for a in listed}:
        return None
    return Path(retrying(f"read {path} of run {run_id}", client.download_artifacts, run_id, path, str(into)))


def metric_history(client, retrying: Retrying, run_id: str, key: str) -> list[tuple[int, float]]:
    """(step, value) of every value of metric ``key`` the run logged."""
    history = retrying(f"read the history of {key}", client.get_metric_history, run_id, key)
    return [(m.step, m.value) for m in history]


def logged_table(client, retrying: Retrying, run_id: str, artifact_file: str) -> pl.DataFrame | None:
    """A table the run logged (``Tracker.log_table``), read back; None when the run has no such artifact or it
    cannot be parsed."""
    with tempfile.TemporaryDirectory(prefix="slick-bench-read-") as into:
        path = download(client, retrying, run_id, artifact_file, Path(into))
        if path is None:
            return None
        try:
            return read_table(path)
        except (OSError, ValueError, TypeError):
            return None


class ResultStore:
    """Read-only view of the tracking store for reports and comparisons: it never creates an experiment or a
    run. The one write, ``log_files``, attaches a built report to runs that already exist."""

    def __init__(self):
        store.quiet_artifact_downloads()
        self.client = store.open_client()
        self.retrying = store.retrying(store.tracking_uri(), READ_AGAIN)

    def experiments(self, names: list[str] | None = None) -> list[tuple[str, str]]:
        """(id, name) of the named experiments (an unknown name is an error naming the ones there are), or of
        every active experiment that holds a suite's parent run."""
        from mlflow.entities import ViewType

        listed = self.retrying("list the experiments", self.client.search_experiments, view_type=ViewType.ACTIVE_ONLY)
        every = {e.name: e for e in listed}
        if names:
            missing = [n for n in names if n not in every]
            if missing:
                known = ", ".join(sorted(every)) or "none"
                raise BenchmarkError(f"--experiment {missing[0]}: no such experiment in {store.display_uri()} "
                                     f"(experiments: {known})")
            return [(every[n].experiment_id, n) for n in names]
        found = []
        for name, experiment in sorted(every.items()):
            if self.retrying(f"search the runs of experiment '{name}'", self.client.search_runs,
                             [experiment.experiment_id], filter_string="tags.`slick.role` = 'parent'", max_results=1):
                found.append((experiment.experiment_id, name))
        return found

    def experiment_tags(self, experiment_id: str) -> dict[str, str]:
        return dict(self.retrying(f"read experiment {experiment_id}", self.client.get_experiment, experiment_id).tags)

    def parents(self, experiment_id: str) -> list[RunRecord]:
        """The suite parent runs of an experiment, newest first."""
        runs = self.retrying("list the suite runs", self.client.search_runs, [experiment_id],
                             filter_string="tags.`slick.role` = 'parent'", order_by=["attributes.start_time DESC"],
                             max_results=1000)
        return [RunRecord(r) for r in runs]

    def children(self, experiment_id: str, parent_id: str) -> list[RunRecord]:
        runs = self.retrying("list the variant runs", self.client.search_runs, [experiment_id],
                             filter_string=f"tags.`mlflow.parentRunId` = '{parent_id}'", max_results=5000)
        return [RunRecord(r) for r in runs]

    def metric_history(self, run_id: str, key: str) -> list[tuple[int, float]]:
        return metric_history(self.client, self.retrying, run_id, key)

    def artifact(self, run_id: str, path: str, into: Path) -> Path | None:
        """Download one artifact file into the folder ``into``; None when the run has no such artifact."""
        return download(self.client, self.retrying, run_id, path, into)

    def log_files(self, run_id: str, files: list[tuple[Path, str]]) -> None:
        """Upload exactly ``files`` ((local file, artifact folder) pairs, in order) to a run, one file at a time:
        MLflow writes each through a temporary file renamed into place (local stores) or one request (servers), so
        a failure (a full disk) leaves whole files or none, never a truncated one. Raises one BenchmarkError line."""
        for path, folder in files:
            self.retrying(f"attach {Path(path).name} to run {run_id}", self.client.log_artifact, run_id, str(path),
                          artifact_path=folder or None)


def read_table(path: Path) -> pl.DataFrame:
    """A table written by ``Tracker.log_table`` (MLflow's {"columns": [...], "data": [[...], ...]} JSON)."""
    document = json.loads(path.read_text())
    columns = document.get("columns", [])
    rows = document.get("data", [])
    if not rows:
        return pl.DataFrame(schema=dict.fromkeys(columns, pl.String))
    return pl.DataFrame([dict(zip(columns, row, strict=True)) for row in rows], infer_schema_length=None)
