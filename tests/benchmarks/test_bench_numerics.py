"""What the pinned numerics cost: pretraining the test world's model pinned against the CPU's own paths, in fresh
processes, interleaved (``benchmark.perf.numerics``). Skipped by default; run with::

    .venv/bin/pytest tests/benchmarks/test_bench_numerics.py --benchmark-only --benchmark-enable
"""

from __future__ import annotations

from benchmark.perf.numerics import bench_numerics


def test_pinned_pretraining_against_native(benchmark):
    figures = benchmark.pedantic(lambda: bench_numerics("toy-gpt-test", epochs=3, repeats=3), rounds=1, iterations=1)
    benchmark.extra_info.update(figures)
    assert figures["identical_losses_within_mode"]  # pinned runs repeat themselves to the bit
    assert figures["cost_ratio"] > 0
