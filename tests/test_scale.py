"""What running at scale rests on, tested on this machine: stage locks between processes, checksums that are not
read back, evaluation cut across ranks, keys that ignore the layout, GPUs dealt to workers, and the ranks' own
environment under SLURM."""

from __future__ import annotations

import json
import multiprocessing
import os
import socket
import time
from pathlib import Path

import pytest
import torch

from benchmark import cache, launch, locks
from benchmark.cache import save_torch, verify_file
from benchmark.locks import stage_lock
from benchmark.train.config import TrainConfig, result_settings

FORK = multiprocessing.get_context("fork")  # cheap children that run only the lock's Python code


# ---------------------------------------------------------------- stage locks


def _take_turns(target: str, log: str, rounds: int, hold: float, start=None) -> None:
    if start is not None:
        start.wait()  # every waiter reaches the lock at the same instant
    for _ in range(rounds):
        with stage_lock(Path(target), poll=0.005):
            with open(log, "a") as out:
                out.write(f"+{os.getpid()}\n")
            time.sleep(hold)
            with open(log, "a") as out:
                out.write(f"-{os.getpid()}\n")


def assert_one_at_a_time(log: Path, holders: int) -> None:
    lines = log.read_text().split()
    assert len(lines) == 2 * holders
    for enter, leave in zip(lines[::2], lines[1::2], strict=True):  # every entry is followed by its own exit
        assert enter.startswith("+") and leave == "-" + enter[1:], lines


def test_processes_take_turns_at_a_stage_lock(tmp_path):
    """4 processes x 25 turns each, entering as fast as they can: 100 turns, never two holders at once."""
    target, log = tmp_path / "entry", tmp_path / "log"
    workers = [FORK.Process(target=_take_turns, args=(str(target), str(log), 25, 0.001)) for _ in range(4)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(60)
        assert worker.exitcode == 0
    assert_one_at_a_time(log, 100)
    assert not locks.lock_path(target).exists()


def _dead_pid() -> int:
    child = FORK.Process(target=lambda: None)
    child.start()
    child.join()
    return child.pid


def test_a_dead_holders_lock_is_taken_over_by_exactly_one_waiter(tmp_path):
    """30 rounds: a lock left by a killed process on this host, 4 waiters at once. A takeover that let two waiters
    in, in any round, would show (a race hit once in 7 rounds shows with probability 1 - (6/7)^30 > 99%)."""
    target, log = tmp_path / "entry", tmp_path / "log"
    lock = locks.lock_path(target)
    for _ in range(30):
        lock.write_text(json.dumps({"host": socket.gethostname(), "pid": _dead_pid(), "token": "dead", "since": 0}))
        start = FORK.Barrier(4)
        workers = [FORK.Process(target=_take_turns, args=(str(target), str(log), 1, 0.003, start))
                   for _ in range(4)]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join(60)
            assert worker.exitcode == 0
    assert_one_at_a_time(log, 30 * 4)


def test_a_live_holder_keeps_its_lock_by_heartbeat_and_a_silent_one_loses_it(tmp_path):
    target = tmp_path / "entry"
    lock = locks.lock_path(target)
    entered = []
    holder = FORK.Process(target=_hold, args=(str(target), 1.5))
    holder.start()
    while not lock.exists():
        time.sleep(0.01)
    started = time.monotonic()
    # Another host's holder (its pid means nothing here): only its heartbeat, every 0.1 s, keeps the lock.
    with stage_lock(target, stale_after=0.5, poll=0.02, on_wait=entered.append):
        waited = time.monotonic() - started
    holder.join(10)
    assert waited > 1.0 and entered and entered[0]["pid"] == holder.pid
    lock.write_text(json.dumps({"host": "elsewhere", "pid": 1, "token": "gone", "since": 0}))
    os.utime(lock, (time.time() - 60, time.time() - 60))  # no heartbeat for a minute
    with stage_lock(target, stale_after=30):
        assert json.loads(lock.read_text())["pid"] == os.getpid()


def _hold(target: str, seconds: float) -> None:
    with stage_lock(Path(target), stale_after=0.5, heartbeat=0.1):
        # Pretend to be another host's process, so the waiter cannot see whether it lives.
        path = locks.lock_path(Path(target))
        record = json.loads(path.read_text())
        path.write_text(json.dumps({**record, "host": "elsewhere"}))
        time.sleep(seconds)


# ---------------------------------------------------------------- checksums of large files


def test_a_large_checkpoint_is_hashed_while_written_and_not_read_back(tmp_path, monkeypatch):
    monkeypatch.setattr(cache, "REHASH_LIMIT", 1024)  # this file counts as large
    path = tmp_path / "last.ckpt"
    entry = save_torch({"w": torch.arange(4096.0)}, path)
    assert entry["sha256"] == cache.sha256_file(path) and entry["size"] == path.stat().st_size

    def no_reading(_):
        raise AssertionError("read back")

    monkeypatch.setattr(cache, "sha256_file", no_reading)
    assert verify_file(path) is None  # size and mtime as recorded: trusted without reading 48 GB again
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))  # written to: the mtime moves, so it is hashed (and found wrong)
    monkeypatch.undo()
    assert "sha256 differs" in verify_file(path)


# ---------------------------------------------------------------- evaluation on several ranks
# (identical answers on 2 ranks: tests/test_train_ddp.py and tests/test_fsdp.py, in batches of 5 that split unevenly)


def test_a_rank_share_is_whole_one_process_batches():
    from benchmark.backends.decoding import length_batches
    from benchmark.evaluate import rank_share
    from benchmark.parallel import Ranks

    lengths = [5, 3, 5, 9, 1, 3, 3, 7, 2, 5, 5]
    batches = length_batches(lengths, 3)
    shares = [rank_share(lengths, 3, Ranks(r, 2)) for r in (0, 1)]
    assert sorted(shares[0] + shares[1]) == list(range(len(lengths)))
    for rank, share in enumerate(shares):  # the share, batched again, is exactly those batches
        again = length_batches([lengths[i] for i in share], 3)
        assert [[share[i] for i in batch] for batch in again] == batches[rank::2]


# ---------------------------------------------------------------- keys


def test_result_keys_ignore_the_layout_where_it_changes_nothing():
    one = TrainConfig(batch_size=4, accumulate_grad_batches=2, dropout=0.0, accelerator="cpu")
    two = TrainConfig(batch_size=4, devices=2, strategy="ddp", dropout=0.0, accelerator="cpu", eval_batch_size=7,
                      checkpoint_every=5)
    sharded = two.model_copy(update={"strategy": "fsdp"})
    assert result_settings(one, 24) == result_settings(two, 24) == result_settings(sharded, 24)
    # The layout counts where it changes the numbers: a tail batch one process trains on and two ranks drop,
    # dropout masks drawn per rank, bfloat16 cast per unit (FSDP) against autocast (DDP).
    assert result_settings(one, 20) != result_settings(two, 20)  # 5 batches of 4
    assert result_settings(one.model_copy(update={"dropout": 0.1}), 24) != \
        result_settings(two.model_copy(update={"dropout": 0.1}), 24)
    bf16 = {"precision": "bf16-mixed"}
    assert result_settings(two.model_copy(update=bf16), 24) != result_settings(sharded.model_copy(update=bf16), 24)
    assert result_settings(one, 24) != result_settings(one.model_copy(update={"batch_size": 8}), 24)


def test_variant_keys_ignore_the_layout_and_the_analysis_code(tmp_path):
    from benchmark import plan
    from benchmark.suite import load_suite

    smoke = Path(__file__).resolve().parent.parent / "suites" / "smoke.yaml"
    suite = load_suite(smoke, ["train.dropout=0.0", "train.batch_size=2"])
    table = _planning_table()
    identity = {"model": "m", "data": "d", "slick": "s"}
    keys = {v.name: v.key for v in plan.plan_variants(suite, table, identity)}
    again = load_suite(smoke, ["train.dropout=0.0", "train.batch_size=2", "train.eval_batch_size=3",
                               "train.checkpoint_every=4"])
    assert {v.name: v.key for v in plan.plan_variants(again, table, identity)} == keys
    assert "benchmark.analyse" not in plan.VARIANT_CODE


def _planning_table():
    import polars as pl

    rows = []
    categories = ["HighlyKnown", "MaybeKnown", "WeaklyKnown", "Unknown"]
    for relation in ("P17", "P19"):
        for i in range(40):
            rows.append({"qid": f"train/{relation}/{i}", "split": "train", "relation": relation, "question": f"q{i}",
                         "answer": f"a{i}", "ood": False, "category": categories[i % 4]})
    return pl.DataFrame(rows)


# ---------------------------------------------------------------- GPUs for local workers


def _visible(_job) -> tuple[int, str]:
    time.sleep(0.5)  # long enough that both workers take jobs
    return os.getpid(), os.environ.get("CUDA_VISIBLE_DEVICES", "")


def test_each_local_worker_sees_its_own_gpus(monkeypatch):
    from benchmark.errors import BenchmarkError
    from benchmark.executors.local import LocalExecutor, gpu_slices

    assert gpu_slices(["0", "1", "2", "3"], 2, 2) == ["0,1", "2,3"]
    with pytest.raises(BenchmarkError, match="need 4 GPUs; this machine shows 2"):
        gpu_slices(["0", "1"], 4, 1)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "4,5,6")  # what the workers are dealt from; nothing uses CUDA here
    seen = dict(o.value for o in LocalExecutor(2, gpus_per_worker=1).run(_visible, list(range(4))))
    assert len(seen) == 2 and len(set(seen.values())) == 2  # each worker its own GPU, never both on one
    assert set(seen.values()) <= {"4", "5", "6"}


# ---------------------------------------------------------------- ranks under SLURM


def test_a_rank_that_srun_started_takes_its_place_from_slurm(monkeypatch):
    for name in ("LOCAL_RANK", launch.RANK_ENV, "WORLD_SIZE", "NODE_RANK", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.setenv(name, "")  # recorded, so what rank_environment writes is undone after the test
        monkeypatch.delenv(name)
    monkeypatch.setenv("SLURM_PROCID", "13")
    monkeypatch.setenv("SLURM_LOCALID", "5")
    monkeypatch.setenv("SLURM_NODEID", "1")
    monkeypatch.setenv("SLURM_NTASKS", "16")
    monkeypatch.setenv(launch.MASTER_ENV, "node017:29411")
    launch.rank_environment()
    assert {k: os.environ[k] for k in ("LOCAL_RANK", "NODE_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")} == {
        "LOCAL_RANK": "5", "NODE_RANK": "1", "WORLD_SIZE": "16", "MASTER_ADDR": "node017", "MASTER_PORT": "29411"}
    assert launch.started_by_the_benchmark()
    command = launch.srun_command(Path("/cache/variants/k/train"), TrainConfig(devices=8, num_nodes=2))
    assert command[:5] == ["srun", "--nodes=2", "--ntasks-per-node=8", "--kill-on-bad-exit=1", "--overlap"]
    assert command[-3:] == ["benchmark", "train-step", "/cache/variants/k/train"]


# ---------------------------------------------------------------- Ray: shapes, environment, where vLLM is checked


def test_variants_and_slick_shards_get_their_own_resource_shapes():
    from benchmark.pipeline import stage_resources
    from benchmark.suite import load_suite

    paper = load_suite(Path(__file__).resolve().parent.parent / "suites" / "paper" / "entityquestions_llama8b.yaml")
    assert stage_resources(paper, paper.executor, "variants") == (8, 8)  # one task = one variant's 8 ranks
    assert stage_resources(paper, paper.executor, "slick") == (1, 1)  # one task = one vLLM engine on one GPU
    plain = paper.executor.model_copy(update={"gpus_per_variant": None, "gpus_per_slick_shard": None})
    assert stage_resources(paper, plain, "variants")[1] == paper.train.devices  # follows the suite by default
    smoke = load_suite(Path(__file__).resolve().parent.parent / "suites" / "smoke.yaml", ["device=cpu"])
    assert stage_resources(smoke, smoke.executor, "variants") == (1, 0)


def test_ray_tasks_get_the_hub_token_and_caches(monkeypatch):
    from benchmark.executors.ray import RayExecutor

    for name, value in (("HF_TOKEN", "hf_secret"), ("HF_HOME", "/shared/hf"), ("HF_HUB_CACHE", "/shared/hf/hub")):
        monkeypatch.setenv(name, value)
    env = RayExecutor().runtime_env()["env_vars"]
    assert (env["HF_TOKEN"], env["HF_HOME"], env["HF_HUB_CACHE"]) == ("hf_secret", "/shared/hf", "/shared/hf/hub")


class InProcessRay:
    """Ray as the driver sees it (name "ray"), its tasks run here: what matters is where vLLM is checked."""

    name, slots = "ray", 1

    def __init__(self):
        self.ran = 0

    def run(self, fn, jobs):
        from benchmark.executors import Outcome

        for index, job in enumerate(jobs):
            self.ran += 1
            try:
                yield Outcome(index, fn(job))
            except Exception as exc:  # noqa: BLE001 - as a Ray task's error comes back
                yield Outcome(index, error=exc)


def test_on_ray_vllm_is_checked_in_the_task_not_on_the_head_node():
    from benchmark.backends.vllm import availability_problem
    from benchmark.errors import BenchmarkError
    from benchmark.slick import SliCKConfig, categorize
    from tests.test_slick import FakeModel, FakeSource, question_table

    if availability_problem("cpu") is None:
        pytest.skip("vLLM's CPU build is installed here")
    source = FakeSource(question_table(sizes=(("train", 3), ("dev", 5))), identity="data:vllm-ray")
    ray = InProcessRay()
    with pytest.raises(BenchmarkError, match="slick.backend: vllm needs"):
        categorize(source, FakeModel(), SliCKConfig(backend="vllm", n_prompts=2, splits=["train"]), executor=ray)
    assert ray.ran == 1  # the head node did not refuse: the task found out, where the GPUs would be
