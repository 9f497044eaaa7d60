"""P(True) against SliCK, compared the way the paper compares them (DESIGN.md §1.4): pure functions, no MLflow.

Both methods name facts a base model does not know. The paper judges them by what a fine-tuned model does on
the questions each one calls Unknown: the *lower* the post-fine-tuning test accuracy on those questions, the
better the method finds facts that really are unknown. To compare at equal coverage, P(True)'s Unknown set is
the same number of test questions as SliCK's Unknown set, taken from the bottom of the P(True) ranking.

How P(True) is scored (``benchmark.slick.p_true_scores``, once per question, on the *base* model, zero-shot)::

    Question: <question>
    Proposed Answer: <gold answer>
    Is the proposed answer:
     (A) True
     (B) False
    The proposed answer is:

(``benchmark.prompts.p_true_prompt``, Kadavath et al.'s wording as the paper uses it). One forward pass; the
score is the next-token probability of the first token of " True" renormalised over the first tokens of " True"
and " False" (``benchmark.sampling.option_probability``; each token taken in context, i.e. the token that follows
the prompt in ``prompt + " True"``). It is the ``p_true`` column of ``slick/categories.parquet``; null where the
tokenizer cannot tell the two options apart (such questions are left out of the comparison).

Inputs: the categorisation table (``qid``, ``split``, ``ood``, ``category``, ``p_true``) and post-fine-tuning
right/wrong per test question (``qid``, ``correct``) at one checkpoint; ``correct`` may be a mean over several
fine-tuned runs (seeds), so the accuracies are then means over seeds as well.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import polars as pl

from benchmark.stats import bootstrap_ci

COVERAGE_GRID = tuple(round(x, 2) for x in np.linspace(0.05, 1.0, 20))


def mean_correct(predictions: Sequence[pl.DataFrame], checkpoint: str) -> pl.DataFrame:
    """Per in-distribution test question: the mean of ``correct`` over the runs' predictions at ``checkpoint``
    (``early_stop`` or ``convergence``). Columns ``qid``, ``correct`` (a float in [0, 1])."""
    parts = [p.filter((pl.col("checkpoint") == checkpoint) & ~pl.col("ood").cast(pl.Boolean))
             .select("qid", pl.col("correct").cast(pl.Float64)) for p in predictions if p is not None and p.height]
    if not parts:
        return pl.DataFrame(schema={"qid": pl.String, "correct": pl.Float64})
    return pl.concat(parts).group_by("qid").agg(pl.col("correct").mean()).sort("qid")


def _accuracy(values: np.ndarray) -> dict[str, float]:
    if values.size == 0:
        return {"accuracy": math.nan, "ci_low": math.nan, "ci_high": math.nan}
    low, high = bootstrap_ci(values)
    return {"accuracy": float(values.mean()), "ci_low": low, "ci_high": high}


def p_true_vs_slick(categories: pl.DataFrame, correct: pl.DataFrame,
                    coverages: Sequence[float] = COVERAGE_GRID) -> dict:
    """Post-fine-tuning accuracy on the test questions SliCK calls Unknown, and on as many questions ranked least
    likely known by P(True) (lowest score first; ties broken by question id).

    Returns ``questions`` (in-distribution test questions scored and with a P(True) score), ``n_unknown`` and
    ``coverage`` (SliCK's Unknown share of them), ``slick`` and ``p_true`` (``accuracy`` with a 95% bootstrap
    interval over questions), ``overlap`` (share of SliCK's Unknown questions that P(True) also picks) and
    ``curve``: P(True)'s accuracy on its lowest-ranked questions at each coverage in ``coverages`` (rows
    ``coverage``, ``questions``, ``accuracy``). Lower accuracy = the method found facts the model does not know.
    """
    test = categories.filter((pl.col("split") == "test") & ~pl.col("ood").cast(pl.Boolean))
    table = (test.select("qid", "category", "p_true").join(correct, on="qid", how="inner")
             .drop_nulls(["p_true", "correct"]).sort(["p_true", "qid"]))
    n = table.height
    is_unknown = (table["category"] == "Unknown").to_numpy()
    n_unknown = int(is_unknown.sum())
    values = table["correct"].to_numpy().astype(float)
    curve = []
    for coverage in coverages:
        k = max(1, round(coverage * n)) if n else 0
        if k:
            curve.append({"coverage": k / n, "questions": k, "accuracy": float(values[:k].mean())})
    chosen = np.zeros(n, dtype=bool)
    chosen[:n_unknown] = True
    overlap = float((chosen & is_unknown).sum() / n_unknown) if n_unknown else math.nan
    return {"questions": n, "n_unknown": n_unknown, "coverage": n_unknown / n if n else math.nan,
            "slick": _accuracy(values[is_unknown]), "p_true": _accuracy(values[:n_unknown]),
            "overall_accuracy": float(values.mean()) if n else math.nan, "overlap": overlap, "curve": curve}
