"""The findings on what the fine-tuning set is made of: the best single-category set, and relabelling Unknown
examples as "I don't know"."""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import numpy as np

from benchmark.analyse.findings.gaps import (
    Gap,
    Pair,
    finite_mean,
    fraction_key,
    label,
    of_kind,
    paired_gap,
    pairs_of,
    t_gap,
)
from benchmark.analyse.findings.gates import FIT_GATE, LATE_DROP_MARGIN, fit_gate
from benchmark.analyse.findings.inputs import FindingsInput, RunSummary
from benchmark.analyse.findings.verdicts import (
    CONTRADICTED,
    DEFAULT_OPTIONS,
    HOLDS,
    NOT_SHOWN,
    FindingOptions,
    direction_verdict,
)
from benchmark.analyse.stats import NAN, fmt_interval, late_drop_gap_ci, precision_gap_ci
from benchmark.record import Finding

OTHER_CATEGORIES = ("HighlyKnown", "WeaklyKnown", "Unknown")


def _category_gaps(maybe: list[RunSummary], others: dict[str, list[RunSummary]],
                   options: FindingOptions) -> tuple[dict[str, Gap], dict[str, float]]:
    """D_MaybeKnown − each other set at CONVERGENCE, paired by seed, and the numbers of both stops' gaps."""
    numbers: dict[str, float] = {}
    gaps: dict[str, Gap] = {}
    for name, group in others.items():
        pairs = pairs_of(maybe, group, lambda r: r.seed)
        if not pairs:
            continue
        gaps[name] = paired_gap(pairs, "convergence_acc", "convergence_correct", n_parts=options.n_parts,
                                seed=options.seed)
        early = paired_gap(pairs, "early_stop_acc", "early_stop_correct", n_parts=options.n_parts, seed=options.seed)
        for key, gap in ((f"gap_{name}", gaps[name]), (f"early_stop/gap_{name}", early)):
            low, high = gap.interval()
            numbers |= {key: gap.mean, f"{key}_ci_low": low, f"{key}_ci_high": high, f"{key}_n_pairs": float(gap.n)}
    return gaps, numbers


def maybe_known_best(summary: FindingsInput, options: FindingOptions = DEFAULT_OPTIONS) -> Finding | None:
    """D_MaybeKnown against every other single-category set at CONVERGENCE, paired by seed: holds if it is
    significantly better than D_HighlyKnown and significantly worse than none; contradicted if some other
    single-category set is significantly better; otherwise not shown. Only sets fitted ≥ ``FIT_GATE`` at their
    last epoch are judged (the others are named); D_MaybeKnown and D_HighlyKnown must be. D_Natural is
    reported, not judged (it is not a single-category set). EARLY_STOP gaps are reported too."""
    by_category: dict[str, list[RunSummary]] = {}
    for run in of_kind(summary.runs, "single_category"):
        by_category.setdefault(run.category, []).append(run)
    if "MaybeKnown" not in by_category or "HighlyKnown" not in by_category:
        return None
    maybe = by_category["MaybeKnown"]
    others = {c: by_category[c] for c in OTHER_CATEGORIES if c in by_category}
    others["Natural"] = of_kind(summary.runs, "natural")
    gaps, numbers = _category_gaps(maybe, others, options)
    judged = {c: g for c, g in gaps.items() if c != "Natural"}
    if "HighlyKnown" not in judged:
        return None
    unfitted = {c for c in judged if fit_gate(by_category[c])}
    key_reason = fit_gate(maybe + by_category["HighlyKnown"])
    better = [c for c, g in judged.items() if c not in unfitted and g.interval()[1] < 0]
    if key_reason:
        verdict = NOT_SHOWN
    elif better:
        verdict = CONTRADICTED
    else:
        verdict = direction_verdict(*judged["HighlyKnown"].interval(), +1)
        verdict = HOLDS if verdict == HOLDS else NOT_SHOWN
    parts = [f"− {c} {g.text()}" + (f" ({g.method})" if c == "HighlyKnown" else "") for c, g in gaps.items()]
    evidence = "D_MaybeKnown at CONVERGENCE " + ", ".join(parts)
    if key_reason:
        evidence = f"{key_reason}; {evidence}"
    elif unfitted - {"HighlyKnown"}:
        evidence += f"; not judged (not fitted ≥ {FIT_GATE:.0%}): {', '.join(sorted(unfitted))}"
    if better:
        evidence += f"; significantly better: {', '.join(better)}"
    return Finding("maybe_known_best",
                   "D_MaybeKnown is the best single-category fine-tuning set; D_HighlyKnown is not.",
                   verdict, evidence, numbers)


def _precision(correct: Sequence[bool], answered: Sequence[bool]) -> float:
    answered = np.asarray(answered, dtype=bool)
    return float(np.asarray(correct, dtype=float)[answered].mean()) if answered.any() else NAN


class _LateDropGap(NamedTuple):
    """D's late drop minus IDK's: the estimate, its interval, how it was obtained, and each one's mean drop."""

    mean: float
    low: float
    high: float
    n: int
    method: str
    idk_drop: float
    d_drop: float


def _one_seed_with_vectors(pairs: list[Pair], stop_vectors: tuple[str, ...], idk_vectors: tuple[str, ...]) -> bool:
    """One (IDK, D) pair, with per-question results for D (``stop_vectors``) and for IDK (``idk_vectors``)."""
    return (len(pairs) == 1 and all(getattr(pairs[0][1], v) is not None for v in stop_vectors)
            and all(getattr(pairs[0][0], v) is not None for v in idk_vectors))


def _late_drop_gap(pairs: list[Pair], seed: int) -> _LateDropGap:
    """t over seeds; one seed with per-question results: the paired bootstrap over questions."""
    vectors = ("early_stop_correct", "convergence_correct")
    if _one_seed_with_vectors(pairs, vectors, (*vectors, "early_stop_answered", "convergence_answered")):
        (idk, plain), = pairs
        mean, low, high = late_drop_gap_ci(plain.early_stop_correct, plain.convergence_correct,
                                           idk.early_stop_correct, idk.early_stop_answered,
                                           idk.convergence_correct, idk.convergence_answered, seed=seed)
        drop_idk = [_precision(idk.early_stop_correct, idk.early_stop_answered)
                    - _precision(idk.convergence_correct, idk.convergence_answered)]
        drop_d = [float(np.mean(plain.early_stop_correct) - np.mean(plain.convergence_correct))]
        return _LateDropGap(mean, low, high, 1, "one seed: paired bootstrap over questions", finite_mean(drop_idk),
                            finite_mean(drop_d))
    drop_idk = [i.value("early_stop_acc_answered") - i.value("convergence_acc_answered") for i, _ in pairs]
    drop_d = [d.value("early_stop_acc") - d.value("convergence_acc") for _, d in pairs]
    gap = t_gap([d - i for d, i in zip(drop_d, drop_idk, strict=True)], "seeds")
    return _LateDropGap(gap.mean, *gap.interval(), gap.n, gap.method, finite_mean(drop_idk), finite_mean(drop_d))


def _precision_gap(pairs: list[Pair], seed: int) -> tuple[float, float, float]:
    """IDK's accuracy on answered questions minus D's accuracy at CONVERGENCE, with its interval."""
    if _one_seed_with_vectors(pairs, ("convergence_correct",), ("convergence_correct", "convergence_answered")):
        (idk, plain), = pairs
        return precision_gap_ci(idk.convergence_correct, idk.convergence_answered, plain.convergence_correct,
                                seed=seed)
    gap = t_gap([i.value("convergence_acc_answered") - d.value("convergence_acc") for i, d in pairs], "seeds")
    return gap.mean, *gap.interval()


def _mean_of(runs: list[RunSummary], key: str) -> float:
    return finite_mean([r.value(key) for r in runs])


def idk_removes_late_drop(summary: FindingsInput, options: FindingOptions = DEFAULT_OPTIONS) -> Finding | None:
    """The IDK variant's own late drop (EARLY_STOP → CONVERGENCE of its accuracy on the questions it answered)
    against D's (same X, same seed): holds if D's drop minus IDK's is above 0 (t over seeds; one seed: the
    paired bootstrap over questions) AND IDK's own mean drop is within ``LATE_DROP_MARGIN``
    ("removes", not only "reduces"); contradicted if IDK drops significantly more than D. Both runs must be
    fitted ≥ ``FIT_GATE``. IDK's accuracy on answered questions against D's accuracy is not the test: abstaining
    on what it does not know raises it whether or not anything drops; it is reported beside, with the answered
    fraction (the cost)."""
    pairs = pairs_of(of_kind(summary.runs, "idk_relabel"), of_kind(summary.runs, "unknown_fraction"), fraction_key)
    if not pairs:
        return None
    drop = _late_drop_gap(pairs, options.seed)
    idk_runs, plain_runs = [i for i, _ in pairs], [d for _, d in pairs]
    reason = fit_gate(idk_runs + plain_runs)
    verdict = direction_verdict(drop.low, drop.high, +1)
    if reason:
        verdict = NOT_SHOWN
    elif verdict == HOLDS and not drop.idk_drop <= LATE_DROP_MARGIN:
        verdict = NOT_SHOWN
        reason = f"IDK still loses {100 * drop.idk_drop:.1f} points (more than {100 * LATE_DROP_MARGIN:g})"
    p_gap, p_low, p_high = _precision_gap(pairs, options.seed)
    numbers = {"late_drop_gap_d_minus_idk": drop.mean, "late_drop_gap_d_minus_idk_ci_low": drop.low,
               "late_drop_gap_d_minus_idk_ci_high": drop.high, "n_pairs": float(drop.n),
               "idk_late_drop": drop.idk_drop, "d_late_drop": drop.d_drop, "margin": LATE_DROP_MARGIN,
               "idk_early_stop_acc_answered": _mean_of(idk_runs, "early_stop_acc_answered"),
               "idk_convergence_acc_answered": _mean_of(idk_runs, "convergence_acc_answered"),
               "idk_convergence_answered_fraction": _mean_of(idk_runs, "convergence_answered_fraction"),
               "d_early_stop_acc": _mean_of(plain_runs, "early_stop_acc"),
               "d_convergence_acc": _mean_of(plain_runs, "convergence_acc"),
               "precision_gap_idk_minus_d": p_gap, "precision_gap_idk_minus_d_ci_low": p_low,
               "precision_gap_idk_minus_d_ci_high": p_high}
    evidence = "; ".join(filter(None, [
        reason,
        f"late drop (EARLY_STOP → CONVERGENCE) of D_{label(pairs[0][0].percent)} minus IDK's on answered questions "
        f"{fmt_interval(drop.mean, drop.low, drop.high, 3)} ({drop.method}): D {numbers['d_early_stop_acc']:.3f} → "
        f"{numbers['d_convergence_acc']:.3f}, IDK {numbers['idk_early_stop_acc_answered']:.3f} → "
        f"{numbers['idk_convergence_acc_answered']:.3f}",
        f"at CONVERGENCE IDK answers {numbers['idk_convergence_answered_fraction']:.0%} of questions, its accuracy "
        f"on them minus D's {fmt_interval(p_gap, p_low, p_high, 3)}"]))
    return Finding("idk_removes_late_drop",
                   "Relabelling Unknown examples as \"I don't know\" removes the late drop in accuracy (on the "
                   "questions answered), at the cost of answering fewer questions.", verdict, evidence, numbers)
