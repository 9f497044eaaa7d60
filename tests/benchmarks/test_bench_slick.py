"""SliCK engine vs the naive ``generate`` reference on the test world, in one process.

Skipped by default (``--benchmark-skip`` in pyproject); run with

    .venv/bin/pytest --benchmark-only --benchmark-enable tests/benchmarks

The figures land in the benchmark's ``extra_info``. Correctness is asserted (identical greedy answers, categories
that agree); speed only loosely, since the build machines are shared.
"""

from __future__ import annotations

import pytest

from benchmark.bench import bench_slick

QUESTIONS = 40  # the naive reference costs ~1 s per question on 2 CPU cores


def test_bench_slick_engine_against_naive_generate(benchmark):
    torch = pytest.importorskip("torch")
    torch.set_num_threads(1)
    result = benchmark.pedantic(bench_slick, kwargs={"questions": QUESTIONS, "model": "toy-gpt-test",
                                                     "dataset": "world-test"}, rounds=1, iterations=1)
    benchmark.extra_info.update(result)
    assert result["questions"] == QUESTIONS
    assert result["greedy_identical"]
    assert result["category_agreement"] >= 0.95
    assert result["engine_generations_per_question"] <= result["reference_generations_per_question"] == 170
    assert result["speedup"] > 3
