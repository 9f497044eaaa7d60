"""Which store failures may pass, how they read, and the retry both the writer and the reader use.

A request that fails for a reason that may pass (connection refused or reset, a timeout, HTTP 429/5xx, a locked
SQLite file) is retried with backoff until the time budget is spent; then, and at once for any other store
failure, it becomes one ``BenchmarkError`` line naming the store and what failed.

Hand-written rather than ``tenacity``: tenacity is neither installed in the project's environment nor one of its
dependencies, and the loop is twenty lines; what it needs beyond a retry (a store given up on fails every later
call at once, a definite MLflow answer passed through to the caller) would be written around tenacity anyway.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from benchmark.errors import BenchmarkError

_TRANSIENT_TEXT = re.compile(r"database is locked|error code (429|50[0234])\b|status code (429|50[234])\b|"
                             r"too many (5\d\d )?error responses|Connection (refused|reset|aborted)|timed out",
                             re.IGNORECASE)
_TRANSIENT_CODES = {"TEMPORARILY_UNAVAILABLE", "REQUEST_LIMIT_EXCEEDED", "RESOURCE_EXHAUSTED"}
# Failures that waiting does not cure, whatever code MLflow gives them: it reports every SQLAlchemy OperationalError
# as TEMPORARILY_UNAVAILABLE, a full disk included, which was then retried for a minute as "unreachable".
_PERMANENT_TEXT = re.compile(r"database or disk is full|No space left on device|Disk quota exceeded|"
                             r"attempt to write a readonly database|database disk image is malformed", re.IGNORECASE)


def chain(exc: BaseException | None) -> Iterator[BaseException]:
    """The exception and its causes, outermost first."""
    seen = set()
    while exc is not None and id(exc) not in seen and len(seen) < 20:
        seen.add(id(exc))
        yield exc
        exc = exc.__cause__ or exc.__context__


def is_store_error(exc: BaseException) -> bool:
    """An error from MLflow, its HTTP layer or the file system: what a store failure looks like (not our bug)."""
    import requests
    from mlflow.exceptions import MlflowException

    return isinstance(exc, MlflowException | requests.RequestException | OSError)


def transient(exc: BaseException) -> bool:
    """Whether the failure may pass if we wait (see ``_PERMANENT_TEXT`` for what never does)."""
    import requests

    if any(_PERMANENT_TEXT.search(str(link)) for link in chain(exc)):
        return False
    for link in chain(exc):
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


def reason(exc: BaseException) -> str:
    """The cause in a few words: the OS error where there is one, else the first line of the message."""
    text = " ".join(str(link) for link in chain(exc))
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


@dataclass
class Retrying:
    """Calls to one store, each retried against its own deadline ``budget`` seconds away. Once a call gave up on a
    store that did not answer, every later call fails at once with the same line (closing the runs on the way out
    costs no second wait)."""

    where: str  # the store, for messages: "MLflow tracking store <uri without credentials>"
    budget: float  # seconds, in all, that one call is retried for
    setting: str  # the environment variable that sets ``budget``, named in the message
    again: str  # what the user may do once the store is back
    down: str | None = None  # the line a call gave up with; set once the store was given up on

    def __call__(self, what: str, fn: Callable, *args, passthrough: bool = False, **kwargs):
        """``fn(*args, **kwargs)``, retried while the failure may pass and the time budget lasts; a store failure
        becomes one BenchmarkError line. ``passthrough``: a definite MLflow answer (e.g. "already exists") is
        raised as it is, for the caller to read."""
        from mlflow.exceptions import MlflowException

        if self.down is not None:
            raise BenchmarkError(self.down)
        deadline = time.monotonic() + self.budget
        pause = 0.5
        while True:
            try:
                return fn(*args, **kwargs)
            except BenchmarkError:
                raise
            except Exception as exc:
                if not is_store_error(exc):
                    raise  # a bug, not the store: keep its traceback
                may_pass = transient(exc)
                left = deadline - time.monotonic()
                if may_pass and left > 0:
                    time.sleep(min(pause, left))
                    pause = min(pause * 2, 8.0)
                    continue
                if passthrough and not may_pass and isinstance(exc, MlflowException):
                    raise
                message = self.failure(what, exc, may_pass)
                if may_pass:
                    self.down = message
                raise BenchmarkError(message) from exc

    def failure(self, what: str, exc: BaseException, may_pass: bool) -> str:
        """The one line for a failed ``what``: with the budget it was retried for, if its failure may pass."""
        if not may_pass:
            return f"{self.where}: could not {what}: {reason(exc)}"
        return (f"{self.where}: could not {what}: {reason(exc)} (retried for {self.budget:g} s, {self.setting}); "
                f"{self.again}")
