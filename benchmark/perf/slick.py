"""SliCK's speed against its reference, in one process, on the same inputs (``slick-bench bench slick``).

``bench_slick``: the engine (``backends/engine.py``) against the naive ``generate`` reference
(``backends/naive.py``) on the same train questions, with the same prompts and the same counter-based sample noise,
so their categories can be compared exactly, not just statistically. With ``exact=True`` it also times the exact
estimator (``slick.estimator: exact``: one teacher-forced pass per prompt) and compares its categories with the
sampled estimator's, against how often two sampled runs that differ only in their sample noise agree.

Each run is timed twice: wall clock (``*_seconds``, ``speedup``) and the process's CPU time (``*_cpu_seconds``,
``speedup_cpu``). With one torch thread (the default, ``threads=1``) CPU time is what the run itself cost, so on
a machine shared with other jobs ``speedup_cpu`` is the figure to trust; on an idle machine the two agree.

    python -m benchmark bench slick --questions 500 --json                                   # toy-gpt, world
    python -m benchmark bench slick --model smollm2-135m --source entityquestions-sample --questions 20 --exact --json
    python -m benchmark bench slick --model smollm2-135m --source entityquestions-sample --questions all --exact --json

The engine shares each relation's exemplar block across its questions, so a handful of questions spread over many
relations understates its speed-up (every prefix is prefilled for one or two questions); the whole slice (~190 train
questions per relation) is what a suite sees.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import polars as pl


def bench_slick(questions: int | None = 500, model: str = "toy-gpt", dataset: str = "world", seed: int = 0,
                exact: bool = False, threads: int = 1, reference_questions: int | None = None,
                dtype: str | None = None) -> dict:
    """Engine vs naive SliCK on ``questions`` in-distribution train questions (a seeded random subset; None: all).

    Returns speed-up (wall clock; None where the reference's time is extrapolated), questions per second of each, whether every greedy answer was identical
    (10 per question), the share of questions given the same category, and generations per question.
    P(True) is left out of both: it is one forward pass per question either way. With ``exact``, also the
    exact estimator's time, its speed-up over both, and its category agreement with two sampled runs (the
    engine's, and one with other sample noise: same prompts, sample seed ``seed + 1``), beside those two runs'
    agreement with each other.

    ``reference_questions``: the naive reference runs on that many of the chosen questions only (a seeded random
    subset) and its cost for all of them is extrapolated from its CPU time per question. The reference does the
    same work for every question (1 greedy answer and 16 samples per prompt, whatever the answer), so its time is
    linear in the questions; on the whole SmolLM2 slice about 11 hours in bfloat16. Its answers and categories are
    compared with the engine's on that subset (the sample noise is per question, so a subset draws the same
    samples). The document then says ``reference_extrapolated_from`` and gives a 95% interval on the speed-ups
    from the spread of the per-question times.
    """
    from benchmark.slick import SliCKConfig

    bench = _Bench.load(model, dataset, dtype, questions, seed, threads)
    config = SliCKConfig(splits=["train"], p_true=False)
    engine, engine_seconds, engine_cpu = bench.timed(config)
    reference, reference_seconds, reference_cpu, per_question_cpu = bench.reference(config, reference_questions)
    document = {"model": model, "dtype": dtype or "the component's", "dataset": dataset, "threads": threads}
    document |= _comparison(engine, engine_seconds, engine_cpu, reference, reference_seconds, reference_cpu)
    document["reference_extrapolated_from"] = None if per_question_cpu is None else reference.height
    if exact:
        document |= bench.exact(config, engine, engine_seconds, reference_seconds, reference_cpu)
    if per_question_cpu is not None:
        document |= _speedup_intervals(per_question_cpu, engine.height, engine_cpu, document.get("exact_cpu_seconds"))
    return document


@dataclass
class _Bench:
    """The model, the chosen questions and their exemplar pool, and a timer over them."""

    loaded: object
    table: pl.DataFrame
    chosen: pl.DataFrame
    seed: int
    threads: int

    @classmethod
    def load(cls, model: str, dataset: str, dtype: str | None, questions: int | None, seed: int, threads: int):
        from benchmark.prompts import stops
        from benchmark.registry import Registry

        registry = Registry()
        source, component = registry.dataset(dataset), registry.model(model, {"dtype": dtype} if dtype else None)
        table = source.questions()
        train = table.filter((pl.col("split") == "train") & ~pl.col("ood"))
        chosen = train if questions is None else train.sample(n=min(questions, train.height), seed=seed, shuffle=True)
        loaded = component.load()
        stops(loaded.tokenizer)  # the vocabulary scan for stop tokens is cached per tokenizer: paid before any timing
        return cls(loaded, table, chosen, seed, threads)

    def timed(self, config, backend=None, rows: pl.DataFrame | None = None) -> tuple[pl.DataFrame, float, float]:
        """(categories, wall seconds, CPU seconds) of SliCK on ``rows`` (default: the chosen questions). Dev
        questions come along as the exemplar pool; only the train questions are categorised."""
        from benchmark.runtime import torch_threads
        from benchmark.slick import categorize_questions

        subset = pl.concat([self.table.filter(pl.col("split") == "dev"), self.chosen if rows is None else rows])
        start, cpu = time.perf_counter(), time.process_time()
        with torch_threads(self.threads):
            result = categorize_questions(self.loaded, subset, config, seed=self.seed, backend=backend)
        return result, time.perf_counter() - start, time.process_time() - cpu

    def reference(self, config, questions: int | None):
        """The naive reference: (categories, wall seconds or None, CPU seconds, CPU seconds per question or None).
        On a subset of ``questions``, its cost for all is extrapolated from its CPU time per question (its wall
        clock is then not claimed)."""
        naive = config.model_copy(update={"backend": "naive"})
        if questions is None or questions >= self.chosen.height:
            return *self.timed(naive), None
        measured = self.chosen.sample(n=questions, seed=self.seed + 1, shuffle=True)
        reference, per_question_cpu = _reference_per_question(lambda rows: self.timed(naive, rows=rows), measured)
        return reference, None, float(per_question_cpu.mean()) * self.chosen.height, per_question_cpu

    def exact(self, config, engine: pl.DataFrame, engine_seconds: float, reference_seconds: float | None,
              reference_cpu: float) -> dict:
        """The exact estimator's time and speed-ups, and its categories against two sampled runs."""
        from benchmark.backends.engine import open_engine

        estimate, exact_seconds, exact_cpu = self.timed(config.model_copy(update={"estimator": "exact"}))
        other_noise, _, _ = self.timed(config, backend=open_engine(self.loaded, config, self.seed + 1))
        return exact_figures(engine, other_noise, estimate) | {
            "exact_seconds": exact_seconds,
            "exact_cpu_seconds": exact_cpu,
            "exact_speedup": _ratio(reference_seconds, exact_seconds),
            "exact_speedup_cpu": reference_cpu / exact_cpu,
            "exact_speedup_over_engine": engine_seconds / exact_seconds,
        }


def _ratio(seconds: float | None, other: float) -> float | None:
    return None if seconds is None else seconds / other


def _comparison(engine: pl.DataFrame, engine_seconds: float, engine_cpu: float, reference: pl.DataFrame,
                reference_seconds: float | None, reference_cpu: float) -> dict:
    """Speed-ups, rates and agreement of the engine against the reference."""
    both = engine.join(reference, on="qid", suffix="_ref")
    n = engine.height
    return {
        "speedup": _ratio(reference_seconds, engine_seconds),
        "speedup_cpu": reference_cpu / engine_cpu,
        "engine_qps": n / engine_seconds,
        "reference_qps": None if reference_seconds is None else n / reference_seconds,
        "engine_seconds": engine_seconds,
        "reference_seconds": reference_seconds,
        "engine_cpu_seconds": engine_cpu,
        "reference_cpu_seconds": reference_cpu,
        "greedy_identical": bool((both["greedy_answers"] == both["greedy_answers_ref"]).all()),
        # Share of the (question, prompt) greedy answers that are the same string: 1.0 in float32; in bfloat16 a
        # batched matmul can round a near-tie the other way from a one-question one.
        "greedy_agreement": _greedy_agreement(both),
        "category_agreement": float((both["category"] == both["category_ref"]).mean()),
        "questions": n,
        "engine_generations_per_question": float(engine["generations"].mean()),
        "reference_generations_per_question": float(reference["generations"].mean()),
        "categories": dict(engine.group_by("category").len().sort("category").iter_rows()),
    }


def _speedup_intervals(per_question_cpu: pl.Series, n: int, engine_cpu: float, exact_cpu: float | None) -> dict:
    """95% intervals on the CPU speed-ups from the spread of the reference's per-question CPU times."""
    from benchmark.analyse.stats import mean_ci

    _, low, high = mean_ci(per_question_cpu.to_list())
    out = {"speedup_cpu_ci": [low * n / engine_cpu, high * n / engine_cpu]}
    if exact_cpu is not None:
        out["exact_speedup_cpu_ci"] = [low * n / exact_cpu, high * n / exact_cpu]
    return out


def _reference_per_question(run, questions: pl.DataFrame) -> tuple[pl.DataFrame, pl.Series]:
    """The reference on each question alone (its CPU time per question, for the interval), results stacked."""
    tables, seconds = [], []
    for i in range(questions.height):
        table, _, cpu = run(questions.slice(i, 1))
        tables.append(table)
        seconds.append(cpu)
    return pl.concat(tables, how="diagonal_relaxed"), pl.Series("cpu_seconds", seconds)


def _greedy_agreement(both: pl.DataFrame) -> float:
    pairs = [(x, y) for xs, ys in zip(both["greedy_answers"], both["greedy_answers_ref"], strict=True)
             for x, y in zip(xs, ys, strict=True)]
    return sum(x == y for x, y in pairs) / len(pairs) if pairs else float("nan")


def agreement(a: pl.DataFrame, b: pl.DataFrame) -> float:
    """Share of questions two categorisation tables put in the same category."""
    both = a.select("qid", "category").join(b.select("qid", "category"), on="qid", suffix="_b")
    return float((both["category"] == both["category_b"]).mean())


def exact_figures(sampled: pl.DataFrame, other_noise: pl.DataFrame, estimate: pl.DataFrame) -> dict:
    """How the exact estimator's categories compare with the sampled estimator's: its agreement with each of two
    sampled runs that differ only in sample noise (mean of the two), against their agreement with each other;
    where its greedy verdicts differ (teacher forcing is token-exact, exact match normalises); and the
    exact x sampled category table."""
    with_exact = (agreement(estimate, sampled) + agreement(estimate, other_noise)) / 2
    between = agreement(sampled, other_noise)
    joined = estimate.select("qid", "category", "p_correct_greedy").join(
        sampled.select("qid", "category", "p_correct_greedy"), on="qid", suffix="_sampled")
    confusion = {f"{e} / {s}": n for e, s, n in
                 joined.group_by("category", "category_sampled").len().sort("category", "category_sampled").iter_rows()}
    return {
        "exact_vs_sampled_agreement": with_exact,
        "sampled_vs_sampled_agreement": between,
        "exact_agrees_as_often_as_two_sampled_runs": with_exact >= between,
        "exact_greedy_verdicts_identical": float((joined["p_correct_greedy"] == joined["p_correct_greedy_sampled"]).mean()),
        "exact_categories": dict(estimate.group_by("category").len().sort("category").iter_rows()),
        "exact_by_sampled_categories": confusion,
    }
