"""The findings on the Unknown-fraction sweep: Unknown examples are fitted slower, harm at CONVERGENCE, and are
neutral at EARLY_STOP.

Which control decides the harm, and what is reported beside it: the **step-matched D − D_Known** decides: the
two runs share their Known examples, their optimizer steps and learning-rate schedule and their seed, so at
CONVERGENCE, both fitted, they differ only by the Unknown examples. The **difference-in-differences against the
0% set**, (D_X − D_0) at CONVERGENCE minus the same at EARLY_STOP, also holds the steps fixed (D_0 has D's
size), and it is reported beside it per fraction; it does not decide because its two runs have different Known
examples (D_X has (1 − X)·|D| of them, D_0 |D|), so Known examples fitted after EARLY_STOP, and EARLY_STOP
epochs that differ between the runs, move it without any Unknown example doing anything.
"""

from __future__ import annotations

import math

import numpy as np
from scipy import stats as sps

from benchmark.analyse.findings.gaps import (
    Gap,
    Pair,
    by_fraction,
    direction_rows,
    equivalence_rows,
    fraction_key,
    label,
    of_kind,
    paired_gap,
    pairs_of,
    parts_gap,
    rows_text,
    t_gap,
)
from benchmark.analyse.findings.gates import control_gate, fit_gate, step_gate
from benchmark.analyse.findings.inputs import FindingsInput, RunSummary
from benchmark.analyse.findings.verdicts import (
    ALPHA,
    CONTRADICTED,
    DEFAULT_OPTIONS,
    HOLDS,
    NOT_SHOWN,
    FindingOptions,
    all_rows,
    direction_verdict,
    missing,
)
from benchmark.analyse.stats import NAN, fmt_interval, mean_ci
from benchmark.record import Finding


def unknown_fitted_slower(summary: FindingsInput, options: FindingOptions = DEFAULT_OPTIONS) -> Finding | None:
    """Epochs to fit 50% of the Unknown train examples minus epochs to fit 50% of the Known ones, per run that
    has both (D with 0 < X < 1, D_Natural; not the IDK variant, whose Unknown answers are not facts), pooled
    over mixtures and seeds with a t-interval. A category that never reached 50% is counted as fitted at
    ``epochs_trained + 1``: a lower bound, so the difference is if anything understated."""
    runs = [r for r in summary.runs if r.kind != "idk_relabel" and (r.n_train_known or 0) > 0
            and (r.n_train_unknown or 0) > 0 and r.epochs_trained is not None]
    if not runs:
        return None
    known, unknown, censored = [], [], 0
    for run in runs:
        limit = float(run.epochs_trained) + 1
        k, u = run.value("fit_epochs_known"), run.value("fit_epochs_unknown")
        censored += math.isnan(u)
        known.append(limit if math.isnan(k) else k)
        unknown.append(limit if math.isnan(u) else u)
    diffs = [u - k for u, k in zip(unknown, known, strict=True)]
    k_ci, u_ci, d_ci = mean_ci(known), mean_ci(unknown), mean_ci(diffs)
    numbers = {"unknown_epochs": u_ci[0], "unknown_epochs_ci_low": u_ci[1], "unknown_epochs_ci_high": u_ci[2],
               "known_epochs": k_ci[0], "known_epochs_ci_low": k_ci[1], "known_epochs_ci_high": k_ci[2],
               "difference": d_ci[0], "difference_ci_low": d_ci[1], "difference_ci_high": d_ci[2],
               "n_runs": float(len(runs)), "n_unknown_never_fitted": float(censored)}
    for mixture in sorted({r.mixture for r in runs}):
        numbers[f"difference/{mixture}"] = mean_ci([d for d, r in zip(diffs, runs, strict=True)
                                                     if r.mixture == mixture])[0]
    note = (f"; {censored} run(s) never fitted 50% of Unknown, counted as epochs trained + 1" if censored else "")
    evidence = (f"Unknown 50% fitted at epoch {fmt_interval(*u_ci, digits=1)} vs Known at epoch "
                f"{fmt_interval(*k_ci, digits=1)}: difference {fmt_interval(*d_ci, digits=1)} epochs "
                f"(t over {len(runs)} run(s){note})")
    return Finding("unknown_fitted_slower", "Unknown examples are fitted much more slowly than Known ones.",
                   direction_verdict(d_ci[1], d_ci[2], +1), evidence, numbers)


def _sweep(runs: list[RunSummary]) -> tuple[list[RunSummary], list[RunSummary], list[Pair]]:
    """(D runs, D runs with 0 < X < 1, their (D, D_Known) pairs by fraction and seed)."""
    d_runs = of_kind(runs, "unknown_fraction")
    mixed = [r for r in d_runs if 0 < r.value("unknown_fraction") < 1]
    return d_runs, mixed, pairs_of(mixed, of_kind(runs, "known_only"), fraction_key)


def _did_rows(d_runs: list[RunSummary], mixed: list[RunSummary], n_parts: int, seed: int) -> dict[float, Gap]:
    """Per fraction: (D_X − D_0) at CONVERGENCE minus (D_X − D_0) at EARLY_STOP, paired by seed."""
    zero = [r for r in d_runs if r.value("unknown_fraction") == 0]
    out = {}
    for x, pairs in by_fraction(pairs_of(mixed, zero, lambda r: r.seed)).items():
        vectors = ("early_stop_correct", "convergence_correct")
        if len(pairs) == 1 and all(getattr(r, v) is not None for r in pairs[0] for v in vectors):
            (d, z), = pairs
            change = [np.asarray(r.convergence_correct, float) - np.asarray(r.early_stop_correct, float)
                      for r in (d, z)]
            out[x] = parts_gap(change[0], change[1], n_parts, seed)
        else:
            out[x] = t_gap([(d.value("convergence_acc") - z.value("convergence_acc"))
                            - (d.value("early_stop_acc") - z.value("early_stop_acc")) for d, z in pairs], "seeds")
    return out


def _slope(runs: list[RunSummary], acc_key: str) -> tuple[float, float, float, int]:
    """OLS slope of accuracy on the realised Unknown fraction over runs, with its t-interval (n − 2 df)."""
    points = [(r.value("realised_unknown_fraction"), r.value(acc_key)) for r in runs]
    points = [(x, y) for x, y in points if not missing(x, y)]
    xs = np.array([p[0] for p in points])
    ys = np.array([p[1] for p in points])
    if len(points) < 2 or np.ptp(xs) == 0:
        return NAN, NAN, NAN, len(points)
    fit = sps.linregress(xs, ys)
    if len(points) < 3:
        return float(fit.slope), NAN, NAN, len(points)
    half = float(sps.t.ppf(1 - ALPHA / 2, len(points) - 2) * fit.stderr)
    return float(fit.slope), float(fit.slope) - half, float(fit.slope) + half, len(points)


def unknown_harms_at_convergence(summary: FindingsInput,
                                 options: FindingOptions = DEFAULT_OPTIONS) -> Finding | None:
    """D − D_Known at CONVERGENCE, per fraction X (Holm over the fractions), decides: holds if D is below its
    step-matched D_Known at every X, contradicted if it is above at some X. Gates (``gates``): every compared
    run fitted (D_X, D_Known, D_0), D_Known step-matched, the controls' late drop (D_0, D_Known) within
    ``LATE_DROP_MARGIN``. Beside it, per X, the difference-in-differences against the 0% set, and the slopes of
    accuracy on the Unknown share at CONVERGENCE and at EARLY_STOP over the D runs (the paper: far steeper at
    CONVERGENCE); they do not decide (module docstring)."""
    d_runs, mixed, pairs = _sweep(summary.runs)
    if not pairs and len({r.value("realised_unknown_fraction") for r in d_runs}) < 2:
        return None
    gaps = {x: paired_gap(p, "convergence_acc", "convergence_correct", n_parts=options.n_parts, seed=options.seed)
            for x, p in by_fraction(pairs).items()}
    rows = direction_rows(gaps, -1)
    did = _did_rows(d_runs, mixed, options.n_parts, options.seed)
    for row, x in zip(rows, gaps, strict=True):
        if x in did:
            low, high = did[x].interval()
            row.update(did=did[x].mean, did_ci_low=low, did_ci_high=high)
    zero = [r for r in d_runs if r.value("unknown_fraction") == 0]
    known_only = [k for _, k in pairs]
    controls = {"unknown_0": zero} | {k.mixture: [q for _, q in pairs if q.mixture == k.mixture] for k in known_only}
    gate_drop, drops = control_gate(controls)
    reasons = [r for r in (step_gate(pairs) if pairs else "no D_Known (mixtures.known_only: true adds it)",
                           fit_gate(mixed + known_only + zero), gate_drop) if r]
    verdict = NOT_SHOWN if reasons else all_rows([r["verdict"] for r in rows])
    slope, slope_es = _slope(d_runs, "convergence_acc"), _slope(d_runs, "early_stop_acc")
    numbers = {"n_fractions": float(len(rows)), "slope": slope[0], "slope_ci_low": slope[1],
               "slope_ci_high": slope[2], "slope_n_runs": float(slope[3]), "early_stop_slope": slope_es[0],
               "early_stop_slope_ci_low": slope_es[1], "early_stop_slope_ci_high": slope_es[2],
               **{f"control_drop/{m}": d for m, d in drops.items()}}
    parts = []
    if reasons:
        parts.append("; ".join(reasons))
    if rows:
        method = rows[0]["method"]
        parts.append(f"D − D_Known at CONVERGENCE ({method}, Holm over {len(rows)} fraction(s)): {rows_text(rows)}")
    if did:
        parts.append(f"difference-in-differences against 0% (CONVERGENCE − EARLY_STOP): "
                     f"{', '.join(f'{label(x)} {g.text()}' for x, g in did.items())}")
    if not missing(slope[0]):
        parts.append(f"slope of accuracy on the Unknown share {fmt_interval(*slope[:3], digits=3)} at CONVERGENCE "
                     f"vs {fmt_interval(*slope_es[:3], digits=3)} at EARLY_STOP over {slope[3]} D run(s)")
    return Finding("unknown_harms_at_convergence",
                   "Test accuracy at CONVERGENCE falls as the share of Unknown fine-tuning examples rises "
                   "(D below D_Known, the same set without its Unknown examples).", verdict, "; ".join(parts),
                   numbers, tuple(rows))


def early_stop_neutral(summary: FindingsInput, options: FindingOptions = DEFAULT_OPTIONS) -> Finding | None:
    """The paper's "neutral early, harmful once fitted": holds if D − D_Known at EARLY_STOP lies within
    ±``options.early_stop_margin`` at every X (TOST at α/m) AND ``unknown_harms_at_convergence`` holds;
    contradicted if D − D_Known at EARLY_STOP lies entirely outside the margin at some X (either side: Unknown
    examples that help early are not neutral either) or the harm at CONVERGENCE is contradicted. Needs a
    step-matched D_Known (``gates``). Equality at EARLY_STOP alone is not the finding: in a world where Unknown
    examples do nothing it is true at every epoch."""
    _, _, pairs = _sweep(summary.runs)
    if not pairs:
        return None
    margin = options.early_stop_margin
    gaps = {x: paired_gap(p, "early_stop_acc", "early_stop_correct", n_parts=options.n_parts, seed=options.seed)
            for x, p in by_fraction(pairs).items()}
    rows = equivalence_rows(gaps, margin)
    harm = unknown_harms_at_convergence(summary, options)
    for row, harm_row in zip(rows, harm.rows, strict=True):
        row.update(convergence_gap=harm_row["estimate"], convergence_verdict=harm_row["verdict"])
    early = all_rows([r["verdict"] for r in rows])
    step_reason = step_gate(pairs)
    if step_reason:
        verdict = NOT_SHOWN
    elif CONTRADICTED in (early, harm.verdict):
        verdict = CONTRADICTED
    elif early == HOLDS and harm.verdict == HOLDS:
        verdict = HOLDS
    else:
        verdict = NOT_SHOWN
    confidence = rows[0]["confidence"]
    evidence = "; ".join(filter(None, [
        step_reason,
        f"D − D_Known at EARLY_STOP ({rows[0]['method']}, TOST at α/{len(rows)}: {confidence:.1%} intervals within "
        f"±{margin:.3f}): {rows_text(rows)}",
        f"harmful once fitted (unknown_harms_at_convergence): {harm.verdict}"]))
    numbers = {"margin": margin, "n_fractions": float(len(rows))}
    return Finding("early_stop_neutral",
                   "At EARLY_STOP, D and D_Known are nearly equal: Unknown examples are neutral early and harmful "
                   "once fitted.", verdict, evidence, numbers, tuple(rows))
