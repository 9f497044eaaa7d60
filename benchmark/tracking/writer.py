"""Writing a suite's runs: ``Tracker``, one suite's experiment, and what each run has waiting to be sent.

Layout: experiment = the suite's name; one parent run per suite (re-running the same resolved suite reopens its
parent); one nested child run per fine-tuning variant, tagged with the variant's content key so a finished variant
is found and reused instead of trained again.

**Few requests.** Everything written to a run is buffered and sent when the run is flushed or closed: metrics,
params and tags together in ``log_batch`` calls (1000 values each; all epochs of a variant in one), its input
dataset in one call, and its artifacts in one upload (one request per file where the server proxies artifacts).
A parent's children are listed with one search. The smoke suite (3 variants × 3 epochs) costs an ``mlflow server``
that proxies artifacts 44 requests: 22 tracking calls (2.4 per epoch; none grows with the epochs) and one upload per
artifact file, 22 (``tests/test_tracking_server.py`` counts them; 132 before batching).
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import polars as pl

from benchmark.errors import BenchmarkError
from benchmark.record import VARIANT_TAG
from benchmark.tracking import mlflow_private, store
from benchmark.tracking.claim import _SuiteClaim
from benchmark.tracking.links import open_experiment
from benchmark.tracking.pending import MAX_METRICS, Pending
from benchmark.tracking.reader import logged_table, metric_history

KEY_TAG = "slick.content_key"
SUITE_TAG = "slick.suite_key"
LOGGED_ARTIFACTS_TAG = "mlflow.loggedArtifacts"  # what MLflow's UI reads to show a run's tables
# What the user may do once an unreachable store is back (said when it was given up on).
WRITE_AGAIN = ("run the same command again once it is reachable: finished variants are reused, the others resume "
               "from their checkpoints")


class Tracker:
    """One suite's experiment. Every method takes the run id it writes to: no hidden active-run state. Writes are
    buffered per run until ``flush`` or ``close``. Every request goes through ``retrying`` (see ``retry``); once it
    gave up on the store, later calls fail at once and closing its runs costs no second wait."""

    def __init__(self, experiment: str, description: str = ""):
        """``description``: shown on the experiment's page (MLflow's note), where it has none yet; one written in
        the UI is kept."""
        self.uri = store.tracking_uri()
        self.retrying = store.retrying(self.uri, WRITE_AGAIN)
        self.client = store.open_client()
        self.experiment = experiment
        self._pending: dict[str, Pending] = {}
        self._children: dict[str, list] = {}  # parent run id -> its child runs (one search, kept current)
        self._artifact_uris: dict[str, str] = {}
        self._tables: dict[str, list] = {}  # run id -> the tables MLflow's UI knows about (LOGGED_ARTIFACTS_TAG)
        self._claim: _SuiteClaim | None = None
        self._claimed_parent: str | None = None
        self._finished_parent: str | None = None  # a FINISHED parent reopened for reading, not yet resumed
        self.experiment_id = open_experiment(self.client, self.retrying, self.uri, experiment, description)

    # -- runs -----------------------------------------------------------------------------------------------
    def _find(self, tags: dict[str, str], statuses: tuple[str, ...] | None = None):
        clauses = [f"tags.`{k}` = '{v}'" for k, v in tags.items()]
        runs = self.retrying("search runs", self.client.search_runs, [self.experiment_id],
                             filter_string=" and ".join(clauses), order_by=["attributes.start_time DESC"],
                             max_results=50)
        return [r for r in runs if statuses is None or r.info.status in statuses]

    def _remember(self, run) -> None:
        self._artifact_uris[run.info.run_id] = run.info.artifact_uri
        self._tables[run.info.run_id] = json.loads(run.data.tags.get(LOGGED_ARTIFACTS_TAG, "[]"))

    def open_parent(self, suite_key: str, name: str, tags: dict[str, str], fresh: bool = False) -> tuple[str, bool]:
        """The suite's parent run: reopened when the same resolved suite ran before, unless ``fresh``. The suite
        is claimed in the store first (``claim``): a second run of it at the same time stops here, naming the first."""
        self._claim = _SuiteClaim(self, self.experiment_id, suite_key, name)
        self._claim.acquire()
        try:
            if not fresh:
                for run in self._find({SUITE_TAG: suite_key, "slick.role": "parent"}):
                    if run.info.status == "FINISHED":  # reopened by ``resume``, if there is anything to train
                        self._finished_parent = run.info.run_id
                    else:
                        self.retrying("reopen the parent run", self.client.update_run, run.info.run_id,
                                      status="RUNNING")
                    self._remember(run)
                    self._claimed_parent = run.info.run_id
                    return run.info.run_id, True
            run = self.retrying("create the parent run", self.client.create_run, self.experiment_id, run_name=name,
                                tags={**tags, SUITE_TAG: suite_key, "slick.role": "parent"})
        except BaseException:
            self._release_claim()
            raise
        self._remember(run)
        self._children[run.info.run_id] = []  # a new parent has no children: nothing to search
        self._claimed_parent = run.info.run_id
        return run.info.run_id, False

    def resume(self, parent_id: str) -> None:
        """A finished parent that has variants to train again is running again."""
        if self._finished_parent == parent_id:
            self.retrying("reopen the parent run", self.client.update_run, parent_id, status="RUNNING")
            self._finished_parent = None

    def _child_runs(self, parent_id: str) -> list:
        if parent_id not in self._children:
            self.children(parent_id)
        return self._children[parent_id]

    def finished_variant(self, parent_id: str, content_key: str) -> str | None:
        runs = [r for r in self._child_runs(parent_id)
                if r.data.tags.get(KEY_TAG) == content_key and r.info.status == "FINISHED"]
        return max(runs, key=lambda r: r.info.start_time or 0).info.run_id if runs else None

    def open_variant(self, parent_id: str, name: str, content_key: str, params: dict, tags: dict[str, str]) -> str:
        """A child run for the variant: an unfinished one (failed, killed, interrupted) is reopened and resumed."""
        for run in self._child_runs(parent_id):
            if run.data.tags.get(KEY_TAG) == content_key and run.info.status in ("FAILED", "KILLED", "RUNNING"):
                self.retrying(f"reopen run {run.info.run_id}", self.client.update_run, run.info.run_id,
                              status="RUNNING")
                # Params it lacks (a kill lost them with the rest of its buffer); MLflow refuses to change a value.
                self.log_params(run.info.run_id, {k: v for k, v in params.items() if str(k) not in run.data.params})
                return run.info.run_id
        run = self.retrying(f"create the run of variant {name}", self.client.create_run, self.experiment_id,
                            run_name=name, tags={**tags, KEY_TAG: content_key, VARIANT_TAG: name,
                                                 "mlflow.parentRunId": parent_id, "slick.role": "variant"})
        self._remember(run)
        self._child_runs(parent_id).append(run)
        self.log_params(run.info.run_id, params)
        return run.info.run_id

    def close(self, run_id: str, status: str = "FINISHED") -> None:
        """Send what the run has waiting, then end it with ``status``. Once the store was given up on, this does
        nothing for a run that ends FAILED or KILLED (the failure was reported once; a re-run resumes), so every run
        can be closed on the way out; a run to be marked FINISHED raises the failure instead: the store never got
        its results (the live per-epoch thread may be what found the store gone, and it only takes note)."""
        try:
            if self.retrying.down is not None:
                self._pending.pop(run_id, Pending()).discard()
                if status == "FINISHED":
                    raise BenchmarkError(self.retrying.down)
                return
            try:
                self.flush(run_id)
            except BaseException:
                if self.retrying.down is None and status == "FINISHED" and run_id != self._finished_parent:
                    self._terminate(run_id, "FAILED")
                raise
            # A re-run that trained nothing leaves a finished parent as it was: FINISHED, and its Duration that of
            # the runs that did the work (not stretched to now, nor marked KILLED by a Ctrl-C during the report).
            if run_id != self._finished_parent:
                self._terminate(run_id, status)
        finally:
            if run_id == self._claimed_parent:
                self._release_claim()

    def _terminate(self, run_id: str, status: str) -> None:
        self.retrying(f"mark run {run_id} {status}", mlflow_private.terminate_run, self.client, run_id, status)

    def _release_claim(self) -> None:
        if self._claim is not None:
            self._claim.release()

    def flush(self, run_id: str | None = None) -> None:
        """Send what ``run_id`` (every run, if None) has waiting: its values in as few ``log_batch`` calls as
        MLflow allows, its input datasets in one call, its artifacts in one upload."""
        for rid in [run_id] if run_id is not None else list(self._pending):
            pending = self._pending.pop(rid, None)
            if pending is None:
                continue
            try:
                self._send(rid, pending)
            finally:
                pending.discard()

    def _send(self, rid: str, pending: Pending) -> None:
        from mlflow.entities import RunTag

        if pending.tables:
            known = self._tables.setdefault(rid, [])
            known += [t for t in ({"path": p, "type": "table"} for p in pending.tables) if t not in known]
            pending.tags[LOGGED_ARTIFACTS_TAG] = RunTag(LOGGED_ARTIFACTS_TAG, json.dumps(known))
        for metrics, params, tags in pending.batches():
            self.retrying(f"log to run {rid}", self.client.log_batch, rid, metrics=metrics, params=params, tags=tags)
        if pending.datasets:
            self.retrying(f"log the input dataset of run {rid}", self.client.log_inputs, rid,
                          datasets=pending.datasets)
        if pending.folder is not None:
            repo = self._artifact_repo(rid)
            self.retrying(f"upload the artifacts of run {rid}", repo.log_artifacts, str(pending.folder))

    def _artifact_repo(self, run_id: str):
        uri = self._artifact_uris.get(run_id)
        if uri is None:
            uri = self.retrying(f"read run {run_id}", self.client.get_run, run_id).info.artifact_uri
            self._artifact_uris[run_id] = uri
        return mlflow_private.artifact_repository(uri, self.uri)

    def _pend(self, run_id: str) -> Pending:
        return self._pending.setdefault(run_id, Pending())

    # -- values (buffered) ----------------------------------------------------------------------------------
    def log_params(self, run_id: str, params: dict) -> None:
        from mlflow.entities import Param

        self._pend(run_id).params.update({str(k): Param(str(k), str(v)[:6000]) for k, v in params.items()})

    def set_tags(self, run_id: str, tags: dict[str, str]) -> None:
        from mlflow.entities import RunTag

        self._pend(run_id).tags.update({k: RunTag(k, str(v)) for k, v in tags.items()})

    def log_metrics(self, run_id: str, metrics: dict[str, float], step: int = 0) -> None:
        """Buffered, and sent in batches (measured in the prototype: per-metric calls cost 60x more on SQLite, 1000x over HTTP)."""
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        self._pend(run_id).metrics += [Metric(store.metric_name(k), float(v), now, step) for k, v in metrics.items()
                                       if v is not None]

    def log_history(self, run_id: str, history: pl.DataFrame) -> None:
        """Every epoch's metrics (step = epoch), buffered with the rest: a variant's whole history in one call."""
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        self._pend(run_id).metrics += [Metric(store.metric_name(k), float(v), now, int(record["epoch"]))
                                       for record in history.iter_rows(named=True) for k, v in record.items()
                                       if k != "epoch" and v is not None and v == v]

    def log_epoch(self, run_id: str, metrics: dict[str, float], epoch: int) -> None:
        """One epoch's metrics (step = epoch) sent now, in one call: what a variant shows while it trains."""
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        values = [Metric(store.metric_name(k), float(v), now, int(epoch)) for k, v in metrics.items()
                  if v is not None and v == v]
        for start in range(0, len(values), MAX_METRICS):
            self.retrying(f"log epoch {epoch} to run {run_id}", self.client.log_batch, run_id,
                          metrics=values[start:start + MAX_METRICS])

    # -- artifacts (staged, uploaded with the run's other artifacts) ----------------------------------------
    def log_file(self, run_id: str, path: Path, folder: str | None = None) -> None:
        name = Path(path).name
        shutil.copyfile(path, self._pend(run_id).stage(f"{folder}/{name}" if folder else name))

    def log_text(self, run_id: str, text: str, artifact_file: str) -> None:
        self._pend(run_id).stage(artifact_file).write_text(text)

    def log_parquet(self, run_id: str, table: pl.DataFrame, artifact_file: str) -> None:
        table.write_parquet(self._pend(run_id).stage(artifact_file))

    def log_table(self, run_id: str, table: pl.DataFrame, artifact_file: str) -> None:
        """An MLflow table (shown in the UI's evaluation view), e.g. per-example predictions: the JSON layout
        ``MlflowClient.log_table`` writes, without its read-merge-tag round trips (a re-logged table replaces)."""
        pending = self._pend(run_id)
        table.to_pandas().to_json(pending.stage(artifact_file), orient="split", index=False, date_format="iso")
        pending.tables.append(artifact_file)

    def log_figure(self, run_id: str, figure, artifact_file: str) -> None:
        figure.savefig(self._pend(run_id).stage(artifact_file))

    def log_dataset(self, run_id: str, table: pl.DataFrame, name: str, context: str = "training",
                    digest: str | None = None) -> None:
        """The mixture's composition as an MLflow input dataset (the Datasets column of the UI). ``digest``
        identifies the exact rows, so the same set is recognisable across models and runs."""
        import mlflow.data
        from mlflow.entities import DatasetInput, InputTag

        dataset = mlflow.data.from_pandas(table.to_pandas(), name=name, digest=digest)
        self._pend(run_id).datasets.append(
            DatasetInput(mlflow_private.dataset_entity(dataset), tags=[InputTag("mlflow.data.context", context)]))

    # -- reading back what this suite wrote (a finished variant is reused, not trained again) ---------------
    def children(self, parent_id: str) -> list:
        """The parent's child runs, freshly searched (and remembered for ``finished_variant``/``open_variant``)."""
        runs = self.retrying("list the variant runs", self.client.search_runs, [self.experiment_id],
                             filter_string=f"tags.`mlflow.parentRunId` = '{parent_id}'", max_results=1000)
        for run in runs:
            self._remember(run)
        self._children[parent_id] = list(runs)
        return runs

    def _searched(self, run_id: str):
        """The run as the search of its parent's children found it, if it did."""
        for runs in self._children.values():
            for run in runs:
                if run.info.run_id == run_id:
                    return run
        return None

    def logged_epochs(self, run_id: str) -> int:
        """The last epoch a variant run has in the store (0 for a new run), from the search that found it."""
        run = self._searched(run_id)
        return mlflow_private.latest_step(run, "dev/acc/all") if run is not None else 0

    def latest_metrics(self, run_id: str) -> dict[str, float]:
        run = self._searched(run_id)
        if run is not None and run.info.status == "FINISHED" and run_id not in self._pending:
            return dict(run.data.metrics)  # from the search that found it: a finished run does not change
        return dict(self.retrying(f"read run {run_id}", self.client.get_run, run_id).data.metrics)

    def metric_history(self, run_id: str, key: str) -> list[tuple[int, float]]:
        return metric_history(self.client, self.retrying, run_id, key)

    def read_table(self, run_id: str, artifact_file: str) -> pl.DataFrame | None:
        """A table the run logged (``log_table``), read back from the store: what a finished variant's predictions
        are when the local cache lost them. None when the run has no such artifact or it cannot be parsed."""
        return logged_table(self.client, self.retrying, run_id, artifact_file)
