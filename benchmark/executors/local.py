"""Variants on this machine: in this process, or in worker processes of one torch thread each.

Two one-thread workers beat one two-thread process on small models (the matmuls are too small to split well,
and an idle second thread spins), and the results are the same (``benchmark.layernorm``). Workers are spawned,
not forked: a forked child would inherit the parent's OpenMP pool and any open MLflow/SQLite handles.
"""

from __future__ import annotations

import multiprocessing
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from typing import Any

from benchmark.executors import Outcome


def _one_thread() -> None:
    import torch

    torch.set_num_threads(1)


class LocalExecutor:
    name = "local"

    def __init__(self, workers: int = 1):
        self.workers = max(1, workers)

    def run(self, fn: Callable[[Any], Any], jobs: Iterable[Any]) -> Iterator[Outcome]:
        jobs = list(jobs)
        if self.workers == 1 or len(jobs) <= 1:
            for index, job in enumerate(jobs):
                try:
                    yield Outcome(index, fn(job))
                except Exception as exc:  # one failed variant never stops the others
                    yield Outcome(index, error=exc)
            return
        context = multiprocessing.get_context("spawn")
        pool = ProcessPoolExecutor(max_workers=min(self.workers, len(jobs)), mp_context=context,
                                   initializer=_one_thread)
        try:
            pending: dict[Future, int] = {pool.submit(fn, job): i for i, job in enumerate(jobs)}
            while pending:
                done, _ = wait(pending, return_when=FIRST_COMPLETED)
                for future in sorted(done, key=pending.__getitem__):
                    index = pending.pop(future)
                    error = future.exception()
                    yield Outcome(index, None if error else future.result(), error)
        finally:
            # On Ctrl-C or an error in the driver, running workers are stopped; their checkpoints stay, so a
            # re-run resumes them.
            pool.shutdown(wait=True, cancel_futures=True)
