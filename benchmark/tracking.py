"""The only module that talks to MLflow.

Local default: everything under ``mlruns/`` in the working directory — a SQLite database ``mlruns/mlflow.db``
and an artifact folder ``mlruns/artifacts`` — so ``mlflow ui --backend-store-uri sqlite:///mlruns/mlflow.db``
(or ``python -m benchmark ui``) shows it. ``MLFLOW_TRACKING_URI`` (e.g. a team's ``mlflow server``) overrides it.

Layout: experiment = the suite's name; one parent run per suite (re-running the same resolved suite reopens its
parent); one nested child run per fine-tuning variant, tagged with the variant's content key so a finished
variant is found and reused instead of trained again.

**Few requests.** Everything written to a run is buffered and sent when the run is flushed or closed: metrics,
params and tags together in ``log_batch`` calls (1000 values each; all epochs of a variant in one), its input
dataset in one call, and its artifacts in one upload (one request per file where the server proxies artifacts).
A parent's children are listed with one search. The smoke suite (3 variants × 3 epochs) costs an ``mlflow server``
that proxies artifacts 44 requests: 22 tracking calls (2.4 per epoch; none grows with the epochs) and one upload per
artifact file, 22 (``tests/test_tracking_server.py`` counts them; 132 before batching).

**An unreachable store.** A request that fails for a reason that may pass (connection refused or reset, a timeout,
HTTP 429/5xx, a locked SQLite file) is retried with backoff for ``SLICK_BENCH_TRACKING_TIMEOUT`` seconds (default
60) in all; then the run stops with one ``BenchmarkError`` naming the store and what failed, and closing its runs
costs no second wait. MLflow's own per-request retries are turned off (``MLFLOW_HTTP_REQUEST_MAX_RETRIES=0`` unless
you set it) so that bound holds. Re-running once the store is back resumes: finished variants are reused, the
others continue from their checkpoints.

**One run of a suite at a time per store.** ``open_parent`` claims the suite in the store before it looks for the
parent: it creates a registered model named ``slick-lock.<experiment id>.<suite key>``. The store's unique
constraint on model names makes creation an atomic compare-and-set, on SQLite and behind a server alike, so two
machines sharing one store cannot both hold it; the run that does not get it stops with one line naming the holder
(host, pid, since when). The claim is deleted when the parent is closed; one left by a process that died is taken
over when that process is gone (same host) or has not renewed its heartbeat (every 2 min) for 10 min. The
takeover is decided by the same uniqueness: only the contender that creates ``<claim>.takeover.<dead token>`` may
delete the dead claim (``tests/test_faults.py`` races three contenders for 15 rounds).
"""

from __future__ import annotations

import atexit
import contextlib
import json
import logging
import math
import os
import random
import re
import shutil
import socket
import tempfile
import threading
import time
import uuid
import warnings
import weakref
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import polars as pl

from benchmark.errors import BenchmarkError

KEY_TAG = "slick.content_key"
SUITE_TAG = "slick.suite_key"
VARIANT_TAG = "slick.variant"
EXPERIMENT_KIND_TAG, EXPERIMENT_KIND = "mlflow.experimentKind", "custom_model_development"
NOTE_TAG = "mlflow.note.content"  # the experiment's description on its page in the UI
# The chart view the printed links open: MLflow 3.17's UI orders its chart sections alphabetically by metric
# prefix (``baseline/``, ``convergence/`` before ``test/``), and reads a view stored as the experiment tag
# ``mlflow.sharedViewState.<key>`` when a link carries ``viewStateShareKey=<key>``. Ours leads with accuracy against
# the realised share of Unknown examples, then the per-epoch curves; the UI appends every other section after them.
VIEW_KEY = "slick-bench-v1"
VIEW_TAG = f"mlflow.sharedViewState.{VIEW_KEY}"
_LEAD = "Accuracy against % Unknown (one point per variant)"
_SECTIONS = [_LEAD, "test/acc", "ood/acc", "train/acc", "dev/acc", "train", "early_stop/test/acc",
             "convergence/test/acc", "early_stop/ood/acc", "convergence/ood/acc", "linear"]


def chart_view() -> str:
    """The experiment's chart view, as MLflow's UI stores a shared one (its ``compareRunSections`` and
    ``compareRunCharts``; the UI adds a chart for every metric, in the section named by its prefix)."""
    def scatter(stop: str) -> dict:
        return {"uuid": f"slick-{stop}-vs-unknown", "type": "SCATTER", "metricSectionId": "slick-lead",
                "isGenerated": False, "deleted": False, "runsCountToCompare": 100,
                "displayName": f"{stop.upper()} test accuracy against realised % Unknown",
                "xaxis": {"key": "realized_unknown_fraction", "type": "PARAM"},
                "yaxis": {"key": f"{stop}/test/acc/all", "dataAccessKey": f"{stop}/test/acc/all", "type": "METRIC"}}

    sections = [{"uuid": "slick-lead" if name == _LEAD else f"slick-{name}", "name": name, "display": True,
                 "isReordered": name == _LEAD} for name in _SECTIONS]
    # The variants' runs only, grouped by mixture (the seeds of one mixture averaged): the charts plot the runs the
    # list shows, and ungrouped, a parent's children are folded under it (a suite's parent has no per-epoch metric).
    view = {"searchFilter": "tags.`slick.role` = 'variant'",
            "groupBy": {"aggregateFunction": "average", "groupByKeys": [{"mode": "tag", "groupByData": "mixture"}]},
            "useGroupedValuesInCharts": True, "isAccordionReordered": True, "hideEmptyCharts": True,
            "compareRunSections": sections, "compareRunCharts": [scatter("early_stop"), scatter("convergence")]}
    return json.dumps(view, separators=(",", ":"))
LOGGED_ARTIFACTS_TAG = "mlflow.loggedArtifacts"  # what MLflow's UI reads to show a run's tables
TIMEOUT_ENV = "SLICK_BENCH_TRACKING_TIMEOUT"
DEFAULT_TIMEOUT_S = 60.0
LOCK_PREFIX = "slick-lock"
LOCK_HEARTBEAT_S = 120.0
LOCK_STALE_S = 600.0
CLAIM_ATTEMPTS = 8  # creates of the claim, each after reading a holder that gave it up or was taken over
CLAIM_MARKER_STALE_S = 60.0
_METRIC_NAME = re.compile(r"[^A-Za-z0-9_/. -]")
# MLflow's log_batch limits.
MAX_METRICS, MAX_PARAMS, MAX_TAGS, MAX_VALUES = 1000, 100, 100, 1000
_log = logging.getLogger("benchmark.tracking")


def default_uri(root: Path | None = None) -> str:
    root = (root or Path("mlruns")).resolve()
    return f"sqlite:///{root / 'mlflow.db'}"


def tracking_uri() -> str:
    """``MLFLOW_TRACKING_URI``, else the local default. An in-memory SQLite store (``sqlite://``,
    ``sqlite:///:memory:``) is refused: every run in it would be gone when the process ends."""
    uri = os.environ.get("MLFLOW_TRACKING_URI") or default_uri()
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
    raw = os.environ.get(TIMEOUT_ENV, "").strip()
    if not raw:
        return DEFAULT_TIMEOUT_S
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not math.isfinite(value) or value < 0:
        raise BenchmarkError(f"{TIMEOUT_ENV}={raw!r}: expected a number of seconds >= 0")
    return value


# The values this module put into MLflow's environment (a value the user set is left alone).
_our_http_settings: dict[str, str] = {}


def _bound_http_retries(budget: float) -> None:
    """MLflow retries each HTTP request 7 times over ~4 minutes by default; ours retries against one deadline."""
    wanted = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0",
              "MLFLOW_HTTP_REQUEST_TIMEOUT": str(int(min(120, max(10, math.ceil(budget)))))}
    for name, value in wanted.items():
        if os.environ.get(name) in (None, _our_http_settings.get(name)):
            os.environ[name] = _our_http_settings[name] = value


def _client():
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
        client._get_registry_client().store  # noqa: B018 - its tables, created here under the lock
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
                             f"{_reason(exc)}; start it, or unset MLFLOW_TRACKING_URI to log to ./mlruns") from exc
    if response.status_code >= 500:
        raise BenchmarkError(f"MLflow tracking server {display_uri(uri)} (MLFLOW_TRACKING_URI): answers "
                             f"HTTP {response.status_code} to /health")


# ---------------------------------------------------------------------------------------------------------------
# Failures: which may pass, and how they read
# ---------------------------------------------------------------------------------------------------------------
_TRANSIENT_TEXT = re.compile(r"database is locked|error code (429|50[0234])\b|status code (429|50[234])\b|"
                             r"too many (5\d\d )?error responses|Connection (refused|reset|aborted)|timed out",
                             re.IGNORECASE)
_TRANSIENT_CODES = {"TEMPORARILY_UNAVAILABLE", "REQUEST_LIMIT_EXCEEDED", "RESOURCE_EXHAUSTED"}


def _chain(exc: BaseException):
    seen = set()
    while exc is not None and id(exc) not in seen and len(seen) < 20:
        seen.add(id(exc))
        yield exc
        exc = exc.__cause__ or exc.__context__


def _is_store_error(exc: BaseException) -> bool:
    """An error from MLflow, its HTTP layer or the file system: what a store failure looks like (not our bug)."""
    import requests
    from mlflow.exceptions import MlflowException

    return isinstance(exc, MlflowException | requests.RequestException | OSError)


# Failures that waiting does not cure, whatever code MLflow gives them: it reports every SQLAlchemy OperationalError
# as TEMPORARILY_UNAVAILABLE, a full disk included, which was then retried for a minute as "unreachable".
_PERMANENT_TEXT = re.compile(r"database or disk is full|No space left on device|Disk quota exceeded|"
                             r"attempt to write a readonly database|database disk image is malformed", re.IGNORECASE)


def _transient(exc: BaseException) -> bool:
    import requests

    if any(_PERMANENT_TEXT.search(str(link)) for link in _chain(exc)):
        return False
    for link in _chain(exc):
        if isinstance(link, requests.ConnectionError | requests.Timeout | requests.exceptions.ChunkedEncodingError
                      | requests.exceptions.RetryError | ConnectionError | TimeoutError):
            return True
        if getattr(link, "error_code", None) in _TRANSIENT_CODES:
            return True
        response = getattr(link, "response", None)
        if getattr(response, "status_code", None) in (429, 500, 502, 503, 504):
            return True
        if _TRANSIENT_TEXT.search(str(link)):
            return True
    return False


def _reason(exc: BaseException) -> str:
    """The cause in a few words: the OS error where there is one, else the first line of the message."""
    text = " ".join(str(link) for link in _chain(exc))
    if re.search(r"database or disk is full", text, re.IGNORECASE):
        return "the database or its disk is full (free space where the store lives, then run again)"
    errno = re.search(r"\[Errno -?\d+\] ([^'\"\)\]]+)", text)
    if errno:
        return errno.group(1).strip().rstrip(".").lower()
    if re.search(r"timed? ?out", text, re.IGNORECASE):
        return "timed out"
    first = (getattr(exc, "message", None) or str(exc) or type(exc).__name__).strip().splitlines()
    line = first[0] if first else type(exc).__name__
    return line if len(line) <= 300 else line[:297] + "..."


# ---------------------------------------------------------------------------------------------------------------
# The suite's claim in the store
# ---------------------------------------------------------------------------------------------------------------
_held_tokens: set[str] = set()  # claims held by live Trackers of this process
_live_claims: weakref.WeakSet = weakref.WeakSet()


@atexit.register
def _release_claims_at_exit() -> None:
    """Best effort, as the process ends: a claim still held (a run that never closed its parent) is deleted."""
    for claim in list(_live_claims):
        claim.release()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True  # exists, owned by someone else
    return True


def _heartbeat(client, name: str, stop: threading.Event) -> None:
    while not stop.wait(LOCK_HEARTBEAT_S):
        try:
            client.set_registered_model_tag(name, "heartbeat", str(time.time()))
        except Exception:  # noqa: BLE001 - a missed heartbeat only ages the claim
            pass


def _name_part(text: str) -> str:
    """Text as part of a registered model's name."""
    return re.sub(r"[^A-Za-z0-9_.-]", "_", text)


class _SuiteClaim:
    """A registered model whose name is the claim (see the module docstring)."""

    def __init__(self, tracker: Tracker, experiment_id: str, suite_key: str, label: str):
        self.tracker, self.label = tracker, label
        self.name = f"{LOCK_PREFIX}.{experiment_id}.{_name_part(suite_key)}"
        self.token = uuid.uuid4().hex
        self.held = False
        self._marker: str | None = None  # the takeover marker kept while a claim taken over is held
        self._stop = threading.Event()

    def _tags(self) -> dict[str, str]:
        now = time.time()
        tags = {"host": socket.gethostname(), "pid": str(os.getpid()), "token": self.token, "started": str(now),
                "heartbeat": str(now), "suite": self.label}
        return tags | ({"marker": self._marker} if self._marker else {})

    def acquire(self) -> None:
        from mlflow.exceptions import MlflowException

        client, call = self.tracker.client, self.tracker._retrying
        for _attempt in range(CLAIM_ATTEMPTS):
            try:
                call(f"claim suite '{self.label}' (registered model {self.name})", client.create_registered_model,
                     self.name, tags=self._tags(), passthrough=True,
                     description="held while `python -m benchmark run` runs this suite into this store; "
                                 "deleted when it ends (slick-bench)")
            except MlflowException as exc:
                if exc.error_code != "RESOURCE_ALREADY_EXISTS":
                    _log.warning("warning: %s: cannot claim the suite in the store (%s); two runs of it at once "
                                 "are not prevented", display_uri(self.tracker.uri), _reason(exc))
                    return
                holder = self._holder()
                if holder is None:
                    continue  # given back meanwhile
                if self._abandoned(holder):
                    self._take_over(holder)
                    continue
                self._drop_marker()
                raise BenchmarkError(self._busy_message(holder)) from None
            self.held = True
            _held_tokens.add(self.token)
            _live_claims.add(self)
            # A Tracker dropped without closing its parent gives its claim up (in this process; and its heartbeat
            # stops, so other machines take it over later).
            weakref.finalize(self.tracker, _held_tokens.discard, self.token)
            weakref.finalize(self.tracker, self._stop.set)
            threading.Thread(target=_heartbeat, args=(client, self.name, self._stop), name="slick-claim-heartbeat",
                             daemon=True).start()
            return
        self._drop_marker()
        raise BenchmarkError(f"suite '{self.label}': could not claim it in {display_uri(self.tracker.uri)} "
                             f"after {CLAIM_ATTEMPTS} tries (other runs of it are starting at the same time)")

    def _take_over(self, holder: dict) -> None:
        """Delete an abandoned claim, if this contender is the one that may. Deleting by name and then creating
        let two contenders that both saw the dead claim both hold it (the second deleted the first's new claim).
        So the right to delete is itself a registered model, named after the dead claim's token: the store's
        uniqueness lets exactly one contender create it. It is kept while the claim it led to is held (a late
        contender that saw the same dead claim then fails to create it) and deleted with that claim."""
        from mlflow.exceptions import MlflowException

        marker = f"{self.name}.takeover.{_name_part(holder.get('token') or holder.get('started', '?'))}"
        try:
            self.tracker._retrying("take over the suite's claim", self.tracker.client.create_registered_model,
                                   marker, tags={"host": socket.gethostname(), "pid": str(os.getpid()),
                                                 "created": str(time.time())}, passthrough=True)
        except MlflowException as exc:
            if exc.error_code != "RESOURCE_ALREADY_EXISTS":
                raise BenchmarkError(self.tracker._failure("take over the suite's claim", exc, False)) from exc
            self._clear_left_marker(marker)
            time.sleep(0.05 + 0.1 * random.random())  # another contender is taking over: read the claim again
            return
        current = self._holder()
        if current is None or current.get("token") != holder.get("token"):
            self._delete(marker)  # it changed hands meanwhile: nothing of ours to delete
            return
        _log.warning("warning: taking over the claim on suite '%s' left by %s pid %s (%s)",
                     self.label, holder.get("host"), holder.get("pid"), self._why_abandoned)
        self._delete(self.name)
        if holder.get("marker"):
            self._delete(holder["marker"])  # the one that the dead run's own takeover kept
        self._marker = marker

    def _clear_left_marker(self, marker: str) -> None:
        """A takeover marker whose taker died between creating it and deleting the dead claim would block the
        claim for good; one older than a minute (a takeover is three requests) is deleted, and tried again."""
        try:
            tags = dict(self.tracker.client.get_registered_model(marker).tags)
            if time.time() - float(tags.get("created", "0")) > CLAIM_MARKER_STALE_S:
                self._delete(marker)
        except Exception:  # noqa: BLE001 - gone already: the next try reads the claim afresh
            pass

    def _drop_marker(self) -> None:
        if self._marker is not None:
            self._delete(self._marker)
            self._marker = None

    def _holder(self) -> dict | None:
        from mlflow.exceptions import MlflowException

        try:
            model = self.tracker._retrying("read the suite's claim", self.tracker.client.get_registered_model,
                                           self.name, passthrough=True)
        except MlflowException as exc:
            if exc.error_code == "RESOURCE_DOES_NOT_EXIST":
                return None
            raise BenchmarkError(self.tracker._failure("read the suite's claim", exc, False)) from exc
        return dict(model.tags)

    _why_abandoned = ""

    def _abandoned(self, holder: dict) -> bool:
        try:
            pid, beat = int(holder.get("pid", "")), float(holder.get("heartbeat", "0"))
        except ValueError:
            return True
        if holder.get("host") == socket.gethostname():
            if pid == os.getpid() and holder.get("token") not in _held_tokens:
                self._why_abandoned = "an earlier run in this process that stopped"
                return True
            if not _alive(pid):
                self._why_abandoned = "that process is gone"
                return True
        if time.time() - beat > LOCK_STALE_S:
            self._why_abandoned = f"no heartbeat for {time.time() - beat:.0f} s"
            return True
        return False

    def _busy_message(self, holder: dict) -> str:
        def when(value: str) -> str:
            try:
                return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(float(value)))
            except ValueError:
                return "?"

        return (f"suite '{self.label}' is already being run into {display_uri(self.tracker.uri)} by "
                f"{holder.get('host', '?')} pid {holder.get('pid', '?')} (since {when(holder.get('started', ''))}); "
                "run it again when that run ends (its finished variants are reused). A claim left by a crashed run "
                f"is taken over once its process is gone or after {LOCK_STALE_S / 60:.0f} min without a heartbeat "
                f"(or delete the registered model '{self.name}')")

    def _delete(self, name: str) -> None:
        client = self.tracker.client
        # MlflowClient.delete_registered_model first reads the model back (is it a prompt?): one request more.
        registry = getattr(client, "_get_registry_client", None)
        try:
            (registry().delete_registered_model if registry else client.delete_registered_model)(name)
        except Exception:  # noqa: BLE001 - gone already, or the store is down: a left claim is taken over later
            pass

    def release(self) -> None:
        if not self.held:
            return
        self.held = False
        self._stop.set()
        _held_tokens.discard(self.token)
        if self.tracker._down is None:
            self._delete(self.name)
            self._drop_marker()


# ---------------------------------------------------------------------------------------------------------------
# What a run has waiting to be sent
# ---------------------------------------------------------------------------------------------------------------
@dataclass
class _Pending:
    metrics: list = field(default_factory=list)
    params: dict = field(default_factory=dict)
    tags: dict = field(default_factory=dict)
    datasets: list = field(default_factory=list)
    tables: list[str] = field(default_factory=list)
    folder: Path | None = None

    def stage(self, artifact_file: str) -> Path:
        if self.folder is None:
            self.folder = Path(tempfile.mkdtemp(prefix="slick-bench-artifacts-"))
        path = self.folder / artifact_file
        path.parent.mkdir(parents=True, exist_ok=True)
        return path

    def batches(self):
        """(metrics, params, tags) within MLflow's limits for one log_batch call."""
        metrics, params, tags = list(self.metrics), list(self.params.values()), list(self.tags.values())
        while metrics or params or tags:
            p, params = params[:MAX_PARAMS], params[MAX_PARAMS:]
            t, tags = tags[:MAX_TAGS], tags[MAX_TAGS:]
            room = min(MAX_METRICS, MAX_VALUES - len(p) - len(t))
            m, metrics = metrics[:room], metrics[room:]
            yield m, p, t

    def discard(self) -> None:
        if self.folder is not None:
            shutil.rmtree(self.folder, ignore_errors=True)
            self.folder = None


class Tracker:
    """One suite's experiment. Every method takes the run id it writes to: no hidden active-run state. Writes are
    buffered per run until ``flush`` or ``close``."""

    def __init__(self, experiment: str, description: str = ""):
        """``description``: shown on the experiment's page (MLflow's note), where it has none yet; one written in
        the UI is kept."""
        self.uri = tracking_uri()
        self.budget = retry_seconds()
        self.client = _client()
        self.experiment = experiment
        self._down: str | None = None  # set once the store was given up on: later calls fail at once
        self._pending: dict[str, _Pending] = {}
        self._children: dict[str, list] = {}  # parent run id -> its child runs (one search, kept current)
        self._artifact_uris: dict[str, str] = {}
        self._tables: dict[str, list] = {}  # run id -> the tables MLflow's UI knows about (LOGGED_ARTIFACTS_TAG)
        self._claim: _SuiteClaim | None = None
        self._claimed_parent: str | None = None
        self._finished_parent: str | None = None  # a FINISHED parent reopened for reading, not yet resumed
        found = self._retrying(f"look up experiment '{experiment}'", self.client.get_experiment_by_name, experiment)
        if found is None:
            location = None
            if self.uri.startswith("sqlite:///"):
                location = (Path(self.uri.removeprefix("sqlite:///")).parent / "artifacts").resolve().as_uri()
            try:
                # MLflow 3 otherwise opens an experiment on its GenAI overview (traces), not on the runs and charts.
                self.experiment_id = self._retrying(
                    f"create experiment '{experiment}'", self.client.create_experiment, experiment,
                    artifact_location=location, tags={EXPERIMENT_KIND_TAG: EXPERIMENT_KIND, VIEW_TAG: chart_view(),
                                                      **({NOTE_TAG: description} if description else {})})
                return
            except BenchmarkError:
                found = self._retrying(f"look up experiment '{experiment}'", self.client.get_experiment_by_name,
                                       experiment)
                if found is None:
                    raise
                # created by a concurrent run in between: use it
        if found.lifecycle_stage == "deleted":
            self._retrying(f"restore experiment '{experiment}'", self.client.restore_experiment, found.experiment_id)
        self.experiment_id = found.experiment_id
        if found.tags.get(EXPERIMENT_KIND_TAG) != EXPERIMENT_KIND:
            self._retrying("tag the experiment", self.client.set_experiment_tag, self.experiment_id,
                           EXPERIMENT_KIND_TAG, EXPERIMENT_KIND)
        if found.tags.get(VIEW_TAG) != chart_view():
            self._retrying("store the experiment's chart view", self.client.set_experiment_tag, self.experiment_id,
                           VIEW_TAG, chart_view())
        if description and not found.tags.get(NOTE_TAG):
            self._retrying("describe the experiment", self.client.set_experiment_tag, self.experiment_id,
                           NOTE_TAG, description)

    # -- talking to the store -------------------------------------------------------------------------------
    def _retrying(self, what: str, fn: Callable, *args, passthrough: bool = False, **kwargs):
        """``fn(*args, **kwargs)``, retried while the failure may pass and the time budget lasts; a store failure
        becomes one BenchmarkError line. ``passthrough``: a definite MLflow answer (e.g. "already exists") is
        raised as it is, for the caller to read."""
        from mlflow.exceptions import MlflowException

        if self._down is not None:
            raise BenchmarkError(self._down)
        deadline = time.monotonic() + self.budget
        pause = 0.5
        while True:
            try:
                return fn(*args, **kwargs)
            except BenchmarkError:
                raise
            except Exception as exc:
                if not _is_store_error(exc):
                    raise  # a bug, not the store: keep its traceback
                transient = _transient(exc)
                left = deadline - time.monotonic()
                if transient and left > 0:
                    time.sleep(min(pause, left))
                    pause = min(pause * 2, 8.0)
                    continue
                if passthrough and not transient and isinstance(exc, MlflowException):
                    raise
                message = self._failure(what, exc, transient)
                if transient:
                    self._down = message
                raise BenchmarkError(message) from exc

    def _failure(self, what: str, exc: BaseException, transient: bool) -> str:
        where = f"MLflow tracking store {display_uri(self.uri)}"
        if not transient:
            return f"{where}: could not {what}: {_reason(exc)}"
        return (f"{where}: could not {what}: {_reason(exc)} (retried for {self.budget:g} s, {TIMEOUT_ENV}); "
                "run the same command again once it is reachable: finished variants are reused, the others resume "
                "from their checkpoints")

    # -- runs -----------------------------------------------------------------------------------------------
    def _find(self, tags: dict[str, str], statuses: tuple[str, ...] | None = None):
        clauses = [f"tags.`{k}` = '{v}'" for k, v in tags.items()]
        runs = self._retrying("search runs", self.client.search_runs, [self.experiment_id],
                              filter_string=" and ".join(clauses), order_by=["attributes.start_time DESC"],
                              max_results=50)
        return [r for r in runs if statuses is None or r.info.status in statuses]

    def _remember(self, run) -> None:
        self._artifact_uris[run.info.run_id] = run.info.artifact_uri
        self._tables[run.info.run_id] = json.loads(run.data.tags.get(LOGGED_ARTIFACTS_TAG, "[]"))

    def open_parent(self, suite_key: str, name: str, tags: dict[str, str], fresh: bool = False) -> tuple[str, bool]:
        """The suite's parent run: reopened when the same resolved suite ran before, unless ``fresh``. The suite
        is claimed in the store first: a second run of it at the same time stops here, naming the first."""
        self._claim = _SuiteClaim(self, self.experiment_id, suite_key, name)
        self._claim.acquire()
        try:
            if not fresh:
                for run in self._find({SUITE_TAG: suite_key, "slick.role": "parent"}):
                    if run.info.status == "FINISHED":  # reopened by ``resume``, if there is anything to train
                        self._finished_parent = run.info.run_id
                    else:
                        self._retrying("reopen the parent run", self.client.update_run, run.info.run_id,
                                       status="RUNNING")
                    self._remember(run)
                    self._claimed_parent = run.info.run_id
                    return run.info.run_id, True
            run = self._retrying("create the parent run", self.client.create_run, self.experiment_id, run_name=name,
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
            self._retrying("reopen the parent run", self.client.update_run, parent_id, status="RUNNING")
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
                self._retrying(f"reopen run {run.info.run_id}", self.client.update_run, run.info.run_id,
                               status="RUNNING")
                # Params it lacks (a kill lost them with the rest of its buffer); MLflow refuses to change a value.
                self.log_params(run.info.run_id, {k: v for k, v in params.items() if str(k) not in run.data.params})
                return run.info.run_id
        run = self._retrying(f"create the run of variant {name}", self.client.create_run, self.experiment_id,
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
            if self._down is not None:
                self._pending.pop(run_id, _Pending()).discard()
                if status == "FINISHED":
                    raise BenchmarkError(self._down)
                return
            try:
                self.flush(run_id)
            except BaseException:
                if self._down is None and status == "FINISHED" and run_id != self._finished_parent:
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
        from mlflow.entities import RunStatus

        # MlflowClient.set_terminated also reads the run back to print its URL: one request more per run.
        store = getattr(getattr(self.client, "_tracking_client", None), "store", None)
        if store is None:
            self._retrying(f"mark run {run_id} {status}", self.client.set_terminated, run_id, status=status)
            return
        self._retrying(f"mark run {run_id} {status}", store.update_run_info, run_id,
                       run_status=RunStatus.from_string(status), end_time=int(time.time() * 1000), run_name=None)

    def _release_claim(self) -> None:
        if self._claim is not None:
            self._claim.release()

    def flush(self, run_id: str | None = None) -> None:
        """Send what ``run_id`` (every run, if None) has waiting: its values in as few ``log_batch`` calls as
        MLflow allows, its input datasets in one call, its artifacts in one upload."""
        from mlflow.entities import RunTag

        for rid in [run_id] if run_id is not None else list(self._pending):
            pending = self._pending.pop(rid, None)
            if pending is None:
                continue
            try:
                if pending.tables:
                    known = self._tables.setdefault(rid, [])
                    known += [t for t in ({"path": p, "type": "table"} for p in pending.tables) if t not in known]
                    pending.tags[LOGGED_ARTIFACTS_TAG] = RunTag(LOGGED_ARTIFACTS_TAG, json.dumps(known))
                for metrics, params, tags in pending.batches():
                    self._retrying(f"log to run {rid}", self.client.log_batch, rid, metrics=metrics, params=params,
                                   tags=tags)
                if pending.datasets:
                    self._retrying(f"log the input dataset of run {rid}", self.client.log_inputs, rid,
                                   datasets=pending.datasets)
                if pending.folder is not None:
                    repo = self._artifact_repo(rid)
                    self._retrying(f"upload the artifacts of run {rid}", repo.log_artifacts, str(pending.folder))
            finally:
                pending.discard()

    def _artifact_repo(self, run_id: str):
        from mlflow.store.artifact.artifact_repository_registry import get_artifact_repository

        uri = self._artifact_uris.get(run_id)
        if uri is None:
            uri = self._retrying(f"read run {run_id}", self.client.get_run, run_id).info.artifact_uri
            self._artifact_uris[run_id] = uri
        return get_artifact_repository(uri, tracking_uri=self.uri)

    def _pend(self, run_id: str) -> _Pending:
        return self._pending.setdefault(run_id, _Pending())

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
        self._pend(run_id).metrics += [Metric(metric_name(k), float(v), now, step) for k, v in metrics.items()
                                       if v is not None]

    def log_history(self, run_id: str, history: pl.DataFrame) -> None:
        """Every epoch's metrics (step = epoch), buffered with the rest: a variant's whole history in one call."""
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        self._pend(run_id).metrics += [Metric(metric_name(k), float(v), now, int(record["epoch"]))
                                       for record in history.iter_rows(named=True) for k, v in record.items()
                                       if k != "epoch" and v is not None and v == v]

    def log_epoch(self, run_id: str, metrics: dict[str, float], epoch: int) -> None:
        """One epoch's metrics (step = epoch) sent now, in one call: what a variant shows while it trains."""
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        values = [Metric(metric_name(k), float(v), now, int(epoch)) for k, v in metrics.items()
                  if v is not None and v == v]
        for start in range(0, len(values), MAX_METRICS):
            self._retrying(f"log epoch {epoch} to run {run_id}", self.client.log_batch, run_id,
                           metrics=values[start:start + MAX_METRICS])

    def logged_epochs(self, run_id: str) -> int:
        """The last epoch a variant run has in the store (0 for a new run), from the search that found it."""
        for runs in self._children.values():
            for run in runs:
                if run.info.run_id == run_id:
                    return max((m.step for m in getattr(run.data, "_metric_objs", []) if m.key == "dev/acc/all"),
                               default=0)
        return 0

    def metric_history(self, run_id: str, key: str) -> list[tuple[int, float]]:
        history = self._retrying(f"read the history of {key}", self.client.get_metric_history, run_id, key)
        return [(m.step, m.value) for m in history]

    def read_table(self, run_id: str, artifact_file: str) -> pl.DataFrame | None:
        """A table the run logged (``log_table``), read back from the store: what a finished variant's predictions
        are when the local cache lost them. None when the run has no such artifact or it cannot be parsed."""
        folder = str(Path(artifact_file).parent) if Path(artifact_file).parent != Path(".") else None
        listed = self._retrying(f"list the artifacts of run {run_id}", self.client.list_artifacts, run_id, folder)
        if artifact_file not in {a.path for a in listed}:
            return None
        with tempfile.TemporaryDirectory(prefix="slick-bench-read-") as into:
            path = self._retrying(f"read {artifact_file} of run {run_id}", self.client.download_artifacts, run_id,
                                  artifact_file, into)
            try:
                return read_table(Path(path))
            except (OSError, ValueError, TypeError):
                return None

    def latest_metrics(self, run_id: str) -> dict[str, float]:
        for runs in self._children.values():
            for run in runs:
                if run.info.run_id == run_id and run.info.status == "FINISHED" and run_id not in self._pending:
                    return dict(run.data.metrics)  # from the search that found it: a finished run does not change
        return dict(self._retrying(f"read run {run_id}", self.client.get_run, run_id).data.metrics)

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
            DatasetInput(dataset._to_mlflow_entity(), tags=[InputTag("mlflow.data.context", context)]))

    def children(self, parent_id: str) -> list:
        """The parent's child runs, freshly searched (and remembered for ``finished_variant``/``open_variant``)."""
        runs = self._retrying("list the variant runs", self.client.search_runs, [self.experiment_id],
                              filter_string=f"tags.`mlflow.parentRunId` = '{parent_id}'", max_results=1000)
        for run in runs:
            self._remember(run)
        self._children[parent_id] = list(runs)
        return runs


def ui_command(host: str = "127.0.0.1", port: int = 5000) -> list[str]:
    """The MLflow UI on the local store, bound to loopback only."""
    uri = tracking_uri()
    if not uri.startswith("sqlite:///"):
        raise BenchmarkError(f"MLFLOW_TRACKING_URI is '{uri}': open that server's own UI instead")
    artifacts = (Path(uri.removeprefix("sqlite:///")).parent / "artifacts").resolve()
    return ["mlflow", "ui", "--backend-store-uri", uri, "--default-artifact-root", artifacts.as_uri(),
            "--host", host, "--port", str(port)]


# ---------------------------------------------------------------------------------------------------------------
# Reading results back (reports, comparisons): works on any store, runs made earlier or on a team server
# ---------------------------------------------------------------------------------------------------------------
class RunRecord:
    """A run as plain Python values (no MLflow objects leave this module)."""

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


class ResultStore:
    """Read-only view of the tracking store for reports and comparisons: it never creates an experiment or a
    run. The one write, ``log_files``, attaches a built report to runs that already exist."""

    def __init__(self):
        os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # downloads are small and many
        self.client = _client()

    def experiments(self, names: list[str] | None = None) -> list[tuple[str, str]]:
        """(id, name) of the named experiments (an unknown name is an error naming the ones there are), or of
        every active experiment that holds a suite's parent run."""
        from mlflow.entities import ViewType

        every = {e.name: e for e in self.client.search_experiments(view_type=ViewType.ACTIVE_ONLY)}
        if names:
            missing = [n for n in names if n not in every]
            if missing:
                known = ", ".join(sorted(every)) or "none"
                raise BenchmarkError(f"--experiment {missing[0]}: no such experiment in {display_uri()} "
                                     f"(experiments: {known})")
            return [(every[n].experiment_id, n) for n in names]
        found = []
        for name, experiment in sorted(every.items()):
            if self.client.search_runs([experiment.experiment_id], filter_string="tags.`slick.role` = 'parent'",
                                       max_results=1):
                found.append((experiment.experiment_id, name))
        return found

    def experiment_tags(self, experiment_id: str) -> dict[str, str]:
        return dict(self.client.get_experiment(experiment_id).tags)

    def parents(self, experiment_id: str) -> list[RunRecord]:
        """The suite parent runs of an experiment, newest first."""
        runs = self.client.search_runs([experiment_id], filter_string="tags.`slick.role` = 'parent'",
                                       order_by=["attributes.start_time DESC"], max_results=1000)
        return [RunRecord(r) for r in runs]

    def children(self, experiment_id: str, parent_id: str) -> list[RunRecord]:
        runs = self.client.search_runs([experiment_id], filter_string=f"tags.`mlflow.parentRunId` = '{parent_id}'",
                                       max_results=5000)
        return [RunRecord(r) for r in runs]

    def metric_history(self, run_id: str, key: str) -> list[tuple[int, float]]:
        return [(m.step, m.value) for m in self.client.get_metric_history(run_id, key)]

    def artifact(self, run_id: str, path: str, into: Path) -> Path | None:
        """Download one artifact file into the folder ``into``; None when the run has no such artifact."""
        folder = str(Path(path).parent) if Path(path).parent != Path(".") else None
        names = {a.path for a in self.client.list_artifacts(run_id, folder)}
        if path not in names:
            return None
        return Path(self.client.download_artifacts(run_id, path, str(into)))

    def log_files(self, run_id: str, files: list[tuple[Path, str]]) -> None:
        """Upload exactly ``files`` ((local file, artifact folder) pairs, in order) to a run, one file at a time:
        MLflow writes each through a temporary file renamed into place (local stores) or one request (servers), so
        a failure (a full disk) leaves whole files or none, never a truncated one. Raises one BenchmarkError line."""
        for path, folder in files:
            try:
                self.client.log_artifact(run_id, str(path), artifact_path=folder or None)
            except Exception as exc:
                if not _is_store_error(exc):
                    raise
                raise BenchmarkError(f"MLflow tracking store {display_uri()}: could not attach {Path(path).name} to "
                                     f"run {run_id}: {_reason(exc)}") from exc


def read_table(path: Path) -> pl.DataFrame:
    """A table written by ``Tracker.log_table`` (MLflow's {"columns": [...], "data": [[...], ...]} JSON)."""
    import json

    document = json.loads(path.read_text())
    columns = document.get("columns", [])
    rows = document.get("data", [])
    if not rows:
        return pl.DataFrame(schema=dict.fromkeys(columns, pl.String))
    return pl.DataFrame([dict(zip(columns, row, strict=True)) for row in rows], infer_schema_length=None)


def ui_links(host: str = "127.0.0.1", port: int = 5000) -> list[tuple[str, str]]:
    """(experiment, URL) for every experiment with suite runs: its runs page in the chart view, in the UI's
    "Model training" mode. MLflow 3.17 opens on its GenAI (traces) mode unless told otherwise, whatever the
    experiment's ``mlflow.experimentKind`` tag says."""
    return [(name, f"http://{host}:{port}/#/experiments/{experiment_id}/runs?workflowType=machine_learning"
                   f"&compareRunsMode=CHART&viewStateShareKey={VIEW_KEY}")
            for experiment_id, name in ResultStore().experiments()]
