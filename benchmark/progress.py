"""A variant's per-epoch metrics as they happen: appended by the training process (rank 0) to
``<run dir>/progress.jsonl``, one JSON line per epoch, and read back by whoever waits for it (``fine_tune`` for
the ranks it started, the driver for MLflow). Files, not sockets or queues: the run directory is already shared
by every process and machine that trains the variant (the cache), and a file survives the reader's restart.
No torch import, so the driver reads it cheaply.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Mapping
from pathlib import Path

PROGRESS = "progress.jsonl"


def append(run_dir: Path, metrics: Mapping[str, float], epoch: int) -> None:
    """One epoch's metrics, as one line, on disk before training goes on."""
    line = json.dumps({"epoch": epoch, "metrics": dict(metrics)}) + "\n"
    with open(Path(run_dir) / PROGRESS, "a") as out:
        out.write(line)
        out.flush()
        os.fsync(out.fileno())


def keep_through(run_dir: Path, epoch: int) -> None:
    """Keep the lines of epochs up to ``epoch`` (what a resumed run restarts after); none when 0."""
    path = Path(run_dir) / PROGRESS
    if not path.exists():
        return
    lines = list(read(path))
    kept = [(metrics, e) for metrics, e in lines if e <= epoch]
    if len(kept) == len(lines):
        return
    tmp = path.with_name(f".{PROGRESS}.tmp")
    tmp.write_text("".join(json.dumps({"epoch": e, "metrics": m}) + "\n" for m, e in kept))
    os.replace(tmp, path)


def read(path: Path) -> Iterator[tuple[dict[str, float], int]]:
    try:
        text = Path(path).read_text()
    except FileNotFoundError:
        return
    for line in text.splitlines(keepends=True):
        if line.endswith("\n"):
            record = json.loads(line)
            yield record["metrics"], int(record["epoch"])


class Tail:
    """New epochs of a progress file since the last look, each once, in order. ``after``: epochs already
    reported elsewhere (a resumed run, a store that has them). A file rewritten in place (``keep_through``) is
    read again from its start; the epoch numbers keep anything from being reported twice."""

    def __init__(self, path: Path, after: int = 0):
        self.path, self.after = Path(path), after
        self._inode: int | None = None
        self._offset = 0

    def new(self) -> list[tuple[dict[str, float], int]]:
        try:
            with open(self.path, "rb") as handle:
                stat = os.fstat(handle.fileno())
                if stat.st_ino != self._inode or stat.st_size < self._offset:
                    self._inode, self._offset = stat.st_ino, 0
                handle.seek(self._offset)
                data = handle.read()
        except FileNotFoundError:
            return []
        complete = data[:data.rfind(b"\n") + 1]  # a line still being written waits for the next look
        self._offset += len(complete)
        out = []
        for line in complete.decode().splitlines():
            record = json.loads(line)
            epoch = int(record["epoch"])
            if epoch > self.after:
                out.append((record["metrics"], epoch))
                self.after = epoch
        return out
