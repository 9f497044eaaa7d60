"""The paper's linear model recovers known coefficients and reports R²."""

import numpy as np
import polars as pl
import pytest

from benchmark.analyse.measures import fit_linear_model
from benchmark.analyse.suite import linear_points
from benchmark.mixtures import Mixture
from benchmark.plan import Variant


def test_linear_model_recovers_coefficients():
    rng = np.random.default_rng(0)
    known, unknown = rng.uniform(0, 1, 60), rng.uniform(0, 0.5, 60)
    noise = rng.normal(0, 0.01, 60)
    points = pl.DataFrame({"known_fitted_share": known, "unknown_fitted_share": unknown,
                           "acc": 0.37 + 0.073 * known - 0.083 * unknown + noise})
    fit = fit_linear_model(points, "acc")
    assert fit["beta0"] == pytest.approx(0.37, abs=0.01)
    assert fit["beta_kn"] == pytest.approx(0.073, abs=0.01)
    assert fit["beta_unk"] == pytest.approx(-0.083, abs=0.02)
    assert 0.5 < fit["r2"] <= 1 and fit["n"] == 60


def test_linear_points_count_fitted_examples_per_category():
    rows = pl.DataFrame({"qid": [f"q{i}" for i in range(10)], "relation": ["P19"] * 10,
                         "category": ["HighlyKnown"] * 4 + ["Unknown"] * 6, "answer": ["a"] * 10})
    variant = Variant("unknown_60", Mixture("unknown_60", "unknown_fraction", rows, {}), 0, {}, None, "k")
    history = pl.DataFrame({"epoch": [1, 2], "train/acc/HighlyKnown": [0.5, 1.0], "train/acc/Unknown": [0.0, 0.5],
                            "test/acc/all": [0.3, 0.2], "ood/acc/all": [0.1, 0.1]})
    points = linear_points({"unknown_60": history}, {"unknown_60": variant}, size=10)
    assert points["known_fitted_share"].to_list() == [0.2, 0.4]
    assert points["unknown_fitted_share"].to_list() == [0.0, 0.3]


# -- the paper's significance test, seed by seed -------------------------------------------------------------------
def simulated_runs(rng, effect: float, seed_sd: float, seeds: int = 3, questions: int = 400):
    """Right/wrong per (seed, question) for two mixtures on the same questions: each question has its own
    difficulty, each training run its own offset (seed noise), mixture a is ``effect`` more accurate."""
    base = rng.uniform(0.05, 0.6, questions)

    def runs(shift):
        offsets = rng.normal(shift, seed_sd, seeds)[:, None]
        return (rng.uniform(size=(seeds, questions)) < np.clip(base + offsets, 0, 1)).tolist()

    return runs(effect), runs(0.0)


def test_seed_level_test_keeps_training_noise_where_averaging_seeds_first_does_not():
    from benchmark.analyse.measures import seed_level_test
    from benchmark.analyse.stats import paired_t_test

    rng = np.random.default_rng(0)
    ours, averaged = [], []
    for _ in range(200):  # a null world: the two mixtures differ only by seed noise
        a, b = simulated_runs(rng, effect=0.0, seed_sd=0.03)
        ours.append(seed_level_test(a, b)["p"] < 0.05)
        averaged.append(paired_t_test(np.mean(a, axis=0), np.mean(b, axis=0))["p"] < 0.05)  # the old way
    assert np.mean(ours) <= 0.08  # about the nominal 5%
    assert np.mean(averaged) >= 0.2  # seed-to-seed differences called significant
    # A real difference of 20 points is found. With 3 seeds the test has about 2 degrees of freedom (run-to-run
    # noise dominates), so smaller ones often are not: 12 points are found about half the time here.
    power = [seed_level_test(*simulated_runs(rng, effect=0.2, seed_sd=0.03))["p"] < 0.05 for _ in range(100)]
    assert np.mean(power) >= 0.75
    one = simulated_runs(rng, effect=0.0, seed_sd=0.0, seeds=1)
    assert seed_level_test(*one)["p"] == paired_t_test(one[0][0], one[1][0])["p"]  # one seed: the paper's test
    same = seed_level_test(one[0], one[0])
    assert (same["p"], same["mean_diff"]) == (1.0, 0.0)


def test_significance_vs_best_chooses_on_dev_adjusts_for_the_mixtures_and_tests_each_category():
    from benchmark.analyse.measures import significance_vs_best

    rng = np.random.default_rng(1)
    strong, weak = simulated_runs(rng, effect=0.15, seed_sd=0.01)
    _, weak2 = simulated_runs(rng, effect=0.0, seed_sd=0.01)
    correct = {"strong": strong, "weak": weak, "weak2": weak2}
    categories = ["HighlyKnown", "Unknown"] * 200
    on_test = significance_vs_best(correct, categories=categories)
    assert {t["best"] for t in on_test.values()} == {"strong"} and on_test["weak"]["best_chosen_on"] == "test"
    assert on_test["weak"]["p_holm"] >= on_test["weak"]["p"] and np.isnan(on_test["strong"]["p_holm"])
    assert sorted(on_test["weak"]["groups"]) == ["HighlyKnown", "Known", "Unknown"]
    assert on_test["weak"]["groups"]["Unknown"]["questions"] == 200
    assert on_test["weak"]["p_holm"] < 0.05  # 15 points below the best
    # the best is chosen on dev scores when given, and then tested on test whatever its test accuracy
    on_dev = significance_vs_best(correct, select={"strong": 0.1, "weak": 0.3, "weak2": 0.2})
    assert on_dev["strong"]["best"] == "weak" and on_dev["strong"]["best_chosen_on"] == "dev"
    assert on_dev["strong"]["mean_diff"] > 0  # better than the chosen best on test
