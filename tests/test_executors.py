"""Executors: where SliCK shards and fine-tuning variants run never changes a result.

- SliCK cut into shards by relation, on two one-thread worker processes, gives the very table one process gives.
- The smoke suite run in this process, on two local workers and on Ray (a local instance of 2 CPUs) gives the
  same metrics for every variant (every metric but ``time/...``), each variant on one torch thread. (The thread
  count is a separate knob: at 2 threads against 1, one ``train/loss`` of the smoke suite was seen to differ in its
  8th digit, through MKL's thread-dependent matmul blocking; accuracies did not.)
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import polars as pl
import pytest

from benchmark import pipeline
from benchmark.errors import BenchmarkError
from benchmark.executors import EXECUTORS, ExecutorEntry, Outcome, make_executor
from benchmark.executors.local import TERMINATE_GRACE, LocalExecutor
from benchmark.executors.ray import RayExecutor
from benchmark.registry import Registry
from benchmark.runtime import torch_threads
from benchmark.slick import TABLE_FILE, SliCKConfig, categorize, shard_relations
from benchmark.suite import load_suite
from benchmark.tracking import Tracker
from tests.stores import own_cache
from tests.test_slick import FakeModel, FakeSource, question_table

REPO = Path(__file__).resolve().parent.parent
SMOKE = REPO / "suites" / "smoke.yaml"
HAS_RAY = importlib.util.find_spec("ray") is not None


class Recording:
    """A LocalExecutor that remembers the jobs it was given."""

    def __init__(self, workers: int):
        self.inner, self.jobs = LocalExecutor(workers), []
        self.name, self.slots = "recording", workers

    def run(self, fn, jobs):
        jobs = list(jobs)
        self.jobs += jobs
        yield from self.inner.run(fn, jobs)


def _fail_on_three(x: int) -> int:
    if x == 3:
        raise ValueError("three")
    return x * 10


def _deaf_to_sigterm(job: tuple[str, float]) -> int:
    """A job that goes on after SIGTERM, as a training worker can (Lightning's handler only takes note); it says
    it has started with a file named after its process."""
    import signal as signals

    folder, seconds = job
    signals.signal(signals.SIGTERM, signals.SIG_IGN)
    (Path(folder) / str(os.getpid())).touch()
    time.sleep(seconds)
    return os.getpid()


def test_ctrl_c_ends_local_workers_even_ones_deaf_to_sigterm(tmp_path):
    """Ctrl-C in the driver (raised where the driver handles an outcome, as it logs a finished variant) while a
    worker runs a job that ignores SIGTERM: the worker is gone within the grace period (SIGKILL after it), and the
    Ctrl-C goes on up at once; before, the driver waited for the job to end."""
    outcomes = LocalExecutor(2).run(_deaf_to_sigterm, [(str(tmp_path), 0.0), (str(tmp_path), 300.0)])
    first = next(outcomes)
    assert first.error is None
    deadline = time.monotonic() + 120
    while len(list(tmp_path.iterdir())) < 2 and time.monotonic() < deadline:  # the long job runs
        time.sleep(0.1)
    sent = time.monotonic()
    with pytest.raises(KeyboardInterrupt):
        outcomes.throw(KeyboardInterrupt)
    assert time.monotonic() - sent < TERMINATE_GRACE + 10  # not the 300 s the job would have taken
    pids = [int(p.name) for p in tmp_path.iterdir()]
    assert len(pids) == 2
    for pid in pids:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)  # gone (and reaped)


def test_ctrl_c_reaches_a_driver_waiting_on_busy_workers_at_once(tmp_path):
    """SIGINT to the driver's main thread while it waits for two busy workers (polars imported, as in every run):
    the KeyboardInterrupt comes at once, not when a job ends."""
    import signal as signals
    import threading

    sent = []

    def interrupt_once_both_run() -> None:
        deadline = time.monotonic() + 120
        while len(list(tmp_path.iterdir())) < 2 and time.monotonic() < deadline:
            time.sleep(0.1)
        sent.append(time.monotonic())
        signals.pthread_kill(threading.main_thread().ident, signals.SIGINT)

    outcomes = LocalExecutor(2).run(_deaf_to_sigterm, [(str(tmp_path), 300.0)] * 2)
    threading.Thread(target=interrupt_once_both_run, daemon=True).start()
    with pytest.raises(KeyboardInterrupt):
        next(outcomes)
    assert time.monotonic() - sent[0] < TERMINATE_GRACE + 10  # the workers stopped too, in their grace period


def test_local_workers_return_every_outcome_and_keep_going_after_a_failure():
    outcomes = sorted(LocalExecutor(2).run(_fail_on_three, [1, 2, 3, 4]), key=lambda o: o.index)
    assert [o.value for o in outcomes] == [10, 20, None, 40]
    assert isinstance(outcomes[2].error, ValueError) and str(outcomes[2].error) == "three"
    in_process = list(LocalExecutor(1).run(_fail_on_three, [3, 1]))
    assert isinstance(in_process[0], Outcome) and isinstance(in_process[0].error, ValueError)
    assert in_process[1].value == 10


def test_shards_balance_question_counts_and_cover_every_relation_once():
    todo = pl.DataFrame({"relation": ["A"] * 50 + ["B"] * 30 + ["C"] * 25 + ["D"] * 5})
    assert shard_relations(todo, 2) == [("A", "D"), ("B", "C")]
    assert shard_relations(todo, 10) == [("A",), ("B",), ("C",), ("D",)]
    assert shard_relations(todo, 1) == [("A", "B", "C", "D")]


def test_sharded_categorisation_equals_one_process():
    """Shards by relation on two one-thread workers: the table one one-thread process gives, row for row and bit
    for bit, under the same cache key. (At another thread count the categories and greedy answers are the same,
    but float columns such as ``p_true`` may differ in their last bits: last-token logits come from a matmul of a
    few rows, which torch splits differently over threads.)"""
    registry = Registry()
    source, model = registry.dataset("world-test"), registry.model("toy-gpt-test")
    # Every relation of the train split; the sample counts do not bear on the property, so they are the least
    # that still draws several prompts and samples.
    config = SliCKConfig(n_prompts=2, n_samples=2, splits=["train"])
    with torch_threads(1):
        single = categorize(source, model, config, force=True)
    executor = Recording(2)
    sharded = categorize(source, model, config, force=True, executor=executor)
    shards = [set(job.relations) for job in executor.jobs]
    assert len(shards) == 2 and not shards[0] & shards[1]
    assert shards[0] | shards[1] == set(single.table["relation"])
    assert sharded.key == single.key
    assert sharded.table.equals(single.table)
    assert pl.read_parquet(sharded.path / TABLE_FILE).equals(single.table)


class Reversed:
    """An executor added by this file alone (``EXECUTORS.register``): the jobs in this process, the last one
    first; it claims two slots, so SliCK cuts its questions into two shards."""

    name, slots = "reversed", 2

    def run(self, fn, jobs):
        jobs = list(jobs)
        for index in reversed(range(len(jobs))):
            try:
                yield Outcome(index, fn(jobs[index]))
            except Exception as exc:
                yield Outcome(index, error=exc)

    def close(self):
        pass


def make_reversed(options):
    return Reversed()


def test_an_executor_is_one_registration():
    EXECUTORS.register("reversed", ExecutorEntry("tests.test_executors:make_reversed",
                                                 "this process, the last job first (a test's toy)"))
    try:
        suite = load_suite(SMOKE, ["executor.kind=reversed"])  # the schema takes it
        settings, runner = pipeline.make_runner(suite, stage="slick")
        assert isinstance(runner, Reversed) and pipeline.slick_executor(runner) is runner
        # Its own data identity: the SliCK key names the data by identity, and test_slick's cache test expects
        # the default identity to be unseen in this session.
        source, model = FakeSource(question_table(), identity="data:reversed-executor"), FakeModel()
        config = SliCKConfig(n_prompts=2, n_samples=2, max_new_tokens=3, splits=["train"])
        single = categorize(source, model, config, force=True)
        sharded = categorize(source, model, config, force=True, executor=runner)
        assert sharded.table.equals(single.table) and model.loads == 3  # one load in process, one per shard
    finally:
        EXECUTORS.unregister("reversed")
    with pytest.raises(BenchmarkError, match="executor.kind: unknown executor; did you mean 'local'"):
        load_suite(SMOKE, ["executor.kind=locale"])


# ---------------------------------------------------------------------------------------------------------------
# The smoke suite on every executor
# ---------------------------------------------------------------------------------------------------------------
def _smoke_metrics(experiment: str, **executor) -> dict[str, dict[str, float]]:
    """The smoke suite from scratch (no SliCK table, no variant checkpoints), on the given executor."""
    # Its own SliCK tables and variants (the session's world and world model shared): the tests after these
    # find the session's smoke SliCK table where it was, instead of building it again.
    session = Path(os.environ["SLICK_BENCH_CACHE"])
    root = session.parent / f"cache-{experiment}"
    shutil.rmtree(root, ignore_errors=True)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("SLICK_BENCH_CACHE", str(own_cache(root, session, stages=("world", "world-model"))))
        suite = load_suite(SMOKE, [f"tracking.experiment={experiment}"])
        document = pipeline.run_suite(suite, SMOKE, log=lambda _: None, **executor)
    assert [v["status"] for v in document["variants"]] == ["FINISHED"] * 3
    tracker = Tracker(experiment)
    return {v["name"]: {k: x for k, x in tracker.latest_metrics(v["run_id"]).items() if not k.startswith("time/")}
            for v in document["variants"]}


@pytest.fixture(scope="module")
def in_process() -> dict[str, dict[str, float]]:
    """The reference: every variant in this process, at the one thread a worker or a 1-CPU Ray task uses."""
    with torch_threads(1):
        return _smoke_metrics("executor-in-process", executor="local", workers=1)


def _assert_same(got: dict, expected: dict) -> None:
    assert got.keys() == expected.keys()
    for name, metrics in expected.items():
        assert got[name].keys() == metrics.keys(), name
        different = {k: (v, got[name][k]) for k, v in metrics.items()
                     if not (v == got[name][k] or (v != v and got[name][k] != got[name][k]))}  # NaN == NaN
        assert not different, (name, different)


def test_two_local_workers_give_the_in_process_results(in_process):
    _assert_same(_smoke_metrics("executor-local-2", executor="local", workers=2), in_process)


def _refused(address: str, env: dict[str, str]) -> bool:
    """Whether a Ray client with this environment is refused by the cluster at ``address`` for want of its token
    (it is killed at the first refusal; Ray would retry for 20 s)."""
    probe = f"import ray; ray.init(address={address!r}, log_to_driver=False, configure_logging=False)"
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_AUTH")} | env
    process = subprocess.Popen([sys.executable, "-c", probe], env=env, stdout=subprocess.DEVNULL,
                               stderr=subprocess.PIPE, text=True)
    try:
        return any("Authentication token is missing or incorrect" in line for line in process.stderr)
    finally:
        process.kill()
        process.wait()


@pytest.mark.skipif(not HAS_RAY, reason="Ray is not installed (pip install 'slick-bench[ray]')")
def test_ray_gives_the_in_process_results_and_its_local_instance_refuses_callers_without_its_token(
        in_process, monkeypatch, tmp_path):
    import ray

    monkeypatch.delenv("RAY_ADDRESS", raising=False)  # the executor's own local instance, never a cluster
    monkeypatch.setenv("HOME", str(tmp_path))  # where Ray's default token file (~/.ray/auth_token) would go
    saved = {k: os.environ.pop(k, None) for k in ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN")}
    (tmp_path / ".ray").mkdir(exist_ok=True)
    (tmp_path / ".ray" / "auth_token").write_text("f" * 64)  # this user's token file, Ray's default
    # Its servers listen beyond 127.0.0.1 (Ray cannot bind them), so a caller without this run's token is refused:
    # one with none, and one with the token file of this user. Probed just before the run stops its instance.
    real_close, probed = RayExecutor.close, []

    def probe_then_close(self):
        if self._started:
            address = ray.get_runtime_context().gcs_address
            probed.append((_refused(address, {"RAY_AUTH_MODE": "disabled"}),
                           _refused(address, {"RAY_AUTH_MODE": "token"})))
        real_close(self)

    monkeypatch.setattr(RayExecutor, "close", probe_then_close)
    try:
        _assert_same(_smoke_metrics("executor-ray", executor="ray"), in_process)
        assert probed == [(True, True)]
        assert not ray.is_initialized()  # the run stopped the local instance it started
        monkeypatch.setattr(RayExecutor, "close", real_close)
        executor = make_executor("ray")
        assert executor.slots == len(os.sched_getaffinity(0))
        executor.close()
        assert not ray.is_initialized()
    finally:
        ray.shutdown()
        for key, value in saved.items():
            os.environ.pop(key, None) if value is None else os.environ.__setitem__(key, value)
    assert not ray.is_initialized()
