"""Jobs on this machine: in this process, or in worker processes of one torch thread each.

Two one-thread workers beat one two-thread process on small models (the matmuls are too small to split well,
and an idle second thread spins), and the results are the same (``benchmark.thread_invariant``). Workers are spawned,
not forked: a forked child would inherit the parent's OpenMP pool and any open MLflow/SQLite handles. They run
this checkout's code (spawn hands them the driver's ``sys.path``) and see the driver's environment
(``SLICK_BENCH_CACHE`` included) and working directory.

Ctrl-C: workers ignore SIGINT; the driver gets the KeyboardInterrupt, terminates the running workers and
re-raises. Checkpoints are written atomically at each epoch's end, so a re-run resumes where they stopped.

GPUs: with ``gpus_per_worker`` g, worker i sees only GPUs i·g … i·g + g − 1 of those this process sees
(``CUDA_VISIBLE_DEVICES``, set before the worker touches CUDA), so N workers never pile onto GPU 0; a variant of
``train.devices`` d gets g = d, and its ranks use those d. More workers than the GPUs allow is one clear error.
"""

from __future__ import annotations

import multiprocessing
import multiprocessing.connection
import os
import signal
import threading
import time
import warnings
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from typing import Any

from benchmark.executors import ExecutorOptions, Outcome
from benchmark.runtime import quiet_libraries

TERMINATE_GRACE = 5.0  # seconds a worker has to end after SIGTERM before it is killed
SIGNAL_POLL = 0.5  # seconds the driver waits for a job at a time, between looks at its signals


def visible_gpus() -> list[str]:
    """The GPUs this process may use, as CUDA_VISIBLE_DEVICES names them (indices when it is unset)."""
    listed = os.environ.get("CUDA_VISIBLE_DEVICES")
    if listed is not None:
        return [g.strip() for g in listed.split(",") if g.strip() and g.strip() != "-1"]
    try:
        import torch

        return [str(i) for i in range(torch.cuda.device_count())]
    except ImportError:
        return []


def gpu_slices(gpus: list[str], workers: int, per_worker: int) -> list[str]:
    """Each worker's CUDA_VISIBLE_DEVICES: disjoint slices of ``per_worker`` GPUs."""
    from benchmark.errors import BenchmarkError

    if per_worker * workers > len(gpus):
        raise BenchmarkError(f"executor: {workers} workers x {per_worker} GPU(s) each need {per_worker * workers} "
                             f"GPUs; this machine shows {len(gpus)} ({','.join(gpus) or 'none'}); use "
                             f"--workers {max(1, len(gpus) // per_worker)}")
    return [",".join(gpus[i * per_worker:(i + 1) * per_worker]) for i in range(workers)]


def _die_with_the_driver() -> None:
    """End this worker the moment its driver process is gone, however it went (SIGKILL included): a worker left
    behind would go on writing into the cache with nobody to collect its result, then wait for work for good. The
    parent's sentinel becomes ready when the parent exits; a daemon thread waits on it."""
    parent = multiprocessing.parent_process()
    if parent is None:
        return

    def watch() -> None:
        multiprocessing.connection.wait([parent.sentinel])
        os._exit(1)

    threading.Thread(target=watch, name="die-with-the-driver", daemon=True).start()


def _worker_init(devices=None) -> None:
    _die_with_the_driver()
    if devices is not None:  # before anything in this worker initialises CUDA
        os.environ["CUDA_VISIBLE_DEVICES"] = devices.get()
    from benchmark.errors import BenchmarkWarning
    from benchmark.numerics import set_threads

    quiet_libraries()
    warnings.filterwarnings("ignore", category=BenchmarkWarning)  # the driver read the same data and said it once
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the driver decides what Ctrl-C stops
    set_threads(1)


def make_local(options: ExecutorOptions) -> LocalExecutor:
    """The local executor (``EXECUTORS``): in-process jobs see every GPU; each of several workers its own share."""
    gpus = int(options.gpus_per_variant) if options.workers > 1 else 0
    return LocalExecutor(options.workers, gpus_per_worker=gpus)


class LocalExecutor:
    name = "local"

    def __init__(self, workers: int = 1, gpus_per_worker: int = 0):
        self.workers = max(1, workers)
        self.gpus_per_worker = max(0, int(gpus_per_worker))

    @property
    def slots(self) -> int:
        return self.workers

    def run(self, fn: Callable[[Any], Any], jobs: Iterable[Any]) -> Iterator[Outcome]:
        jobs = list(jobs)
        if self.workers == 1 or len(jobs) <= 1:
            for index, job in enumerate(jobs):
                try:
                    yield Outcome(index, fn(job))
                except Exception as exc:  # one failed job never stops the others
                    yield Outcome(index, error=exc)
            return
        context = multiprocessing.get_context("spawn")
        workers = min(self.workers, len(jobs))
        devices = None
        if self.gpus_per_worker:
            devices = context.Queue()
            for part in gpu_slices(visible_gpus(), workers, self.gpus_per_worker):
                devices.put(part)
        pool = ProcessPoolExecutor(max_workers=workers, mp_context=context, initializer=_worker_init,
                                   initargs=(devices,))
        completed = False
        try:
            pending: dict[Future, int] = {pool.submit(fn, job): i for i, job in enumerate(jobs)}
            while pending:
                # With a timeout, so the driver's Ctrl-C is taken at once: a wait without one is not interrupted
                # by SIGINT once polars or mlflow is imported (it was raised only when a job ended, measured).
                done, _ = wait(pending, timeout=SIGNAL_POLL, return_when=FIRST_COMPLETED)
                for future in sorted(done, key=pending.__getitem__):
                    index = pending.pop(future)
                    error = future.exception()
                    if isinstance(error, KeyboardInterrupt):
                        raise KeyboardInterrupt from error
                    yield Outcome(index, None if error else future.result(), error)
            completed = True
        finally:
            if not completed:  # Ctrl-C, an error in the driver, or the driver stopped listening
                _terminate(pool)
            pool.shutdown(wait=True, cancel_futures=True)

    def close(self) -> None:
        """Nothing to release: each ``run`` starts and stops its own workers."""


def _terminate(pool: ProcessPoolExecutor, grace: float = TERMINATE_GRACE) -> None:
    """Stop the running workers now rather than wait for their jobs to finish: SIGTERM, then SIGKILL for any still
    alive after ``grace`` seconds. A training worker may not end on SIGTERM (Lightning's handler only takes note of
    it; one went on training for over 90 s); what it had saved stays, as every checkpoint is written whole."""
    processes = [p for p in list((pool._processes or {}).values()) if p.is_alive()]
    for process in processes:
        process.terminate()
    deadline = time.monotonic() + grace
    for process in processes:
        process.join(max(0.0, deadline - time.monotonic()))
        if process.is_alive():
            process.kill()
            process.join()
