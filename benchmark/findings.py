"""The paper's findings (DESIGN.md §1.5) as verdicts on one suite run: pure functions, no MLflow, no printing.

Each finding function takes the summary below and returns a ``Finding`` or None when the suite has none of
its inputs (no single-category sets, no IDK variant, ...), so the caller logs only the findings that apply.
``evaluate_findings(summary)`` runs every one.

Verdicts come only from intervals (95%): ``holds`` when the interval that decides the finding excludes the
null in the paper's direction, ``contradicted`` when it excludes it in the opposite direction, ``not shown``
otherwise (including when no interval can be computed, e.g. a single run). Two findings claim an equality
(``early_stop_neutral``, ``beta_kn_comparable``): there the null is "not equal", so ``holds`` means the interval
lies inside a stated equivalence margin and ``contradicted`` that it lies entirely outside it.

Comparisons between two variants (D − D_Known, D_MaybeKnown − D_HighlyKnown, IDK − D) pair the runs of the same
seed (and, for D/D_Known/IDK, the same nominal Unknown fraction):
- with two or more such pairs, the interval is a Student-t interval over the per-pair differences (it carries
  training noise, seed to seed);
- with exactly one pair and per-question correctness for both, it is the paper's own test: the test questions
  shuffled into 100 parts and a paired t-test over the parts (``stats.paired_t_test``; for IDK a paired
  bootstrap over questions, ``stats.precision_gap_ci``). That carries test-question noise only: one seed says
  nothing about training noise;
- otherwise there is no interval and the finding is ``not shown``.

Accuracies are fractions in [0, 1] (0.02 = 2 points), as everywhere in the benchmark.

The summary (what the pipeline passes)
--------------------------------------
A mapping with two keys; every run is of ONE training configuration (a suite that sweeps training settings
calls ``evaluate_findings`` once per configuration)::

    {"runs": <list of mappings, or a polars DataFrame with these columns>, one per finished (mixture, seed):
        "mixture": str                 # the seed-independent set name (Mixture.name): "unknown_50",
                                       # "unknown_50_known_only", "MaybeKnown", "natural", "idk_unknown_50"
        "kind": str                    # Mixture.kind: unknown_fraction | known_only | single_category |
                                       # natural | idk_relabel
        "seed": int
        "unknown_fraction": float|None # nominal X: the X of D (unknown_fraction, idk_relabel) or of the D that
                                       # a D_Known was cut from (known_only); None for the other kinds
        "realised_unknown_fraction": float  # Unknown examples / examples in the set actually trained on
                                       # (0 for known_only; the relabelled share for idk_relabel)
        "category": str|None           # single_category only: HighlyKnown | MaybeKnown | WeaklyKnown | Unknown
        "n_train_known": int           # Known (HighlyKnown+MaybeKnown+WeaklyKnown) examples in the set
        "n_train_unknown": int         # Unknown examples in the set
        "epochs_trained": int          # the CONVERGENCE epoch (convergence/epoch)
        "fit_epochs_known": float|None     # fit/epochs_to_50pct/Known; None or NaN = never reached 50%
        "fit_epochs_unknown": float|None   # fit/epochs_to_50pct/Unknown; likewise
        "early_stop_acc": float|None   # early_stop/test/acc/all  (in-distribution test accuracy)
        "convergence_acc": float|None  # convergence/test/acc/all
        # IDK variant only (from test/acc_answered and test/answered_fraction):
        "early_stop_acc_answered": float|None, "convergence_acc_answered": float|None,
        "early_stop_answered_fraction": float|None, "convergence_answered_fraction": float|None,
        # Optional, for the paper's per-question test when a comparison has a single pair of runs:
        # right/wrong per in-distribution test question, in ONE fixed question order shared by every run
        # (the test table's order, OOD questions left out):
        "early_stop_correct": list[bool]|None, "convergence_correct": list[bool]|None,
        "convergence_answered": list[bool]|None,  # IDK only: the prediction is not the IDK answer
     },
     "linear": {"in_distribution": <stats.linear_model_ci(points, "test/acc/all")>,
                "ood": <stats.linear_model_ci(points, "ood/acc/all")>} or None}

Missing keys read as None. Runs of other kinds are ignored by the findings that do not use them.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import polars as pl
from scipy import stats as sps

from benchmark.stats import NAN, fmt_interval, mean_ci, paired_t_test, precision_gap_ci

Verdict = Literal["holds", "not shown", "contradicted"]
HOLDS: Verdict = "holds"
NOT_SHOWN: Verdict = "not shown"
CONTRADICTED: Verdict = "contradicted"

EARLY_STOP_MARGIN = 0.02  # 2 accuracy points: "nearly equal" at EARLY_STOP
RATIO_BOUNDS = (0.5, 2.0)  # |β_unk|/β_kn within a factor of two counts as "comparable" (paper: 8.3/7.3 = 1.14)
N_PARTS = 100  # the paper's number of parts for its paired t-test
OTHER_CATEGORIES = ("HighlyKnown", "WeaklyKnown", "Unknown")

Run = dict[str, Any]


@dataclass(frozen=True)
class Finding:
    """One of the paper's claims judged on this run.

    ``name``: slug for the MLflow tag ``finding/<name>``; ``statement``: the paper's claim; ``verdict``: holds /
    not shown / contradicted; ``evidence``: one line with the numbers and the deciding interval; ``numbers``:
    the figures behind it (metric-name-safe keys; NaN where an interval could not be computed).
    """

    name: str
    statement: str
    verdict: Verdict
    evidence: str
    numbers: dict[str, float] = field(default_factory=dict)

    def tags(self) -> dict[str, str]:
        return {f"finding/{self.name}": self.verdict, f"finding/{self.name}/evidence": self.evidence,
                f"finding/{self.name}/statement": self.statement}

    def metrics(self) -> dict[str, float]:
        return {f"finding/{self.name}/{key}": float(value) for key, value in self.numbers.items()}


# ---------------------------------------------------------------- verdict rules


def _missing(*values: float | None) -> bool:
    return any(v is None or math.isnan(v) for v in values)


def direction_verdict(low: float, high: float, sign: int) -> Verdict:
    """``holds`` if the interval excludes 0 on the side of ``sign`` (+1: above, −1: below), ``contradicted`` if
    it excludes 0 on the other side, else ``not shown``."""
    if _missing(low, high):
        return NOT_SHOWN
    if (sign > 0 and low > 0) or (sign < 0 and high < 0):
        return HOLDS
    if (sign > 0 and high < 0) or (sign < 0 and low > 0):
        return CONTRADICTED
    return NOT_SHOWN


def equivalence_verdict(low: float, high: float, lower: float, upper: float) -> Verdict:
    """``holds`` if the interval lies inside [lower, upper], ``contradicted`` if entirely outside it."""
    if _missing(low, high):
        return NOT_SHOWN
    if lower <= low and high <= upper:
        return HOLDS
    if high < lower or low > upper:
        return CONTRADICTED
    return NOT_SHOWN


# ---------------------------------------------------------------- reading the summary

_FIELDS = ("mixture", "kind", "seed", "unknown_fraction", "realised_unknown_fraction", "category", "n_train_known",
           "n_train_unknown", "epochs_trained", "fit_epochs_known", "fit_epochs_unknown", "early_stop_acc",
           "convergence_acc", "early_stop_acc_answered", "convergence_acc_answered",
           "early_stop_answered_fraction", "convergence_answered_fraction", "early_stop_correct",
           "convergence_correct", "convergence_answered")


def _runs(summary: Mapping) -> list[Run]:
    raw = summary.get("runs")
    if raw is None:
        return []
    rows = raw.to_dicts() if isinstance(raw, pl.DataFrame) else [dict(r) for r in raw]
    return [{key: row.get(key) for key in _FIELDS} for row in rows]


def _value(run: Run, key: str) -> float:
    value = run.get(key)
    return NAN if value is None else float(value)


def _of_kind(runs: list[Run], *kinds: str) -> list[Run]:
    def order(run: Run) -> tuple:
        fraction = _value(run, "unknown_fraction")
        return (-1.0 if math.isnan(fraction) else fraction, str(run["mixture"]), run["seed"])

    return sorted((r for r in runs if r["kind"] in kinds), key=order)


def _fraction_key(run: Run) -> tuple[float, Any]:
    # Nominal fractions come from YAML and from arithmetic: compare them rounded, as percentages.
    return round(_value(run, "unknown_fraction") * 100, 6), run["seed"]


def _pairs(first: list[Run], second: list[Run], key: Callable[[Run], Any]) -> list[tuple[Run, Run]]:
    by_key = {key(r): r for r in second}
    return [(r, by_key[key(r)]) for r in first if key(r) in by_key]


def _pct(fraction: float) -> str:
    return "?" if _missing(fraction) else f"{round(fraction * 100):d}%"


@dataclass(frozen=True)
class Gap:
    """A paired difference a − b with its interval and how the interval was obtained."""

    mean: float
    low: float
    high: float
    n: int
    method: str

    def numbers(self, prefix: str) -> dict[str, float]:
        return {prefix: self.mean, f"{prefix}_ci_low": self.low, f"{prefix}_ci_high": self.high,
                f"{prefix}_n_pairs": float(self.n)}

    def text(self, digits: int = 3) -> str:
        return f"{fmt_interval(self.mean, self.low, self.high, digits)} ({self.method})"


def paired_gap(pairs: Sequence[tuple[Run, Run]], acc_key: str, correct_key: str, *, n_parts: int = N_PARTS,
               seed: int = 0) -> Gap:
    """a − b over run pairs, by the rule in the module docstring (t over pairs; one pair: the paper's test)."""
    usable = [(a, b) for a, b in pairs if not _missing(_value(a, acc_key), _value(b, acc_key))]
    diffs = [_value(a, acc_key) - _value(b, acc_key) for a, b in usable]
    if len(diffs) >= 2:
        return Gap(*mean_ci(diffs), len(diffs), f"t over {len(diffs)} paired runs")
    if len(pairs) == 1:
        a, b = pairs[0]
        if a.get(correct_key) is not None and b.get(correct_key) is not None:
            test = paired_t_test(a[correct_key], b[correct_key], n_parts=n_parts, seed=seed)
            return Gap(test["mean_diff"], test["ci_low"], test["ci_high"], 1,
                       f"one run pair: paired t over {test['n_parts']} question parts, p={test['p']:.3g}")
    if len(diffs) == 1:
        return Gap(diffs[0], NAN, NAN, 1, "one run pair, no per-question results: no interval")
    return Gap(NAN, NAN, NAN, 0, "no comparable runs")


def _slope(runs: list[Run], acc_key: str) -> tuple[float, float, float, int]:
    """OLS slope of accuracy on the realised Unknown fraction over runs, with its t-interval (n − 2 df)."""
    points = [(_value(r, "realised_unknown_fraction"), _value(r, acc_key)) for r in runs]
    points = [(x, y) for x, y in points if not _missing(x, y)]
    xs = np.array([p[0] for p in points])
    ys = np.array([p[1] for p in points])
    if len(points) < 2 or np.ptp(xs) == 0:
        return NAN, NAN, NAN, len(points)
    fit = sps.linregress(xs, ys)
    if len(points) < 3:
        return float(fit.slope), NAN, NAN, len(points)
    half = float(sps.t.ppf(0.975, len(points) - 2) * fit.stderr)
    return float(fit.slope), float(fit.slope) - half, float(fit.slope) + half, len(points)


# ---------------------------------------------------------------- the findings


def unknown_fitted_slower(summary: Mapping) -> Finding | None:
    """Epochs to fit 50% of the Unknown train examples minus epochs to fit 50% of the Known ones, per run that
    has both (D with 0 < X < 1, D_Natural; not the IDK variant, whose Unknown answers are not facts), pooled
    over mixtures and seeds with a t-interval. A category that never reached 50% is counted as fitted at
    ``epochs_trained + 1``: a lower bound, so the difference is if anything understated."""
    runs = [r for r in _runs(summary) if r["kind"] != "idk_relabel"
            and (r.get("n_train_known") or 0) > 0 and (r.get("n_train_unknown") or 0) > 0
            and r.get("epochs_trained") is not None]
    if not runs:
        return None
    known, unknown, censored = [], [], 0
    for run in runs:
        limit = float(run["epochs_trained"]) + 1
        k, u = _value(run, "fit_epochs_known"), _value(run, "fit_epochs_unknown")
        censored += math.isnan(u)
        known.append(limit if math.isnan(k) else k)
        unknown.append(limit if math.isnan(u) else u)
    diffs = [u - k for u, k in zip(unknown, known, strict=True)]
    k_ci, u_ci, d_ci = mean_ci(known), mean_ci(unknown), mean_ci(diffs)
    numbers = {"unknown_epochs": u_ci[0], "unknown_epochs_ci_low": u_ci[1], "unknown_epochs_ci_high": u_ci[2],
               "known_epochs": k_ci[0], "known_epochs_ci_low": k_ci[1], "known_epochs_ci_high": k_ci[2],
               "difference": d_ci[0], "difference_ci_low": d_ci[1], "difference_ci_high": d_ci[2],
               "n_runs": float(len(runs)), "n_unknown_never_fitted": float(censored)}
    for mixture in sorted({r["mixture"] for r in runs}):
        numbers[f"difference/{mixture}"] = mean_ci([d for d, r in zip(diffs, runs, strict=True)
                                                     if r["mixture"] == mixture])[0]
    note = (f"; {censored} run(s) never fitted 50% of Unknown, counted as epochs trained + 1" if censored else "")
    evidence = (f"Unknown 50% fitted at epoch {fmt_interval(*u_ci, digits=1)} vs Known at "
                f"{fmt_interval(*k_ci, digits=1)}: difference {fmt_interval(*d_ci, digits=1)} epochs "
                f"(t over {len(runs)} run(s){note})")
    return Finding("unknown_fitted_slower", "Unknown examples are fitted much more slowly than Known ones.",
                   direction_verdict(d_ci[1], d_ci[2], +1), evidence, numbers)


def _d_known_pairs(runs: list[Run]) -> list[tuple[Run, Run]]:
    mixed = [r for r in _of_kind(runs, "unknown_fraction") if 0 < _value(r, "unknown_fraction") < 1]
    return _pairs(mixed, _of_kind(runs, "known_only"), _fraction_key)


def unknown_harms_at_convergence(summary: Mapping, *, n_parts: int = N_PARTS, seed: int = 0) -> Finding | None:
    """D − D_Known at CONVERGENCE (paired by fraction and seed) decides when there is a D_Known: D_Known is the
    same set minus its Unknown examples, so the gap isolates what the Unknown examples do (a tiny model also
    forgets by overfitting its Known examples, which the slope alone would blame on the Unknown share). Without
    D_Known the slope of CONVERGENCE accuracy on the realised Unknown fraction over the D runs decides. Both are
    reported, and the EARLY_STOP slope beside them (the paper: the fall is far steeper at CONVERGENCE)."""
    runs = _runs(summary)
    d_runs = _of_kind(runs, "unknown_fraction")
    pairs = _d_known_pairs(runs)
    if not pairs and len({_value(r, "realised_unknown_fraction") for r in d_runs}) < 2:
        return None
    gap = paired_gap(pairs, "convergence_acc", "convergence_correct", n_parts=n_parts, seed=seed)
    slope = _slope(d_runs, "convergence_acc")
    slope_es = _slope(d_runs, "early_stop_acc")
    numbers = {**gap.numbers("gap_d_minus_d_known"), "slope": slope[0], "slope_ci_low": slope[1],
               "slope_ci_high": slope[2], "slope_n_runs": float(slope[3]), "early_stop_slope": slope_es[0],
               "early_stop_slope_ci_low": slope_es[1], "early_stop_slope_ci_high": slope_es[2]}
    slope_text = (f"slope of accuracy on the Unknown share {fmt_interval(*slope[:3], digits=3)} at CONVERGENCE "
                  f"vs {fmt_interval(*slope_es[:3], digits=3)} at EARLY_STOP over {slope[3]} D run(s)"
                  if not _missing(slope[0]) else "")
    if not _missing(gap.low, gap.high):
        verdict = direction_verdict(gap.low, gap.high, -1)
        evidence = "; ".join(filter(None, [f"D − D_Known at CONVERGENCE {gap.text()}", slope_text]))
    else:
        verdict = direction_verdict(slope[1], slope[2], -1)
        lead = f"D − D_Known at CONVERGENCE {gap.text()}, so the slope decides: " if pairs else ""
        evidence = lead + (slope_text or "no slope: the D runs share one Unknown fraction")
    return Finding("unknown_harms_at_convergence",
                   "Test accuracy at CONVERGENCE falls as the share of Unknown fine-tuning examples rises "
                   "(D below D_Known, the same set without its Unknown examples).", verdict, evidence, numbers)


def early_stop_neutral(summary: Mapping, *, margin: float = EARLY_STOP_MARGIN, n_parts: int = N_PARTS,
                       seed: int = 0) -> Finding | None:
    """D − D_Known at EARLY_STOP within ±``margin``: holds if its interval lies inside, contradicted if it lies
    entirely outside (on either side: Unknown examples that help early are not neutral either)."""
    pairs = _d_known_pairs(_runs(summary))
    if not pairs:
        return None
    early = paired_gap(pairs, "early_stop_acc", "early_stop_correct", n_parts=n_parts, seed=seed)
    late = paired_gap(pairs, "convergence_acc", "convergence_correct", n_parts=n_parts, seed=seed)
    numbers = {**early.numbers("gap_early_stop"), **late.numbers("gap_convergence"), "margin": margin}
    evidence = (f"D − D_Known at EARLY_STOP {early.text()}, margin ±{margin:.3f}; "
                f"at CONVERGENCE {fmt_interval(late.mean, late.low, late.high, 3)}")
    return Finding("early_stop_neutral",
                   "At EARLY_STOP, D and D_Known are nearly equal: Unknown examples are neutral early and harmful "
                   "once fitted.", equivalence_verdict(early.low, early.high, -margin, margin), evidence, numbers)


def _linear(summary: Mapping) -> Mapping | None:
    linear = summary.get("linear") or {}
    fit = linear.get("in_distribution")
    return fit if fit and not _missing(fit.get("beta_unk")) else None


def _beta_text(fit: Mapping, name: str, symbol: str) -> str:
    value = fit[name]
    headline = fmt_interval(value, fit.get(f"{name}_ci_low", NAN), fit.get(f"{name}_ci_high", NAN), 3)
    ols = fmt_interval(value, fit.get(f"{name}_ols_ci_low", NAN), fit.get(f"{name}_ols_ci_high", NAN), 3)
    return f"{symbol} {headline} (OLS t-interval {ols.split(' ', 1)[1]})"


def beta_unk_negative(summary: Mapping) -> Finding | None:
    """β_unk of the in-distribution linear model below 0, decided by its cluster-bootstrap interval."""
    fit = _linear(summary)
    if fit is None:
        return None
    numbers = {k: float(fit.get(k, NAN)) for k in ("beta_unk", "beta_unk_ci_low", "beta_unk_ci_high",
                                                   "beta_unk_ols_ci_low", "beta_unk_ols_ci_high", "r2", "n",
                                                   "n_variants")}
    evidence = (f"{_beta_text(fit, 'beta_unk', 'β_unk')}, cluster bootstrap over {int(fit.get('n_variants', 0))} "
                f"variants, {int(fit.get('n', 0))} points, R² {fit.get('r2', NAN):.2f}")
    return Finding("beta_unk_negative",
                   "Fitting Unknown examples lowers test accuracy: β_unk < 0 in accuracy = β0 + β_kn·N_kn/|D| + "
                   "β_unk·N_unk/|D| (paper: β_unk −8.3 points).",
                   direction_verdict(fit.get("beta_unk_ci_low", NAN), fit.get("beta_unk_ci_high", NAN), -1),
                   evidence, numbers)


def beta_kn_comparable(summary: Mapping, *, bounds: tuple[float, float] = RATIO_BOUNDS) -> Finding | None:
    """|β_unk| ≈ β_kn as an equivalence claim on the ratio r = −β_unk/β_kn (cluster-bootstrap interval): holds
    if β_kn's interval is above 0 and r's interval lies within ``bounds`` (a factor of two either way; the
    paper's 8.3/7.3 = 1.14); contradicted if r's interval lies entirely outside ``bounds`` (one effect is more
    than twice the other, or they have the same sign); otherwise not shown. A ratio, not β_kn + β_unk covering
    0: an interval that merely covers 0 is absence of evidence, not evidence of equality."""
    fit = _linear(summary)
    if fit is None or _missing(fit.get("beta_kn")):
        return None
    low, high = fit.get("unk_kn_ratio_ci_low", NAN), fit.get("unk_kn_ratio_ci_high", NAN)
    verdict = equivalence_verdict(low, high, *bounds)
    if verdict == HOLDS and not fit.get("beta_kn_ci_low", NAN) > 0:
        verdict = NOT_SHOWN
    keys = ("beta_kn", "beta_kn_ci_low", "beta_kn_ci_high", "beta_unk", "beta_unk_ci_low", "beta_unk_ci_high",
            "unk_kn_ratio", "unk_kn_ratio_ci_low", "unk_kn_ratio_ci_high", "beta_kn_plus_unk",
            "beta_kn_plus_unk_ci_low", "beta_kn_plus_unk_ci_high")
    numbers = {k: float(fit.get(k, NAN)) for k in keys} | {"ratio_lower": bounds[0], "ratio_upper": bounds[1]}
    evidence = (f"−β_unk/β_kn {fmt_interval(fit.get('unk_kn_ratio', NAN), low, high, 2)} "
                f"(comparable within [{bounds[0]:g}, {bounds[1]:g}]); {_beta_text(fit, 'beta_kn', 'β_kn')}; "
                f"{_beta_text(fit, 'beta_unk', 'β_unk')}")
    return Finding("beta_kn_comparable",
                   "An Unknown example fitted hurts about as much as a Known example fitted helps: |β_unk| ≈ β_kn "
                   "(paper: β_kn 7.3, β_unk −8.3 points).", verdict, evidence, numbers)


def maybe_known_best(summary: Mapping, *, n_parts: int = N_PARTS, seed: int = 0) -> Finding | None:
    """D_MaybeKnown against every other single-category set at CONVERGENCE, paired by seed: holds if it is
    significantly better than D_HighlyKnown and significantly worse than none; contradicted if some other
    single-category set is significantly better; otherwise not shown. D_Natural is reported, not judged (it is
    not a single-category set). EARLY_STOP gaps are reported too."""
    runs = _runs(summary)
    singles = _of_kind(runs, "single_category")
    by_category: dict[str, list[Run]] = {}
    for run in singles:
        by_category.setdefault(run["category"], []).append(run)
    if "MaybeKnown" not in by_category or "HighlyKnown" not in by_category:
        return None
    maybe = by_category["MaybeKnown"]
    others = {c: by_category[c] for c in OTHER_CATEGORIES if c in by_category}
    others["Natural"] = _of_kind(runs, "natural")
    numbers: dict[str, float] = {}
    gaps: dict[str, Gap] = {}
    for name, group in others.items():
        pairs = _pairs(maybe, group, lambda r: r["seed"])
        if not pairs:
            continue
        gaps[name] = paired_gap(pairs, "convergence_acc", "convergence_correct", n_parts=n_parts, seed=seed)
        early = paired_gap(pairs, "early_stop_acc", "early_stop_correct", n_parts=n_parts, seed=seed)
        numbers |= gaps[name].numbers(f"gap_{name}") | early.numbers(f"early_stop/gap_{name}")
    judged = {c: g for c, g in gaps.items() if c != "Natural"}
    if "HighlyKnown" not in judged:
        return None
    better = [c for c, g in judged.items() if not _missing(g.high) and g.high < 0]
    if better:
        verdict = CONTRADICTED
    elif direction_verdict(judged["HighlyKnown"].low, judged["HighlyKnown"].high, +1) == HOLDS:
        verdict = HOLDS
    else:
        verdict = NOT_SHOWN
    parts = [f"− {c} {g.text() if c == 'HighlyKnown' else fmt_interval(g.mean, g.low, g.high, 3)}"
             for c, g in gaps.items()]
    evidence = "D_MaybeKnown at CONVERGENCE " + ", ".join(parts)
    if better:
        evidence += f"; significantly better: {', '.join(better)}"
    return Finding("maybe_known_best",
                   "D_MaybeKnown is the best single-category fine-tuning set; D_HighlyKnown is not.",
                   verdict, evidence, numbers)


def idk_removes_late_drop(summary: Mapping, *, seed: int = 0) -> Finding | None:
    """The IDK variant's accuracy on the questions it answered at CONVERGENCE minus the plain D (same X, same
    seed) at CONVERGENCE: holds if the interval is above 0. Two or more seeds: t over seeds; one: a paired
    bootstrap over questions. The answered fraction (the cost) and both variants' EARLY_STOP → CONVERGENCE
    change are reported beside it."""
    runs = _runs(summary)
    pairs = _pairs(_of_kind(runs, "idk_relabel"), _of_kind(runs, "unknown_fraction"), _fraction_key)
    if not pairs:
        return None
    diffs = [(_value(i, "convergence_acc_answered") - _value(d, "convergence_acc")) for i, d in pairs]
    diffs = [x for x in diffs if not math.isnan(x)]
    if len(diffs) >= 2:
        gap = Gap(*mean_ci(diffs), len(diffs), f"t over {len(diffs)} seeds")
    else:
        idk, plain = pairs[0]
        vectors = [idk.get("convergence_correct"), idk.get("convergence_answered"), plain.get("convergence_correct")]
        if len(pairs) == 1 and all(v is not None for v in vectors):
            gap = Gap(*precision_gap_ci(*vectors, seed=seed), 1, "one seed: paired bootstrap over questions")
        else:
            gap = Gap(diffs[0] if diffs else NAN, NAN, NAN, len(diffs), "no interval")

    def mean_of(items: list[Run], key: str) -> float:
        return mean_ci([_value(r, key) for r in items])[0]

    idk_runs, plain_runs = [i for i, _ in pairs], [d for _, d in pairs]
    numbers = {**gap.numbers("gap_idk_answered_minus_d"),
               "idk_convergence_acc_answered": mean_of(idk_runs, "convergence_acc_answered"),
               "idk_early_stop_acc_answered": mean_of(idk_runs, "early_stop_acc_answered"),
               "idk_convergence_answered_fraction": mean_of(idk_runs, "convergence_answered_fraction"),
               "d_convergence_acc": mean_of(plain_runs, "convergence_acc"),
               "d_early_stop_acc": mean_of(plain_runs, "early_stop_acc")}
    x = _pct(_value(pairs[0][0], "unknown_fraction"))
    evidence = (f"IDK accuracy on answered questions at CONVERGENCE {numbers['idk_convergence_acc_answered']:.3f} vs "
                f"D_{x} {numbers['d_convergence_acc']:.3f}: {gap.text()}; answering "
                f"{numbers['idk_convergence_answered_fraction']:.0%} of questions; EARLY_STOP → CONVERGENCE: D "
                f"{numbers['d_early_stop_acc']:.3f} → {numbers['d_convergence_acc']:.3f}, IDK "
                f"{numbers['idk_early_stop_acc_answered']:.3f} → {numbers['idk_convergence_acc_answered']:.3f}")
    return Finding("idk_removes_late_drop",
                   "Relabelling Unknown examples as \"I don't know\" removes the late drop in accuracy (on the "
                   "questions answered), at the cost of answering fewer questions.",
                   direction_verdict(gap.low, gap.high, +1), evidence, numbers)


def evaluate_findings(summary: Mapping, *, margin: float = EARLY_STOP_MARGIN,
                      ratio_bounds: tuple[float, float] = RATIO_BOUNDS, n_parts: int = N_PARTS,
                      seed: int = 0) -> list[Finding]:
    """Every finding whose inputs the suite has, in the order of DESIGN.md §1.5."""
    candidates = [
        unknown_fitted_slower(summary),
        unknown_harms_at_convergence(summary, n_parts=n_parts, seed=seed),
        early_stop_neutral(summary, margin=margin, n_parts=n_parts, seed=seed),
        beta_unk_negative(summary),
        beta_kn_comparable(summary, bounds=ratio_bounds),
        maybe_known_best(summary, n_parts=n_parts, seed=seed),
        idk_removes_late_drop(summary, seed=seed),
    ]
    return [f for f in candidates if f is not None]
