"""Where fine-tuning variants and SliCK shards run. An executor maps one picklable function over jobs and yields
each job's outcome as it finishes; the driver (``benchmark.pipeline``) alone talks to MLflow.

- ``local`` (default): one after another in this process, or in N spawned worker processes of one torch thread
  each.
- ``ray``: one Ray task per job with the CPUs/GPUs the suite asks for (optional extra), on a local Ray instance or
  a cluster (``RAY_ADDRESS``).

``EXECUTORS`` declares each once (``ExecutorEntry``): a new executor is one entry there, or one
``EXECUTORS.register`` call, plus its test; the suite's ``executor.kind`` choices come from it.

Results never depend on the executor or the number of workers (tested): a job's outcome is a function of the job
alone, and the world models compute the same numbers at any thread count (``benchmark.thread_invariant``). Jobs carry
names and data, never loaded models: each worker loads what it needs itself.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any, Protocol

from benchmark.choices import Choices
from benchmark.registry import import_object


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


@dataclass(frozen=True)
class ExecutorOptions:
    """What the suite's ``executor:`` section asks of an executor, shaped for one stage's jobs
    (``benchmark.pipeline.stage_resources``); each executor reads the options it has."""

    workers: int = 1  # local: jobs at once, each in its own one-thread process
    cpus_per_variant: float = 1  # ray: CPUs each job's task asks for
    gpus_per_variant: float = 0  # GPUs each job gets (a Ray task's; a local worker's own, with several workers)
    address: str | None = None  # ray: cluster address; default $RAY_ADDRESS, else a local instance


@dataclass(frozen=True)
class ExecutorEntry:
    """One executor, declared once. ``maker`` names, as ``"module:function"`` imported only when chosen, a
    function from ``ExecutorOptions`` to an ``Executor`` whose ``name`` is the entry's."""

    maker: str
    description: str  # what the suite's ``executor.kind`` documents it as
    # Its jobs may run on other machines, which may hold the accelerators the driver lacks: SliCK is sharded onto
    # it even at one slot, and a back-end's availability (vLLM's GPU) is checked in the task, on the node that
    # runs it, not in the driver.
    remote: bool = False


EXECUTORS: Choices[ExecutorEntry] = Choices("executor", {
    "local": ExecutorEntry("benchmark.executors.local:make_local", "this machine"),
    "ray": ExecutorEntry("benchmark.executors.ray:make_ray", "Ray tasks (optional extra)", remote=True),
})
# The schema's type for ``executor.kind`` (benchmark.suite).
ExecutorKind = EXECUTORS.annotation()


def make_executor(kind: str, *, workers: int = 1, cpus_per_variant: float = 1, gpus_per_variant: float = 0,
                  address: str | None = None) -> Executor:
    """An executor whose jobs each get ``cpus_per_variant`` CPUs and ``gpus_per_variant`` GPUs (Ray), or run on
    ``workers`` local processes that each see ``gpus_per_variant`` GPUs of their own (local)."""
    maker = import_object(EXECUTORS[kind].maker)
    return maker(ExecutorOptions(workers, cpus_per_variant, gpus_per_variant, address))


def is_remote(executor: Executor) -> bool:
    """Whether its jobs may run on other machines (its entry's ``remote``). One no entry names, such as a test's
    wrapper around a local executor, runs here."""
    entry = EXECUTORS.get(executor.name)
    return entry is not None and entry.remote


def shards_slick(executor: Executor) -> bool:
    """Whether SliCK's questions go to ``executor`` in shards: always where it is remote (its workers may hold the
    accelerators the driver lacks), else when it runs several jobs at once; otherwise SliCK runs in this process."""
    return is_remote(executor) or executor.slots > 1
