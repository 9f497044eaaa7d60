"""What a finding is and how an interval becomes its verdict. Light on purpose (no numpy): the package's
registry and these names are read where nothing is judged (``benchmark.results``).

Verdicts come only from intervals: ``holds`` when the interval that decides the finding excludes the null in
the paper's direction, ``contradicted`` when it excludes it in the opposite direction, ``not shown`` otherwise,
including when no interval can be computed (e.g. a single run) and when a precondition (``gates``) fails (its
reason is in the evidence). Two findings claim an equality (``early_stop_neutral``, ``beta_kn_comparable``):
there the null is "not equal", so ``holds`` means the interval lies inside a stated equivalence margin and
``contradicted`` that it lies entirely outside it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from benchmark.record import Verdict

HOLDS: Verdict = "holds"
NOT_SHOWN: Verdict = "not shown"
CONTRADICTED: Verdict = "contradicted"

ALPHA = 0.05  # every verdict's error rate (two-sided intervals at 1 − α, before any multiplicity correction)
EARLY_STOP_MARGIN = 0.02  # 2 accuracy points: "nearly equal" at EARLY_STOP
RATIO_BOUNDS = (0.5, 2.0)  # |β_unk|/β_kn within a factor of two counts as "comparable" (paper: 8.3/7.3 = 1.14)
N_PARTS = 100  # the paper's number of parts for its paired t-test


@dataclass(frozen=True)
class FindingOptions:
    """The settings every finding is judged with (each reads the ones it needs)."""

    early_stop_margin: float = EARLY_STOP_MARGIN  # early_stop_neutral's equivalence margin
    ratio_bounds: tuple[float, float] = RATIO_BOUNDS  # beta_kn_comparable's bounds on −β_unk/β_kn
    n_parts: int = N_PARTS  # parts of the paper's per-question test (one pair of runs)
    seed: int = 0  # of that test's shuffle and of the paired bootstraps over questions


DEFAULT_OPTIONS = FindingOptions()


def missing(*values: float | None) -> bool:
    return any(v is None or math.isnan(v) for v in values)


def direction_verdict(low: float, high: float, sign: int) -> Verdict:
    """``holds`` if the interval excludes 0 on the side of ``sign`` (+1: above, −1: below), ``contradicted`` if
    it excludes 0 on the other side, else ``not shown``."""
    if missing(low, high):
        return NOT_SHOWN
    if (sign > 0 and low > 0) or (sign < 0 and high < 0):
        return HOLDS
    if (sign > 0 and high < 0) or (sign < 0 and low > 0):
        return CONTRADICTED
    return NOT_SHOWN


def equivalence_verdict(low: float, high: float, lower: float, upper: float) -> Verdict:
    """``holds`` if the interval lies inside [lower, upper], ``contradicted`` if entirely outside it."""
    if missing(low, high):
        return NOT_SHOWN
    if lower <= low and high <= upper:
        return HOLDS
    if high < lower or low > upper:
        return CONTRADICTED
    return NOT_SHOWN


def all_rows(verdicts: Sequence[Verdict]) -> Verdict:
    """A claim about every fraction: holds if every row holds, contradicted if any row is."""
    if not verdicts:
        return NOT_SHOWN
    if CONTRADICTED in verdicts:
        return CONTRADICTED
    return HOLDS if all(v == HOLDS for v in verdicts) else NOT_SHOWN


def both(first: Verdict, second: Verdict) -> Verdict:
    """A claim that needs two fits to agree."""
    return first if first == second else NOT_SHOWN
