"""P(True) against SliCK: paired over the same questions, and not ranked where P(True) cannot tell Known from
Unknown (real code on simulated categorisation tables)."""

from __future__ import annotations

import itertools

import numpy as np
import polars as pl
import pytest

from benchmark.analyse.p_true import auroc, auroc_ci, p_true_vs_slick


def world(rng, *, n: int = 300, unknown_share: float = 0.4, known_mean: float, unknown_mean: float, sd: float,
          acc_known: float = 0.6, acc_unknown: float = 0.05):
    """A categorisation table and post-fine-tuning right/wrong: SliCK's Unknown questions are answered with
    ``acc_unknown``, Known ones with ``acc_known``; P(True) is drawn per category."""
    unknown = rng.uniform(size=n) < unknown_share
    scores = np.where(unknown, rng.normal(unknown_mean, sd, n), rng.normal(known_mean, sd, n))
    correct = rng.uniform(size=n) < np.where(unknown, acc_unknown, acc_known)
    qids = [f"q{i:04d}" for i in range(n)]
    categories = pl.DataFrame({"qid": qids, "split": "test", "ood": False, "p_true": scores,
                               "category": np.where(unknown, "Unknown", "HighlyKnown")})
    return categories, pl.DataFrame({"qid": qids, "correct": correct.astype(float)})


def test_auroc_is_the_chance_a_known_question_scores_higher():
    rng = np.random.default_rng(0)
    scores, positive = rng.normal(size=40).round(1), rng.uniform(size=40) < 0.5  # rounded: ties count one half
    pairs = [(a > b) + 0.5 * (a == b) for a, b in itertools.product(scores[positive], scores[~positive])]
    assert auroc(scores, positive) == pytest.approx(np.mean(pairs))
    assert auroc(np.array([0.9, 0.8, 0.1]), np.array([True, True, False])) == 1.0
    assert auroc(np.array([0.5, 0.5]), np.array([True, False])) == 0.5
    found = auroc_ci(scores, positive)
    assert found["ci_low"] <= found["auroc"] <= found["ci_high"] and found["positive"] == positive.sum()


def test_a_p_true_without_signal_is_never_ranked():
    """The embedded world's P(True): 0.524-0.526 in every category, SD 0.009."""
    rng = np.random.default_rng(1)
    verdicts = []
    for _ in range(12):
        categories, correct = world(rng, known_mean=0.525, unknown_mean=0.525, sd=0.009)
        result = p_true_vs_slick(categories, correct)
        verdicts.append(result["verdict"])
        assert abs(result["auroc"]["auroc"] - 0.5) < 0.1
    assert verdicts == ["not ranked"] * 12
    # the unpaired means would have named SliCK every time: its Unknown questions are answered worse
    assert result["slick"]["accuracy"] < result["p_true"]["accuracy"]


def test_an_informative_p_true_is_ranked_by_the_paired_difference():
    rng = np.random.default_rng(2)
    # P(True) separates the categories, but less sharply than SliCK: its lowest-ranked set holds Known questions
    categories, correct = world(rng, known_mean=0.65, unknown_mean=0.4, sd=0.12)
    result = p_true_vs_slick(categories, correct)
    assert result["separates"] and result["auroc"]["ci_low"] > 0.55
    diff = result["difference"]
    assert diff["ci_low"] <= diff["diff"] <= diff["ci_high"] and diff["ci_low"] > 0
    assert diff["diff"] == pytest.approx(result["p_true"]["accuracy"] - result["slick"]["accuracy"])
    assert result["verdict"] == "SliCK"
    # where P(True) picks exactly SliCK's Unknown questions the paired difference is exactly 0, every redraw
    same, same_correct = world(rng, known_mean=0.9, unknown_mean=0.1, sd=0.01)
    tied = p_true_vs_slick(same, same_correct)
    assert tied["overlap"] == 1.0 and (tied["difference"]["ci_low"], tied["difference"]["ci_high"]) == (0.0, 0.0)
    assert tied["verdict"] == "no difference shown"
    # and where SliCK's Unknown questions are answered better than P(True)'s pick, P(True) is named
    categories = categories.with_columns(p_true=pl.when(pl.Series(correct["correct"]) == 0)
                                         .then(pl.col("p_true") - 0.3).otherwise(pl.col("p_true")))
    assert p_true_vs_slick(categories, correct)["verdict"] == "P(True)"
