"""Tracking on a real MLflow store (a SQLite file under a temporary folder, as the project's default store): what the
writer writes the reader reads back identically; every MLflow private API the package relies on still works; and
the reader retries a store failure that may pass, and fails at once, in one line, on one that does not.

The store itself going away (an ``mlflow server`` killed mid-run) is ``tests/test_tracking_server.py``; claims and
an unreachable server are ``tests/test_faults.py``.
"""

from __future__ import annotations

import contextlib
import inspect
import time
from pathlib import Path

import mlflow
import polars as pl
import pytest
from mlflow.exceptions import MlflowException
from polars.testing import assert_frame_equal

from benchmark.errors import BenchmarkError
from benchmark.tracking import ResultStore, Tracker, mlflow_private, read_table


@pytest.fixture
def store(tmp_path, monkeypatch) -> str:
    uri = f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    return uri


# ---------------------------------------------------------------- what is written reads back


PARENT = {"params": {"suite": "smoke", "seeds": 2}, "tags": {"base_model": "tiny", "note": "a parent"},
          "metrics": {"linear/beta_unk": -0.25, "slick/count/Unknown": 40.0}}
CHILD = {"params": {"unknown_fraction": 0.5, "lr": 0.001}, "tags": {"mixture": "unknown_50"},
         "metrics": {"early_stop/test/acc/all": 0.5, "convergence/test/acc/all": 0.375}}
HISTORY = pl.DataFrame({"epoch": [1, 2, 3], "dev/acc/all": [0.25, 0.5, 0.625], "train/acc/all": [0.5, 0.75, 1.0]})
TABLE = pl.DataFrame({"question": ["Where was A born?", "Who wrote B?"], "prediction": ["Paris", "C"],
                      "correct": [1, 0], "p_true": [0.75, 0.125]})


def _write(tracker: Tracker, run_id: str, values: dict, text: str) -> None:
    tracker.log_params(run_id, values["params"])
    tracker.set_tags(run_id, values["tags"])
    tracker.log_metrics(run_id, values["metrics"])
    tracker.log_table(run_id, TABLE, "tables/predictions.json")
    tracker.log_text(run_id, text, "notes.txt")


def _assert_reads_back(reader: ResultStore, record, values: dict, text: str, into: Path) -> None:
    assert record.params == {k: str(v) for k, v in values["params"].items()}
    assert values["tags"].items() <= record.tags.items()
    assert values["metrics"].items() <= record.metrics.items()
    assert_frame_equal(read_table(reader.artifact(record.run_id, "tables/predictions.json", into)), TABLE)
    assert reader.artifact(record.run_id, "notes.txt", into).read_text() == text
    assert reader.artifact(record.run_id, "missing.txt", into) is None


def test_what_the_tracker_writes_the_result_store_reads_back(store, tmp_path):
    tracker = Tracker("round-trip", "a suite written and read back")
    parent, reopened = tracker.open_parent("suite-key", "round-trip:tiny", {})
    assert not reopened
    _write(tracker, parent, PARENT, "the parent's notes\n")
    tracker.flush(parent)  # the parent's inputs first, as the pipeline sends them
    child = tracker.open_variant(parent, "unknown_50", "content-key", CHILD["params"], {})
    _write(tracker, child, {**CHILD, "params": {}}, "the variant's notes\n")
    tracker.log_history(child, HISTORY)
    tracker.close(child)
    tracker.close(parent)

    reader = ResultStore()
    ((experiment_id, name),) = reader.experiments(["round-trip"])
    assert name == "round-trip" and reader.experiment_tags(experiment_id)["mlflow.note.content"].startswith("a suite")
    (parent_record,) = reader.parents(experiment_id)
    assert (parent_record.run_id, parent_record.name, parent_record.status) == (parent, "round-trip:tiny", "FINISHED")
    _assert_reads_back(reader, parent_record, PARENT, "the parent's notes\n", tmp_path)
    (child_record,) = reader.children(experiment_id, parent)
    assert (child_record.run_id, child_record.name, child_record.status) == (child, "unknown_50", "FINISHED")
    _assert_reads_back(reader, child_record, CHILD, "the variant's notes\n", tmp_path)
    for key in ("dev/acc/all", "train/acc/all"):
        assert sorted(reader.metric_history(child, key)) == list(zip(HISTORY["epoch"], HISTORY[key], strict=True))
    assert child_record.metrics["dev/acc/all"] == 0.625  # the latest epoch's value

    # The writer reads its own runs back the same way (a finished variant is reused, not trained again).
    again = Tracker("round-trip")
    assert again.open_parent("suite-key", "round-trip:tiny", {}) == (parent, True)
    assert again.finished_variant(parent, "content-key") == child and again.logged_epochs(child) == 3
    assert_frame_equal(again.read_table(child, "tables/predictions.json"), TABLE)
    assert again.metric_history(child, "dev/acc/all") == reader.metric_history(child, "dev/acc/all")
    again.close(parent)


# ---------------------------------------------------------------- MLflow's private APIs


class _RefusingPublic:
    """A client that refuses the one public method a private path stands in for: reaching it means the private
    path was not found (``mlflow_private`` falls back to the public API when MLflow moves one)."""

    def __init__(self, client, refused: str):
        self._client, self._refused = client, refused

    def __getattr__(self, name: str):
        if name == self._refused:
            raise AssertionError(f"fell back to the public MlflowClient.{name}")
        return getattr(self._client, name)


@contextlib.contextmanager
def _private(attribute: str, checked: set[str], function):
    checked.add(function.__name__)
    try:
        yield
    except (AttributeError, TypeError, ImportError, AssertionError) as exc:
        pytest.fail(f"mlflow {mlflow.__version__}: {attribute} has moved or changed ({type(exc).__name__}: {exc}); "
                    f"update benchmark/tracking/mlflow_private.py:{function.__name__}", pytrace=False)


def test_every_mlflow_private_api_the_package_uses_still_works(store, tmp_path):
    """Fails, naming MLflow's version and the attribute, when an upgrade moved one (``mlflow_private``)."""
    from mlflow import MlflowClient
    from mlflow.entities import DatasetInput, InputTag, Metric

    (tmp_path / "mlruns").mkdir()
    client, checked = MlflowClient(tracking_uri=store, registry_uri=store), set()
    with _private("MlflowClient._get_registry_client().store", checked, mlflow_private.create_registry_tables):
        mlflow_private.create_registry_tables(client)
    client.create_registered_model("probe")
    with _private("MlflowClient._get_registry_client().delete_registered_model", checked,
                  mlflow_private.delete_registered_model):
        mlflow_private.delete_registered_model(_RefusingPublic(client, "delete_registered_model"), "probe")
    assert client.search_registered_models() == []

    experiment_id = client.create_experiment("private-apis")
    run_id = client.create_run(experiment_id).info.run_id
    with _private("MlflowClient._tracking_client.store.update_run_info", checked, mlflow_private.terminate_run):
        mlflow_private.terminate_run(_RefusingPublic(client, "set_terminated"), run_id, "KILLED")
    ended = client.get_run(run_id).info
    assert ended.status == "KILLED" and ended.end_time

    dataset = mlflow.data.from_pandas(TABLE.drop("correct").to_pandas(), name="probe-set", digest="0123abcd")
    with _private("mlflow.data.Dataset._to_mlflow_entity", checked, mlflow_private.dataset_entity):
        entity = mlflow_private.dataset_entity(dataset)
    client.log_inputs(run_id, datasets=[DatasetInput(entity, tags=[InputTag("mlflow.data.context", "training")])])
    (logged,) = client.get_run(run_id).inputs.dataset_inputs
    assert (logged.dataset.name, logged.dataset.digest) == ("probe-set", "0123abcd")

    (tmp_path / "upload" / "sub").mkdir(parents=True)
    (tmp_path / "upload" / "sub" / "file.txt").write_text("uploaded")
    with _private("mlflow.store.artifact.artifact_repository_registry.get_artifact_repository", checked,
                  mlflow_private.artifact_repository):
        repo = mlflow_private.artifact_repository(client.get_run(run_id).info.artifact_uri, store)
        repo.log_artifacts(str(tmp_path / "upload"))
    assert [a.path for a in client.list_artifacts(run_id, "sub")] == ["sub/file.txt"]

    now = int(time.time() * 1000)
    client.log_batch(run_id, metrics=[Metric("dev/acc/all", 0.1 * step, now, step) for step in (1, 2, 3)])
    (searched,) = client.search_runs([experiment_id])
    with _private("RunData._metric_objs", checked, mlflow_private.latest_step):
        assert mlflow_private.latest_step(searched, "dev/acc/all") == 3
    assert mlflow_private.latest_step(searched, "test/acc/all") == 0

    every = {name for name, f in inspect.getmembers(mlflow_private, inspect.isfunction)
             if f.__module__ == mlflow_private.__name__ and not name.startswith("_")}
    assert checked == every, f"mlflow_private functions without a check here: {sorted(every - checked)}"


# ---------------------------------------------------------------- the reader's retry


def _failing_once(real, error: Exception, calls: list):
    def call(*args, **kwargs):
        calls.append(time.monotonic())
        if len(calls) == 1:
            raise error
        return real(*args, **kwargs)

    return call


def _one_parent(name: str) -> tuple[str, str]:
    tracker = Tracker(name)
    parent, _ = tracker.open_parent("suite-key", f"{name}:tiny", {})
    tracker.close(parent)
    return tracker.experiment_id, parent


def test_the_reader_retries_a_store_failure_that_may_pass(store, monkeypatch):
    from mlflow.protos.databricks_pb2 import TEMPORARILY_UNAVAILABLE

    experiment_id, parent = _one_parent("reader-retry")
    reader, calls = ResultStore(), []
    locked = MlflowException("(sqlite3.OperationalError) database is locked", error_code=TEMPORARILY_UNAVAILABLE)
    monkeypatch.setattr(reader.client, "search_runs", _failing_once(reader.client.search_runs, locked, calls))
    assert [p.run_id for p in reader.parents(experiment_id)] == [parent]
    assert len(calls) == 2 and reader.retrying.down is None


def test_the_reader_fails_at_once_in_one_line_on_a_store_failure_that_does_not_pass(store, monkeypatch):
    from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE

    monkeypatch.setenv("SLICK_BENCH_TRACKING_TIMEOUT", "30")
    experiment_id, _ = _one_parent("reader-no-retry")
    reader, calls = ResultStore(), []
    refused = MlflowException("Invalid value 'x' for parameter 'filter_string'", error_code=INVALID_PARAMETER_VALUE)
    monkeypatch.setattr(reader.client, "search_runs", _failing_once(reader.client.search_runs, refused, calls))
    started = time.monotonic()
    with pytest.raises(BenchmarkError) as error:
        reader.parents(experiment_id)
    assert time.monotonic() - started < 5 and len(calls) == 1  # not retried as if the store were unreachable
    message = str(error.value)
    assert message == (f"MLflow tracking store {store}: could not list the suite runs: Invalid value 'x' for "
                       "parameter 'filter_string'")
    assert reader.retrying.down is None  # the next read is tried
    assert len(reader.children(experiment_id, "no-such-parent")) == 0
