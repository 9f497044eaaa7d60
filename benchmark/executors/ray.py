"""Variants as Ray tasks, on a local Ray instance or a cluster (``RAY_ADDRESS`` or ``executor.address``).

Each variant is one task with the CPUs and GPUs the suite's ``executor:`` section asks for. Tasks return their
results to the driver, which alone talks to MLflow, so workers need no tracking credentials. Ray is an optional
extra (``pip install 'slick-bench[ray]'``), imported only here.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from benchmark.errors import BenchmarkError
from benchmark.executors import Outcome


def _call(fn: Callable[[Any], Any], job: Any) -> Any:
    return fn(job)


class RayExecutor:
    name = "ray"

    def __init__(self, *, cpus_per_variant: float = 1, gpus_per_variant: float = 0, address: str | None = None):
        self.cpus, self.gpus = cpus_per_variant, gpus_per_variant
        self.address = address or os.environ.get("RAY_ADDRESS")

    def _ray(self):
        try:
            import ray
        except ImportError as exc:
            raise BenchmarkError("executor: ray needs Ray (pip install 'slick-bench[ray]')") from exc
        if not ray.is_initialized():
            # The working directory travels with the tasks so workers import this checkout's code.
            passed = {k: os.environ[k] for k in ("SLICK_BENCH_CACHE", "HF_HUB_OFFLINE") if k in os.environ}
            options = {"include_dashboard": False, "log_to_driver": False, "configure_logging": False,
                       "runtime_env": {"env_vars": passed}}
            if self.address:
                ray.init(address=self.address, **options)
            else:
                ray.init(num_cpus=max(1, len(os.sched_getaffinity(0))), **options)
        return ray

    def run(self, fn: Callable[[Any], Any], jobs: Iterable[Any]) -> Iterator[Outcome]:
        ray = self._ray()
        task = ray.remote(num_cpus=self.cpus, num_gpus=self.gpus, max_retries=0)(_call)
        pending = {task.remote(fn, job): index for index, job in enumerate(jobs)}
        try:
            while pending:
                done, _ = ray.wait(list(pending), num_returns=1)
                for ref in done:
                    index = pending.pop(ref)
                    try:
                        yield Outcome(index, ray.get(ref))
                    except ray.exceptions.RayTaskError as exc:
                        yield Outcome(index, error=exc.as_instanceof_cause())
        finally:
            for ref in pending:
                ray.cancel(ref, force=True)
