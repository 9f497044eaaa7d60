"""One run of a suite at a time per store: the suite's claim, a registered model named after it.

``Tracker.open_parent`` claims the suite in the store before it looks for the parent: it creates a registered model
named ``slick-lock.<experiment id>.<suite key>``. The store's unique constraint on model names makes creation an
atomic compare-and-set, on SQLite and behind a server alike, so two machines sharing one store cannot both hold it;
the run that does not get it stops with one line naming the holder (host, pid, since when). The claim is deleted
when the parent is closed (or, best effort, when the process ends); one left by a process that died is taken over
when that process is gone (same host) or has not renewed its heartbeat (every 2 min) for 10 min. The takeover is
decided by the same uniqueness: only the contender that creates ``<claim>.takeover.<dead token>`` may delete the
dead claim (``tests/test_faults.py`` races three contenders for 15 rounds).
"""

from __future__ import annotations

import atexit
import logging
import os
import random
import re
import socket
import threading
import time
import uuid
import weakref
from typing import Any, Protocol

from benchmark.errors import BenchmarkError
from benchmark.tracking import mlflow_private
from benchmark.tracking.retry import Retrying, reason
from benchmark.tracking.store import display_uri

LOCK_PREFIX = "slick-lock"
LOCK_HEARTBEAT_S = 120.0
LOCK_STALE_S = 600.0
CLAIM_ATTEMPTS = 8  # creates of the claim, each after reading a holder that gave it up or was taken over
CLAIM_MARKER_STALE_S = 60.0
_log = logging.getLogger("benchmark.tracking")

_held_tokens: set[str] = set()  # claims held by live Trackers of this process
_live_claims: weakref.WeakSet = weakref.WeakSet()


class _Owner(Protocol):
    """What a claim needs of the Tracker that holds it (the claim is given up when the Tracker goes)."""

    uri: str
    client: Any
    retrying: Retrying


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


def _when(value: str) -> str:
    try:
        return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(float(value)))
    except ValueError:
        return "?"


class _SuiteClaim:
    """A registered model whose name is the claim (see the module docstring)."""

    def __init__(self, tracker: _Owner, experiment_id: str, suite_key: str, label: str):
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

        client, call = self.tracker.client, self.tracker.retrying
        for _attempt in range(CLAIM_ATTEMPTS):
            try:
                call(f"claim suite '{self.label}' (registered model {self.name})", client.create_registered_model,
                     self.name, tags=self._tags(), passthrough=True,
                     description="held while `python -m benchmark run` runs this suite into this store; "
                                 "deleted when it ends (slick-bench)")
            except MlflowException as exc:
                if exc.error_code != "RESOURCE_ALREADY_EXISTS":
                    _log.warning("warning: %s: cannot claim the suite in the store (%s); two runs of it at once "
                                 "are not prevented", display_uri(self.tracker.uri), reason(exc))
                    return
                holder = self._holder()
                if holder is None:
                    continue  # given back meanwhile
                if self._abandoned(holder):
                    self._take_over(holder)
                    continue
                self._drop_marker()
                raise BenchmarkError(self._busy_message(holder)) from None
            self._hold()
            return
        self._drop_marker()
        raise BenchmarkError(f"suite '{self.label}': could not claim it in {display_uri(self.tracker.uri)} "
                             f"after {CLAIM_ATTEMPTS} tries (other runs of it are starting at the same time)")

    def _hold(self) -> None:
        self.held = True
        _held_tokens.add(self.token)
        _live_claims.add(self)
        # A Tracker dropped without closing its parent gives its claim up (in this process; and its heartbeat
        # stops, so other machines take it over later).
        weakref.finalize(self.tracker, _held_tokens.discard, self.token)
        weakref.finalize(self.tracker, self._stop.set)
        threading.Thread(target=_heartbeat, args=(self.tracker.client, self.name, self._stop),
                         name="slick-claim-heartbeat", daemon=True).start()

    def _take_over(self, holder: dict) -> None:
        """Delete an abandoned claim, if this contender is the one that may. Deleting by name and then creating
        let two contenders that both saw the dead claim both hold it (the second deleted the first's new claim).
        So the right to delete is itself a registered model, named after the dead claim's token: the store's
        uniqueness lets exactly one contender create it. It is kept while the claim it led to is held (a late
        contender that saw the same dead claim then fails to create it) and deleted with that claim."""
        from mlflow.exceptions import MlflowException

        marker = f"{self.name}.takeover.{_name_part(holder.get('token') or holder.get('started', '?'))}"
        try:
            self.tracker.retrying("take over the suite's claim", self.tracker.client.create_registered_model,
                                  marker, tags={"host": socket.gethostname(), "pid": str(os.getpid()),
                                                "created": str(time.time())}, passthrough=True)
        except MlflowException as exc:
            if exc.error_code != "RESOURCE_ALREADY_EXISTS":
                raise BenchmarkError(self.tracker.retrying.failure("take over the suite's claim", exc, False)) from exc
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
            model = self.tracker.retrying("read the suite's claim", self.tracker.client.get_registered_model,
                                          self.name, passthrough=True)
        except MlflowException as exc:
            if exc.error_code == "RESOURCE_DOES_NOT_EXIST":
                return None
            raise BenchmarkError(self.tracker.retrying.failure("read the suite's claim", exc, False)) from exc
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
        return (f"suite '{self.label}' is already being run into {display_uri(self.tracker.uri)} by "
                f"{holder.get('host', '?')} pid {holder.get('pid', '?')} (since {_when(holder.get('started', ''))}); "
                "run it again when that run ends (its finished variants are reused). A claim left by a crashed run "
                f"is taken over once its process is gone or after {LOCK_STALE_S / 60:.0f} min without a heartbeat "
                f"(or delete the registered model '{self.name}')")

    def _delete(self, name: str) -> None:
        try:
            mlflow_private.delete_registered_model(self.tracker.client, name)
        except Exception:  # noqa: BLE001 - gone already, or the store is down: a left claim is taken over later
            pass

    def release(self) -> None:
        if not self.held:
            return
        self.held = False
        self._stop.set()
        _held_tokens.discard(self.token)
        if self.tracker.retrying.down is None:
            self._delete(self.name)
            self._drop_marker()
