"""Speed benchmarks that run the fast path and its reference in one process, on the same inputs.

``bench_slick``: the SliCK engine (``benchmark.sampling``) against the naive ``generate`` reference
(``benchmark.slick_reference``) on the same train questions, with the same prompts and the same counter-based
sample noise, so their categories can be compared exactly, not just statistically.
"""

from __future__ import annotations

import time

import polars as pl


def bench_slick(questions: int = 500, model: str = "toy-gpt", dataset: str = "world", seed: int = 0) -> dict:
    """Engine vs naive SliCK on ``questions`` in-distribution train questions (a seeded random subset).

    Returns speed-up (wall clock), questions per second of each, whether every greedy answer was identical
    (10 per question), the share of questions given the same category, and generations per question.
    P(True) is left out of both: it is one forward pass per question either way.
    """
    from benchmark.registry import Registry
    from benchmark.slick import SliCKConfig, categorize_questions

    registry = Registry()
    source, component = registry.dataset(dataset), registry.model(model)
    table = source.questions()
    train = table.filter((pl.col("split") == "train") & ~pl.col("ood"))
    chosen = train.sample(n=min(questions, train.height), seed=seed, shuffle=True)
    # Dev questions come along as the exemplar pool; only the chosen train questions are categorised.
    subset = pl.concat([table.filter(pl.col("split") == "dev"), chosen])
    loaded = component.load()
    config = SliCKConfig(splits=["train"], p_true=False)

    start = time.perf_counter()
    engine = categorize_questions(loaded, subset, config, seed=seed)
    engine_seconds = time.perf_counter() - start
    start = time.perf_counter()
    reference = categorize_questions(loaded, subset, config.model_copy(update={"backend": "naive"}), seed=seed)
    reference_seconds = time.perf_counter() - start

    both = engine.join(reference, on="qid", suffix="_ref")
    n = both.height
    return {
        "speedup": reference_seconds / engine_seconds,
        "engine_qps": n / engine_seconds,
        "reference_qps": n / reference_seconds,
        "engine_seconds": engine_seconds,
        "reference_seconds": reference_seconds,
        "greedy_identical": bool((both["greedy_answers"] == both["greedy_answers_ref"]).all()),
        "category_agreement": float((both["category"] == both["category_ref"]).mean()),
        "questions": n,
        "engine_generations_per_question": float(engine["generations"].mean()),
        "reference_generations_per_question": float(reference["generations"].mean()),
        "categories": dict(engine.group_by("category").len().sort("category").iter_rows()),
    }
