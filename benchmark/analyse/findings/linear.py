"""The linear model's findings, and the fits they read (``linear_fits``).

β_unk < 0 is claimed only when it holds in **both** fits: the paper's ``acc ~ β0 + β_kn·N_kn/|D| +
β_unk·N_unk/|D|``, and the same with the optimizer steps taken so far as a covariate. N_unk grows with the
epochs, as forgetting does: without the covariate β_unk also carries time (in the simulated null world its
interval excluded 0 in every run). Intervals are CR2 cluster-robust over variants with Bell-McCaffrey degrees
of freedom (``stats.linear_model_ci``), correct for few clusters, and always around their estimate.
"""

from __future__ import annotations

from collections.abc import Sequence

import polars as pl

from benchmark.analyse.findings.inputs import FindingsInput
from benchmark.analyse.findings.verdicts import (
    DEFAULT_OPTIONS,
    HOLDS,
    NOT_SHOWN,
    FindingOptions,
    Verdict,
    both,
    direction_verdict,
    equivalence_verdict,
    missing,
)
from benchmark.analyse.stats import fmt_bounds, fmt_interval, linear_model_ci
from benchmark.record import Finding, LinearFit, acc_metric

MIN_CLUSTERS = 10  # variants the linear model needs for a verdict
STEPS_COVARIATE = "steps"  # the linear points' column of optimizer steps taken so far
LINEAR_SPLITS = {"in_distribution": acc_metric("test"), "ood": acc_metric("ood")}


def linear_fits(points: pl.DataFrame, splits: Sequence[str] = tuple(LINEAR_SPLITS)) -> dict[str, dict]:
    """The linear model per split (``in_distribution``: ``test/acc/all``; ``ood``: ``ood/acc/all``): the paper's
    fit, and under ``<split>_steps`` the same with the optimizer steps taken so far as a covariate. A split
    needs 4 points of 2 variants; each fit carries its ``target``. The findings read the in-distribution fits;
    the OOD ones are reported."""
    fits = {}
    if {"variant", "epoch"} <= set(points.columns):  # the fit's sums in one order: the betas' last digits must not
        points = points.sort("variant", "epoch")       # depend on the order in which the variants finished
    for split, target in ((s, LINEAR_SPLITS[s]) for s in splits):
        usable = points.drop_nulls(target) if target in points.columns else points.head(0)
        if usable.height < 4 or usable["variant"].n_unique() < 2:
            continue
        fits[split] = {**linear_model_ci(usable, target), "target": target}
        if STEPS_COVARIATE in usable.columns and usable[STEPS_COVARIATE].drop_nulls().len():
            fits[f"{split}_steps"] = {**linear_model_ci(usable, target, covariate=STEPS_COVARIATE),
                                      "target": target, "covariate": STEPS_COVARIATE}
    return fits


def _linear(summary: FindingsInput) -> tuple[LinearFit | None, LinearFit | None]:
    linear = summary.linear or {}
    fit = linear.get("in_distribution")
    if not fit or missing(fit.beta_unk):
        return None, None
    return fit, linear.get("in_distribution_steps")


def _beta_text(fit: LinearFit, name: str, symbol: str) -> str:
    text = f"{symbol} {fmt_interval(fit.value(name), fit.value(f'{name}_ci_low'), fit.value(f'{name}_ci_high'), 3)}"
    ols = fmt_bounds(fit.value(f"{name}_ols_ci_low"), fit.value(f"{name}_ols_ci_high"), 3)
    return f"{text} (OLS t-interval {ols})" if ols else text


def _cluster_reason(fit: LinearFit) -> str:
    clusters = int(fit.n_variants or 0)
    return (f"{clusters} variants: a verdict needs ≥ {MIN_CLUSTERS}, cluster-robust intervals over fewer are not "
            f"trusted" if clusters < MIN_CLUSTERS else "")


def _fit_note(fit: LinearFit) -> str:
    return f"CR2 over {int(fit.n_variants or 0)} variants, {int(fit.n or 0)} points, R² {fit.value('r2'):.2f}"


def beta_unk_negative(summary: FindingsInput, options: FindingOptions = DEFAULT_OPTIONS) -> Finding | None:
    """β_unk below 0 in both in-distribution fits (without and with optimizer steps as a covariate), each by
    its CR2 interval; contradicted if both put it above 0. Needs ``MIN_CLUSTERS`` variants."""
    fit, timed = _linear(summary)
    if fit is None:
        return None
    keys = ("beta_unk", "beta_unk_ci_low", "beta_unk_ci_high", "beta_unk_ols_ci_low", "beta_unk_ols_ci_high",
            "beta_unk_df", "r2", "n", "n_variants")
    numbers = {k: fit.value(k) for k in keys}
    plain = direction_verdict(fit.value("beta_unk_ci_low"), fit.value("beta_unk_ci_high"), -1)
    parts = [f"{_beta_text(fit, 'beta_unk', 'β_unk')}, {_fit_note(fit)}"]
    reasons = [r for r in (_cluster_reason(fit), "" if timed else "no fit with optimizer steps as a covariate "
                           "(the points carry no steps)") if r]
    with_steps = NOT_SHOWN
    if timed:
        numbers |= {f"steps/{k}": timed.value(k) for k in ("beta_unk", "beta_unk_ci_low", "beta_unk_ci_high",
                                                            "beta_steps", "beta_steps_ci_low", "beta_steps_ci_high")}
        with_steps = direction_verdict(timed.value("beta_unk_ci_low"), timed.value("beta_unk_ci_high"), -1)
        steps = fmt_interval(timed.value("beta_steps"), timed.value("beta_steps_ci_low"),
                             timed.value("beta_steps_ci_high"), 3)
        parts.append(f"with optimizer steps as a covariate {_beta_text(timed, 'beta_unk', 'β_unk')} "
                     f"(per 100 steps {steps})")
    verdict = NOT_SHOWN if reasons else both(plain, with_steps)
    return Finding("beta_unk_negative",
                   "Fitting Unknown examples lowers test accuracy: β_unk < 0 in accuracy = β0 + β_kn·N_kn/|D| + "
                   "β_unk·N_unk/|D| (paper: β_unk −8.3 points), also with training time held fixed.",
                   verdict, "; ".join(reasons + parts), numbers)


def _ratio_verdict(fit: LinearFit, bounds: tuple[float, float]) -> Verdict:
    verdict = equivalence_verdict(fit.value("unk_kn_ratio_ci_low"), fit.value("unk_kn_ratio_ci_high"), *bounds)
    if verdict == HOLDS and not fit.value("beta_kn_ci_low") > 0:
        return NOT_SHOWN
    return verdict


def _ratio_text(fit: LinearFit) -> str:
    ratio = fit.value("unk_kn_ratio")
    low, high = fit.value("unk_kn_ratio_ci_low"), fit.value("unk_kn_ratio_ci_high")
    if missing(low, high) and not missing(ratio):
        return f"−β_unk/β_kn {ratio:.2f} (interval unbounded: β_kn is not distinguishable from 0)"
    return f"−β_unk/β_kn {fmt_interval(ratio, low, high, 2)}"


def beta_kn_comparable(summary: FindingsInput, options: FindingOptions = DEFAULT_OPTIONS) -> Finding | None:
    """|β_unk| ≈ β_kn as an equivalence claim on the ratio r = −β_unk/β_kn (Fieller interval on the CR2
    covariance), in both fits (without and with optimizer steps): holds if in both β_kn's interval is above 0
    and r's interval lies within ``options.ratio_bounds`` (a factor of two either way; the paper's 8.3/7.3 =
    1.14); contradicted if in both r's interval lies entirely outside the bounds (one effect is more than twice
    the other, or they have the same sign); otherwise not shown. A ratio, not β_kn + β_unk covering 0: an
    interval that merely covers 0 is absence of evidence, not evidence of equality."""
    fit, timed = _linear(summary)
    if fit is None or missing(fit.beta_kn):
        return None
    bounds = options.ratio_bounds
    keys = ("beta_kn", "beta_kn_ci_low", "beta_kn_ci_high", "beta_unk", "beta_unk_ci_low", "beta_unk_ci_high",
            "unk_kn_ratio", "unk_kn_ratio_ci_low", "unk_kn_ratio_ci_high", "beta_kn_plus_unk",
            "beta_kn_plus_unk_ci_low", "beta_kn_plus_unk_ci_high")
    numbers = {k: fit.value(k) for k in keys} | {"ratio_lower": bounds[0], "ratio_upper": bounds[1]}
    reasons = [r for r in (_cluster_reason(fit), "" if timed else "no fit with optimizer steps as a covariate") if r]
    parts = [f"{_ratio_text(fit)} (comparable within [{bounds[0]:g}, {bounds[1]:g}]); "
             f"{_beta_text(fit, 'beta_kn', 'β_kn')}; {_beta_text(fit, 'beta_unk', 'β_unk')}"]
    with_steps = NOT_SHOWN
    if timed:
        numbers |= {f"steps/{k}": timed.value(k) for k in keys}
        with_steps = _ratio_verdict(timed, bounds)
        parts.append(f"with optimizer steps as a covariate {_ratio_text(timed)}, "
                     f"{_beta_text(timed, 'beta_kn', 'β_kn')}")
    verdict = NOT_SHOWN if reasons else both(_ratio_verdict(fit, bounds), with_steps)
    return Finding("beta_kn_comparable",
                   "An Unknown example fitted hurts about as much as a Known example fitted helps: |β_unk| ≈ β_kn "
                   "(paper: β_kn 7.3, β_unk −8.3 points).", verdict, "; ".join(reasons + parts), numbers)
