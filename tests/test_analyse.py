"""The paper's linear model recovers known coefficients and reports R²."""

import numpy as np
import polars as pl
import pytest

from benchmark.analyse import fit_linear_model
from benchmark.mixtures import Mixture
from benchmark.pipeline import Variant, linear_points


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
