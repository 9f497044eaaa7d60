"""The only module that talks to MLflow.

Local default: everything under ``mlruns/`` in the working directory — a SQLite database ``mlruns/mlflow.db``
and an artifact folder ``mlruns/artifacts`` — so ``mlflow ui --backend-store-uri sqlite:///mlruns/mlflow.db``
(or ``python -m benchmark ui``) shows it. ``MLFLOW_TRACKING_URI`` (e.g. a team's ``mlflow server``) overrides it.

Layout: experiment = the suite's name; one parent run per suite (re-running the same resolved suite reopens its
parent); one nested child run per fine-tuning variant, tagged with the variant's content key so a finished
variant is found and reused instead of trained again. Metrics are always logged in batches (one call per epoch).
"""

from __future__ import annotations

import os
import re
import tempfile
import time
import warnings
from pathlib import Path

import polars as pl

from benchmark.errors import BenchmarkError

KEY_TAG = "slick.content_key"
SUITE_TAG = "slick.suite_key"
VARIANT_TAG = "slick.variant"
EXPERIMENT_KIND_TAG, EXPERIMENT_KIND = "mlflow.experimentKind", "custom_model_development"
_METRIC_NAME = re.compile(r"[^A-Za-z0-9_/. -]")


def default_uri(root: Path | None = None) -> str:
    root = (root or Path("mlruns")).resolve()
    return f"sqlite:///{root / 'mlflow.db'}"


def tracking_uri() -> str:
    return os.environ.get("MLFLOW_TRACKING_URI") or default_uri()


def metric_name(name: str) -> str:
    """MLflow accepts only [A-Za-z0-9_/. -] in metric names."""
    return _METRIC_NAME.sub("_", name)


def _client():
    warnings.filterwarnings("ignore", category=DeprecationWarning, module="sqlalchemy")
    warnings.filterwarnings("ignore", message=".*filesystem tracking backend.*")
    import logging

    logging.getLogger("mlflow.store.db.utils").setLevel(logging.WARNING)
    logging.getLogger("alembic").setLevel(logging.WARNING)
    from mlflow import MlflowClient

    uri = tracking_uri()
    if uri.startswith("sqlite:///"):
        Path(uri.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    return MlflowClient(tracking_uri=uri)


class Tracker:
    """One suite's experiment. Every method takes the run id it writes to: no hidden active-run state."""

    def __init__(self, experiment: str):
        self.client = _client()
        self.experiment = experiment
        found = self.client.get_experiment_by_name(experiment)
        if found is None:
            location = None
            uri = tracking_uri()
            if uri.startswith("sqlite:///"):
                location = (Path(uri.removeprefix("sqlite:///")).parent / "artifacts").resolve().as_uri()
            self.experiment_id = self.client.create_experiment(experiment, artifact_location=location)
        else:
            if found.lifecycle_stage == "deleted":
                self.client.restore_experiment(found.experiment_id)
            self.experiment_id = found.experiment_id
        if found is None or found.tags.get(EXPERIMENT_KIND_TAG) != EXPERIMENT_KIND:
            # MLflow 3 otherwise opens an experiment on its GenAI overview (traces), not on the runs and charts.
            self.client.set_experiment_tag(self.experiment_id, EXPERIMENT_KIND_TAG, EXPERIMENT_KIND)

    # -- runs -----------------------------------------------------------------------------------------------
    def _find(self, tags: dict[str, str], statuses: tuple[str, ...] | None = None):
        clauses = [f"tags.`{k}` = '{v}'" for k, v in tags.items()]
        runs = self.client.search_runs([self.experiment_id], filter_string=" and ".join(clauses),
                                       order_by=["attributes.start_time DESC"], max_results=50)
        return [r for r in runs if statuses is None or r.info.status in statuses]

    def open_parent(self, suite_key: str, name: str, tags: dict[str, str], fresh: bool = False) -> tuple[str, bool]:
        """The suite's parent run: reopened when the same resolved suite ran before, unless ``fresh``."""
        if not fresh:
            for run in self._find({SUITE_TAG: suite_key, "slick.role": "parent"}):
                self.client.update_run(run.info.run_id, status="RUNNING")
                return run.info.run_id, True
        run = self.client.create_run(self.experiment_id, run_name=name,
                                     tags={**tags, SUITE_TAG: suite_key, "slick.role": "parent"})
        return run.info.run_id, False

    def finished_variant(self, parent_id: str, content_key: str) -> str | None:
        runs = self._find({KEY_TAG: content_key, "mlflow.parentRunId": parent_id}, ("FINISHED",))
        return runs[0].info.run_id if runs else None

    def open_variant(self, parent_id: str, name: str, content_key: str, params: dict, tags: dict[str, str]) -> str:
        """A child run for the variant: an unfinished one (failed, killed, interrupted) is reopened and resumed."""
        for run in self._find({KEY_TAG: content_key, "mlflow.parentRunId": parent_id}, ("FAILED", "KILLED", "RUNNING")):
            self.client.update_run(run.info.run_id, status="RUNNING")
            return run.info.run_id
        run = self.client.create_run(self.experiment_id, run_name=name, tags={
            **tags, KEY_TAG: content_key, VARIANT_TAG: name, "mlflow.parentRunId": parent_id, "slick.role": "variant"})
        self.log_params(run.info.run_id, params)
        return run.info.run_id

    def close(self, run_id: str, status: str = "FINISHED") -> None:
        self.client.set_terminated(run_id, status=status)

    def run_status(self, run_id: str) -> str:
        return self.client.get_run(run_id).info.status

    # -- values ---------------------------------------------------------------------------------------------
    def log_params(self, run_id: str, params: dict) -> None:
        from mlflow.entities import Param

        items = [Param(str(k), str(v)[:6000]) for k, v in params.items()]
        for i in range(0, len(items), 100):
            self.client.log_batch(run_id, params=items[i:i + 100])

    def set_tags(self, run_id: str, tags: dict[str, str]) -> None:
        from mlflow.entities import RunTag

        self.client.log_batch(run_id, tags=[RunTag(k, str(v)) for k, v in tags.items()])

    def log_metrics(self, run_id: str, metrics: dict[str, float], step: int = 0) -> None:
        """All metrics in one call (DESIGN.md §3: per-metric calls cost 60x more on SQLite, 1000x over HTTP)."""
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        items = [Metric(metric_name(k), float(v), now, step) for k, v in metrics.items() if v is not None]
        for i in range(0, len(items), 1000):
            self.client.log_batch(run_id, metrics=items[i:i + 1000])

    def log_history(self, run_id: str, history: pl.DataFrame) -> None:
        """Every epoch's metrics (step = epoch) in as few calls as MLflow allows (1000 metrics each)."""
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        items = [Metric(metric_name(k), float(v), now, int(record["epoch"]))
                 for record in history.iter_rows(named=True) for k, v in record.items()
                 if k != "epoch" and v is not None and v == v]
        for i in range(0, len(items), 1000):
            self.client.log_batch(run_id, metrics=items[i:i + 1000])

    def metric_history(self, run_id: str, key: str) -> list[tuple[int, float]]:
        return [(m.step, m.value) for m in self.client.get_metric_history(run_id, key)]

    def latest_metrics(self, run_id: str) -> dict[str, float]:
        return dict(self.client.get_run(run_id).data.metrics)

    # -- artifacts ------------------------------------------------------------------------------------------
    def log_file(self, run_id: str, path: Path, folder: str | None = None) -> None:
        self.client.log_artifact(run_id, str(path), artifact_path=folder)

    def log_text(self, run_id: str, text: str, artifact_file: str) -> None:
        self.client.log_text(run_id, text, artifact_file)

    def log_parquet(self, run_id: str, table: pl.DataFrame, artifact_file: str) -> None:
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / Path(artifact_file).name
            table.write_parquet(path)
            folder = str(Path(artifact_file).parent) if Path(artifact_file).parent != Path(".") else None
            self.client.log_artifact(run_id, str(path), artifact_path=folder)

    def log_table(self, run_id: str, table: pl.DataFrame, artifact_file: str) -> None:
        """An MLflow table (shown in the UI's evaluation view), e.g. per-example predictions."""
        self.client.log_table(run_id, data=table.to_pandas(), artifact_file=artifact_file)

    def log_figure(self, run_id: str, figure, artifact_file: str) -> None:
        self.client.log_figure(run_id, figure, artifact_file)

    def log_dataset(self, run_id: str, table: pl.DataFrame, name: str, context: str = "training",
                    digest: str | None = None) -> None:
        """The mixture's composition as an MLflow input dataset (the Datasets column of the UI). ``digest``
        identifies the exact rows, so the same set is recognisable across models and runs."""
        import mlflow.data
        from mlflow.entities import DatasetInput, InputTag

        dataset = mlflow.data.from_pandas(table.to_pandas(), name=name, digest=digest)
        self.client.log_inputs(run_id, datasets=[
            DatasetInput(dataset._to_mlflow_entity(), tags=[InputTag("mlflow.data.context", context)])])

    def children(self, parent_id: str) -> list:
        return self.client.search_runs([self.experiment_id], filter_string=f"tags.`mlflow.parentRunId` = '{parent_id}'",
                                       max_results=1000)


def ui_command(host: str = "127.0.0.1", port: int = 5000) -> list[str]:
    """The MLflow UI on the local store, bound to loopback only."""
    uri = tracking_uri()
    if not uri.startswith("sqlite:///"):
        raise BenchmarkError(f"MLFLOW_TRACKING_URI is '{uri}': open that server's own UI instead")
    artifacts = (Path(uri.removeprefix("sqlite:///")).parent / "artifacts").resolve()
    return ["mlflow", "ui", "--backend-store-uri", uri, "--default-artifact-root", artifacts.as_uri(),
            "--host", host, "--port", str(port)]
