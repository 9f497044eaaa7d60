"""Where fine-tuning variants and SliCK shards run. An executor maps one picklable function over jobs and yields
each job's outcome as it finishes; the driver (``benchmark.pipeline``) alone talks to MLflow.

- ``local`` (default): one after another in this process, or in N spawned worker processes of one torch thread
  each.
- ``ray``: one Ray task per job with the CPUs/GPUs the suite asks for (optional extra), on a local Ray instance or
  a cluster (``RAY_ADDRESS``).

Results never depend on the executor or the number of workers (tested): a job's outcome is a function of the job
alone, and the world models compute the same numbers at any thread count (``benchmark.thread_invariant``). Jobs carry
names and data, never loaded models: each worker loads what it needs itself.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any, Protocol


@dataclass
class Outcome:
    index: int            # position of the job in the list handed to ``run``
    value: Any = None     # what the function returned
    error: BaseException | None = None  # what it raised instead (the other jobs still run)


class Executor(Protocol):
    name: str

    @property
    def slots(self) -> int:
        """How many jobs run at once (SliCK cuts its questions into this many shards)."""
        ...

    def run(self, fn: Callable[[Any], Any], jobs: Iterable[Any]) -> Iterator[Outcome]:
        """``fn(job)`` for every job, outcomes in the order they finish. A job that raises becomes an Outcome
        with ``error``; Ctrl-C in the driver stops the running jobs and propagates."""
        ...

    def close(self) -> None:
        """Release what the executor holds (a local Ray instance it started)."""
        ...


def make_executor(kind: str, *, workers: int = 1, cpus_per_variant: float = 1, gpus_per_variant: float = 0,
                  address: str | None = None) -> Executor:
    """An executor whose jobs each get ``cpus_per_variant`` CPUs and ``gpus_per_variant`` GPUs (Ray), or run on
    ``workers`` local processes that each see ``gpus_per_variant`` GPUs of their own (local)."""
    if kind == "local":
        from benchmark.executors.local import LocalExecutor

        return LocalExecutor(workers, gpus_per_worker=int(gpus_per_variant) if workers > 1 else 0)
    if kind == "ray":
        from benchmark.executors.ray import RayExecutor

        return RayExecutor(cpus_per_variant=cpus_per_variant, gpus_per_variant=gpus_per_variant, address=address)
    raise ValueError(f"unknown executor '{kind}' (local or ray)")
