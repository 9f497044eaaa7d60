"""Each of the paper's findings on constructed summaries: one that holds, one not shown, one contradicted, and
every precondition (fit, step matching, the control's late drop, clusters) failing with its reason."""

import json
import math

import numpy as np
import polars as pl
import pytest

from benchmark.analyse.findings import (
    CONTRADICTED,
    HOLDS,
    NOT_SHOWN,
    Finding,
    FindingOptions,
    FindingsInput,
    beta_kn_comparable,
    beta_unk_negative,
    direction_verdict,
    early_stop_neutral,
    equivalence_verdict,
    evaluate_findings,
    idk_removes_late_drop,
    linear_fits,
    maybe_known_best,
    unknown_fitted_slower,
    unknown_harms_at_convergence,
)

STEPS = 220  # |D| = 174 at batch 16: 11 steps an epoch, 20 epochs


def given(summary: dict | None = None, **fields) -> FindingsInput:
    """What the findings judge, from a mapping of its fields (as ``evaluate_findings`` validates one)."""
    return FindingsInput.model_validate({**(summary or {}), **fields})


def run(mixture: str, kind: str, seed: int = 0, **fields) -> dict:
    return {"variant": f"{mixture}_seed{seed}", "mixture": mixture, "kind": kind, "seed": seed,
            "final_train_fit": 1.0, "optimizer_steps": STEPS, "steps_per_epoch": 11, **fields}


def sweep(gaps: dict[float, list[float]], *, stage: str = "convergence", known: float = 0.30,
          other_gap: float = 0.0, control_drop: float = 0.005) -> list[dict]:
    """D_0, and D_X with D_Known_X for every X in ``gaps``: D − D_Known at ``stage`` is gaps[X][seed]; at the
    other stage D − D_Known is ``other_gap``. Every control (D_0, D_Known) loses ``control_drop`` from EARLY_STOP
    to CONVERGENCE."""
    rest = "early_stop" if stage == "convergence" else "convergence"
    seeds = len(next(iter(gaps.values())))
    late = known - control_drop
    level = {"early_stop": known, "convergence": late}
    runs = [run("unknown_0", "unknown_fraction", s, unknown_fraction=0.0, realised_unknown_fraction=0.0,
                early_stop_acc=known, convergence_acc=late) for s in range(seeds)]
    for x, values in gaps.items():
        name = f"unknown_{round(x * 100)}"
        for seed, gap in enumerate(values):
            runs.append(run(name, "unknown_fraction", seed, unknown_fraction=x, realised_unknown_fraction=x,
                            **{f"{stage}_acc": level[stage] + gap, f"{rest}_acc": level[rest] + other_gap}))
            runs.append(run(f"{name}_known_only", "known_only", seed, unknown_fraction=x, realised_unknown_fraction=0.0,
                            early_stop_acc=known, convergence_acc=late))
    return runs


HARMED = {0.25: [-0.02, -0.025, -0.022], 0.5: [-0.04, -0.045, -0.042], 0.75: [-0.06, -0.065, -0.061]}


# ---------------------------------------------------------------- verdict rules


def test_verdict_rules():
    assert direction_verdict(0.1, 0.2, +1) == HOLDS
    assert direction_verdict(-0.2, -0.1, +1) == CONTRADICTED
    assert direction_verdict(-0.1, 0.1, +1) == NOT_SHOWN
    assert direction_verdict(-0.2, -0.1, -1) == HOLDS
    assert direction_verdict(0.0, 0.1, -1) == NOT_SHOWN  # touching the null does not exclude it
    assert direction_verdict(float("nan"), float("nan"), -1) == NOT_SHOWN
    assert equivalence_verdict(-0.01, 0.01, -0.02, 0.02) == HOLDS
    assert equivalence_verdict(-0.05, -0.03, -0.02, 0.02) == CONTRADICTED
    assert equivalence_verdict(0.03, 0.05, -0.02, 0.02) == CONTRADICTED
    assert equivalence_verdict(-0.03, 0.0, -0.02, 0.02) == NOT_SHOWN


# ---------------------------------------------------------------- fitting speed


def fitting_run(mixture: str, seed: int, known: float | None, unknown: float | None, epochs: int = 10) -> dict:
    return run(mixture, "unknown_fraction", seed, n_train_known=50, n_train_unknown=50, epochs_trained=epochs,
               fit_epochs_known=known, fit_epochs_unknown=unknown)


def test_unknown_fitted_slower_holds():
    summary = {"runs": [fitting_run("unknown_25", 0, 2, 7), fitting_run("unknown_50", 0, 2, 6),
                        fitting_run("unknown_75", 0, 2, 8)]}
    finding = unknown_fitted_slower(given(summary))
    assert finding.verdict == HOLDS
    assert finding.numbers["difference"] == 5.0 and finding.numbers["difference_ci_low"] > 0
    assert finding.numbers["known_epochs_ci_low"] == finding.numbers["known_epochs_ci_high"] == 2.0
    assert finding.numbers["difference/unknown_50"] == 4.0
    assert "Unknown 50% fitted at epoch 7.0 [" in finding.evidence
    assert "Known at epoch 2.0 [2.0, 2.0]" in finding.evidence


def test_unknown_fitted_slower_contradicted_and_not_shown():
    faster = {"runs": [fitting_run("a", 0, 7, 2), fitting_run("b", 0, 6, 2), fitting_run("c", 0, 8, 2)]}
    assert unknown_fitted_slower(given(faster)).verdict == CONTRADICTED
    mixed = {"runs": [fitting_run("a", 0, 2, 5), fitting_run("b", 0, 5, 2), fitting_run("c", 0, 3, 4)]}
    assert unknown_fitted_slower(given(mixed)).verdict == NOT_SHOWN
    single = unknown_fitted_slower(given(runs=[fitting_run("a", 0, 2, 9)]))
    # Parentheses, not brackets: a rich console swallowed "[no interval]" as markup ("epoch 4.0  vs").
    assert single.verdict == NOT_SHOWN and "9.0 (no interval) vs Known at epoch 2.0 (no interval)" in single.evidence


def test_unknown_never_fitted_counts_as_one_epoch_past_training():
    summary = {"runs": [fitting_run("a", 0, 2, None, epochs=10), fitting_run("b", 0, 2, float("nan"), epochs=10),
                        fitting_run("c", 0, 3, 9, epochs=10)]}
    finding = unknown_fitted_slower(given(summary))
    assert finding.numbers["unknown_epochs"] == pytest.approx((11 + 11 + 9) / 3)
    assert finding.numbers["n_unknown_never_fitted"] == 2
    assert "counted as epochs trained + 1" in finding.evidence
    assert finding.verdict == HOLDS


def test_unknown_fitted_slower_needs_runs_with_both_categories():
    only_single = {"runs": [run("Unknown", "single_category", n_train_known=0, n_train_unknown=100,
                                epochs_trained=10, fit_epochs_unknown=5),
                            run("idk_unknown_50", "idk_relabel", n_train_known=50, n_train_unknown=50,
                                epochs_trained=10, fit_epochs_known=2, fit_epochs_unknown=5)]}
    assert unknown_fitted_slower(given(only_single)) is None
    assert unknown_fitted_slower(given()) is None


# ---------------------------------------------------------------- harm at convergence


def test_unknown_harms_holds_per_fraction_with_holm():
    finding = unknown_harms_at_convergence(given(runs=sweep(HARMED)))
    assert finding.verdict == HOLDS
    assert [r["label"] for r in finding.rows] == ["25%", "50%", "75%"]
    assert all(r["verdict"] == HOLDS and r["ci_high"] < 0 and r["p_holm"] <= 0.05 for r in finding.rows)
    assert finding.rows[0]["estimate"] == pytest.approx(-0.067 / 3)
    # Holm: the smallest p is tested at α/3, the next at α/2, the largest at α.
    assert sorted(r["confidence"] for r in finding.rows) == pytest.approx([0.95, 1 - 0.05 / 2, 1 - 0.05 / 3])
    assert "Holm over 3 fraction(s)): 25% -0.022 [" in finding.evidence
    # The difference-in-differences against the 0% set is reported beside each row.
    assert finding.rows[1]["did"] == pytest.approx(finding.rows[1]["estimate"])
    assert "difference-in-differences against 0%" in finding.evidence


def test_unknown_harms_holm_correction_decides():
    """Three fractions each at p ≈ 0.026: every uncorrected 95% interval excludes 0, but Holm tests the smallest
    p at α/3, so the claim about every fraction is not shown."""
    diffs = [-0.02, -0.035, -0.025]
    finding = unknown_harms_at_convergence(given(runs=sweep({0.25: diffs, 0.5: diffs, 0.75: diffs})))
    assert all(0.0167 < r["p"] < 0.05 for r in finding.rows)
    assert finding.verdict == NOT_SHOWN and all(r["verdict"] == NOT_SHOWN for r in finding.rows)
    # Every row's interval is at the level of the step where Holm stopped, so none excludes 0 either.
    assert all(r["ci_high"] > 0 and r["confidence"] == pytest.approx(1 - 0.05 / 3) for r in finding.rows)


def test_unknown_harms_every_fraction_must_pass():
    """The issue's case: pooled over X the gap looks clear, but at 25% the seeds disagree."""
    noisy = {**HARMED, 0.25: [0.01, -0.03, 0.015]}
    finding = unknown_harms_at_convergence(given(runs=sweep(noisy)))
    assert finding.verdict == NOT_SHOWN
    assert [r["verdict"] for r in finding.rows] == [NOT_SHOWN, HOLDS, HOLDS]
    pooled = [d for values in noisy.values() for d in values]
    assert np.mean(pooled) < 0 and np.mean(pooled) + 2.3 * np.std(pooled, ddof=1) / 3 < 0  # what pooling said


def test_unknown_harms_contradicted_when_one_fraction_rises():
    rising = {**HARMED, 0.75: [0.04, 0.045, 0.041]}
    finding = unknown_harms_at_convergence(given(runs=sweep(rising)))
    assert finding.verdict == CONTRADICTED and finding.rows[2]["verdict"] == CONTRADICTED


def test_unknown_harms_gate_step_matching():
    runs = sweep(HARMED)
    for r in runs:
        if r["mixture"] == "unknown_75_known_only":
            r.update(optimizer_steps=60, steps_per_epoch=3)
    finding = unknown_harms_at_convergence(given(runs=runs))
    assert finding.verdict == NOT_SHOWN
    assert ("D_Known not step-matched (unknown_75_known_only_seed0: 60 steps, 3 an epoch vs 220 steps, 11 an "
            "epoch for unknown_75_seed0") in finding.evidence
    assert all(r["verdict"] == HOLDS for r in finding.rows)  # the numbers are still reported, they do not decide
    for r in runs:
        r.pop("optimizer_steps")
    assert "optimizer steps not recorded" in unknown_harms_at_convergence(given(runs=runs)).evidence


def test_unknown_harms_gate_fit():
    runs = sweep(HARMED)
    for r in runs:
        if r["variant"] == "unknown_75_seed1":
            r["final_train_fit"] = 0.66
        if r["variant"] == "unknown_25_known_only_seed2":
            r["final_train_fit"] = None
    finding = unknown_harms_at_convergence(given(runs=runs))
    assert finding.verdict == NOT_SHOWN
    assert finding.evidence.startswith("not fitted: unknown_75_seed1 66.0%, unknown_25_known_only_seed2 fit not "
                                       "recorded (CONVERGENCE needs ≥ 99%)")


def test_unknown_harms_gate_control_forgets():
    finding = unknown_harms_at_convergence(given(runs=sweep(HARMED, control_drop=0.054)))
    assert finding.verdict == NOT_SHOWN
    assert "control forgets 5.4 points (unknown_0), 5.4 points (unknown_25_known_only)" in finding.evidence
    assert finding.numbers["control_drop/unknown_0"] == pytest.approx(0.054)
    assert unknown_harms_at_convergence(given(runs=sweep(HARMED, control_drop=0.019))).verdict == HOLDS


def test_unknown_harms_with_one_pair_uses_the_papers_per_question_test():
    rng = np.random.default_rng(0)
    known_only = rng.random(1000) < 0.3
    d = known_only & (rng.random(1000) < 0.7)  # D loses ~30% of what D_Known gets right
    runs = sweep({0.5: [d.mean() - 0.3]})
    d_run, k_run = runs[1], runs[2]
    d_run["convergence_correct"], k_run["convergence_correct"] = d.tolist(), known_only.tolist()
    finding = unknown_harms_at_convergence(given(runs=runs))
    assert finding.verdict == HOLDS and "100 question parts" in finding.evidence
    assert finding.rows[0]["estimate"] == pytest.approx(d.mean() - known_only.mean())
    d_run["convergence_correct"] = known_only.tolist()
    assert unknown_harms_at_convergence(given(runs=runs)).verdict == NOT_SHOWN


def test_unknown_harms_without_d_known_is_not_shown_and_reports_the_slope():
    rng = np.random.default_rng(1)
    runs = [run(f"unknown_{round(x * 100)}", "unknown_fraction", seed, unknown_fraction=x,
                realised_unknown_fraction=x, convergence_acc=0.3 - 0.15 * x + rng.normal(0, 0.01),
                early_stop_acc=0.35 - 0.02 * x + rng.normal(0, 0.01))
            for x in (0.0, 0.25, 0.5, 0.75, 1.0) for seed in (0, 1)]
    finding = unknown_harms_at_convergence(given(runs=runs))
    # A slope over D runs compares sets with fewer Known examples too: it is reported, it does not decide.
    assert finding.verdict == NOT_SHOWN and "no D_Known" in finding.evidence
    assert finding.numbers["slope"] == pytest.approx(-0.15, abs=0.03) and finding.numbers["slope_ci_high"] < 0
    assert finding.numbers["early_stop_slope"] > finding.numbers["slope"]


def test_unknown_harms_absent_without_a_sweep():
    assert unknown_harms_at_convergence(given(runs=[run("MaybeKnown", "single_category", convergence_acc=0.3)])) is None


# ---------------------------------------------------------------- early stop


def test_early_stop_neutral_needs_equality_early_and_harm_late():
    early = {x: [0.001, -0.002, 0.0005] for x in HARMED}
    runs = sweep(early, stage="early_stop")
    for r in runs:  # and the harm at CONVERGENCE of HARMED
        if r["kind"] == "unknown_fraction" and r["unknown_fraction"] in HARMED:
            r["convergence_acc"] = 0.295 + HARMED[r["unknown_fraction"]][r["seed"]]
    finding = early_stop_neutral(given(runs=runs))
    assert finding.verdict == HOLDS
    assert all(r["verdict"] == HOLDS for r in finding.rows)
    assert finding.rows[0]["confidence"] == pytest.approx(1 - 2 * 0.05 / 3)  # TOST at α/3
    assert finding.rows[2]["convergence_gap"] == pytest.approx(np.mean(HARMED[0.75]))
    assert "TOST at α/3" in finding.evidence and "harmful once fitted (unknown_harms_at_convergence): holds" in \
        finding.evidence
    # Equal early and equal late: Unknown examples that do nothing are not "neutral early, harmful once fitted".
    inert = early_stop_neutral(given(runs=sweep(early, stage="early_stop")))
    assert inert.verdict == NOT_SHOWN and all(r["verdict"] == HOLDS for r in inert.rows)


def test_early_stop_neutral_contradicted_and_not_shown():
    harmed = early_stop_neutral(given(runs=sweep({0.5: [-0.06, -0.05, -0.055]}, stage="early_stop")))
    assert harmed.verdict == CONTRADICTED
    noisy = early_stop_neutral(given(runs=sweep({0.5: [-0.03, 0.0, 0.01]}, stage="early_stop")))
    assert noisy.verdict == NOT_SHOWN and noisy.rows[0]["verdict"] == NOT_SHOWN
    wide = early_stop_neutral(given(runs=sweep({0.5: [-0.03, 0.0, 0.01]}, stage="early_stop")),
                              FindingOptions(early_stop_margin=0.5))
    assert wide.rows[0]["verdict"] == HOLDS
    unmatched = sweep({0.5: [-0.06, -0.05, -0.055]}, stage="early_stop")
    next(r for r in unmatched if r["kind"] == "known_only")["optimizer_steps"] = 120
    assert early_stop_neutral(given(runs=unmatched)).verdict == NOT_SHOWN
    assert early_stop_neutral(given(runs=sweep({0.5: [0.0]})[:2])) is None


# ---------------------------------------------------------------- linear model


def linear_points(beta_kn: float, beta_unk: float, seed: int = 0, variants: int = 12,
                  forgetting: float = 0.0) -> pl.DataFrame:
    """Points from known β's; ``forgetting`` lowers accuracy with the steps taken, which grow with N_unk."""
    rng = np.random.default_rng(seed)
    rows = []
    for v in range(variants):
        unknown_share = [0.0, 0.25, 0.5, 0.75][v % 4]
        offset = rng.normal(0, 0.005)
        for epoch in range(1, 11):
            kn = (1 - unknown_share) * min(1.0, 0.4 * epoch)
            unk = unknown_share * min(1.0, rng.uniform(0.05, 0.15) * epoch)
            steps = 11 * epoch
            rows.append({"variant": f"v{v}", "epoch": epoch, "known_fitted_share": kn, "unknown_fitted_share": unk,
                         "steps": steps, "test/acc/all": 0.37 + beta_kn * kn + beta_unk * unk + offset
                         - forgetting * steps / 110 + rng.normal(0, 0.003)})
    return pl.DataFrame(rows)


def linear_summary(beta_kn: float, beta_unk: float, **kwargs) -> dict:
    return {"runs": [], "linear": linear_fits(linear_points(beta_kn, beta_unk, **kwargs))}


def test_beta_unk_negative_needs_both_fits():
    holds = beta_unk_negative(given(linear_summary(0.073, -0.083)))
    assert holds.verdict == HOLDS and holds.numbers["beta_unk_ci_high"] < 0
    assert holds.numbers["steps/beta_unk_ci_high"] < 0
    assert "CR2 over 12 variants" in holds.evidence and "OLS t-interval [" in holds.evidence
    assert "with optimizer steps as a covariate β_unk" in holds.evidence
    assert beta_unk_negative(given(linear_summary(0.073, 0.083))).verdict == CONTRADICTED
    # Forgetting with steps and no Unknown effect: the plain fit blames Unknown examples, the second does not.
    timed = linear_summary(0.073, 0.0, forgetting=0.05)
    assert timed["linear"]["in_distribution"]["beta_unk_ci_high"] < 0
    assert beta_unk_negative(given(timed)).verdict == NOT_SHOWN
    unclear = {"linear": {"in_distribution": {"beta_unk": -0.01, "beta_unk_ci_low": -0.05,
                                              "beta_unk_ci_high": 0.03, "n_variants": 12}}}
    assert beta_unk_negative(given(unclear)).verdict == NOT_SHOWN
    assert beta_unk_negative(given(runs=[])) is None
    assert beta_unk_negative(given(linear={"ood": {"beta_unk": -0.1}})) is None


def test_beta_findings_need_ten_variants():
    few = linear_summary(0.073, -0.083, variants=8)
    assert few["linear"]["in_distribution"]["beta_unk_ci_high"] < 0  # the interval alone would say holds
    for finding in (beta_unk_negative(given(few)), beta_kn_comparable(given(few))):
        assert finding.verdict == NOT_SHOWN
        assert finding.evidence.startswith("8 variants: a verdict needs ≥ 10")


def test_beta_findings_without_steps_are_not_shown():
    plain = linear_summary(0.073, -0.083)
    del plain["linear"]["in_distribution_steps"]
    assert beta_unk_negative(given(plain)).verdict == NOT_SHOWN and "no fit with optimizer steps" in \
        beta_unk_negative(given(plain)).evidence


def test_beta_kn_comparable():
    holds = beta_kn_comparable(given(linear_summary(0.073, -0.083)))
    assert holds.verdict == HOLDS
    assert 0.5 <= holds.numbers["unk_kn_ratio_ci_low"] <= holds.numbers["unk_kn_ratio_ci_high"] <= 2
    far_stronger = beta_kn_comparable(given(linear_summary(0.05, -0.4)))
    assert far_stronger.verdict == CONTRADICTED and far_stronger.numbers["unk_kn_ratio_ci_low"] > 2
    assert beta_kn_comparable(given(linear_summary(0.073, 0.083))).verdict == CONTRADICTED
    fit = {"n_variants": 12, "beta_kn": 0.07, "beta_kn_ci_low": 0.02, "beta_kn_ci_high": 0.1, "beta_unk": -0.08,
           "unk_kn_ratio": 1.1, "unk_kn_ratio_ci_low": 0.3, "unk_kn_ratio_ci_high": 1.6}
    unclear = {"linear": {"in_distribution": fit, "in_distribution_steps": dict(fit)}}
    assert beta_kn_comparable(given(unclear)).verdict == NOT_SHOWN
    # A ratio inside the bounds is not enough when β_kn itself is not shown to be positive.
    for key in ("in_distribution", "in_distribution_steps"):
        unclear["linear"][key].update(unk_kn_ratio_ci_low=0.8, beta_kn_ci_low=-0.01)
    assert beta_kn_comparable(given(unclear)).verdict == NOT_SHOWN
    for key in ("in_distribution", "in_distribution_steps"):
        unclear["linear"][key]["beta_kn_ci_low"] = 0.01
    assert beta_kn_comparable(given(unclear)).verdict == HOLDS
    unclear["linear"]["in_distribution_steps"].update(unk_kn_ratio_ci_low=float("nan"),
                                                      unk_kn_ratio_ci_high=float("nan"))
    finding = beta_kn_comparable(given(unclear))
    assert finding.verdict == NOT_SHOWN and "interval unbounded" in finding.evidence


# ---------------------------------------------------------------- single-category sets


def single_runs(accuracies: dict[str, list[float]], fit: dict[str, float] | None = None) -> list[dict]:
    return [run(category if category != "Natural" else "natural",
                "natural" if category == "Natural" else "single_category", seed,
                category=None if category == "Natural" else category, convergence_acc=acc, early_stop_acc=acc + 0.02,
                final_train_fit=(fit or {}).get(category, 1.0))
            for category, values in accuracies.items() for seed, acc in enumerate(values)]


def test_maybe_known_best_holds():
    summary = {"runs": single_runs({"HighlyKnown": [0.35, 0.37, 0.34], "MaybeKnown": [0.40, 0.41, 0.39],
                                    "WeaklyKnown": [0.30, 0.33, 0.31], "Unknown": [0.20, 0.22, 0.19],
                                    "Natural": [0.39, 0.42, 0.38]})}
    finding = maybe_known_best(given(summary))
    assert finding.verdict == HOLDS
    assert finding.numbers["gap_HighlyKnown"] == pytest.approx(0.04667, abs=1e-4)
    assert "gap_Natural" in finding.numbers and "early_stop/gap_Unknown" in finding.numbers
    assert finding.evidence.startswith("D_MaybeKnown at CONVERGENCE − HighlyKnown 0.047 [")


def test_maybe_known_best_contradicted_and_not_shown():
    highly_better = {"runs": single_runs({"HighlyKnown": [0.45, 0.46, 0.44], "MaybeKnown": [0.40, 0.41, 0.39],
                                          "Unknown": [0.20, 0.22, 0.19]})}
    finding = maybe_known_best(given(highly_better))
    assert finding.verdict == CONTRADICTED and "significantly better: HighlyKnown" in finding.evidence
    weakly = {"HighlyKnown": [0.35, 0.37, 0.34], "MaybeKnown": [0.40, 0.41, 0.39], "WeaklyKnown": [0.45, 0.47, 0.46]}
    assert maybe_known_best(given(runs=single_runs(weakly))).verdict == CONTRADICTED
    # A set that was not fitted by its last epoch is not judged at CONVERGENCE (and is named).
    unfitted = maybe_known_best(given(runs=single_runs(weakly, fit={"WeaklyKnown": 0.9})))
    assert unfitted.verdict == HOLDS and "not judged (not fitted ≥ 99%): WeaklyKnown" in unfitted.evidence
    key_unfitted = maybe_known_best(given(runs=single_runs(weakly, fit={"MaybeKnown": 0.9})))
    assert key_unfitted.verdict == NOT_SHOWN and key_unfitted.evidence.startswith("not fitted: MaybeKnown_seed0")
    tied = {"runs": single_runs({"HighlyKnown": [0.38, 0.42, 0.40], "MaybeKnown": [0.40, 0.41, 0.39]})}
    assert maybe_known_best(given(tied)).verdict == NOT_SHOWN
    # D_Natural is reported but not judged: being worse than it does not contradict the single-category claim.
    natural_better = {"runs": single_runs({"HighlyKnown": [0.35, 0.37, 0.34], "MaybeKnown": [0.40, 0.41, 0.39],
                                           "Natural": [0.50, 0.52, 0.51]})}
    assert maybe_known_best(given(natural_better)).verdict == HOLDS


def test_maybe_known_best_one_seed_uses_the_papers_test():
    rng = np.random.default_rng(2)
    highly = rng.random(800) < 0.3
    maybe = highly | (rng.random(800) < 0.15)
    runs = single_runs({"HighlyKnown": [highly.mean()], "MaybeKnown": [maybe.mean()]})
    runs[0]["convergence_correct"], runs[1]["convergence_correct"] = highly.tolist(), maybe.tolist()
    finding = maybe_known_best(given(runs=runs))
    assert finding.verdict == HOLDS and "question parts" in finding.evidence
    assert math.isnan(finding.numbers["early_stop/gap_HighlyKnown_ci_low"])  # no early-stop vectors given


def test_maybe_known_best_absent_without_single_category_sets():
    assert maybe_known_best(given(runs=sweep({0.5: [0.0]}))) is None
    assert maybe_known_best(given(runs=single_runs({"MaybeKnown": [0.4], "Unknown": [0.2]}))) is None


# ---------------------------------------------------------------- IDK


def idk_runs(idk_drops: list[float], d_drops: list[float], *, precision: float = 0.5) -> list[dict]:
    """The IDK variant (accuracy on answered questions falls by idk_drops[seed]) and D_50 (falls by
    d_drops[seed]), from EARLY_STOP to CONVERGENCE."""
    runs = []
    for seed, (i, d) in enumerate(zip(idk_drops, d_drops, strict=True)):
        runs.append(run("idk_unknown_50", "idk_relabel", seed, unknown_fraction=0.5, realised_unknown_fraction=0.5,
                        early_stop_acc_answered=precision, convergence_acc_answered=precision - i,
                        convergence_answered_fraction=0.55, convergence_acc=(precision - i) * 0.55))
        runs.append(run("unknown_50", "unknown_fraction", seed, unknown_fraction=0.5, realised_unknown_fraction=0.5,
                        early_stop_acc=0.29, convergence_acc=0.29 - d))
    return runs


def test_idk_removes_late_drop_decides_on_the_drops():
    holds = idk_removes_late_drop(given(runs=idk_runs([0.0, 0.005, -0.003], [0.04, 0.045, 0.042])))
    assert holds.verdict == HOLDS
    assert holds.numbers["late_drop_gap_d_minus_idk"] == pytest.approx((0.04 + 0.04 + 0.045) / 3)
    assert "IDK answers 55% of questions" in holds.evidence and "D 0.290 → 0.248" in holds.evidence
    # Precision and the answered fraction are kept as numbers.
    assert holds.numbers["precision_gap_idk_minus_d"] > 0.2 and holds.numbers["idk_convergence_answered_fraction"] == \
        pytest.approx(0.55)
    assert idk_removes_late_drop(given(runs=d_pairs_only())) is None


def d_pairs_only() -> list[dict]:
    return sweep({0.5: [0.0, 0.0]})


def test_idk_whose_precision_falls_more_than_d_does_not_hold():
    """The issue's case: IDK's accuracy on answered questions falls 15 points, D's 4; IDK's precision stays far
    above D's accuracy, which the old rule read as "holds"."""
    finding = idk_removes_late_drop(given(runs=idk_runs([0.15, 0.16, 0.14], [0.04, 0.045, 0.035], precision=0.6)))
    assert finding.numbers["precision_gap_idk_minus_d_ci_low"] > 0  # what the old rule decided on
    assert finding.verdict == CONTRADICTED
    assert idk_removes_late_drop(given(runs=idk_runs([0.03, 0.01, 0.05], [0.04, 0.045, 0.035]))).verdict == NOT_SHOWN


def test_idk_that_only_reduces_the_drop_does_not_remove_it():
    finding = idk_removes_late_drop(given(runs=idk_runs([0.05, 0.052, 0.048], [0.10, 0.11, 0.105])))
    assert finding.numbers["late_drop_gap_d_minus_idk_ci_low"] > 0
    assert finding.verdict == NOT_SHOWN and "IDK still loses 5.0 points" in finding.evidence


def test_idk_gate_fit():
    runs = idk_runs([0.0, 0.005, -0.003], [0.04, 0.045, 0.042])
    runs[0]["final_train_fit"] = 0.9
    finding = idk_removes_late_drop(given(runs=runs))
    assert finding.verdict == NOT_SHOWN and finding.evidence.startswith("not fitted: idk_unknown_50_seed0 90.0%")


def test_idk_one_seed_uses_a_paired_bootstrap_over_questions():
    rng = np.random.default_rng(3)
    n = 800
    answered_early, answered_late = rng.random(n) < 0.55, rng.random(n) < 0.5
    idk_early, idk_late = answered_early & (rng.random(n) < 0.6), answered_late & (rng.random(n) < 0.6)
    plain_early = rng.random(n) < 0.3
    plain_late = plain_early & (rng.random(n) < 0.6)  # D loses 40% of what it got right
    runs = idk_runs([0.0], [0.0])
    runs[0].update(early_stop_correct=idk_early.tolist(), early_stop_answered=answered_early.tolist(),
                   convergence_correct=idk_late.tolist(), convergence_answered=answered_late.tolist())
    runs[1].update(early_stop_correct=plain_early.tolist(), convergence_correct=plain_late.tolist())
    finding = idk_removes_late_drop(given(runs=runs))
    assert finding.verdict == HOLDS and "one seed: paired bootstrap over questions" in finding.evidence
    expected = (plain_early.mean() - plain_late.mean()) - (idk_early[answered_early].mean()
                                                           - idk_late[answered_late].mean())
    assert finding.numbers["late_drop_gap_d_minus_idk"] == pytest.approx(expected)
    no_vectors = idk_removes_late_drop(given(runs=idk_runs([0.0], [0.1])))
    assert no_vectors.verdict == NOT_SHOWN and "(no interval)" in no_vectors.evidence


# ---------------------------------------------------------------- all together


def test_evaluate_findings_runs_only_what_applies():
    runs = sweep(HARMED)
    for r in runs:
        r.update(n_train_known=50, n_train_unknown=50 if r["kind"] == "unknown_fraction" else 0,
                 epochs_trained=10, fit_epochs_known=2, fit_epochs_unknown=7 + r["seed"])
    names = [f.name for f in evaluate_findings({"runs": runs})]
    assert names == ["unknown_fitted_slower", "unknown_harms_at_convergence", "early_stop_neutral"]

    everything = {"runs": runs + single_runs({"HighlyKnown": [0.35, 0.37, 0.34], "MaybeKnown": [0.40, 0.41, 0.39]})
                  + idk_runs([0.0, 0.005, -0.003], [0.04, 0.045, 0.042])[::2],
                  "linear": linear_summary(0.073, -0.083)["linear"]}
    findings = evaluate_findings(everything)
    assert [f.name for f in findings] == ["unknown_fitted_slower", "unknown_harms_at_convergence",
                                          "early_stop_neutral", "beta_unk_negative", "beta_kn_comparable",
                                          "maybe_known_best", "idk_removes_late_drop"]
    assert all(f.verdict in (HOLDS, NOT_SHOWN, CONTRADICTED) and f.statement and f.evidence for f in findings)
    assert evaluate_findings({"runs": []}) == []


def test_summary_may_be_a_polars_frame():
    rows = sweep(HARMED)
    frame = pl.DataFrame(rows)
    assert unknown_harms_at_convergence(given(runs=frame)) == unknown_harms_at_convergence(given(runs=rows))


def test_finding_tags_and_document():
    finding = Finding("beta_unk_negative", "claim", HOLDS, "β_unk -0.08 [-0.1, -0.05]",
                      {"beta_unk": -0.08, "n": 40})
    assert finding.tags() == {"finding/beta_unk_negative": "holds",
                              "finding/beta_unk_negative/evidence": "β_unk -0.08 [-0.1, -0.05]",
                              "finding/beta_unk_negative/statement": "claim"}
    assert finding.document()["numbers"] == {"beta_unk": -0.08, "n": 40}
    harm = unknown_harms_at_convergence(given(runs=sweep(HARMED)))
    rows = json.loads(harm.tags()["finding/unknown_harms_at_convergence/rows"])
    assert [r["label"] for r in rows] == ["25%", "50%", "75%"] and rows[0]["verdict"] == HOLDS
    assert rows[0]["estimate"] == pytest.approx(-0.067 / 3) and "p_holm" in rows[2]
    assert harm.document()["rows"][2]["label"] == "75%"


def test_coefficient_figure_draws_a_fit_from_the_linear_model_and_an_old_one(tmp_path):
    """The report's Table 1 figure crashed on negative error bars: a percentile-bootstrap β_unk 0.941 [0.400,
    0.941] could leave its estimate outside its interval. CR2 intervals contain their estimate; an old run's
    interval that does not is still drawn (its bar clipped at the estimate)."""
    from benchmark.report import figures
    from benchmark.results import PAPER_LINEAR

    fit = linear_summary(0.073, -0.083)["linear"]["in_distribution"]
    old = {"beta0": 0.2, "beta0_ci_low": 0.1, "beta0_ci_high": 0.3, "beta_kn": 0.1, "beta_kn_ci_low": 0.0,
           "beta_kn_ci_high": 0.2, "beta_unk": 0.941, "beta_unk_ci_low": 0.4, "beta_unk_ci_high": 0.93}
    figure = figures.linear_coefficients({"cr2": fit, "old": old}, PAPER_LINEAR)
    figure.savefig(tmp_path / "linear.png")
    figures.close(figure)
    assert (tmp_path / "linear.png").stat().st_size > 1000
