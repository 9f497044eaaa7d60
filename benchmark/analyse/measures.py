"""Analysis over finished fine-tuning runs: pure functions from per-epoch histories to summary metrics.

- ``fit_linear_model``: the paper's accuracy ~ β0 + β_kn·N_kn/|D| + β_unk·N_unk/|D| over (variant, epoch) points.
- ``fitting_speed``: per SliCK category, the first epoch at which 50% and 90% of the category's train examples
  are fitted (the paper's "Unknown examples are fitted much more slowly", docs/method.md §5).
- ``significance_vs_best``: the paper's Table 2 test of every mixture against the best, every seed kept
  (``seed_level_test``), the best chosen on dev accuracy, Holm over the mixtures, per test category too.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import polars as pl

from benchmark.categories import CATEGORIES, KNOWN
from benchmark.record import STOPS, acc_metric, fit_metric

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
        column = acc_metric("train", category)
        if column not in history.columns:
            continue
        for threshold in thresholds:
            name = fit_metric(category, round(threshold * 100))
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
# Intervals and summaries across a suite's runs (benchmark.analyse.stats does the statistics)
# ---------------------------------------------------------------------------------------------------------------


def accuracy_intervals(predictions: pl.DataFrame, seed: int = 0) -> dict[str, float]:
    """``<stop>/<test|ood>/acc/<group>/ci_low|ci_high`` for one run: 95% bootstrap over its test questions.

    ``predictions`` is a run's predictions table (``checkpoint``, ``ood``, ``category``, ``correct``); groups are
    ``all``, each category present and ``Known``, exactly the groups of the accuracy metrics themselves.
    """
    from benchmark.analyse.stats import bootstrap_ci_by_group

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
                out[acc_metric(prefix, group, stop) + "/ci_low"] = low
                out[acc_metric(prefix, group, stop) + "/ci_high"] = high
    return out


def seed_summary(runs: pl.DataFrame, metrics: Sequence[str]) -> pl.DataFrame:
    """Per mixture (one row each): mean over seeds and a 95% Student-t interval across seeds for every metric.

    ``runs`` has one row per finished (mixture, seed) with a ``mixture`` column and the metric columns.
    Columns: ``mixture``, ``seeds`` and, per metric ``M``, ``M`` (the mean), ``M/ci_low``, ``M/ci_high``
    (NaN with a single seed: one seed says nothing about training noise).
    """
    from benchmark.analyse.stats import mean_ci

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


def seed_level_test(runs_a: Sequence[Sequence[bool | float]], runs_b: Sequence[Sequence[bool | float]],
                    n_parts: int = 100, seed: int = 0, confidence: float = 0.95) -> dict[str, float]:
    """The paper's test of mixture a against mixture b, with every seed kept: a seed's runs of both mixtures are
    scored on the same test questions, cut (shuffled with ``seed``) into ``n_parts`` parts as the paper does.

    With one seed per mixture this is the paper's test exactly (``stats.paired_t_test``). With several, the
    per-(seed, part) accuracy differences d[s, p] (seeds paired by position) are a two-way layout with seeds and
    parts both random: the variance of their mean is (MS_seed + MS_part − MS_residual)/(S·P), the crossed
    random-effects formula, with Satterthwaite's degrees of freedom. So the interval holds both what another draw
    of test questions and what another training seed would do, where averaging the seeds per question first (as
    a one-seed test does) would leave training noise out and call seed-to-seed differences significant.

    Returns ``t``, two-sided ``p``, ``mean_diff`` (a − b) with ``ci_low``/``ci_high``, ``df``, ``seeds`` (pairs used),
    ``n_parts``, ``mean_a`` and ``mean_b`` (over every seed and question).
    """
    import numpy as np
    from scipy import stats as sps

    from benchmark.analyse.stats import paired_t_test

    seeds = min(len(runs_a), len(runs_b))
    a = np.asarray(runs_a[:seeds], dtype=float)
    b = np.asarray(runs_b[:seeds], dtype=float)
    if seeds == 0 or a.shape != b.shape:
        raise ValueError(f"runs of both mixtures on the same questions needed: {a.shape} vs {b.shape}")
    if seeds == 1:
        return {**paired_t_test(a[0], b[0], n_parts=n_parts, seed=seed, confidence=confidence), "seeds": 1,
                "df": float(min(n_parts, a.shape[1]) - 1)}
    parts = min(int(n_parts), a.shape[1])
    chunks = np.array_split(np.random.default_rng(seed).permutation(a.shape[1]), parts)
    d = np.stack([(a[:, c] - b[:, c]).mean(axis=1) for c in chunks], axis=1)  # [seed, part]
    mean = float(d.mean())
    out = {"t": math.nan, "p": math.nan, "mean_diff": mean, "ci_low": math.nan, "ci_high": math.nan,
           "df": math.nan, "seeds": seeds, "n_parts": parts, "mean_a": float(a.mean()), "mean_b": float(b.mean())}
    if parts < 2:
        return out
    if np.ptp(d) <= 1e-12:  # no spread at all: decided here, as in stats.paired_t_test
        if abs(mean) <= 1e-12:
            return {**out, "t": 0.0, "p": 1.0, "mean_diff": 0.0, "ci_low": 0.0, "ci_high": 0.0}
        return {**out, "t": math.copysign(math.inf, mean), "p": 0.0, "ci_low": mean, "ci_high": mean}
    rows, columns = d.mean(axis=1, keepdims=True), d.mean(axis=0, keepdims=True)
    ms_seed = parts * float(((rows - mean) ** 2).sum()) / (seeds - 1)
    ms_part = seeds * float(((columns - mean) ** 2).sum()) / (parts - 1)
    ms_error = float(((d - rows - columns + mean) ** 2).sum()) / ((seeds - 1) * (parts - 1))
    terms = [(ms_seed, seeds - 1, 1.0), (ms_part, parts - 1, 1.0), (ms_error, (seeds - 1) * (parts - 1), -1.0)]
    if ms_seed + ms_part - ms_error <= 0:  # the components' estimate fell below zero: the larger main effect alone
        terms = [max(terms[:2], key=lambda t: t[0])]
    variance = sum(sign * ms for ms, _, sign in terms) / (seeds * parts)
    df = variance ** 2 / sum((ms / (seeds * parts)) ** 2 / dof for ms, dof, _ in terms)
    se = math.sqrt(variance)
    t = mean / se
    half = float(sps.t.ppf(0.5 + confidence / 2, df)) * se
    return {**out, "t": t, "p": float(2 * sps.t.sf(abs(t), df)), "ci_low": mean - half, "ci_high": mean + half,
            "df": float(df)}


def significance_vs_best(correct: dict[str, list[list[bool]]], n_parts: int = 100, seed: int = 0, *,
                         select: dict[str, float] | None = None,
                         categories: Sequence[str] | None = None) -> dict[str, dict]:
    """The paper's test (Table 2) of every mixture against the best one, at one stopping point.

    ``correct``: per mixture, one right/wrong list per seed over the same in-distribution test questions (seeds in
    the same order for every mixture). Each comparison is ``seed_level_test``: every seed is kept, so training
    noise is part of the interval. The best mixture is the one with the highest ``select`` score (e.g. its mean
    dev accuracy: chosen on other questions than it is tested on); without ``select`` it is the highest test
    accuracy, and ``best_chosen_on`` says "test" (that choice favours the best, so its tests are optimistic).
    The p-values are Holm-adjusted over the mixtures compared (``p_holm``). With ``categories`` (the SliCK
    category of each test question) the same tests are made on each category's questions (``groups``; the best
    is the same mixture), the paper's per-category columns, each column Holm-adjusted on its own.

    Returns per mixture the test against the best (the best itself included, against itself) with ``best``,
    ``best_chosen_on``, ``p_holm``, ``accuracy`` (mean over seeds and questions) and ``groups``.
    """
    import numpy as np

    from benchmark.analyse.stats import holm

    runs = {name: np.asarray(lists, dtype=float) for name, lists in correct.items() if lists}
    if not runs:
        return {}
    chosen_on = "dev" if select is not None and all(name in select for name in runs) else "test"
    score = (lambda name: select[name]) if chosen_on == "dev" else (lambda name: float(runs[name].mean()))
    best = max(runs, key=lambda name: (score(name), name))
    groups: dict[str, np.ndarray] = {"all": np.ones(next(iter(runs.values())).shape[1], dtype=bool)}
    if categories is not None:
        labels = np.asarray(list(categories))
        groups |= {c: labels == c for c in CATEGORIES if (labels == c).any()}
        known = np.isin(labels, KNOWN)
        if known.any():
            groups["Known"] = known
    tests: dict[str, dict[str, dict]] = {}
    for group, mask in groups.items():
        found = {name: {**seed_level_test(values[:, mask], runs[best][:, mask], n_parts=n_parts, seed=seed),
                        "accuracy": float(values[:, mask].mean()), "questions": int(mask.sum())}
                 for name, values in runs.items()}
        others = [name for name in found if name != best]
        for name, adjusted in zip(others, holm([found[n]["p"] for n in others]), strict=True):
            found[name]["p_holm"] = adjusted
        found[best]["p_holm"] = math.nan
        tests[group] = found
    out = {}
    for name in runs:
        out[name] = {**tests["all"][name], "best": best, "best_chosen_on": chosen_on,
                     "groups": {g: tests[g][name] for g in groups if g != "all"}}
    return out
