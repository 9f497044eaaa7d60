"""What the command line shows a person: rich progress bars (or a line now and then off a terminal), tables and
plain lines on stderr; ``--json`` documents on stdout. Also SIGTERM taken as Ctrl-C, for ``run``."""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
import time
from contextlib import contextmanager

from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table
from rich.text import Text

# Off a terminal (a log file, CI) rich would cut tables at 80 columns ("unknow…", "FINISH…"); a log is read
# whole, so it gets room for every column. COLUMNS, where set, still decides.
console = Console(stderr=True, width=None if sys.stderr.isatty() or "COLUMNS" in os.environ else 160)
# A finding's verdict in its colour, wherever one is shown.
VERDICT_COLOURS = {"holds": "green", "not shown": "yellow", "contradicted": "red"}


@contextmanager
def progress_bars(enabled: bool = True, every: float = 30.0):
    """Yields ``update(description, completed, total)``: one bar per description, created on first use. Off a
    terminal (a log file, a scheduler's output) bars are not drawn until they end, so each description gets a line
    instead, at most every ``every`` seconds and at its end, with the time left at its pace so far."""
    if not enabled:
        yield lambda *args, **kwargs: None
        return
    if not console.is_terminal:
        yield progress_lines(say, every)
        return
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
               TimeRemainingColumn())
    with Progress(*columns, console=console, transient=False) as progress:
        tasks: dict[str, int] = {}

        def update(description: str, completed: int, total: int) -> None:
            if description not in tasks:  # descriptions name relations and models: text, not markup
                tasks[description] = progress.add_task(escape(description), total=total)
            progress.update(tasks[description], completed=completed, total=total)

        yield update


def progress_lines(write, every: float = 30.0, clock=time.monotonic):
    """``update(description, completed, total)`` that writes ``<description>: 5/9 (0:00:40 so far, about 0:00:32
    to go)``: on its first call, then at most every ``every`` seconds, and when it completes."""
    first: dict[str, tuple[float, int]] = {}
    last: dict[str, float] = {}

    def update(description: str, completed: int, total: int) -> None:
        now = clock()
        start, start_done = first.setdefault(description, (now, completed))
        if description in last and now - last[description] < every and completed < total:
            return
        last[description] = now
        elapsed, done = now - start, completed - start_done
        left = (f", about {_clock(elapsed / done * (total - completed))} to go" if done > 0 and completed < total
                else "")
        write(f"{description}: {completed}/{total} ({_clock(elapsed)} so far{left})")

    return update


def _clock(seconds: float) -> str:
    seconds = int(round(seconds))
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


@contextmanager
def sigterm_as_interrupt(enabled: bool = True):
    """SIGTERM (``kill``, a scheduler ending the job) takes Ctrl-C's path: the open MLflow runs are marked KILLED,
    checkpoints stay, and running the same command again resumes. Yields the list the signal number lands in."""
    received: list[int] = []
    if not enabled or threading.current_thread() is not threading.main_thread():
        yield received
        return

    def interrupt(signum, frame):
        received.append(signum)
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield received
    finally:
        signal.signal(signal.SIGTERM, previous)


def emit(args, document: dict, human) -> None:
    """One JSON document on stdout with --json; otherwise the human rendering on stderr."""
    if getattr(args, "json", False):
        print(json.dumps(document, indent=2, default=str))
    else:
        human(document)


def table(title: str, columns: list[str], rows: list[list]) -> Table:
    """A rich table of plain text: names, keys, paths and values are escaped, never read as markup (a ``[/x]`` in
    a name would raise, a ``[red]`` recolour); a cell that is a ``rich.text.Text`` keeps its style."""
    out = Table(title=escape(title))
    for column in columns:
        out.add_column(escape(str(column)))
    for row in rows:
        out.add_row(*[v if isinstance(v, Text) else escape(f"{v:.3f}" if isinstance(v, float) else str(v))
                      for v in row])
    return out


def say(text: str) -> None:
    """A line of plain text (a pipeline's progress messages carry suite, variant and file names) on stderr."""
    console.print(escape(text), highlight=False, soft_wrap=True)
