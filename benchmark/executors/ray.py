"""Jobs as Ray tasks, on a local Ray instance or a cluster (``executor.address``, else ``RAY_ADDRESS``).

Each job is one task with the CPUs and GPUs the suite's ``executor:`` section asks for, and runs with that many
torch threads: a variant takes ``cpus_per_variant`` and ``gpus_per_variant`` (by default ``train.devices`` GPUs
when training runs on GPUs: its ranks use the GPUs Ray grants the task), a SliCK shard ``cpus_per_slick_shard``
and ``gpus_per_slick_shard`` (its own shape: one GPU holds an inference copy, where a variant may need eight).
Whether a back-end can run (vLLM) is checked in the task, on the node that runs it, not on the head node.
Tasks return their results to the driver, which alone talks to MLflow, so workers need no tracking credentials. Ray is an optional extra (``pip install 'slick-bench[ray]'``),
imported only here.

What workers need from the driver travels in each task's runtime environment: ``PYTHONPATH`` starts with this
checkout (workers import the driver's code, not whatever ``benchmark`` their Python has installed) and
``SLICK_BENCH_CACHE`` is the driver's cache, as an absolute path (the world model, SliCK tables and variant
checkpoints live there). On a cluster, every node must therefore see this checkout and the cache at the same
paths (a shared filesystem, as on most SLURM/Kubernetes set-ups); nothing is uploaded.

A local instance started here (``num_cpus`` = the cores this process may use) stays up for the rest of the
process, so the SliCK shards and the variants of a run share it; Ray stops it at exit, or ``close()`` does. It
refuses every caller without this process's token (``_require_a_token``).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from benchmark.cache import cache_root
from benchmark.errors import BenchmarkError
from benchmark.executors import ExecutorOptions, Outcome
from benchmark.numerics import OPT_OUT, PINNED
from benchmark.registry import REPO_ROOT

# The hub's token and caches too: a task on another node must reach gated models (Llama) and find what is cached.
PASSED_ON = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_HOME", "HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE", "HF_TOKEN",
             "HUGGING_FACE_HUB_TOKEN", "HF_TOKEN_PATH", "TOKENIZERS_PARALLELISM", "SLICK_BENCH_DEBUG",
             "VLLM_BATCH_INVARIANT", "CUBLAS_WORKSPACE_CONFIG")


def _require_a_token() -> None:
    """Ray's own servers (GCS, raylet, workers) listen on every interface of the machine, and Ray has no setting
    to bind them to 127.0.0.1 (ray-project/ray#7418). So a local instance started here demands a token on every
    request, one made for this process and never written to disk: the tasks inherit it from the environment, and
    anything else that reaches those ports is refused. A ``RAY_AUTH_MODE`` you set yourself is left as it is."""
    import secrets

    if "RAY_AUTH_MODE" in os.environ:
        return
    os.environ["RAY_AUTH_TOKEN"] = secrets.token_hex(32)
    # Ray reads the mode and token once, when it is imported; this is its own way to enable token mode later.
    from ray._private.authentication.authentication_token_setup import (
        AuthenticationTokenLoader,
        _enable_token_auth,
    )

    _enable_token_auth()
    AuthenticationTokenLoader.instance().reset_cache()


def _call(fn: Callable[[Any], Any], job: Any, threads: int) -> Any:
    import warnings

    from benchmark.errors import BenchmarkWarning
    from benchmark.numerics import set_threads
    from benchmark.runtime import quiet_libraries

    quiet_libraries()
    warnings.filterwarnings("ignore", category=BenchmarkWarning)  # the driver read the same data and said it once
    set_threads(threads)  # a speed choice only: results do not depend on it (benchmark.numerics)
    return fn(job)


def make_ray(options: ExecutorOptions) -> RayExecutor:
    """The Ray executor (``EXECUTORS``): one task per job, of the CPUs and GPUs the options give."""
    return RayExecutor(cpus_per_variant=options.cpus_per_variant, gpus_per_variant=options.gpus_per_variant,
                       address=options.address)


class RayExecutor:
    name = "ray"

    def __init__(self, *, cpus_per_variant: float = 1, gpus_per_variant: float = 0, address: str | None = None):
        self.cpus, self.gpus = cpus_per_variant, gpus_per_variant
        self.address = address or os.environ.get("RAY_ADDRESS")
        self._started = False

    def _ray(self):
        try:
            import ray
        except ImportError as exc:
            raise BenchmarkError("executor: ray needs Ray (pip install 'slick-bench[ray]')") from exc
        if not ray.is_initialized():
            options = {"include_dashboard": False, "log_to_driver": False, "configure_logging": False}
            if self.address:
                ray.init(address=self.address, **options)
            else:
                _require_a_token()
                ray.init(num_cpus=len(os.sched_getaffinity(0)), **options)
                self._started = True
        return ray

    def runtime_env(self) -> dict:
        paths = [str(REPO_ROOT)] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
        env = {k: os.environ[k] for k in PASSED_ON if k in os.environ}
        # The pinned numerics (or the opt-out) in every task: a worker on another node inherits nothing from here,
        # and torch there must read them before its first import (benchmark.numerics).
        env |= {k: os.environ[k] for k in (*PINNED, OPT_OUT) if k in os.environ}
        return {"env_vars": {**env, "PYTHONPATH": os.pathsep.join(dict.fromkeys(paths)),
                             "SLICK_BENCH_CACHE": str(cache_root())}}

    @property
    def slots(self) -> int:
        """Tasks of this size that fit on the cluster at once."""
        resources = self._ray().cluster_resources()
        slots = int(resources.get("CPU", 1) // self.cpus)
        if self.gpus:
            slots = min(slots, int(resources.get("GPU", 0) // self.gpus))
        return max(1, slots)

    def run(self, fn: Callable[[Any], Any], jobs: Iterable[Any]) -> Iterator[Outcome]:
        ray = self._ray()
        task = ray.remote(num_cpus=self.cpus, num_gpus=self.gpus, max_retries=0,
                          runtime_env=self.runtime_env())(_call)
        threads = max(1, int(self.cpus))
        pending = {task.remote(fn, job, threads): index for index, job in enumerate(jobs)}
        try:
            while pending:
                done, _ = ray.wait(list(pending), num_returns=1)
                for ref in done:
                    index = pending.pop(ref)
                    try:
                        yield Outcome(index, ray.get(ref))
                    except ray.exceptions.RayTaskError as exc:  # what the job raised, as its own type
                        yield Outcome(index, error=exc.as_instanceof_cause())
                    except ray.exceptions.RayError as exc:  # the worker died (out of memory, node lost, ...)
                        yield Outcome(index, error=exc)
        finally:
            # Ctrl-C or an error in the driver: stop what still runs (checkpoints stay; a re-run resumes).
            for ref in pending:
                ray.cancel(ref, force=True)

    def close(self) -> None:
        """Stop the local Ray instance if this executor started it."""
        if self._started:
            import ray

            ray.shutdown()
            self._started = False
