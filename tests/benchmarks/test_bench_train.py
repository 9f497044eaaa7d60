"""Training throughput under Lightning against a plain PyTorch loop, and evaluation time against training time,
on the test-size world (toy-gpt-test). Skipped by default; run with::

    .venv/bin/pytest tests/benchmarks/test_bench_train.py --benchmark-only

The timed rounds of ``test_training_throughput`` include each loop's start-up (the Trainer's is larger); the
steady-state figure is ``extra_info["tokens_per_s"]``, measured after warm-up. The full-size figures come from ``python -m benchmark bench train`` (toy-gpt on the default world).
"""

from __future__ import annotations

import pytest
import torch

from benchmark.perf.train import bench_sets, bench_train, lightning_train, plain_train
from benchmark.registry import Registry
from benchmark.runtime import torch_threads
from benchmark.train import TrainConfig

WARMUP, STEPS = 5, 40


@pytest.fixture(scope="module")
def test_world():
    registry = Registry()
    model = registry.model("toy-gpt-test").load()
    train, _, _ = bench_sets(registry.dataset("world-test").questions(), 200, 0, 0, seed=0)
    return model, train


@pytest.mark.parametrize("loop", [lightning_train, plain_train], ids=["lightning", "plain"])
def test_training_throughput(benchmark, test_world, loop):
    model, train = test_world
    config = TrainConfig()
    with torch_threads(1):
        tokens_per_s = benchmark.pedantic(lambda: loop(model, train, config, WARMUP + STEPS, timed_from=WARMUP)[1],
                                          rounds=3, iterations=1)
    benchmark.extra_info["tokens_per_s"] = tokens_per_s


def test_lightning_matches_the_plain_loop_and_costs_little(benchmark):
    figures = benchmark.pedantic(lambda: bench_train(test_world=True, steps=STEPS, warmup_steps=WARMUP, repeats=3),
                                 rounds=1, iterations=1)
    benchmark.extra_info.update(figures)
    assert figures["ratio"] >= 0.9
    # Recorded, not asserted: the evaluation share is set by the dev/test sizes (see benchmark.perf.train).
    benchmark.extra_info["eval_share"] = figures["eval_seconds_per_epoch"] / figures["train_seconds_per_epoch"]


def test_lightning_and_plain_loop_train_the_same_weights(benchmark, test_world):
    model, train = test_world
    config = TrainConfig(dropout=0.05)
    plain = plain_train(model, train, config, 12)[0].state_dict()
    lightning = benchmark.pedantic(lambda: lightning_train(model, train, config, 12)[0], rounds=1).state_dict()
    for key, value in plain.items():
        torch.testing.assert_close(lightning[key], value, atol=1e-5, rtol=1e-4)
