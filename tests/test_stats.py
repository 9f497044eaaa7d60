"""Intervals and tests against textbook values: normal approximation, hand-computed Student-t, scipy, lstsq."""

import math
import time

import numpy as np
import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats as sps

from benchmark.analyse.measures import fit_linear_model
from benchmark.analyse.stats import (
    bootstrap_ci,
    bootstrap_ci_by_group,
    fmt_bounds,
    fmt_interval,
    holm,
    late_drop_gap_ci,
    linear_model_ci,
    mean_ci,
    paired_t_test,
    precision_gap_ci,
)

# ---------------------------------------------------------------- bootstrap


@pytest.mark.parametrize("p", [0.1, 0.3, 0.5])
def test_bootstrap_of_bernoulli_matches_normal_approximation(p):
    n = 20_000
    sample = np.random.default_rng(7).random(n) < p
    mean = sample.mean()
    half = 1.96 * math.sqrt(mean * (1 - mean) / n)
    low, high = bootstrap_ci(sample, n_resamples=4000)
    assert low == pytest.approx(mean - half, abs=0.05 * 2 * half)
    assert high == pytest.approx(mean + half, abs=0.05 * 2 * half)


def test_bootstrap_of_continuous_values_matches_normal_approximation():
    n = 5000
    values = np.random.default_rng(3).exponential(1.0, n)
    half = 1.96 * values.std(ddof=1) / math.sqrt(n)
    low, high = bootstrap_ci(values, n_resamples=4000)
    assert low == pytest.approx(values.mean() - half, abs=0.05 * 2 * half)
    assert high == pytest.approx(values.mean() + half, abs=0.05 * 2 * half)


def test_bootstrap_is_deterministic_for_a_seed_and_varies_with_it():
    sample = np.random.default_rng(0).random(300) < 0.4
    assert bootstrap_ci(sample, seed=5) == bootstrap_ci(sample, seed=5)
    assert bootstrap_ci(sample, seed=5) != bootstrap_ci(sample, seed=6)
    floats = np.random.default_rng(0).random(300)
    assert bootstrap_ci(floats, seed=5) == bootstrap_ci(floats, seed=5)


def test_bootstrap_bool_and_float_zero_one_inputs_agree():
    sample = np.random.default_rng(1).random(400) < 0.3
    assert bootstrap_ci(sample) == bootstrap_ci(sample.astype(float)) == bootstrap_ci(sample.tolist())


def test_bootstrap_degenerate_inputs():
    assert all(math.isnan(v) for v in bootstrap_ci([]))
    assert bootstrap_ci([True] * 50) == (1.0, 1.0)
    assert bootstrap_ci([False] * 50) == (0.0, 0.0)
    assert bootstrap_ci([0.25]) == (0.25, 0.25)
    with pytest.raises(ValueError, match="NaN"):
        bootstrap_ci([1.0, float("nan")])
    with pytest.raises(ValueError, match="confidence"):
        bootstrap_ci([1, 0], confidence=95)


def test_bootstrap_is_fast_for_a_full_test_set():
    rng = np.random.default_rng(0)
    binary, continuous = rng.random(1500) < 0.3, rng.random(1500)
    bootstrap_ci(continuous)  # first-call import and allocation costs are not the steady state
    for sample in (binary, continuous):
        best = min(_timed(lambda s=sample: bootstrap_ci(s, n_resamples=1000)) for _ in range(3))
        assert best < 0.05


def _timed(function) -> float:
    started = time.perf_counter()
    function()
    return time.perf_counter() - started


@settings(max_examples=40, deadline=None)
@given(st.lists(st.booleans(), min_size=1, max_size=200), st.integers(0, 10_000))
def test_bootstrap_interval_is_ordered_and_within_the_data_range(values, seed):
    low, high = bootstrap_ci(values, seed=seed, n_resamples=200)
    assert 0.0 <= low <= high <= 1.0
    if len(set(values)) > 1:
        assert low <= np.mean(values) <= high or high - low < 1 / len(values) + 1e-12


def test_bootstrap_by_group_gives_each_group_and_all():
    rng = np.random.default_rng(2)
    correct = rng.random(900) < 0.4
    groups = rng.choice(["HighlyKnown", "Unknown", "MaybeKnown"], 900).tolist()
    groups[0] = None
    result = bootstrap_ci_by_group(correct, groups, seed=3)
    assert set(result) == {"all", "HighlyKnown", "Unknown", "MaybeKnown"}
    assert result["all"] == (pytest.approx(correct.mean()), *bootstrap_ci(correct, seed=3))
    members = np.array([g == "Unknown" for g in groups])
    assert result["Unknown"] == (pytest.approx(correct[members].mean()), *bootstrap_ci(correct[members], seed=3))
    with pytest.raises(ValueError, match="reserved"):
        bootstrap_ci_by_group([1, 0], ["all", "x"])
    with pytest.raises(ValueError, match="group labels"):
        bootstrap_ci_by_group([1, 0], ["x"])


def test_bootstrap_by_group_of_nothing():
    result = bootstrap_ci_by_group([], [])
    assert list(result) == ["all"] and all(math.isnan(v) for v in result["all"])


# ---------------------------------------------------------------- mean over seeds


def test_mean_ci_matches_hand_computed_student_t():
    mean, low, high = mean_ci([1, 2, 3, 4, 5])
    half = 2.7764451051977987 * 1.5811388300841898 / math.sqrt(5)
    assert mean == 3.0
    assert half == pytest.approx(1.963, abs=1e-3)
    assert (low, high) == (pytest.approx(3 - half), pytest.approx(3 + half))


def test_mean_ci_one_value_has_no_interval_and_missing_values_are_dropped():
    mean, low, high = mean_ci([0.3])
    assert mean == 0.3 and math.isnan(low) and math.isnan(high)
    assert all(math.isnan(v) for v in mean_ci([]))
    assert mean_ci([1.0, None, float("nan"), 3.0])[0] == 2.0
    assert mean_ci([0.2, 0.2, 0.2]) == (pytest.approx(0.2), pytest.approx(0.2), pytest.approx(0.2))


def test_mean_ci_confidence_level():
    values = [0.1, 0.4, 0.3, 0.25]
    _, low90, high90 = mean_ci(values, confidence=0.9)
    _, low95, high95 = mean_ci(values)
    assert low95 < low90 < high90 < high95


# ---------------------------------------------------------------- paired t-test


def _parts(a, b, n_parts, seed):
    order = np.random.default_rng(seed).permutation(len(a))
    chunks = np.array_split(order, n_parts)
    return np.array([a[c].mean() for c in chunks]), np.array([b[c].mean() for c in chunks])


def test_paired_t_test_matches_scipy_on_the_same_parts():
    rng = np.random.default_rng(4)
    a, b = rng.random(1234) < 0.35, rng.random(1234) < 0.3
    result = paired_t_test(a, b, n_parts=100, seed=9)
    acc_a, acc_b = _parts(a.astype(float), b.astype(float), 100, 9)
    expected = sps.ttest_rel(acc_a, acc_b)
    assert result["n_parts"] == 100
    assert result["t"] == pytest.approx(expected.statistic)
    assert result["p"] == pytest.approx(expected.pvalue)
    diff = acc_a - acc_b
    half = sps.t.ppf(0.975, 99) * diff.std(ddof=1) / math.sqrt(100)
    assert result["mean_diff"] == pytest.approx(diff.mean())
    assert (result["ci_low"], result["ci_high"]) == (pytest.approx(diff.mean() - half),
                                                     pytest.approx(diff.mean() + half))


def test_paired_t_test_detects_a_strictly_better_variant():
    rng = np.random.default_rng(5)
    b = rng.random(1000) < 0.3
    a = b | (rng.random(1000) < 0.1)  # a is right wherever b is, and on ~7% more questions
    result = paired_t_test(a, b)
    assert result["p"] < 0.05 and result["t"] > 0 and result["ci_low"] > 0
    reverse = paired_t_test(b, a)
    assert reverse["p"] == pytest.approx(result["p"]) and reverse["ci_high"] < 0


def test_paired_t_test_identical_variants_are_not_significant():
    a = np.random.default_rng(6).random(500) < 0.4
    result = paired_t_test(a, a.copy())
    assert (result["t"], result["p"], result["mean_diff"]) == (0.0, 1.0, 0.0)
    assert (result["ci_low"], result["ci_high"]) == (0.0, 0.0)


def test_paired_t_test_constant_nonzero_difference():
    b = np.random.default_rng(6).random(200)
    result = paired_t_test(b + 0.1, b, n_parts=20)
    assert result["t"] == math.inf and result["p"] == 0.0
    assert result["ci_low"] == pytest.approx(0.1) and result["ci_high"] == pytest.approx(0.1)


def test_paired_t_test_fewer_questions_than_parts_and_bad_input():
    a, b = [1, 1, 0, 1, 1, 0, 1], [0, 1, 0, 0, 1, 0, 0]
    result = paired_t_test(a, b, n_parts=100)
    assert result["n_parts"] == 7
    assert result["t"] == pytest.approx(sps.ttest_rel(a, b).statistic)
    assert math.isnan(paired_t_test([1], [0])["p"])
    assert paired_t_test([], [])["n_parts"] == 0
    with pytest.raises(ValueError, match="same questions"):
        paired_t_test([1, 0], [1])


# ---------------------------------------------------------------- IDK precision gap


def test_precision_gap_ci():
    rng = np.random.default_rng(8)
    n = 800
    answered = rng.random(n) < 0.5
    idk_correct = answered & (rng.random(n) < 0.6)
    plain_correct = rng.random(n) < 0.2
    gap, low, high = precision_gap_ci(idk_correct, answered, plain_correct)
    assert gap == pytest.approx(idk_correct[answered].mean() - plain_correct.mean())
    assert low < gap < high and low > 0.3
    assert precision_gap_ci(idk_correct, answered, plain_correct, seed=1) != (gap, low, high)
    assert all(math.isnan(v) for v in precision_gap_ci([0, 0], [False, False], [1, 0]))


def test_late_drop_gap_ci():
    rng = np.random.default_rng(9)
    n = 800
    early, late = rng.random(n) < 0.35, rng.random(n) < 0.25  # a loses 10 points
    answered_early, answered_late = rng.random(n) < 0.6, rng.random(n) < 0.5
    b_early, b_late = answered_early & (rng.random(n) < 0.5), answered_late & (rng.random(n) < 0.5)
    gap, low, high = late_drop_gap_ci(early, late, b_early, answered_early, b_late, answered_late)
    expected = early.mean() - late.mean() - (b_early[answered_early].mean() - b_late[answered_late].mean())
    assert gap == pytest.approx(expected) and low < gap < high and low > 0
    assert all(math.isnan(v) for v in late_drop_gap_ci([1, 0], [1, 0], [1, 0], [0, 0], [1, 0], [1, 1]))
    with pytest.raises(ValueError, match="aligned"):
        late_drop_gap_ci([1], [1, 0], [1], [1], [1], [1])


# ---------------------------------------------------------------- linear model

TRUE = {"beta0": 0.37, "beta_kn": 0.073, "beta_unk": -0.083}


def synthetic_points(seed: int, variants: int = 30, epochs: int = 20, offset_sd: float = 0.02,
                     drift_sd: float = 0.02, noise_sd: float = 0.003) -> pl.DataFrame:
    """Points from known β's. Each variant's trajectory carries its own offset and its own drift over the
    epochs, as real runs do: the errors of one variant's epochs are correlated, and with the fitted shares."""
    rng = np.random.default_rng(seed)
    rows = []
    for v in range(variants):
        unknown_share = rng.uniform(0, 0.8)
        known_share = 1 - unknown_share
        speed_known, speed_unknown = rng.uniform(0.3, 0.9), rng.uniform(0.05, 0.3)
        offset, drift = rng.normal(0, offset_sd), rng.normal(0, drift_sd)
        for epoch in range(1, epochs + 1):
            kn = known_share * min(1.0, speed_known * epoch)
            unk = unknown_share * min(1.0, speed_unknown * epoch)
            acc = TRUE["beta0"] + TRUE["beta_kn"] * kn + TRUE["beta_unk"] * unk + offset
            acc += drift * epoch / epochs + rng.normal(0, noise_sd)
            rows.append({"variant": f"v{v}", "epoch": epoch, "known_fitted_share": kn,
                         "unknown_fitted_share": unk, "acc": acc})
    return pl.DataFrame(rows)


def test_linear_model_point_estimate_is_least_squares():
    points = synthetic_points(0)
    fit = linear_model_ci(points, "acc")
    x = np.column_stack([np.ones(points.height), points["known_fitted_share"], points["unknown_fitted_share"]])
    beta, *_ = np.linalg.lstsq(x, points["acc"].to_numpy(), rcond=None)
    assert [fit["beta0"], fit["beta_kn"], fit["beta_unk"]] == pytest.approx(beta.tolist(), rel=1e-9)
    reference = fit_linear_model(points, "acc")
    assert fit["r2"] == pytest.approx(reference["r2"]) and fit["n"] == reference["n"] == 600
    assert fit["n_variants"] == 30 and fit["rank"] == 3 and 1 < fit["beta_unk_df"] <= 29
    for name in TRUE:
        assert fit[f"{name}_ci_low"] <= TRUE[name] <= fit[f"{name}_ci_high"]
    assert fit["beta_kn_plus_unk"] == pytest.approx(fit["beta_kn"] + fit["beta_unk"])
    assert fit["unk_kn_ratio"] == pytest.approx(-fit["beta_unk"] / fit["beta_kn"])
    assert fit["unk_kn_ratio_ci_low"] < fit["unk_kn_ratio"] < fit["unk_kn_ratio_ci_high"]


def test_cluster_interval_covers_the_truth_and_is_wider_than_ols():
    """Over many synthetic suites the CR2 interval covers β_unk near its nominal 95%; the OLS interval, which
    counts one variant's correlated epochs as independent points, is narrower and covers it less often."""
    replicates = 40
    cluster_hits = ols_hits = 0
    cluster_width = ols_width = 0.0
    for seed in range(replicates):
        fit = linear_model_ci(synthetic_points(100 + seed), "acc")
        cluster_hits += fit["beta_unk_ci_low"] <= TRUE["beta_unk"] <= fit["beta_unk_ci_high"]
        ols_hits += fit["beta_unk_ols_ci_low"] <= TRUE["beta_unk"] <= fit["beta_unk_ols_ci_high"]
        cluster_width += fit["beta_unk_ci_high"] - fit["beta_unk_ci_low"]
        ols_width += fit["beta_unk_ols_ci_high"] - fit["beta_unk_ols_ci_low"]
    assert cluster_hits >= 0.85 * replicates
    assert ols_hits < cluster_hits
    assert cluster_width > 1.3 * ols_width


@pytest.mark.parametrize("variants", [4, 10])
def test_cr2_interval_has_its_coverage_with_few_clusters(variants):
    """The small-sample correction: with 4 or 10 variants (the SmolLM2 suite has 4) the 95% CR2 interval on
    Bell-McCaffrey degrees of freedom covers the true β_unk in 95% of 300 simulated suites (the percentile
    cluster bootstrap it replaces excluded a true 0 in 15% of 4-variant designs). Binomial SD of the rate: 1.3%."""
    replicates = 300
    hits = 0
    for seed in range(replicates):
        fit = linear_model_ci(synthetic_points(2000 + seed, variants=variants), "acc")
        hits += fit["beta_unk_ci_low"] <= TRUE["beta_unk"] <= fit["beta_unk_ci_high"]
    assert 0.91 <= hits / replicates <= 0.99


def test_every_interval_contains_its_estimate():
    """CR2 intervals are symmetric around the estimate and a bounded Fieller interval contains its ratio: the
    report's coefficient figure can never get a negative error bar (the bootstrap's smoke-run β_unk 0.941
    [0.400, 0.941] had its estimate at an end, from 6 distinct resampled values)."""
    for seed in range(30):
        for variants in (3, 4, 6):
            fit = linear_model_ci(synthetic_points(3000 + seed, variants=variants, epochs=4), "acc")
            for name in ("beta0", "beta_kn", "beta_unk", "beta_kn_plus_unk"):
                assert fit[f"{name}_ci_low"] <= fit[name] <= fit[f"{name}_ci_high"], (seed, variants, name)
            low, high = fit["unk_kn_ratio_ci_low"], fit["unk_kn_ratio_ci_high"]
            assert math.isnan(low) or low <= fit["unk_kn_ratio"] <= high


def test_linear_model_with_a_time_covariate():
    """Accuracy that falls with the steps taken, and N_unk that grows with them: without the covariate β_unk
    takes the forgetting for an Unknown effect; with it, β_unk is 0 within its interval and β_steps is found."""
    rng = np.random.default_rng(5)
    rows = []
    for v in range(12):
        share = [0.0, 0.25, 0.5, 0.75][v % 4]
        offset = rng.normal(0, 0.003)
        for epoch in range(1, 21):
            steps = 11 * epoch
            unk = share / (1 + math.exp(-(epoch - 8)))
            rows.append({"variant": f"v{v}", "known_fitted_share": 1 - share, "unknown_fitted_share": unk,
                         "steps": steps, "acc": 0.3 + 0.08 * (1 - share) - 0.054 * steps / 220 + offset
                         + rng.normal(0, 0.003)})
    points = pl.DataFrame(rows)
    plain = linear_model_ci(points, "acc")
    timed = linear_model_ci(points, "acc", covariate="steps")
    assert plain["beta_unk_ci_high"] < 0
    assert timed["beta_unk_ci_low"] < 0 < timed["beta_unk_ci_high"]
    assert timed["beta_steps"] == pytest.approx(-0.054 / 2.2, rel=0.1)  # per 100 steps
    assert timed["beta_steps_ci_low"] < timed["beta_steps"] < timed["beta_steps_ci_high"] < 0
    missing = linear_model_ci(points.drop("steps"), "acc", covariate="steps")
    assert missing["n"] == 0 and math.isnan(missing["beta_unk"])


def test_linear_model_is_deterministic_and_fast():
    points = synthetic_points(1)
    first, second = linear_model_ci(points, "acc"), linear_model_ci(points, "acc")
    assert first.keys() == second.keys() and all(first[k] == second[k] or (math.isnan(first[k]) and
                                                                          math.isnan(second[k])) for k in first)
    best = min(_timed(lambda: linear_model_ci(points, "acc")) for _ in range(3))
    assert best < 1.0


def test_linear_model_ols_interval_matches_textbook_formula():
    points = synthetic_points(2, variants=5, epochs=6)
    fit = linear_model_ci(points, "acc")
    x = np.column_stack([np.ones(points.height), points["known_fitted_share"], points["unknown_fitted_share"]])
    y = points["acc"].to_numpy()
    beta, *_ = np.linalg.lstsq(x, y, rcond=None)
    sigma2 = ((y - x @ beta) ** 2).sum() / (len(y) - 3)
    se = np.sqrt(sigma2 * np.diag(np.linalg.inv(x.T @ x)))
    t = sps.t.ppf(0.975, len(y) - 3)
    assert fit["beta_unk_ols_ci_low"] == pytest.approx(beta[2] - t * se[2])
    assert fit["beta_kn_ols_ci_high"] == pytest.approx(beta[1] + t * se[1])


def test_linear_model_rank_deficient_and_small_designs_give_nan_intervals():
    one_variant = synthetic_points(3, variants=1)
    fit = linear_model_ci(one_variant, "acc")
    assert fit["n_variants"] == 1 and math.isnan(fit["beta_unk_ci_low"]) and math.isnan(fit["beta_kn_ci_high"])

    no_unknown = synthetic_points(3, variants=4).with_columns(pl.lit(0.0).alias("unknown_fitted_share"))
    fit = linear_model_ci(no_unknown, "acc")
    assert fit["rank"] == 2
    assert all(math.isnan(fit[k]) for k in fit if "_ci_" in k)

    empty = linear_model_ci(one_variant.head(0), "acc")
    assert empty["n"] == 0 and math.isnan(empty["beta_unk"])


def test_linear_model_drops_points_with_missing_values():
    points = synthetic_points(4, variants=6, epochs=5)
    holes = points.with_columns(pl.when(pl.col("epoch") == 1).then(None).otherwise(pl.col("acc")).alias("acc"))
    fit = linear_model_ci(holes, "acc")
    assert fit["n"] == 24
    assert fit["beta_unk"] == pytest.approx(linear_model_ci(points.filter(pl.col("epoch") > 1), "acc")["beta_unk"])


# ---------------------------------------------------------------- formatting


def test_fmt_interval():
    assert fmt_interval(0.314, 0.281, 0.342) == "0.31 [0.28, 0.34]"
    assert fmt_interval(7, 5, 9, digits=0) == "7 [5, 9]"
    # Not "[no interval]": a rich console reads it as markup and prints nothing ("(OLS t-interval )").
    assert fmt_interval(0.3, float("nan"), float("nan")) == "0.30 (no interval)"
    assert fmt_bounds(float("nan"), 0.2) == "" and fmt_bounds(0.1, 0.2, 1) == "[0.1, 0.2]"


def test_holm():
    assert holm([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])
    assert holm([0.2, 0.001]) == pytest.approx([0.2, 0.002])
    adjusted = holm([0.01, float("nan"), 0.02])
    assert adjusted[0] == pytest.approx(0.03) and math.isnan(adjusted[1]) and adjusted[2] == pytest.approx(0.04)
    assert holm([]) == []
