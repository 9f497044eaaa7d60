"""The only package that talks to MLflow.

Local default: everything under ``mlruns/`` in the working directory — a SQLite database ``mlruns/mlflow.db``
and an artifact folder ``mlruns/artifacts`` — so ``mlflow ui --backend-store-uri sqlite:///mlruns/mlflow.db``
(or ``python -m benchmark ui``) shows it. ``MLFLOW_TRACKING_URI`` (e.g. a team's ``mlflow server``) overrides it.

**An unreachable store.** A request that fails for a reason that may pass (connection refused or reset, a timeout,
HTTP 429/5xx, a locked SQLite file) is retried with backoff for ``SLICK_BENCH_TRACKING_TIMEOUT`` seconds (default
60) in all; then the run stops with one ``BenchmarkError`` naming the store and what failed, and closing its runs
costs no second wait. MLflow's own per-request retries are turned off (``MLFLOW_HTTP_REQUEST_MAX_RETRIES=0`` unless
you set it) so that bound holds. Re-running once the store is back resumes: finished variants are reused, the
others continue from their checkpoints.

Modules, each one job (a module imports only those above it in this list):

- ``retry``: which store failures may pass, how they read, and ``Retrying``, the retry the writer and reader share.
- ``mlflow_private``: every use of an MLflow private API, each in a small named function; no other module
  touches MLflow internals.
- ``store``: the tracking URI, the retry budget, MLflow's HTTP settings, the client, ``check_reachable``; every
  environment variable the package reads.
- ``reader``: ``ResultStore`` and ``RunRecord``, reading results back for reports and comparisons; ``read_table``.
- ``links``: how MLflow's UI shows a suite: the experiment and its tags, the chart view, ``ui_command``, ``ui_links``.
- ``claim``: one run of a suite at a time per store (a registered model as the suite's lock).
- ``pending``: what a run has waiting to be sent (buffered values, staged artifacts).
- ``writer``: ``Tracker``, one suite's experiment, its parent and variant runs, written in few requests.

Below: the names the rest of the code imports from ``benchmark.tracking``.
"""

from benchmark.tracking.links import (
           EXPERIMENT_KIND,
           EXPERIMENT_KIND_TAG,
           VIEW_KEY,
           VIEW_TAG,
           ui_command,
           ui_links,
)
from benchmark.tracking.reader import ResultStore, RunRecord, read_table
from benchmark.tracking.store import check_reachable, tracking_uri
from benchmark.tracking.writer import Tracker

__all__ = ["EXPERIMENT_KIND", "EXPERIMENT_KIND_TAG", "VIEW_KEY", "VIEW_TAG", "ResultStore", "RunRecord", "Tracker",
           "check_reachable", "read_table", "tracking_uri", "ui_command", "ui_links"]
