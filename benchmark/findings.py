"""The paper's findings as verdicts on one suite run: pure functions, no MLflow, no printing.

Each finding function takes the summary below and returns a ``Finding`` or None when the suite has none of
its inputs (no single-category sets, no IDK variant, ...), so the caller logs only the findings that apply.
``evaluate_findings(summary)`` runs every one. The engine is tested against simulated runs
(``benchmark.simulate``, ``tests/test_findings_null.py``): in worlds without an effect no finding says
``holds`` in more than 5% of simulated runs, and in a world with the paper's effect the findings it implies
say ``holds`` in at least 80%.

Verdicts come only from intervals: ``holds`` when the interval that decides the finding excludes the null in
the paper's direction, ``contradicted`` when it excludes it in the opposite direction, ``not shown`` otherwise,
including when no interval can be computed (e.g. a single run) and when a precondition below fails (its reason
is in the evidence). Two findings claim an equality (``early_stop_neutral``, ``beta_kn_comparable``): there the
null is "not equal", so ``holds`` means the interval lies inside a stated equivalence margin and
``contradicted`` that it lies entirely outside it.

Preconditions (gates)
---------------------
- **CONVERGENCE means fitted.** A verdict at CONVERGENCE needs every compared run to have fitted at least 99%
  of its train examples by its last epoch (``final_train_fit``); otherwise ``not shown: not fitted:
  unknown_75_seed1 66%``. The paper's runs were all fitted; here a "last epoch" that is not fitted is not its
  CONVERGENCE.
- **The control barely forgets.** The harm at CONVERGENCE is judged only when the controls (the 0% set and
  every D_Known) lose at most ``LATE_DROP_MARGIN`` (2 points) from EARLY_STOP to CONVERGENCE, as the paper's
  Known-only fine-tuning does; otherwise ``not shown: control forgets 5.4 points (unknown_0)``. A model that
  forgets whatever it is trained on leaves no late drop to attribute to Unknown examples.
- **The control on equal footing.** D − D_Known is compared only when D_Known took the same optimizer steps as
  its D (``optimizer_steps``: the suite's ``mixtures.known_only_steps: matched`` draws as many batches an epoch
  as D has). A D_Known trained one pass over its smaller set takes fewer steps (|D| = 174 at batch 16 is 11 an
  epoch; D_Known at 75% Unknown, 43 examples, 3), and a small model forgets with steps: at equal epochs the gap
  D − D_Known then measures training length, not Unknown examples. In a simulated world where Unknown
  examples do nothing, that design said ``holds`` in 88-100% of runs.
- **Enough clusters.** The linear model's verdicts need at least ``MIN_CLUSTERS`` (10) variants.

Which control decides the harm, and what is reported beside it
--------------------------------------------------------------
The **step-matched D − D_Known** decides: the two runs share their Known examples, their optimizer steps and
learning-rate schedule and their seed, so at CONVERGENCE, both fitted, they differ only by the Unknown examples.
The **difference-in-differences against the 0% set**, (D_X − D_0) at CONVERGENCE minus the same at EARLY_STOP,
also holds the steps fixed (D_0 has D's size), and it is reported beside it per fraction; it does not decide
because its two runs have different Known examples (D_X has (1 − X)·|D| of them, D_0 |D|), so Known examples
fitted after EARLY_STOP, and EARLY_STOP epochs that differ between the runs, move it without any Unknown
example doing anything.

Per fraction, with a multiplicity correction
--------------------------------------------
The paper's claims are about every fraction X, and a pooled interval hides a fraction that disagrees. So
D − D_Known is one interval per X (``Finding.rows``), and the finding holds only if every X passes:

- a direction claim (D below D_Known) by a paired test per X with **Holm's** step-down correction over the m
  fractions; each row's interval is at the level Holm tests that X at (1 − α/(m − k) for the k-th smallest p,
  and from the first X Holm cannot reject on, that step's level), so it excludes 0 exactly when Holm rejects;
  its Holm-adjusted p is beside it;
- an equality claim (D ≈ D_Known at EARLY_STOP) by **TOST at α/m** per X: the (1 − 2α/m) interval inside
  ±margin.

A comparison between two variants pairs the runs of the same seed (and, for D/D_Known/IDK, the same nominal
Unknown fraction):
- with two or more such pairs, a Student-t test over the per-pair differences (training noise, seed to seed);
- with exactly one pair and per-question correctness for both, the paper's own test: the test questions
  shuffled into 100 parts and a paired t-test over the parts (``stats.paired_t_test``; test-question noise
  only: one seed says nothing about training noise);
- otherwise there is no interval and the row is ``not shown``.

The linear model
----------------
β_unk < 0 is claimed only when it holds in **both** fits: the paper's ``acc ~ β0 + β_kn·N_kn/|D| +
β_unk·N_unk/|D|``, and the same with the optimizer steps taken so far as a covariate. N_unk grows with the
epochs, as forgetting does: without the covariate β_unk also carries time (in the simulated null world its
interval excluded 0 in every run). Intervals are CR2 cluster-robust over variants with Bell-McCaffrey degrees
of freedom (``stats.linear_model_ci``), correct for few clusters, and always around their estimate.

Accuracies are fractions in [0, 1] (0.02 = 2 points), as everywhere in the benchmark.

The summary (what the pipeline passes)
--------------------------------------
A mapping with two keys; every run is of ONE training configuration (a suite that sweeps training settings
calls ``evaluate_findings`` once per configuration)::

    {"runs": <list of mappings, or a polars DataFrame with these columns>, one per finished (mixture, seed):
        "variant": str                 # the run's name ("unknown_75_seed1"), for the gates' reasons
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
        "final_train_fit": float|None  # convergence/train/acc/all: share of its train examples fitted at the end
        "steps_per_epoch": int|None    # optimizer steps an epoch
        "optimizer_steps": int|None    # optimizer steps of the whole run (to CONVERGENCE)
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
        "early_stop_answered": list[bool]|None,   # IDK only: the prediction is not the IDK answer
        "convergence_answered": list[bool]|None,
     },
     "linear": <linear_fits(points)>, or None}

Missing keys read as None. Runs of other kinds are ignored by the findings that do not use them.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import polars as pl
from scipy import stats as sps

from benchmark.stats import (
    NAN,
    fmt_bounds,
    fmt_interval,
    holm,
    late_drop_gap_ci,
    linear_model_ci,
    mean_ci,
    paired_t_test,
    precision_gap_ci,
)

Verdict = Literal["holds", "not shown", "contradicted"]
HOLDS: Verdict = "holds"
NOT_SHOWN: Verdict = "not shown"
CONTRADICTED: Verdict = "contradicted"

ALPHA = 0.05  # every verdict's error rate (two-sided intervals at 1 − α, before any multiplicity correction)
EARLY_STOP_MARGIN = 0.02  # 2 accuracy points: "nearly equal" at EARLY_STOP
LATE_DROP_MARGIN = 0.02  # 2 points: the most a control (or IDK) may lose from EARLY_STOP to CONVERGENCE
FIT_GATE = 0.99  # CONVERGENCE means at least this share of a run's train examples fitted
MIN_CLUSTERS = 10  # variants the linear model needs for a verdict
RATIO_BOUNDS = (0.5, 2.0)  # |β_unk|/β_kn within a factor of two counts as "comparable" (paper: 8.3/7.3 = 1.14)
N_PARTS = 100  # the paper's number of parts for its paired t-test
OTHER_CATEGORIES = ("HighlyKnown", "WeaklyKnown", "Unknown")
STEPS_COVARIATE = "steps"  # the linear points' column of optimizer steps taken so far

Run = dict[str, Any]


@dataclass(frozen=True)
class Finding:
    """One of the paper's claims judged on this run.

    ``name``: slug for the MLflow tag ``finding/<name>``; ``statement``: the paper's claim; ``verdict``: holds /
    not shown / contradicted; ``evidence``: one line with the numbers and the deciding interval; ``numbers``:
    the figures behind it (metric-name-safe keys; NaN where an interval could not be computed); ``rows``: the
    per-fraction tests behind a per-fraction verdict (``label``, ``estimate``, ``ci_low``, ``ci_high``,
    ``confidence``, ``p``, ``p_holm``, ``n``, ``method``, ``verdict`` and what each finding adds).
    """

    name: str
    statement: str
    verdict: Verdict
    evidence: str
    numbers: dict[str, float] = field(default_factory=dict)
    rows: tuple[dict[str, Any], ...] = ()

    def tags(self) -> dict[str, str]:
        tags = {f"finding/{self.name}": self.verdict, f"finding/{self.name}/evidence": self.evidence,
                f"finding/{self.name}/statement": self.statement}
        if self.rows:
            tags[f"finding/{self.name}/rows"] = json.dumps(list(self.rows), allow_nan=True)
        return tags

    def document(self) -> dict[str, Any]:
        """The finding as plain data (the run's JSON document, the terminal summary)."""
        return {"name": self.name, "statement": self.statement, "verdict": self.verdict, "evidence": self.evidence,
                "numbers": dict(self.numbers), "rows": [dict(r) for r in self.rows]}


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


def _all_rows(verdicts: Sequence[Verdict]) -> Verdict:
    """A claim about every fraction: holds if every row holds, contradicted if any row is."""
    if not verdicts:
        return NOT_SHOWN
    if CONTRADICTED in verdicts:
        return CONTRADICTED
    return HOLDS if all(v == HOLDS for v in verdicts) else NOT_SHOWN


def _both(first: Verdict, second: Verdict) -> Verdict:
    """A claim that needs two fits to agree."""
    return first if first == second else NOT_SHOWN


# ---------------------------------------------------------------- reading the summary

_FIELDS = ("variant", "mixture", "kind", "seed", "unknown_fraction", "realised_unknown_fraction", "category",
           "n_train_known", "n_train_unknown", "epochs_trained", "final_train_fit", "steps_per_epoch",
           "optimizer_steps", "fit_epochs_known", "fit_epochs_unknown", "early_stop_acc", "convergence_acc",
           "early_stop_acc_answered", "convergence_acc_answered", "early_stop_answered_fraction",
           "convergence_answered_fraction", "early_stop_correct", "convergence_correct", "early_stop_answered",
           "convergence_answered")


def _runs(summary: Mapping) -> list[Run]:
    raw = summary.get("runs")
    if raw is None:
        return []
    rows = raw.to_dicts() if isinstance(raw, pl.DataFrame) else [dict(r) for r in raw]
    return [{key: row.get(key) for key in _FIELDS} for row in rows]


def _value(run: Run, key: str) -> float:
    value = run.get(key)
    return NAN if value is None else float(value)


def _name(run: Run) -> str:
    return run.get("variant") or f"{run['mixture']}_seed{run['seed']}"


def _of_kind(runs: list[Run], *kinds: str) -> list[Run]:
    def order(run: Run) -> tuple:
        fraction = _value(run, "unknown_fraction")
        return (-1.0 if math.isnan(fraction) else fraction, str(run["mixture"]), run["seed"])

    return sorted((r for r in runs if r["kind"] in kinds), key=order)


def _percent(run: Run) -> float:
    # Nominal fractions come from YAML and from arithmetic: compare them rounded, as percentages.
    return round(_value(run, "unknown_fraction") * 100, 6)


def _fraction_key(run: Run) -> tuple[float, Any]:
    return _percent(run), run["seed"]


def _pairs(first: list[Run], second: list[Run], key: Callable[[Run], Any]) -> list[tuple[Run, Run]]:
    by_key = {key(r): r for r in second}
    return [(r, by_key[key(r)]) for r in first if key(r) in by_key]


def _by_fraction(pairs: list[tuple[Run, Run]]) -> dict[float, list[tuple[Run, Run]]]:
    groups: dict[float, list[tuple[Run, Run]]] = {}
    for pair in pairs:
        groups.setdefault(_percent(pair[0]), []).append(pair)
    return dict(sorted(groups.items()))


def _label(percent: float) -> str:
    return f"{percent:g}%"


def _slug(percent: float) -> str:
    return f"x{percent:g}".replace(".", "_")


def _mean(values: Sequence[float]) -> float:
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
        if _missing(self.mean, self.se, self.df):
            return NAN, NAN
        half = float(sps.t.ppf(0.5 + confidence / 2, self.df) * self.se)
        return self.mean - half, self.mean + half

    @property
    def p(self) -> float:
        """Two-sided p of "no difference"."""
        if _missing(self.mean, self.se, self.df):
            return NAN
        if self.se == 0:
            return 1.0 if self.mean == 0 else 0.0
        return float(2 * sps.t.sf(abs(self.mean / self.se), self.df))

    def text(self, confidence: float = 1 - ALPHA, digits: int = 3) -> str:
        return fmt_interval(self.mean, *self.interval(confidence), digits)


def _t_gap(diffs: Sequence[float], what: str) -> Gap:
    values = np.asarray([d for d in diffs if not math.isnan(d)], dtype=float)
    if values.size >= 2:
        return Gap(float(values.mean()), float(values.std(ddof=1) / math.sqrt(values.size)), values.size - 1,
                   values.size, f"t over {values.size} {what}")
    if values.size == 1:
        return Gap(float(values[0]), NAN, NAN, 1, f"one {what.rstrip('s')}: no interval")
    return Gap(NAN, NAN, NAN, 0, "no comparable runs")


def _parts_gap(a: Sequence[float], b: Sequence[float], n_parts: int, seed: int) -> Gap:
    test = paired_t_test(a, b, n_parts=n_parts, seed=seed)
    return Gap(test["mean_diff"], test["se"], test["n_parts"] - 1, 1,
               f"one run pair: paired t over {test['n_parts']} question parts")


def paired_gap(pairs: Sequence[tuple[Run, Run]], acc_key: str, correct_key: str, *, n_parts: int = N_PARTS,
               seed: int = 0) -> Gap:
    """a − b over run pairs, by the rule in the module docstring (t over pairs; one pair: the paper's test)."""
    diffs = [_value(a, acc_key) - _value(b, acc_key) for a, b in pairs]
    if len(pairs) == 1 and all(r.get(correct_key) is not None for r in pairs[0]):
        return _parts_gap(pairs[0][0][correct_key], pairs[0][1][correct_key], n_parts, seed)
    if len(pairs) == 1 and not _missing(diffs[0]):
        return Gap(diffs[0], NAN, NAN, 1, "one run pair, no per-question results: no interval")
    return _t_gap(diffs, "paired runs")


def _direction_rows(gaps: Mapping[float, Gap], sign: int, alpha: float = ALPHA) -> list[dict[str, Any]]:
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
        if _missing(p_holm) or p_holm > alpha:
            verdict = NOT_SHOWN
        else:
            verdict = HOLDS if gap.mean * sign > 0 else CONTRADICTED
        rows.append({"label": _label(x), "slug": _slug(x), "estimate": gap.mean, "ci_low": low, "ci_high": high,
                     "confidence": confidence, "p": gap.p, "p_holm": p_holm, "n": gap.n, "method": gap.method,
                     "verdict": verdict})
    return rows


def _equivalence_rows(gaps: Mapping[float, Gap], margin: float, alpha: float = ALPHA) -> list[dict[str, Any]]:
    """One row per fraction: TOST at α/m, i.e. the (1 − 2α/m) interval inside ±margin."""
    confidence = 1 - 2 * alpha / max(1, len(gaps))
    rows = []
    for x, gap in gaps.items():
        low, high = gap.interval(confidence)
        rows.append({"label": _label(x), "slug": _slug(x), "estimate": gap.mean, "ci_low": low, "ci_high": high,
                     "confidence": confidence, "n": gap.n, "method": gap.method,
                     "verdict": equivalence_verdict(low, high, -margin, margin)})
    return rows


def _rows_text(rows: Sequence[Mapping[str, Any]], digits: int = 3) -> str:
    return ", ".join(f"{row['label']} {fmt_interval(row['estimate'], row['ci_low'], row['ci_high'], digits)}"
                     for row in rows)


# ---------------------------------------------------------------- gates


def _fit_gate(runs: Sequence[Run], threshold: float = FIT_GATE) -> str:
    """'' when every run fitted ``threshold`` of its train examples, else the reason naming those that did not."""
    short = [r for r in runs if not _value(r, "final_train_fit") >= threshold]
    if not short:
        return ""
    parts = [f"{_name(r)} {'fit not recorded' if _missing(_value(r, 'final_train_fit')) else _pct(r)}"
             for r in short]
    return f"not fitted: {', '.join(parts)} (CONVERGENCE needs ≥ {threshold:.0%})"


def _pct(run: Run) -> str:
    return f"{100 * _value(run, 'final_train_fit'):.1f}%"


def _late_drop(runs: Sequence[Run], early: str = "early_stop_acc", late: str = "convergence_acc") -> float:
    return _mean([_value(r, early) - _value(r, late) for r in runs])


def _control_gate(controls: Mapping[str, Sequence[Run]], margin: float = LATE_DROP_MARGIN) -> tuple[str, dict]:
    """'' when every control's mean EARLY_STOP → CONVERGENCE drop is within ``margin``, else the reason; and
    the drops (points lost, as fractions) per control mixture."""
    drops = {mixture: _late_drop(runs) for mixture, runs in controls.items() if runs}
    over = [f"{100 * drop:.1f} points ({mixture})" for mixture, drop in drops.items()
            if _missing(drop) or drop > margin]
    reason = f"control forgets {', '.join(over)}, more than {100 * margin:g}" if over else ""
    return reason, drops


def _step_gate(pairs: Sequence[tuple[Run, Run]]) -> str:
    """'' when every D_Known took its D's optimizer steps, else the reason."""
    unknown = [_name(k) for d, k in pairs if _missing(_value(d, "optimizer_steps"), _value(k, "optimizer_steps"))]
    if unknown:
        return f"optimizer steps not recorded ({', '.join(unknown[:3])}{', ...' if len(unknown) > 3 else ''})"
    unequal = [(d, k) for d, k in pairs if _value(d, "optimizer_steps") != _value(k, "optimizer_steps")]
    if not unequal:
        return ""
    d, k = unequal[0]
    return (f"D_Known not step-matched ({_name(k)}: {_steps_text(k)} vs {_steps_text(d)} for {_name(d)}; "
            "mixtures.known_only_steps: matched trains it with its D's steps)")


def _steps_text(run: Run) -> str:
    per_epoch = _value(run, "steps_per_epoch")
    total = f"{_value(run, 'optimizer_steps'):.0f} steps"
    return total if _missing(per_epoch) else f"{total}, {per_epoch:.0f} an epoch"


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
    evidence = (f"Unknown 50% fitted at epoch {fmt_interval(*u_ci, digits=1)} vs Known at epoch "
                f"{fmt_interval(*k_ci, digits=1)}: difference {fmt_interval(*d_ci, digits=1)} epochs "
                f"(t over {len(runs)} run(s){note})")
    return Finding("unknown_fitted_slower", "Unknown examples are fitted much more slowly than Known ones.",
                   direction_verdict(d_ci[1], d_ci[2], +1), evidence, numbers)


def _sweep(runs: list[Run]) -> tuple[list[Run], list[Run], list[tuple[Run, Run]]]:
    """(D runs, D runs with 0 < X < 1, their (D, D_Known) pairs by fraction and seed)."""
    d_runs = _of_kind(runs, "unknown_fraction")
    mixed = [r for r in d_runs if 0 < _value(r, "unknown_fraction") < 1]
    return d_runs, mixed, _pairs(mixed, _of_kind(runs, "known_only"), _fraction_key)


def _did_rows(d_runs: list[Run], mixed: list[Run], n_parts: int, seed: int) -> dict[float, Gap]:
    """Per fraction: (D_X − D_0) at CONVERGENCE minus (D_X − D_0) at EARLY_STOP, paired by seed."""
    zero = [r for r in d_runs if _value(r, "unknown_fraction") == 0]
    out = {}
    for x, pairs in _by_fraction(_pairs(mixed, zero, lambda r: r["seed"])).items():
        vectors = ("early_stop_correct", "convergence_correct")
        if len(pairs) == 1 and all(r.get(v) is not None for r in pairs[0] for v in vectors):
            (d, z), = pairs
            change = [np.asarray(r["convergence_correct"], float) - np.asarray(r["early_stop_correct"], float)
                      for r in (d, z)]
            out[x] = _parts_gap(change[0], change[1], n_parts, seed)
        else:
            out[x] = _t_gap([(_value(d, "convergence_acc") - _value(z, "convergence_acc"))
                             - (_value(d, "early_stop_acc") - _value(z, "early_stop_acc")) for d, z in pairs], "seeds")
    return out


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
    half = float(sps.t.ppf(1 - ALPHA / 2, len(points) - 2) * fit.stderr)
    return float(fit.slope), float(fit.slope) - half, float(fit.slope) + half, len(points)


def unknown_harms_at_convergence(summary: Mapping, *, n_parts: int = N_PARTS, seed: int = 0) -> Finding | None:
    """D − D_Known at CONVERGENCE, per fraction X (Holm over the fractions), decides: holds if D is below its
    step-matched D_Known at every X, contradicted if it is above at some X. Gates (module docstring): every
    compared run fitted (D_X, D_Known, D_0), D_Known step-matched, the controls' late drop (D_0, D_Known) within
    ``LATE_DROP_MARGIN``. Beside it, per X, the difference-in-differences against the 0% set, and the slopes of
    accuracy on the Unknown share at CONVERGENCE and at EARLY_STOP over the D runs (the paper: far steeper at
    CONVERGENCE); they do not decide (module docstring)."""
    runs = _runs(summary)
    d_runs, mixed, pairs = _sweep(runs)
    if not pairs and len({_value(r, "realised_unknown_fraction") for r in d_runs}) < 2:
        return None
    gaps = {x: paired_gap(p, "convergence_acc", "convergence_correct", n_parts=n_parts, seed=seed)
            for x, p in _by_fraction(pairs).items()}
    rows = _direction_rows(gaps, -1)
    did = _did_rows(d_runs, mixed, n_parts, seed)
    for row, x in zip(rows, gaps, strict=True):
        if x in did:
            low, high = did[x].interval()
            row.update(did=did[x].mean, did_ci_low=low, did_ci_high=high)
    zero = [r for r in d_runs if _value(r, "unknown_fraction") == 0]
    known_only = [k for _, k in pairs]
    controls = {"unknown_0": zero} | {k["mixture"]: [q for _, q in pairs if q["mixture"] == k["mixture"]]
                                      for k in known_only}
    gate_drop, drops = _control_gate(controls)
    reasons = [r for r in (_step_gate(pairs) if pairs else "no D_Known (mixtures.known_only: true adds it)",
                           _fit_gate(mixed + known_only + zero), gate_drop) if r]
    verdict = NOT_SHOWN if reasons else _all_rows([r["verdict"] for r in rows])
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
        parts.append(f"D − D_Known at CONVERGENCE ({method}, Holm over {len(rows)} fraction(s)): {_rows_text(rows)}")
    if did:
        parts.append(f"difference-in-differences against 0% (CONVERGENCE − EARLY_STOP): "
                     f"{', '.join(f'{_label(x)} {g.text()}' for x, g in did.items())}")
    if not _missing(slope[0]):
        parts.append(f"slope of accuracy on the Unknown share {fmt_interval(*slope[:3], digits=3)} at CONVERGENCE "
                     f"vs {fmt_interval(*slope_es[:3], digits=3)} at EARLY_STOP over {slope[3]} D run(s)")
    return Finding("unknown_harms_at_convergence",
                   "Test accuracy at CONVERGENCE falls as the share of Unknown fine-tuning examples rises "
                   "(D below D_Known, the same set without its Unknown examples).", verdict, "; ".join(parts),
                   numbers, tuple(rows))


def early_stop_neutral(summary: Mapping, *, margin: float = EARLY_STOP_MARGIN, n_parts: int = N_PARTS,
                       seed: int = 0) -> Finding | None:
    """The paper's "neutral early, harmful once fitted": holds if D − D_Known at EARLY_STOP lies within
    ±``margin`` at every X (TOST at α/m) AND ``unknown_harms_at_convergence`` holds; contradicted if D − D_Known
    at EARLY_STOP lies entirely outside the margin at some X (either side: Unknown examples that help early are
    not neutral either) or the harm at CONVERGENCE is contradicted. Needs a step-matched D_Known (module
    docstring). Equality at EARLY_STOP alone is not the finding: in a world where Unknown examples do nothing it
    is true at every epoch."""
    runs = _runs(summary)
    _, _, pairs = _sweep(runs)
    if not pairs:
        return None
    gaps = {x: paired_gap(p, "early_stop_acc", "early_stop_correct", n_parts=n_parts, seed=seed)
            for x, p in _by_fraction(pairs).items()}
    rows = _equivalence_rows(gaps, margin)
    harm = unknown_harms_at_convergence(summary, n_parts=n_parts, seed=seed)
    for row, harm_row in zip(rows, harm.rows, strict=True):
        row.update(convergence_gap=harm_row["estimate"], convergence_verdict=harm_row["verdict"])
    early = _all_rows([r["verdict"] for r in rows])
    step_reason = _step_gate(pairs)
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
        f"±{margin:.3f}): {_rows_text(rows)}",
        f"harmful once fitted (unknown_harms_at_convergence): {harm.verdict}"]))
    numbers = {"margin": margin, "n_fractions": float(len(rows))}
    return Finding("early_stop_neutral",
                   "At EARLY_STOP, D and D_Known are nearly equal: Unknown examples are neutral early and harmful "
                   "once fitted.", verdict, evidence, numbers, tuple(rows))


LINEAR_SPLITS = {"in_distribution": "test/acc/all", "ood": "ood/acc/all"}


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


def _linear(summary: Mapping) -> tuple[Mapping | None, Mapping | None]:
    linear = summary.get("linear") or {}
    fit = linear.get("in_distribution")
    if not fit or _missing(fit.get("beta_unk")):
        return None, None
    return fit, linear.get("in_distribution_steps")


def _beta_text(fit: Mapping, name: str, symbol: str) -> str:
    text = f"{symbol} {fmt_interval(fit[name], fit.get(f'{name}_ci_low', NAN), fit.get(f'{name}_ci_high', NAN), 3)}"
    ols = fmt_bounds(fit.get(f"{name}_ols_ci_low", NAN), fit.get(f"{name}_ols_ci_high", NAN), 3)
    return f"{text} (OLS t-interval {ols})" if ols else text


def _cluster_reason(fit: Mapping) -> str:
    clusters = int(fit.get("n_variants", 0))
    return (f"{clusters} variants: a verdict needs ≥ {MIN_CLUSTERS}, cluster-robust intervals over fewer are not "
            f"trusted" if clusters < MIN_CLUSTERS else "")


def _fit_note(fit: Mapping) -> str:
    return (f"CR2 over {int(fit.get('n_variants', 0))} variants, {int(fit.get('n', 0))} points, "
            f"R² {fit.get('r2', NAN):.2f}")


def beta_unk_negative(summary: Mapping) -> Finding | None:
    """β_unk below 0 in both in-distribution fits (without and with optimizer steps as a covariate), each by
    its CR2 interval; contradicted if both put it above 0. Needs ``MIN_CLUSTERS`` variants."""
    fit, timed = _linear(summary)
    if fit is None:
        return None
    keys = ("beta_unk", "beta_unk_ci_low", "beta_unk_ci_high", "beta_unk_ols_ci_low", "beta_unk_ols_ci_high",
            "beta_unk_df", "r2", "n", "n_variants")
    numbers = {k: float(fit.get(k, NAN)) for k in keys}
    plain = direction_verdict(fit.get("beta_unk_ci_low", NAN), fit.get("beta_unk_ci_high", NAN), -1)
    parts = [f"{_beta_text(fit, 'beta_unk', 'β_unk')}, {_fit_note(fit)}"]
    reasons = [r for r in (_cluster_reason(fit), "" if timed else "no fit with optimizer steps as a covariate "
                           "(the points carry no steps)") if r]
    with_steps = NOT_SHOWN
    if timed:
        numbers |= {f"steps/{k}": float(timed.get(k, NAN)) for k in ("beta_unk", "beta_unk_ci_low",
                                                                     "beta_unk_ci_high", "beta_steps",
                                                                     "beta_steps_ci_low", "beta_steps_ci_high")}
        with_steps = direction_verdict(timed.get("beta_unk_ci_low", NAN), timed.get("beta_unk_ci_high", NAN), -1)
        steps = fmt_interval(timed.get("beta_steps", NAN), timed.get("beta_steps_ci_low", NAN),
                             timed.get("beta_steps_ci_high", NAN), 3)
        parts.append(f"with optimizer steps as a covariate {_beta_text(timed, 'beta_unk', 'β_unk')} "
                     f"(per 100 steps {steps})")
    verdict = NOT_SHOWN if reasons else _both(plain, with_steps)
    return Finding("beta_unk_negative",
                   "Fitting Unknown examples lowers test accuracy: β_unk < 0 in accuracy = β0 + β_kn·N_kn/|D| + "
                   "β_unk·N_unk/|D| (paper: β_unk −8.3 points), also with training time held fixed.",
                   verdict, "; ".join(reasons + parts), numbers)


def _ratio_verdict(fit: Mapping, bounds: tuple[float, float]) -> Verdict:
    verdict = equivalence_verdict(fit.get("unk_kn_ratio_ci_low", NAN), fit.get("unk_kn_ratio_ci_high", NAN), *bounds)
    if verdict == HOLDS and not fit.get("beta_kn_ci_low", NAN) > 0:
        return NOT_SHOWN
    return verdict


def _ratio_text(fit: Mapping) -> str:
    ratio = fit.get("unk_kn_ratio", NAN)
    low, high = fit.get("unk_kn_ratio_ci_low", NAN), fit.get("unk_kn_ratio_ci_high", NAN)
    if _missing(low, high) and not _missing(ratio):
        return f"−β_unk/β_kn {ratio:.2f} (interval unbounded: β_kn is not distinguishable from 0)"
    return f"−β_unk/β_kn {fmt_interval(ratio, low, high, 2)}"


def beta_kn_comparable(summary: Mapping, *, bounds: tuple[float, float] = RATIO_BOUNDS) -> Finding | None:
    """|β_unk| ≈ β_kn as an equivalence claim on the ratio r = −β_unk/β_kn (Fieller interval on the CR2
    covariance), in both fits (without and with optimizer steps): holds if in both β_kn's interval is above 0
    and r's interval lies within ``bounds`` (a factor of two either way; the paper's 8.3/7.3 = 1.14);
    contradicted if in both r's interval lies entirely outside ``bounds`` (one effect is more than twice the
    other, or they have the same sign); otherwise not shown. A ratio, not β_kn + β_unk covering 0: an interval
    that merely covers 0 is absence of evidence, not evidence of equality."""
    fit, timed = _linear(summary)
    if fit is None or _missing(fit.get("beta_kn")):
        return None
    keys = ("beta_kn", "beta_kn_ci_low", "beta_kn_ci_high", "beta_unk", "beta_unk_ci_low", "beta_unk_ci_high",
            "unk_kn_ratio", "unk_kn_ratio_ci_low", "unk_kn_ratio_ci_high", "beta_kn_plus_unk",
            "beta_kn_plus_unk_ci_low", "beta_kn_plus_unk_ci_high")
    numbers = {k: float(fit.get(k, NAN)) for k in keys} | {"ratio_lower": bounds[0], "ratio_upper": bounds[1]}
    reasons = [r for r in (_cluster_reason(fit), "" if timed else "no fit with optimizer steps as a covariate") if r]
    parts = [f"{_ratio_text(fit)} (comparable within [{bounds[0]:g}, {bounds[1]:g}]); "
             f"{_beta_text(fit, 'beta_kn', 'β_kn')}; {_beta_text(fit, 'beta_unk', 'β_unk')}"]
    with_steps = NOT_SHOWN
    if timed:
        numbers |= {f"steps/{k}": float(timed.get(k, NAN)) for k in keys}
        with_steps = _ratio_verdict(timed, bounds)
        parts.append(f"with optimizer steps as a covariate {_ratio_text(timed)}, "
                     f"{_beta_text(timed, 'beta_kn', 'β_kn')}")
    verdict = NOT_SHOWN if reasons else _both(_ratio_verdict(fit, bounds), with_steps)
    return Finding("beta_kn_comparable",
                   "An Unknown example fitted hurts about as much as a Known example fitted helps: |β_unk| ≈ β_kn "
                   "(paper: β_kn 7.3, β_unk −8.3 points).", verdict, "; ".join(reasons + parts), numbers)


def maybe_known_best(summary: Mapping, *, n_parts: int = N_PARTS, seed: int = 0) -> Finding | None:
    """D_MaybeKnown against every other single-category set at CONVERGENCE, paired by seed: holds if it is
    significantly better than D_HighlyKnown and significantly worse than none; contradicted if some other
    single-category set is significantly better; otherwise not shown. Only sets fitted ≥ ``FIT_GATE`` at their
    last epoch are judged (the others are named); D_MaybeKnown and D_HighlyKnown must be. D_Natural is
    reported, not judged (it is not a single-category set). EARLY_STOP gaps are reported too."""
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
        for key, gap in ((f"gap_{name}", gaps[name]), (f"early_stop/gap_{name}", early)):
            low, high = gap.interval()
            numbers |= {key: gap.mean, f"{key}_ci_low": low, f"{key}_ci_high": high, f"{key}_n_pairs": float(gap.n)}
    judged = {c: g for c, g in gaps.items() if c != "Natural"}
    if "HighlyKnown" not in judged:
        return None
    unfitted = {c for c in judged if _fit_gate(by_category[c])}
    key_reason = _fit_gate(maybe + by_category["HighlyKnown"])
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


def idk_removes_late_drop(summary: Mapping, *, margin: float = LATE_DROP_MARGIN, n_parts: int = N_PARTS,
                          seed: int = 0) -> Finding | None:
    """The IDK variant's own late drop (EARLY_STOP → CONVERGENCE of its accuracy on the questions it answered)
    against D's (same X, same seed): holds if D's drop minus IDK's is above 0 (t over seeds; one seed: the
    paired bootstrap over questions) AND IDK's own mean drop is within ``margin``
    ("removes", not only "reduces"); contradicted if IDK drops significantly more than D. Both runs must be
    fitted ≥ ``FIT_GATE``. IDK's accuracy on answered questions against D's accuracy is not the test: abstaining
    on what it does not know raises it whether or not anything drops; it is reported beside, with the answered
    fraction (the cost)."""
    runs = _runs(summary)
    pairs = _pairs(_of_kind(runs, "idk_relabel"), _of_kind(runs, "unknown_fraction"), _fraction_key)
    if not pairs:
        return None
    drop_idk = [_value(i, "early_stop_acc_answered") - _value(i, "convergence_acc_answered") for i, _ in pairs]
    drop_d = [_value(d, "early_stop_acc") - _value(d, "convergence_acc") for _, d in pairs]
    one = pairs[0]
    vectors = ("early_stop_correct", "convergence_correct")
    if (len(pairs) == 1 and all(one[1].get(v) is not None for v in vectors)
            and all(one[0].get(v) is not None for v in (*vectors, "early_stop_answered", "convergence_answered"))):
        idk, plain = one
        mean, low, high = late_drop_gap_ci(plain["early_stop_correct"], plain["convergence_correct"],
                                           idk["early_stop_correct"], idk["early_stop_answered"],
                                           idk["convergence_correct"], idk["convergence_answered"], seed=seed)
        drop_idk = [_precision(idk["early_stop_correct"], idk["early_stop_answered"])
                    - _precision(idk["convergence_correct"], idk["convergence_answered"])]
        drop_d = [float(np.mean(plain["early_stop_correct"]) - np.mean(plain["convergence_correct"]))]
        n, method = 1, "one seed: paired bootstrap over questions"
    else:
        gap = _t_gap([d - i for d, i in zip(drop_d, drop_idk, strict=True)], "seeds")
        (low, high), mean, n, method = gap.interval(), gap.mean, gap.n, gap.method
    idk_runs, plain_runs = [i for i, _ in pairs], [d for _, d in pairs]
    idk_drop, d_drop = _mean(drop_idk), _mean(drop_d)
    reason = _fit_gate(idk_runs + plain_runs)
    verdict = direction_verdict(low, high, +1)
    if reason:
        verdict = NOT_SHOWN
    elif verdict == HOLDS and not idk_drop <= margin:
        verdict, reason = NOT_SHOWN, f"IDK still loses {100 * idk_drop:.1f} points (more than {100 * margin:g})"

    def mean_of(items: list[Run], key: str) -> float:
        return _mean([_value(r, key) for r in items])

    precision_gap = _t_gap([_value(i, "convergence_acc_answered") - _value(d, "convergence_acc") for i, d in pairs],
                           "seeds")
    if len(pairs) == 1 and all(v is not None for v in (one[0].get("convergence_correct"),
                                                        one[0].get("convergence_answered"),
                                                        one[1].get("convergence_correct"))):
        p_gap, p_low, p_high = precision_gap_ci(one[0]["convergence_correct"], one[0]["convergence_answered"],
                                                one[1]["convergence_correct"], seed=seed)
    else:
        p_gap, (p_low, p_high) = precision_gap.mean, precision_gap.interval()
    numbers = {"late_drop_gap_d_minus_idk": mean, "late_drop_gap_d_minus_idk_ci_low": low,
               "late_drop_gap_d_minus_idk_ci_high": high, "n_pairs": float(n), "idk_late_drop": idk_drop,
               "d_late_drop": d_drop, "margin": margin,
               "idk_early_stop_acc_answered": mean_of(idk_runs, "early_stop_acc_answered"),
               "idk_convergence_acc_answered": mean_of(idk_runs, "convergence_acc_answered"),
               "idk_convergence_answered_fraction": mean_of(idk_runs, "convergence_answered_fraction"),
               "d_early_stop_acc": mean_of(plain_runs, "early_stop_acc"),
               "d_convergence_acc": mean_of(plain_runs, "convergence_acc"),
               "precision_gap_idk_minus_d": p_gap, "precision_gap_idk_minus_d_ci_low": p_low,
               "precision_gap_idk_minus_d_ci_high": p_high}
    x = _label(_percent(pairs[0][0]))
    evidence = "; ".join(filter(None, [
        reason,
        f"late drop (EARLY_STOP → CONVERGENCE) of D_{x} minus IDK's on answered questions "
        f"{fmt_interval(mean, low, high, 3)} ({method}): D {numbers['d_early_stop_acc']:.3f} → "
        f"{numbers['d_convergence_acc']:.3f}, IDK {numbers['idk_early_stop_acc_answered']:.3f} → "
        f"{numbers['idk_convergence_acc_answered']:.3f}",
        f"at CONVERGENCE IDK answers {numbers['idk_convergence_answered_fraction']:.0%} of questions, its accuracy "
        f"on them minus D's {fmt_interval(p_gap, p_low, p_high, 3)}"]))
    return Finding("idk_removes_late_drop",
                   "Relabelling Unknown examples as \"I don't know\" removes the late drop in accuracy (on the "
                   "questions answered), at the cost of answering fewer questions.", verdict, evidence, numbers)


def evaluate_findings(summary: Mapping, *, margin: float = EARLY_STOP_MARGIN,
                      ratio_bounds: tuple[float, float] = RATIO_BOUNDS, n_parts: int = N_PARTS,
                      seed: int = 0) -> list[Finding]:
    """Every finding whose inputs the suite has, in the paper's order."""
    candidates = [
        unknown_fitted_slower(summary),
        unknown_harms_at_convergence(summary, n_parts=n_parts, seed=seed),
        early_stop_neutral(summary, margin=margin, n_parts=n_parts, seed=seed),
        beta_unk_negative(summary),
        beta_kn_comparable(summary, bounds=ratio_bounds),
        maybe_known_best(summary, n_parts=n_parts, seed=seed),
        idk_removes_late_drop(summary, n_parts=n_parts, seed=seed),
    ]
    return [f for f in candidates if f is not None]
