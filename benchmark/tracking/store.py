"""Where the tracking store is and how it is reached: its URI, the time budget of a request, MLflow's HTTP settings
that keep that budget, the client, and a fail-fast check of a server. Every environment variable the package reads
(``MLFLOW_TRACKING_URI``, ``SLICK_BENCH_TRACKING_TIMEOUT``, MLflow's HTTP and progress-bar settings) is read here,
each in one small function."""

from __future__ import annotations

import contextlib
import logging
import math
import os
import re
import warnings
from pathlib import Path

from benchmark import settings
from benchmark.errors import BenchmarkError
from benchmark.tracking import mlflow_private
from benchmark.tracking.retry import Retrying, reason

TIMEOUT_ENV = settings.TRACKING_TIMEOUT.name
_METRIC_NAME = re.compile(r"[^A-Za-z0-9_/. -]")


def default_uri(root: Path | None = None) -> str:
    root = (root or Path("mlruns")).resolve()
    return f"sqlite:///{root / 'mlflow.db'}"


def tracking_uri() -> str:
    """``MLFLOW_TRACKING_URI``, else the local default. An in-memory SQLite store (``sqlite://``,
    ``sqlite:///:memory:``) is refused: every run in it would be gone when the process ends."""
    uri = settings.TRACKING_URI.value() or default_uri()
    scheme, _, rest = uri.partition("://")
    if scheme.lower().startswith("sqlite") and (rest.split("?")[0] in ("", "/:memory:", ":memory:")):
        raise BenchmarkError(f"MLFLOW_TRACKING_URI={uri}: an in-memory SQLite store loses every run when the "
                             "process ends; use sqlite:///<file> (the default is ./mlruns/mlflow.db) or a server")
    return uri


def display_uri(uri: str | None = None) -> str:
    """The tracking URI without credentials (for messages)."""
    uri = uri or tracking_uri()
    scheme, sep, rest = uri.partition("://")
    return f"{scheme}{sep}{rest.rpartition('@')[2]}" if sep else uri


def metric_name(name: str) -> str:
    """MLflow accepts only [A-Za-z0-9_/. -] in metric names."""
    return _METRIC_NAME.sub("_", name)


def retry_seconds() -> float:
    """How long a request to the store is retried in all (``SLICK_BENCH_TRACKING_TIMEOUT``, default 60 s)."""
    raw = settings.TRACKING_TIMEOUT.value()
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not math.isfinite(value) or value < 0:
        raise BenchmarkError(f"{TIMEOUT_ENV}={raw!r}: expected a number of seconds >= 0")
    return value


def retrying(uri: str, again: str) -> Retrying:
    """Calls to the store at ``uri``, each retried for ``retry_seconds()`` in all; ``again``: what the user may do
    once the store is back (said when it was given up on)."""
    return Retrying(where=f"MLflow tracking store {display_uri(uri)}", budget=retry_seconds(), setting=TIMEOUT_ENV,
                    again=again)


# The values this module put into MLflow's environment (a value the user set is left alone).
_our_http_settings: dict[str, str] = {}


def _bound_http_retries(budget: float) -> None:
    """MLflow retries each HTTP request 7 times over ~4 minutes by default; ours retries against one deadline."""
    wanted = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0",
              "MLFLOW_HTTP_REQUEST_TIMEOUT": str(int(min(120, max(10, math.ceil(budget)))))}
    for name, value in wanted.items():
        if os.environ.get(name) in (None, _our_http_settings.get(name)):
            os.environ[name] = _our_http_settings[name] = value


def quiet_artifact_downloads() -> None:
    """No progress bar on downloads (they are small and many), unless the user asked for one."""
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")


def open_client():
    """An ``MlflowClient`` on the tracking (and model registry) store; a local SQLite store is created first."""
    warnings.filterwarnings("ignore", category=DeprecationWarning, module="sqlalchemy")
    warnings.filterwarnings("ignore", message=".*filesystem tracking backend.*")
    logging.getLogger("mlflow.store.db.utils").setLevel(logging.WARNING)
    logging.getLogger("alembic").setLevel(logging.WARNING)
    _bound_http_retries(retry_seconds())
    from mlflow import MlflowClient

    uri = tracking_uri()
    if not uri.startswith("sqlite:///"):
        return MlflowClient(tracking_uri=uri, registry_uri=uri)
    database = Path(uri.removeprefix("sqlite:///").split("?")[0])
    database.parent.mkdir(parents=True, exist_ok=True)
    # Creating the client creates (or migrates) the database's schema, and so does the first use of its model
    # registry: two first runs into a fresh store at once raced through alembic's migrations (tracebacks, and
    # twice a store left with _alembic_tmp_* tables that failed every later run). One process at a time, then.
    with _file_lock(database.with_name(f"{database.name}.init.lock")):
        client = MlflowClient(tracking_uri=uri, registry_uri=uri)
        mlflow_private.create_registry_tables(client)
    return client


@contextlib.contextmanager
def _file_lock(path: Path):
    """An exclusive ``flock`` on ``path`` for the block (released by the OS if this process dies)."""
    import fcntl

    with open(path, "a+") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def check_reachable(uri: str | None = None, timeout: float = 5.0) -> None:
    """Fail fast, naming the server, when an ``http(s)`` tracking URI does not answer (one ``GET /health``).
    Called before any compute; other URIs are checked by ``cache.ensure_writable``."""
    import requests

    uri = uri or tracking_uri()
    if not uri.startswith(("http://", "https://")):
        return
    try:
        response = requests.get(uri.rstrip("/") + "/health", timeout=timeout)
    except requests.RequestException as exc:
        raise BenchmarkError(f"MLflow tracking server {display_uri(uri)} (MLFLOW_TRACKING_URI): not reachable: "
                             f"{reason(exc)}; start it, or unset MLFLOW_TRACKING_URI to log to ./mlruns") from exc
    if response.status_code >= 500:
        raise BenchmarkError(f"MLflow tracking server {display_uri(uri)} (MLFLOW_TRACKING_URI): answers "
                             f"HTTP {response.status_code} to /health")
