"""Analysis over finished fine-tuning runs: pure functions from per-epoch histories to summary metrics.

- ``fit_linear_model``: the paper's accuracy ~ β0 + β_kn·N_kn/|D| + β_unk·N_unk/|D| over (variant, epoch) points.
- ``fitting_speed``: per SliCK category, the first epoch at which 50% and 90% of the category's train examples
  are fitted (the paper's "Unknown examples are fitted much more slowly", DESIGN.md §1.5).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import polars as pl

from benchmark.slick import CATEGORIES

FITTING_THRESHOLDS = (0.5, 0.9)


def epochs_to_fit(epochs: Sequence[int], fitted: Sequence[float], threshold: float) -> int | None:
    """The first epoch whose fitted fraction is at least ``threshold``; None if the run never got there."""
    for epoch, value in sorted(zip(epochs, fitted, strict=True)):
        if value is not None and not math.isnan(value) and value >= threshold:
            return int(epoch)
    return None


def fitting_speed(history: pl.DataFrame, thresholds: Sequence[float] = FITTING_THRESHOLDS,
                  categories: Sequence[str] = (*CATEGORIES, "Known")) -> dict[str, int | None]:
    """``fit/epochs_to_<p>pct/<Category>`` for every category with a ``train/acc/<Category>`` column.

    ``history`` has one row per epoch: an ``epoch`` column (1 = after the first pass over the data) and the
    per-epoch metrics. A value of None means the category never reached the threshold in the run.
    """
    summary: dict[str, int | None] = {}
    for category in categories:
        column = f"train/acc/{category}"
        if column not in history.columns:
            continue
        for threshold in thresholds:
            name = f"fit/epochs_to_{round(threshold * 100)}pct/{category}"
            summary[name] = epochs_to_fit(history["epoch"].to_list(), history[column].to_list(), threshold)
    return summary


def fit_linear_model(points: pl.DataFrame, target: str) -> dict[str, float]:
    """The paper's linear model (§5): ``accuracy = β0 + β_kn·N_kn/|D| + β_unk·N_unk/|D|``, least squares.

    ``points`` has one row per (variant, epoch) with ``known_fitted_share`` (N_kn/|D|), ``unknown_fitted_share``
    (N_unk/|D|) and the accuracy column ``target``. Returns β0, β_kn, β_unk, R² and the number of points.
    """
    import numpy as np

    y = points[target].to_numpy().astype(float)
    x = np.column_stack([np.ones_like(y), points["known_fitted_share"].to_numpy(), points["unknown_fitted_share"].to_numpy()])
    beta, *_ = np.linalg.lstsq(x, y, rcond=None)
    residual = y - x @ beta
    total = float(((y - y.mean()) ** 2).sum())
    r2 = 1.0 - float((residual ** 2).sum()) / total if total > 0 else float("nan")
    return {"beta0": float(beta[0]), "beta_kn": float(beta[1]), "beta_unk": float(beta[2]), "r2": r2, "n": len(y)}
