"""Paired differences between variants, and the per-fraction tests built on them.

A comparison between two variants pairs the runs of the same seed (and, for D/D_Known/IDK, the same nominal
Unknown fraction):
- with two or more such pairs, a Student-t test over the per-pair differences (training noise, seed to seed);
- with exactly one pair and per-question correctness for both, the paper's own test: the test questions
  shuffled into 100 parts and a paired t-test over the parts (``stats.paired_t_test``; test-question noise
  only: one seed says nothing about training noise);
- otherwise there is no interval and the row is ``not shown``.

Per fraction, with a multiplicity correction: the paper's claims are about every fraction X, and a pooled
interval hides a fraction that disagrees. So D − D_Known is one interval per X (``Finding.rows``), and the
finding holds only if every X passes:

- a direction claim (D below D_Known) by a paired test per X with **Holm's** step-down correction over the m
  fractions; each row's interval is at the level Holm tests that X at (1 − α/(m − k) for the k-th smallest p,
  and from the first X Holm cannot reject on, that step's level), so it excludes 0 exactly when Holm rejects;
  its Holm-adjusted p is beside it;
- an equality claim (D ≈ D_Known at EARLY_STOP) by **TOST at α/m** per X: the (1 − 2α/m) interval inside
  ±margin.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import stats as sps

from benchmark.analyse.findings.inputs import RunSummary
from benchmark.analyse.findings.verdicts import (
    ALPHA,
    CONTRADICTED,
    HOLDS,
    N_PARTS,
    NOT_SHOWN,
    equivalence_verdict,
    missing,
)
from benchmark.analyse.stats import NAN, fmt_interval, holm, paired_t_test

Pair = tuple[RunSummary, RunSummary]


# ---------------------------------------------------------------- choosing and pairing runs


def of_kind(runs: list[RunSummary], *kinds: str) -> list[RunSummary]:
    def order(run: RunSummary) -> tuple:
        fraction = run.value("unknown_fraction")
        return (-1.0 if math.isnan(fraction) else fraction, str(run.mixture), run.seed)

    return sorted((r for r in runs if r.kind in kinds), key=order)


def fraction_key(run: RunSummary) -> tuple[float, Any]:
    return run.percent, run.seed


def pairs_of(first: list[RunSummary], second: list[RunSummary], key: Callable[[RunSummary], Any]) -> list[Pair]:
    by_key = {key(r): r for r in second}
    return [(r, by_key[key(r)]) for r in first if key(r) in by_key]


def by_fraction(pairs: list[Pair]) -> dict[float, list[Pair]]:
    groups: dict[float, list[Pair]] = {}
    for pair in pairs:
        groups.setdefault(pair[0].percent, []).append(pair)
    return dict(sorted(groups.items()))


def label(percent: float) -> str:
    return f"{percent:g}%"


def _slug(percent: float) -> str:
    return f"x{percent:g}".replace(".", "_")


def finite_mean(values: Sequence[float]) -> float:
    finite = [v for v in values if not math.isnan(v)]
    return float(np.mean(finite)) if finite else NAN


# ---------------------------------------------------------------- paired differences


@dataclass(frozen=True)
class Gap:
    """A paired difference a − b: its estimate, standard error and degrees of freedom, and how it was obtained.
    ``se`` NaN: no interval; ``se`` 0: every pair differed by the same amount."""

    mean: float
    se: float
    df: float
    n: int
    method: str

    def interval(self, confidence: float = 1 - ALPHA) -> tuple[float, float]:
        if missing(self.mean, self.se, self.df):
            return NAN, NAN
        half = float(sps.t.ppf(0.5 + confidence / 2, self.df) * self.se)
        return self.mean - half, self.mean + half

    @property
    def p(self) -> float:
        """Two-sided p of "no difference"."""
        if missing(self.mean, self.se, self.df):
            return NAN
        if self.se == 0:
            return 1.0 if self.mean == 0 else 0.0
        return float(2 * sps.t.sf(abs(self.mean / self.se), self.df))

    def text(self, confidence: float = 1 - ALPHA, digits: int = 3) -> str:
        return fmt_interval(self.mean, *self.interval(confidence), digits)


def t_gap(diffs: Sequence[float], what: str) -> Gap:
    values = np.asarray([d for d in diffs if not math.isnan(d)], dtype=float)
    if values.size >= 2:
        return Gap(float(values.mean()), float(values.std(ddof=1) / math.sqrt(values.size)), values.size - 1,
                   values.size, f"t over {values.size} {what}")
    if values.size == 1:
        return Gap(float(values[0]), NAN, NAN, 1, f"one {what.rstrip('s')}: no interval")
    return Gap(NAN, NAN, NAN, 0, "no comparable runs")


def parts_gap(a: Sequence[float], b: Sequence[float], n_parts: int, seed: int) -> Gap:
    test = paired_t_test(a, b, n_parts=n_parts, seed=seed)
    return Gap(test["mean_diff"], test["se"], test["n_parts"] - 1, 1,
               f"one run pair: paired t over {test['n_parts']} question parts")


def paired_gap(pairs: Sequence[Pair], acc_key: str, correct_key: str, *, n_parts: int = N_PARTS,
               seed: int = 0) -> Gap:
    """a − b over run pairs, by the rule in the module docstring (t over pairs; one pair: the paper's test)."""
    diffs = [a.value(acc_key) - b.value(acc_key) for a, b in pairs]
    if len(pairs) == 1 and all(getattr(r, correct_key) is not None for r in pairs[0]):
        return parts_gap(getattr(pairs[0][0], correct_key), getattr(pairs[0][1], correct_key), n_parts, seed)
    if len(pairs) == 1 and not missing(diffs[0]):
        return Gap(diffs[0], NAN, NAN, 1, "one run pair, no per-question results: no interval")
    return t_gap(diffs, "paired runs")


# ---------------------------------------------------------------- one row per fraction


def direction_rows(gaps: Mapping[float, Gap], sign: int, alpha: float = ALPHA) -> list[dict[str, Any]]:
    """One row per fraction: Holm over the fractions; each interval at the level Holm tests it at."""
    percents = list(gaps)
    p_values = [gaps[x].p for x in percents]
    adjusted = holm(p_values)
    ranks = np.argsort(np.where(np.isnan(p_values), np.inf, p_values), kind="stable")
    # Holm tests the k-th smallest p at α/(m − k) and stops at the first it cannot reject: the rows from there
    # on keep that step's level, so an interval excludes 0 exactly when Holm rejects.
    levels, stopped = {}, None
    for rank, index in enumerate(ranks):
        level = alpha / (len(percents) - rank) if stopped is None else stopped
        if stopped is None and not p_values[index] <= level:
            stopped = level
        levels[percents[index]] = level
    rows = []
    for x, p_holm in zip(percents, adjusted, strict=True):
        gap = gaps[x]
        confidence = 1 - levels[x]
        low, high = gap.interval(confidence)
        if missing(p_holm) or p_holm > alpha:
            verdict = NOT_SHOWN
        else:
            verdict = HOLDS if gap.mean * sign > 0 else CONTRADICTED
        rows.append({"label": label(x), "slug": _slug(x), "estimate": gap.mean, "ci_low": low, "ci_high": high,
                     "confidence": confidence, "p": gap.p, "p_holm": p_holm, "n": gap.n, "method": gap.method,
                     "verdict": verdict})
    return rows


def equivalence_rows(gaps: Mapping[float, Gap], margin: float, alpha: float = ALPHA) -> list[dict[str, Any]]:
    """One row per fraction: TOST at α/m, i.e. the (1 − 2α/m) interval inside ±margin."""
    confidence = 1 - 2 * alpha / max(1, len(gaps))
    rows = []
    for x, gap in gaps.items():
        low, high = gap.interval(confidence)
        rows.append({"label": label(x), "slug": _slug(x), "estimate": gap.mean, "ci_low": low, "ci_high": high,
                     "confidence": confidence, "n": gap.n, "method": gap.method,
                     "verdict": equivalence_verdict(low, high, -margin, margin)})
    return rows


def rows_text(rows: Sequence[Mapping[str, Any]], digits: int = 3) -> str:
    return ", ".join(f"{row['label']} {fmt_interval(row['estimate'], row['ci_low'], row['ci_high'], digits)}"
                     for row in rows)
