"""Per-epoch evaluation of a model being fine-tuned (docs/method.md §4), batched, for the model as it stands.

Three measurements, each the paper's:

- **train fitting** per SliCK category: the fraction of the category's train examples whose greedy answer is
  exactly the gold. Computed with ``teacher_forced_match`` (one forward pass over prompt + " <answer>\\n"),
  never by generating: greedy reproduces the completion exactly when the argmax at every completion position
  is the next completion token (at the last one, any bare terminator -- a newline token, EOS -- where the
  completion ends with one: ``benchmark.prompts.Stops.ends_like``). This is token-exact (the tokens the model was
  trained on), so it is a little stricter than the normalised exact match used for dev and test.
- **dev accuracy**: greedy generation up to the first newline, normalised exact match. Picks EARLY_STOP. An answer
  may run to its relation's longest gold answer plus two tokens (``answer_limits``), the rule SliCK cuts by too.
- **test accuracy**, overall and per SliCK category of the test questions (categorised with the base model),
  for in-distribution and OOD questions separately.

Dev and test questions are answered in one ``greedy_generate`` call so they share batches. With an ``idk_answer``
(the IDK relabelling variant) the test metrics also say how often the model answered and how accurate it was
when it did.

**On several ranks** (``ranks``, ``benchmark.parallel.Ranks``) each rank answers every n-th batch of the batches one
process would make (``rank_share``), and the answers are gathered onto every rank. A batch is the same prompts in
the same order on any number of ranks, so every answer, and so every metric, is the one a single process computes;
the work is cut n ways (the paper's sweep evaluates 26,790 questions per epoch).

Metric names: ``train/acc/<Category>``, ``train/acc/Known``, ``train/acc/all``, ``dev/acc/all``,
``test/acc/all``, ``test/acc/<Category>``, ``test/acc/Known``, ``ood/acc/...`` likewise, and with an IDK answer
``test/answered_fraction``, ``test/acc_answered`` (and the ``ood/`` pair). A category with no examples in a
split gets no metric.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import polars as pl

from benchmark.answers import exact_match, golds, normalize
from benchmark.backends.decoding import (
    answer_token_limits,
    greedy_generate,
    length_batches,
    teacher_forced_match,
)
from benchmark.categories import CATEGORIES, KNOWN
from benchmark.parallel import ALONE, Ranks
from benchmark.prompts import completion, encode_batch, encode_pairs, finetune_prompt


@dataclass(frozen=True)
class EvaluationSets:
    """What is evaluated every epoch. ``train`` has question, answer, category; ``dev`` question, answer;
    ``test`` qid, relation, question, answer, category, ood (OOD rows are the OOD test relations)."""

    train: pl.DataFrame
    dev: pl.DataFrame
    test: pl.DataFrame

    def __post_init__(self):
        for name, table, needed in (("train", self.train, ("question", "answer", "category")),
                                    ("dev", self.dev, ("question", "answer")),
                                    ("test", self.test, ("question", "answer", "category", "ood"))):
            missing = [c for c in needed if c not in table.columns]
            if missing:
                raise ValueError(f"{name} table lacks columns {missing}")


@dataclass
class EpochEvaluation:
    metrics: dict[str, float]
    test_predictions: list[str]  # one per row of EvaluationSets.test, in order


def rank_share(lengths: Sequence[int], batch_size: int, ranks: Ranks) -> list[int]:
    """The items this rank computes: every ``world``-th batch of the one-process batching
    (``decoding.length_batches``), in the one-process order. Handed to the same decoding function, they are cut
    into exactly those batches again: that order is already sorted by length (ties in index order, which the
    stable sort keeps), and every batch but the last one overall is full."""
    batches = length_batches(lengths, batch_size)
    return [i for batch in batches[ranks.rank::ranks.world] for i in batch]


def on_ranks(compute, count: int, lengths, batch_size: int, ranks: Ranks) -> list:
    """``compute(indices)`` (one result per index, in order) for all ``count`` items, each rank computing its
    share; ``lengths()`` gives the token count of each item (only asked for on several ranks)."""
    if ranks.world == 1:
        return compute(list(range(count)))
    mine = rank_share(lengths(), batch_size, ranks)
    results = compute(mine) if mine else []
    merged: list = [None] * count
    for indices, values in ranks.gather((mine, results)):
        for i, value in zip(indices, values, strict=True):
            merged[i] = value
    return merged


def train_fitting(model, tokenizer, questions: Sequence[str], answers: Sequence[str], *,
                  batch_size: int, ranks: Ranks = ALONE) -> list[bool]:
    """Whether greedy decoding would answer each train question exactly with its gold (teacher-forced)."""
    prompts, completions = [finetune_prompt(q) for q in questions], [completion(a) for a in answers]
    return on_ranks(lambda idx: teacher_forced_match(model, tokenizer, [prompts[i] for i in idx],
                                                     [completions[i] for i in idx], batch_size=batch_size),
                    len(prompts), lambda: [len(ids) for ids, _ in encode_pairs(tokenizer, prompts, completions)],
                    batch_size, ranks)


def answer_limits(tokenizer, sets: EvaluationSets, idk_answer: str | None = None) -> list[int]:
    """Per dev and test question (in that order): the tokens its answer may run to, by the rule SliCK uses too
    (``decoding.answer_token_limits``): its relation's longest gold answer among the questions asked, plus room;
    the IDK answer counts as a gold answer of every relation."""
    relations = [*_relations(sets.dev), *_relations(sets.test)]
    limits = answer_token_limits(tokenizer, relations, golds(sets.dev) + golds(sets.test),
                                 extra=[idk_answer] if idk_answer else ())
    return [limits[r] for r in relations]


def _relations(table: pl.DataFrame) -> list[str]:
    return table["relation"].to_list() if "relation" in table.columns else [""] * table.height


def answer_questions(model, tokenizer, questions: Sequence[str], *, batch_size: int,
                     max_new_tokens: int | Sequence[int], ranks: Ranks = ALONE) -> list[str]:
    """Greedy answers (text up to the first newline) to the fine-tuning prompt; each distinct question once.
    ``max_new_tokens``: one limit for all, or one per question."""
    distinct = list(dict.fromkeys(questions))
    prompts = [finetune_prompt(q) for q in distinct]
    per_question = [max_new_tokens] * len(questions) if isinstance(max_new_tokens, int) else max_new_tokens
    room: dict[str, int] = {}
    for question, limit in zip(questions, per_question, strict=True):
        room[question] = max(limit, room.get(question, 0))
    limits = [room[q] for q in distinct]
    answers = on_ranks(lambda idx: greedy_generate(model, tokenizer, [prompts[i] for i in idx],
                                                   max_new_tokens=[limits[i] for i in idx], batch_size=batch_size),
                       len(prompts), lambda: [len(ids) for ids in encode_batch(tokenizer, prompts)], batch_size, ranks)
    by_question = dict(zip(distinct, answers, strict=True))
    return [by_question[q] for q in questions]


def accuracy_metrics(prefix: str, correct: Sequence[bool], categories: Sequence[str] | None) -> dict[str, float]:
    """``<prefix>/all`` plus, when categories are given, one per category present and ``<prefix>/Known``."""
    if not correct:
        return {}
    metrics = {f"{prefix}/all": sum(correct) / len(correct)}
    if categories is None:
        return metrics
    groups = {**{c: (c,) for c in CATEGORIES}, "Known": KNOWN}
    for name, members in groups.items():
        hits = [ok for ok, cat in zip(correct, categories, strict=True) if cat in members]
        if hits:
            metrics[f"{prefix}/{name}"] = sum(hits) / len(hits)
    return metrics


def idk_metrics(prefix: str, predictions: Sequence[str], correct: Sequence[bool], idk_answer: str) -> dict[str, float]:
    """Answered fraction (prediction is not the IDK answer) and accuracy on the answered questions."""
    if not predictions:
        return {}
    answered = [normalize(p) != normalize(idk_answer) for p in predictions]
    n_answered = sum(answered)
    metrics = {f"{prefix}/answered_fraction": n_answered / len(predictions)}
    if n_answered:
        metrics[f"{prefix}/acc_answered"] = sum(c for c, a in zip(correct, answered, strict=True) if a) / n_answered
    return metrics


def evaluate_epoch(model, tokenizer, sets: EvaluationSets, *, batch_size: int,
                   idk_answer: str | None = None, ranks: Ranks = ALONE) -> EpochEvaluation:
    """Train fitting, dev and test accuracy for the model as it stands (the caller puts it in eval mode). With
    ``ranks``, every rank calls it and gets the whole result (each computes its share; see the module docstring)."""
    train = sets.train
    fitted = train_fitting(model, tokenizer, train["question"].to_list(), train["answer"].to_list(),
                           batch_size=batch_size, ranks=ranks)
    metrics = accuracy_metrics("train/acc", fitted, train["category"].to_list())

    dev_questions, test_questions = sets.dev["question"].to_list(), sets.test["question"].to_list()
    predictions = answer_questions(model, tokenizer, dev_questions + test_questions, batch_size=batch_size,
                                   max_new_tokens=answer_limits(tokenizer, sets, idk_answer), ranks=ranks)
    dev_predictions, test_predictions = predictions[:len(dev_questions)], predictions[len(dev_questions):]

    dev_correct = [exact_match(p, g) for p, g in zip(dev_predictions, golds(sets.dev), strict=True)]
    metrics.update(accuracy_metrics("dev/acc", dev_correct, None))

    test_correct = [exact_match(p, g) for p, g in zip(test_predictions, golds(sets.test), strict=True)]
    ood = sets.test["ood"].to_list()
    categories = sets.test["category"].to_list()
    for prefix, want_ood in (("test", False), ("ood", True)):
        rows = [i for i, o in enumerate(ood) if bool(o) == want_ood]
        correct = [test_correct[i] for i in rows]
        metrics.update(accuracy_metrics(f"{prefix}/acc", correct, [categories[i] for i in rows]))
        if idk_answer is not None:
            metrics.update(idk_metrics(prefix, [test_predictions[i] for i in rows], correct, idk_answer))
    return EpochEvaluation(metrics=metrics, test_predictions=test_predictions)


def predictions_table(test: pl.DataFrame, predictions: Sequence[str], checkpoint: str) -> pl.DataFrame:
    """Per-example test predictions (in-distribution and OOD) at one checkpoint (early_stop or convergence)."""
    columns = [c for c in ("qid", "relation", "question", "answer", "category", "ood") if c in test.columns]
    return test.select(columns).with_columns(
        pl.Series("prediction", list(predictions), dtype=pl.String),
        pl.Series("correct", [exact_match(p, g) for p, g in zip(predictions, golds(test), strict=True)],
                  dtype=pl.Boolean),
        pl.lit(checkpoint).alias("checkpoint"),
    )
