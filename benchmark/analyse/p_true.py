"""P(True) against SliCK, compared the way the paper compares them (docs/method.md §4): pure functions, no MLflow.

Both methods name facts a base model does not know. The paper judges them by what a fine-tuned model does on
the questions each one calls Unknown: the *lower* the post-fine-tuning test accuracy on those questions, the
better the method finds facts that really are unknown. To compare at equal coverage, P(True)'s Unknown set is
the same number of test questions as SliCK's Unknown set, taken from the bottom of the P(True) ranking.

How P(True) is scored (``benchmark.backends.decoding.p_true_scores``, once per question, on the *base* model, zero-shot)::

    Question: <question>
    Proposed Answer: <gold answer>
    Is the proposed answer:
     (A) True
     (B) False
    The proposed answer is:

(``benchmark.prompts.p_true_prompt``, Kadavath et al.'s wording as the paper uses it). One forward pass; the
score is the next-token probability of the first token of " True" renormalised over the first tokens of " True"
and " False" (``benchmark.backends.decoding.option_probability``; each token taken in context, i.e. the token that follows
the prompt in ``prompt + " True"``). It is the ``p_true`` column of ``slick/categories.parquet``; null where the
tokenizer cannot tell the two options apart (such questions are left out of the comparison).

**Paired, and only where P(True) says something.** The two methods' Unknown sets are drawn from the same test
questions, so they are compared paired: a bootstrap over those questions redraws them once for both methods (SliCK's
set is the redrawn Unknown questions, P(True)'s as many of the redrawn questions ranked lowest), which keeps what the
two sets share out of the noise. A winner is named only when that interval on the difference excludes 0 and P(True)
separates the categories at all: the AUROC of its score for Known against Unknown questions (with a stratified
bootstrap interval) must be clearly above chance (``separates``: interval above 0.5 and the AUROC at least
0.5 + ``AUROC_MARGIN``). A score that cannot tell Known from Unknown picks its "Unknown" questions at random, and
ranking it against SliCK would say nothing about either method (on the embedded world the world model's P(True) is
0.52-0.53 in every category). The intervals are over test questions, given the fine-tuned runs.

Inputs: the categorisation table (``qid``, ``split``, ``ood``, ``category``, ``p_true``) and post-fine-tuning
right/wrong per test question (``qid``, ``correct``) at one checkpoint; ``correct`` may be a mean over several
fine-tuned runs (seeds), so the accuracies are then means over seeds as well.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import polars as pl

from benchmark.analyse.stats import bootstrap_ci
from benchmark.categories import KNOWN

COVERAGE_GRID = tuple(round(x, 2) for x in np.linspace(0.05, 1.0, 20))
AUROC_MARGIN = 0.05  # an AUROC below 0.5 + this is "near 0.5": P(True) then does not separate the categories
N_RESAMPLES = 1000


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


def auroc(scores: np.ndarray, positive: np.ndarray) -> float:
    """P(score of a random positive > score of a random negative), ties counting one half (Mann-Whitney)."""
    from scipy.stats import rankdata

    n_pos, n_neg = int(positive.sum()), int((~positive).sum())
    if not n_pos or not n_neg:
        return math.nan
    ranks = rankdata(scores)
    return float((ranks[positive].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def auroc_ci(scores: Sequence[float], positive: Sequence[bool], *, n_resamples: int = N_RESAMPLES, seed: int = 0,
             confidence: float = 0.95) -> dict[str, float]:
    """``auroc`` with a percentile interval from a bootstrap that redraws positives and negatives separately (so
    every redraw has both). Returns ``auroc``, ``ci_low``, ``ci_high``, ``positive``, ``negative``."""
    scores, positive = np.asarray(scores, dtype=float), np.asarray(positive, dtype=bool)
    pos, neg = scores[positive], scores[~positive]
    out = {"auroc": auroc(scores, positive), "ci_low": math.nan, "ci_high": math.nan,
           "positive": int(pos.size), "negative": int(neg.size)}
    if math.isnan(out["auroc"]):
        return out
    rng = np.random.default_rng(seed)
    labels = np.r_[np.ones(pos.size, dtype=bool), np.zeros(neg.size, dtype=bool)]
    draws = [auroc(np.r_[rng.choice(pos, pos.size), rng.choice(neg, neg.size)], labels) for _ in range(n_resamples)]
    low, high = np.quantile(draws, [(1 - confidence) / 2, (1 + confidence) / 2])
    return {**out, "ci_low": float(low), "ci_high": float(high)}


def paired_difference(values: np.ndarray, is_unknown: np.ndarray, *, n_resamples: int = N_RESAMPLES,
                      seed: int = 0, confidence: float = 0.95) -> dict[str, float]:
    """Accuracy on P(True)'s pick minus accuracy on SliCK's Unknown questions at equal coverage, with a paired
    bootstrap interval: each redraw of the questions (rows already sorted by P(True), lowest first) gives both
    methods' sets, SliCK's its Unknown questions and P(True)'s as many of its lowest-ranked ones. Positive: the
    questions SliCK calls Unknown are answered worse, i.e. SliCK finds the less-known facts."""
    n, k = values.size, int(is_unknown.sum())
    out = {"diff": math.nan, "ci_low": math.nan, "ci_high": math.nan}
    if not n or not k:
        return out
    out["diff"] = float(values[:k].mean() - values[is_unknown].mean())
    rng = np.random.default_rng(seed)
    draws = []
    for _ in range(n_resamples):
        drawn = np.sort(rng.integers(0, n, n))  # sorted indices keep the P(True) ranking (ties by question id)
        unknown = is_unknown[drawn]
        if unknown.any():
            draws.append(values[drawn[:int(unknown.sum())]].mean() - values[drawn[unknown]].mean())
    low, high = np.quantile(draws, [(1 - confidence) / 2, (1 + confidence) / 2])
    return {**out, "ci_low": float(low), "ci_high": float(high)}


def verdict(result: dict) -> str:
    """Which method finds the less-known facts, or why none is named: ``not ranked`` (P(True) does not separate
    Known from Unknown), ``no difference shown`` (the paired interval includes 0), ``SliCK`` or ``P(True)``."""
    if not result.get("separates"):
        return "not ranked"
    diff = result["difference"]
    if math.isnan(diff["ci_low"]) or diff["ci_low"] <= 0 <= diff["ci_high"]:
        return "no difference shown"
    return "SliCK" if diff["ci_low"] > 0 else "P(True)"


def p_true_vs_slick(categories: pl.DataFrame, correct: pl.DataFrame,
                    coverages: Sequence[float] = COVERAGE_GRID) -> dict:
    """Post-fine-tuning accuracy on the test questions SliCK calls Unknown, and on as many questions ranked least
    likely known by P(True) (lowest score first; ties broken by question id).

    Returns ``questions`` (in-distribution test questions scored and with a P(True) score), ``n_unknown`` and
    ``coverage`` (SliCK's Unknown share of them), ``slick`` and ``p_true`` (``accuracy`` with a 95% bootstrap
    interval over questions), ``overlap`` (share of SliCK's Unknown questions that P(True) also picks),
    ``curve``: P(True)'s accuracy on its lowest-ranked questions at each coverage in ``coverages`` (rows
    ``coverage``, ``questions``, ``accuracy``), ``difference`` (``paired_difference``: P(True)'s accuracy minus
    SliCK's, paired), ``auroc`` (``auroc_ci`` of P(True) for Known against Unknown on these questions),
    ``separates`` and ``verdict`` (see the module docstring). Lower accuracy = the method found facts the model
    does not know.
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
    known = table["category"].is_in(list(KNOWN)).to_numpy()
    separation = auroc_ci(table["p_true"].to_numpy()[known | is_unknown], known[known | is_unknown])
    result = {"questions": n, "n_unknown": n_unknown, "coverage": n_unknown / n if n else math.nan,
              "slick": _accuracy(values[is_unknown]), "p_true": _accuracy(values[:n_unknown]),
              "overall_accuracy": float(values.mean()) if n else math.nan, "overlap": overlap, "curve": curve,
              "difference": paired_difference(values, is_unknown), "auroc": separation,
              "separates": bool(separation["ci_low"] > 0.5 and separation["auroc"] >= 0.5 + AUROC_MARGIN)}
    return {**result, "verdict": verdict(result)}
