"""Does the world model know what it was shown? 4-shot greedy accuracy by pretraining exposure.

For every train question of the world's in-distribution relations: a 4-shot prompt whose exemplars are dev
questions of the same relation (``benchmark.prompts.few_shot_prompt``; a different seeded draw per question),
greedy decoding (``benchmark.backends.decoding.greedy_generate``), exact match (``benchmark.answers.exact_match``).
Accuracy is reported per exposure bucket (0, 1-2, 3-4, 5-8, 9-16, 17-32), for large-answer relations in
``buckets`` and for guessable (small-answer) relations apart in ``guessable``, where a lucky guess is likely.
A healthy world: ~0 at exposure 0, rising bucket to bucket, >= 0.8 at the top.

    .venv/bin/python -m benchmark world probe --model toy-gpt   # pretrains on first use (minutes), then seconds
"""

from __future__ import annotations

import random
import time

import polars as pl

from benchmark.answers import exact_match
from benchmark.backends.decoding import greedy_generate
from benchmark.errors import BenchmarkError
from benchmark.prompts import few_shot_prompt
from benchmark.runtime import compute_threads, torch_threads
from components.world.source import exposure_buckets

SHOTS = 4


def few_shot_prompts(table: pl.DataFrame, dev: pl.DataFrame, shots: int, seed: int) -> list[str]:
    """One prompt per row of ``table``: ``shots`` exemplars drawn from ``dev`` of the row's relation."""
    pools = {r: list(zip(g["question"].to_list(), g["answer"].to_list(), strict=True))
             for (r,), g in dev.group_by(["relation"], maintain_order=True)}
    prompts = []
    for relation, question in zip(table["relation"].to_list(), table["question"].to_list(), strict=True):
        rng = random.Random(f"{seed}:{relation}:{question}")
        prompts.append(few_shot_prompt(rng.sample(pools[relation], shots), question))
    return prompts


def bucket_accuracy(scored: pl.DataFrame, max_exposure: int) -> list[dict]:
    rows = []
    for lo, hi in exposure_buckets(max_exposure):
        part = scored.filter(pl.col("exposure").is_between(lo, hi))
        stated = part.filter(pl.col("qa_lines") == 0)
        rows.append({"min_exposure": lo, "max_exposure": hi, "n": part.height,
                     "accuracy": round(float(part["correct"].mean()), 4) if part.height else None,
                     "n_statements_only": stated.height,
                     "accuracy_statements_only": round(float(stated["correct"].mean()), 4) if stated.height else None})
    return rows


def probe(model_name: str = "toy-gpt", registry=None, *, shots: int = SHOTS, seed: int = 0,
          batch_size: int = 32) -> dict:
    """Accuracy of ``model_name`` (a world-family model) by exposure bucket; pretrains or reuses it via the registry."""
    from benchmark.registry import Registry

    registry = registry or Registry()
    component = registry.model(model_name)
    if not hasattr(component.spec, "world"):
        raise BenchmarkError(f"{component.file}: probe needs a model of family 'world' (it knows the exposures); "
                             f"'{model_name}' is family '{component.spec.family}'")
    source = registry.dataset(component.spec.world)
    loaded = component.load()
    return {"model": model_name, "world": source.name, "model_identity": loaded.identity,
            **probe_loaded(loaded, source, shots=shots, seed=seed, batch_size=batch_size)}


def probe_loaded(loaded, source, *, shots: int = SHOTS, seed: int = 0, batch_size: int = 32) -> dict:
    """The probe on an already loaded model and its world source (a ``WorldSource``)."""
    started = time.perf_counter()
    questions = source.questions().filter(~pl.col("ood"))
    exposures = source.exposures().select("split", "relation", "question", "exposure", "qa_lines")
    train = questions.filter(pl.col("split") == "train").join(exposures, on=["split", "relation", "question"], how="left")
    if train["exposure"].null_count():
        raise BenchmarkError(f"{source.file}: exposures do not cover every train question of world '{source.name}'")
    dev = questions.filter(pl.col("split") == "dev")
    prompts = few_shot_prompts(train, dev, shots, seed)
    with torch_threads(compute_threads()):
        answers = greedy_generate(loaded.model, loaded.tokenizer, prompts, max_new_tokens=8, batch_size=batch_size)
    scored = train.with_columns(prediction=pl.Series(answers, dtype=pl.String)).with_columns(
        correct=pl.struct("prediction", "answer").map_elements(lambda r: exact_match(r["prediction"], r["answer"]),
                                                              return_dtype=pl.Boolean))
    guessable = source.guessable_relations()
    top = int(scored["exposure"].max())
    large = scored.filter(~pl.col("relation").is_in(guessable))
    small = scored.filter(pl.col("relation").is_in(guessable))
    per_relation = {r: round(float(g["correct"].mean()), 4)
                    for (r,), g in scored.group_by(["relation"], maintain_order=True)}
    return {
        "shots": shots,
        "questions": large.height,
        "buckets": bucket_accuracy(large, top),
        "guessable": {"relations": guessable, "questions": small.height, "buckets": bucket_accuracy(small, top)},
        "accuracy_by_relation": per_relation,
        "probe_seconds": round(time.perf_counter() - started, 1),
    }
