"""Every use of an MLflow private API, each in one small function: the one file to read after an MLflow upgrade.

Each function says what it does and why the public API does not suffice. Where a public way exists that costs a
request more, the function falls back to it when MLflow moved the private one, so an upgrade costs speed, not a
failed run; ``tests/test_tracking.py`` calls every function here against a real store and fails, naming the MLflow
version and the attribute, when one moved. No other module touches MLflow internals.
"""

from __future__ import annotations

import time


def create_registry_tables(client) -> None:
    """Create (or migrate) the model registry's tables of a SQLite store now, under the caller's lock.

    MLflow creates them on the first use of the registry; the public way to get there is a registry request (e.g.
    ``search_registered_models``), which also queries the store. The registry client's ``store`` creates them and
    nothing more."""
    client._get_registry_client().store  # noqa: B018 - its tables, created here under the lock


def delete_registered_model(client, name: str) -> None:
    """Delete a registered model in one request.

    ``MlflowClient.delete_registered_model`` first reads the model back (is it a prompt?): one request more, on
    every release and takeover of a suite's claim. Its registry client deletes at once."""
    registry = getattr(client, "_get_registry_client", None)
    (registry().delete_registered_model if registry else client.delete_registered_model)(name)


def terminate_run(client, run_id: str, status: str) -> None:
    """End a run with ``status`` (now) in one request.

    ``MlflowClient.set_terminated`` also reads the run back to print its URL: one request more per run. The
    tracking client's store updates the run's status and end time only."""
    from mlflow.entities import RunStatus

    store = getattr(getattr(client, "_tracking_client", None), "store", None)
    if store is None:
        client.set_terminated(run_id, status=status)
        return
    store.update_run_info(run_id, run_status=RunStatus.from_string(status), end_time=int(time.time() * 1000),
                          run_name=None)


def dataset_entity(dataset):
    """The entity (``mlflow.entities.Dataset``) of an ``mlflow.data`` dataset, for ``MlflowClient.log_inputs``.

    ``log_inputs`` takes entities, and the public way from a dataset to its logged entity is ``mlflow.log_input``:
    it needs the fluent API's active run (the hidden global state this package does without) and sends a request
    of its own, where the Tracker sends a run's datasets together with its other buffered values."""
    return dataset._to_mlflow_entity()


def artifact_repository(artifact_uri: str, tracking_uri: str):
    """The artifact repository at a run's artifact URI, to upload a folder in one go.

    ``MlflowClient.log_artifacts`` first reads the run back for its artifact URI: one request more per run, where
    the URI is already known from the search or the create that found the run. The repository registry is
    internal (``mlflow.store``)."""
    from mlflow.store.artifact.artifact_repository_registry import get_artifact_repository

    return get_artifact_repository(artifact_uri, tracking_uri=tracking_uri)


def latest_step(run, key: str) -> int:
    """The step of the latest value of metric ``key`` a searched run holds (0 if none).

    A search returns each metric's latest value with its step, but ``RunData`` shows only the values publicly
    (``metrics``); the public way to the step, ``get_metric_history``, is one request more per run."""
    return max((m.step for m in getattr(run.data, "_metric_objs", []) if m.key == key), default=0)
