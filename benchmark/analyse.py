"""Analysis over finished fine-tuning runs: pure functions from per-epoch histories to summary metrics.

- ``fit_linear_model``: the paper's accuracy ~ β0 + β_kn·N_kn/|D| + β_unk·N_unk/|D| over (variant, epoch) points.
- ``fitting_speed``: per SliCK category, the first epoch at which 50% and 90% of the category's train examples
  are fitted (the paper's "Unknown examples are fitted much more slowly", DESIGN.md §1.5).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import polars as pl

from benchmark.categories import CATEGORIES, KNOWN

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


# ---------------------------------------------------------------------------------------------------------------
# Intervals and summaries across a suite's runs (benchmark.stats does the statistics)
# ---------------------------------------------------------------------------------------------------------------
STOPS = ("early_stop", "convergence")


def accuracy_intervals(predictions: pl.DataFrame, seed: int = 0) -> dict[str, float]:
    """``<stop>/<test|ood>/acc/<group>/ci_low|ci_high`` for one run: 95% bootstrap over its test questions.

    ``predictions`` is a run's predictions table (``checkpoint``, ``ood``, ``category``, ``correct``); groups are
    ``all``, each category present and ``Known``, exactly the groups of the accuracy metrics themselves.
    """
    from benchmark.stats import bootstrap_ci_by_group

    out: dict[str, float] = {}
    for stop in STOPS:
        for prefix, ood in (("test", False), ("ood", True)):
            part = predictions.filter((pl.col("checkpoint") == stop) & (pl.col("ood") == ood))
            if part.is_empty():
                continue
            correct = part["correct"].cast(pl.Float64).to_numpy()
            categories = part["category"].to_list()
            known = ["Known" if c in KNOWN else None for c in categories]
            groups = {**bootstrap_ci_by_group(correct, categories, seed=seed),
                      **bootstrap_ci_by_group(correct, known, seed=seed)}
            for group, (_, low, high) in groups.items():
                if group is None:
                    continue
                out[f"{stop}/{prefix}/acc/{group}/ci_low"] = low
                out[f"{stop}/{prefix}/acc/{group}/ci_high"] = high
    return out


def seed_summary(runs: pl.DataFrame, metrics: Sequence[str]) -> pl.DataFrame:
    """Per mixture (one row each): mean over seeds and a 95% Student-t interval across seeds for every metric.

    ``runs`` has one row per finished (mixture, seed) with a ``mixture`` column and the metric columns.
    Columns: ``mixture``, ``seeds`` and, per metric ``M``, ``M`` (the mean), ``M/ci_low``, ``M/ci_high``
    (NaN with a single seed: one seed says nothing about training noise).
    """
    from benchmark.stats import mean_ci

    rows = []
    for mixture in runs["mixture"].unique(maintain_order=True).to_list():
        part = runs.filter(pl.col("mixture") == mixture)
        row: dict = {"mixture": mixture, "seeds": part.height}
        for metric in metrics:
            values = part[metric].to_list() if metric in part.columns else []
            mean, low, high = mean_ci([v for v in values if v is not None]) if values else (math.nan,) * 3
            row.update({metric: mean, f"{metric}/ci_low": low, f"{metric}/ci_high": high})
        rows.append(row)
    return pl.DataFrame(rows)


def significance_vs_best(correct: dict[str, list[list[bool]]], n_parts: int = 100, seed: int = 0) -> dict[str, dict]:
    """The paper's test of every variant against the best one, at one stopping point.

    ``correct``: per mixture, one right/wrong list per seed over the same in-distribution test questions. Seeds
    are averaged per question; the best mixture is the one with the highest mean accuracy. Returns per mixture
    the paired t-test (``stats.paired_t_test``: questions cut into ``n_parts`` parts) against the best, and
    ``best`` naming it.
    """
    import numpy as np

    from benchmark.stats import paired_t_test

    per_question = {name: np.mean(np.asarray(lists, dtype=float), axis=0) for name, lists in correct.items() if lists}
    if not per_question:
        return {}
    best = max(per_question, key=lambda name: (per_question[name].mean(), name))
    out = {}
    for name, values in per_question.items():
        test = paired_t_test(values, per_question[best], n_parts=n_parts, seed=seed)
        out[name] = {**test, "best": best}
    return out
