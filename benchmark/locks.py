"""Stage locks: two drivers that would compute the same cache entry at once (two machines sharing the cache, two
suites sharing a SliCK table or a variant) take turns; the second then finds the first one's result.

The lock is a file created with ``O_EXCL`` (atomic on local file systems and on NFS v3 and later), refreshed by a
heartbeat; a holder that died is taken over at once on the same host, and after ``LOCK_STALE_SECONDS`` without a
heartbeat from any host.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

LOCK_STALE_SECONDS = 300.0  # no heartbeat for this long: the holder is gone (another host, or a frozen one)
LOCK_HEARTBEAT_SECONDS = 20.0
_log = logging.getLogger("benchmark.locks")


def lock_path(target: Path) -> Path:
    target = Path(target)
    return target.with_name(f"{target.name}.lock")


def _read_lock(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _holder_gone(holder: dict | None, age: float, stale_after: float) -> bool:
    if age > stale_after:
        return True
    if holder is None or holder.get("host") != socket.gethostname():
        return False  # another host's process: only its missing heartbeat tells
    try:
        os.kill(int(holder["pid"]), 0)
    except ProcessLookupError:
        return True
    except (PermissionError, KeyError, ValueError, TypeError):
        return False
    return False


def _take_over(path: Path, seen: dict | None, stale_after: float) -> None:
    """Remove a dead holder's lock, so the waiters race for it with ``O_EXCL`` again. Several waiters may find the
    same dead lock: each takes a second lock (``.takeover``, ``O_EXCL``) first, then checks that the lock is still
    the one it judged dead before removing it, so a lock a new holder has taken in between is never removed."""
    guard = path.with_name(f"{path.name}.takeover")
    try:
        os.close(os.open(guard, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644))
    except FileExistsError:
        with contextlib.suppress(FileNotFoundError):
            if time.time() - guard.stat().st_mtime > 30.0:  # a taker died within these few lines
                guard.unlink()
        return
    try:
        current = _read_lock(path)
        try:
            age = time.time() - path.stat().st_mtime
        except FileNotFoundError:
            return
        same = (current or {}).get("token") == (seen or {}).get("token")
        if same and _holder_gone(current, age, stale_after):
            path.unlink(missing_ok=True)
    finally:
        guard.unlink(missing_ok=True)


@contextlib.contextmanager
def stage_lock(target: Path, *, stale_after: float | None = None, heartbeat: float | None = None,
               poll: float = 0.2, on_wait: Callable[[dict | None], None] | None = None) -> Iterator[None]:
    """Hold ``<target>.lock`` for the block: one process at a time computes a cache entry, across processes and
    machines that share the cache. ``on_wait(holder)`` is called once when the lock is busy (holder: host, pid,
    since). The caller checks for the finished entry again once it holds the lock."""
    stale_after = LOCK_STALE_SECONDS if stale_after is None else stale_after
    heartbeat = LOCK_HEARTBEAT_SECONDS if heartbeat is None else heartbeat
    path = lock_path(target)
    path.parent.mkdir(parents=True, exist_ok=True)
    token = uuid.uuid4().hex
    mine = {"host": socket.gethostname(), "pid": os.getpid(), "token": token, "since": time.time()}
    told = False
    while True:
        try:
            handle = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            holder = _read_lock(path)
            try:
                age = time.time() - path.stat().st_mtime
            except FileNotFoundError:
                continue
            if holder is None and age < 2.0:  # just created, its owner is still writing it
                time.sleep(poll)
                continue
            if _holder_gone(holder, age, stale_after):
                _take_over(path, holder, stale_after)
                continue
            if on_wait is not None and not told:
                on_wait(holder)
                told = True
            time.sleep(poll)
            continue
        with os.fdopen(handle, "w") as out:
            json.dump(mine, out)
        break
    stop = threading.Event()

    def beat() -> None:
        while not stop.wait(heartbeat):
            if (_read_lock(path) or {}).get("token") != token:
                _log.warning("warning: lost the lock %s to another process", path)
                return
            with contextlib.suppress(OSError):
                os.utime(path)

    beater = threading.Thread(target=beat, name=f"lock-heartbeat-{path.name}", daemon=True)
    beater.start()
    try:
        yield
    finally:
        stop.set()
        beater.join()
        if (_read_lock(path) or {}).get("token") == token:
            path.unlink(missing_ok=True)
