"""The verdict engine against simulated runs whose truth is known (``benchmark.simulate``), at the default sweep's
design (|D| = 174, batch 16, 20 epochs, 3 seeds, 0/25/50/75/100% Unknown, D_Known for 0 < X < 1).

- Null worlds (Unknown examples inert; the model forgets with optimizer steps): no finding says "holds" in more
  than 5% of 200 simulated runs, whether D_Known is step-matched or not, and whether the gates pass or not.
- The world with the paper's effect (β_unk = −β_kn: harmful once fitted, neutral early): the findings it implies
  say "holds" in at least 80%.
- The design before step matching fails the null where the engine is not told about steps: its D − D_Known rows
  say "harm" in most simulated runs; the step gate is what keeps the verdict from saying so.
"""

from __future__ import annotations

from dataclasses import replace

import polars as pl
import pytest
from polars.testing import assert_frame_equal

from benchmark.analyse.findings import HOLDS, NOT_SHOWN, evaluate_findings
from benchmark.simulate import (
    IDK_NULL,
    NULL,
    NULL_FITTED,
    NULL_SPEED,
    PLANTED,
    Design,
    simulate,
    summary,
    verdict_rates,
)

REPLICATES = 200
MAX_FALSE_HOLDS = 0.05
MIN_POWER = 0.80


def rate(tally: dict[str, int], verdict: str = HOLDS) -> float:
    return tally[verdict] / sum(tally.values())


@pytest.mark.parametrize(("world", "matched", "true_findings"), [
    (NULL, False, {"unknown_fitted_slower"}),  # the audit's world, the design it audited
    (NULL, True, {"unknown_fitted_slower"}),
    (NULL_FITTED, True, {"unknown_fitted_slower"}),  # every gate passes: the verdicts themselves are tested
    (NULL_FITTED, False, {"unknown_fitted_slower"}),
    (NULL_SPEED, True, set()),  # Unknown examples also fitted as fast as Known ones: nothing is true
], ids=["null-unmatched", "null-matched", "fitted-null-matched", "fitted-null-unmatched", "speed-null"])
def test_null_worlds_hold_nothing(world, matched, true_findings):
    # The audit's null fails the CONVERGENCE gates every time (test_the_fitted_null_passes_the_gates): half the
    # replicates say as much; the fitted nulls, where the verdicts are tested, get all 200.
    rates = verdict_rates(world, Design(step_matched=matched), REPLICATES // 2 if world is NULL else REPLICATES)
    assert {"unknown_harms_at_convergence", "early_stop_neutral", "beta_unk_negative",
            "beta_kn_comparable"} <= set(rates)
    false_holds = {name: rate(tally) for name, tally in rates.items() if name not in true_findings}
    assert max(false_holds.values()) <= MAX_FALSE_HOLDS, false_holds


def test_the_fitted_null_passes_the_gates():
    """So that its test is one of the verdicts, not of the gates: the CONVERGENCE gates pass in most simulated
    runs of the fitted null, and the issue's null fails them (its Unknown-heavy sets are not fitted)."""
    def gated(world) -> float:
        harms = [next(f for f in evaluate_findings(summary(simulate(world, Design(), seed), ("in_distribution",)))
                      if f.name == "unknown_harms_at_convergence") for seed in range(40)]
        return sum("not fitted" in f.evidence or "control forgets" in f.evidence for f in harms) / len(harms)

    assert gated(NULL_FITTED) <= 0.2
    assert gated(NULL) == 1.0


def test_the_design_before_step_matching_fails_the_null():
    """D_Known trained one pass over its smaller set takes fewer steps (3 an epoch at 75% against D's 11) and
    forgets less: with the audit's forgetting (5.4 points over a D's run) and every set fitted, D − D_Known at 75%
    says "harm" in almost every simulated run of a world where Unknown examples do nothing; step-matched, in
    almost none. The verdict itself is gated on the steps."""
    world = replace(NULL_FITTED, forgetting=0.054)

    def harm_at_75(matched: bool) -> tuple[float, float]:
        harms = [next(f for f in evaluate_findings(summary(simulate(world, Design(step_matched=matched), seed),
                                                           ("in_distribution",)))
                      if f.name == "unknown_harms_at_convergence") for seed in range(100)]
        row = sum(f.rows[2]["label"] == "75%" and f.rows[2]["verdict"] == HOLDS for f in harms) / len(harms)
        return row, sum(f.verdict == HOLDS for f in harms) / len(harms)

    unmatched_row, unmatched_verdict = harm_at_75(False)
    matched_row, _ = harm_at_75(True)
    assert unmatched_row >= 0.9 and unmatched_verdict == 0.0
    assert matched_row <= MAX_FALSE_HOLDS


def test_planted_effect_is_found():
    rates = verdict_rates(PLANTED, Design(idk_fraction=0.5), REPLICATES)
    power = {name: rate(rates[name]) for name in ("unknown_fitted_slower", "unknown_harms_at_convergence",
                                                  "beta_unk_negative", "beta_kn_comparable", "idk_removes_late_drop")}
    assert min(power.values()) >= MIN_POWER, power


def test_planted_effect_neutral_early_needs_more_seeds():
    """D ≈ D_Known within ±2 points at every fraction, by TOST at α/3, with t on 2 degrees of freedom: 3 seeds
    find it in about 13% of simulated runs of the planted world, 8 seeds in at least 80%."""
    eight = verdict_rates(PLANTED, Design(seeds=tuple(range(8))), 100)["early_stop_neutral"]
    assert rate(eight) >= MIN_POWER
    three = verdict_rates(PLANTED, Design(), 100)["early_stop_neutral"]
    assert rate(three) < MIN_POWER and rate(three, "contradicted") == 0


def test_idk_whose_precision_falls_does_not_hold():
    """The IDK variant's accuracy on the questions it answers falls ~15 points from EARLY_STOP to CONVERGENCE,
    D's accuracy ~4: "removes the late drop" must not hold (the old rule compared precision with accuracy and
    said "holds" in every simulated run)."""
    design = Design(idk_fraction=0.5)
    sim = simulate(IDK_NULL, design, 0)
    idk = [r for r in sim.runs if r["kind"] == "idk_relabel"]
    d = [r for r in sim.runs if r["mixture"] == "unknown_50"]
    assert 0.12 < sum(r["early_stop_acc_answered"] - r["convergence_acc_answered"] for r in idk) / 3 < 0.18
    assert 0.02 < sum(r["early_stop_acc"] - r["convergence_acc"] for r in d) / 3 < 0.06
    rates = verdict_rates(IDK_NULL, design, REPLICATES)
    assert rate(rates["idk_removes_late_drop"]) <= MAX_FALSE_HOLDS
    assert rate(rates["idk_removes_late_drop"], "contradicted") >= MIN_POWER


def test_simulated_points_are_what_the_pipeline_builds():
    """The simulator's linear-model points equal ``analyse.suite.linear_points`` on its histories, and its rows have
    every field ``analyse.suite.finished_runs`` gives the findings."""
    from benchmark.analyse.suite import linear_points

    sim = simulate(PLANTED, Design(seeds=(0, 1)), 3)
    variants = variants_of(sim)
    points = linear_points(sim.histories, variants, 174)
    assert_frame_equal(points.sort("variant", "epoch"), sim.points.select(points.columns).sort("variant", "epoch"),
                       check_dtypes=False)
    fields = {"variant", "final_train_fit", "steps_per_epoch", "optimizer_steps", "early_stop_acc", "convergence_acc",
              "fit_epochs_known", "fit_epochs_unknown", "epochs_trained", "realised_unknown_fraction"}
    assert all(fields <= set(r) for r in sim.runs)
    known_only = next(r for r in sim.runs if r["kind"] == "known_only" and r["unknown_fraction"] == 0.75)
    assert known_only["steps_per_epoch"] == 11
    unmatched = simulate(PLANTED, Design(seeds=(0,), step_matched=False), 3)
    assert next(r for r in unmatched.runs if r["mixture"] == "unknown_75_known_only")["steps_per_epoch"] == 3


def test_simulator_is_seeded():
    first, second = simulate(NULL, Design(), 7), simulate(NULL, Design(), 7)
    assert first.runs == second.runs and first.points.equals(second.points)
    assert simulate(NULL, Design(), 8).runs != first.runs


# ---------------------------------------------------------------- the pipeline's analysis, per configuration


def variants_of(sim, swept: dict | None = None, suffix: str = "") -> dict:
    from benchmark.mixtures import Mixture
    from benchmark.plan import Variant
    from benchmark.train.config import TrainConfig

    variants = {}
    for row in sim.runs:
        counts = sim.mixtures[row["variant"]]
        rows = pl.DataFrame({"category": [c for c, n in counts.items() for _ in range(n)]})
        params = {"unknown_fraction": row["unknown_fraction"], "n_known": row["n_train_known"],
                  "n_unknown": row["n_train_unknown"], "realized_unknown_fraction": row["realised_unknown_fraction"]}
        name = row["variant"] + suffix
        variants[name] = Variant(name, Mixture(row["mixture"], row["kind"], rows, params), row["seed"],
                                 dict(swept or {}), TrainConfig(), name, {})
    return variants


def outcomes_of(sim, suffix: str = "") -> list[dict]:
    """The finished runs' summary metrics, under the names training writes them."""
    names = {"epochs_trained": "convergence/epoch", "early_stop_epoch": "early_stop/epoch",
             "final_train_fit": "convergence/train/acc/all", "steps_per_epoch": "train/steps_per_epoch",
             "optimizer_steps": "train/optimizer_steps", "fit_epochs_known": "fit/epochs_to_50pct/Known",
             "fit_epochs_unknown": "fit/epochs_to_50pct/Unknown", "early_stop_acc": "early_stop/test/acc/all",
             "convergence_acc": "convergence/test/acc/all"}
    return [{"name": row["variant"] + suffix, "status": "FINISHED",
             "metrics": {metric: row[field] for field, metric in names.items()}} for row in sim.runs]


def test_analysis_gives_findings_per_swept_configuration():
    """A suite with ``sweep:`` gets one set of findings per swept setting, never one pooled over them: here the
    planted effect under one learning rate and the fitted null under the other."""
    from benchmark.analyse.suite import analyse
    from benchmark.recorder import record_analysis
    from benchmark.tracking import Tracker

    planted, null = simulate(PLANTED, Design(), 0), simulate(NULL_FITTED, Design(), 2)
    variants = {**variants_of(planted, {"train.lr": 0.0001}, "_lr0.0001"),
                **variants_of(null, {"train.lr": 3e-05}, "_lr3e-05")}
    histories = {f"{k}_lr0.0001": v for k, v in planted.histories.items()}
    histories |= {f"{k}_lr3e-05": v for k, v in null.histories.items()}
    outcomes = outcomes_of(planted, "_lr0.0001") + outcomes_of(null, "_lr3e-05")
    tracker = Tracker("findings-per-configuration")
    parent, _ = tracker.open_parent("per-config", "sweep:simulated", {})
    test = pl.DataFrame({"qid": ["q0"], "category": ["HighlyKnown"], "ood": [False]})  # no predictions here
    analysis = analyse(list(variants.values()), histories, {}, outcomes, test)
    record_analysis(tracker, parent, analysis)
    document = analysis.document()
    tracker.close(parent)
    verdicts = {f["name"]: f["verdict"] for f in document["findings"]}
    assert verdicts["unknown_harms_at_convergence.lr0.0001"] == HOLDS
    assert verdicts["unknown_harms_at_convergence.lr3e-05"] == NOT_SHOWN
    assert verdicts["beta_unk_negative.lr0.0001"] == HOLDS and verdicts["beta_unk_negative.lr3e-05"] != HOLDS
    assert "unknown_harms_at_convergence" not in verdicts
    assert document["findings"][1]["rows"][0]["label"] == "25%"
    tags = tracker.client.get_run(parent).data.tags
    assert tags["finding/unknown_harms_at_convergence.lr0.0001"] == HOLDS
    assert '"label": "75%"' in tags["finding/unknown_harms_at_convergence.lr0.0001/rows"]
    metrics = tracker.client.get_run(parent).data.metrics
    assert metrics["linear/lr0.0001/steps/beta_unk"] < 0 and "linear/lr3e-05/beta_unk" in metrics

    from benchmark.results import ModelRun

    run = ModelRun("e", parent, "m", None, "w", tags, metrics)
    names = [f.name for f in run.findings]
    assert names.index("unknown_fitted_slower.lr0.0001") < names.index("unknown_harms_at_convergence.lr0.0001")
    harm = next(f for f in run.findings if f.name == "unknown_harms_at_convergence.lr0.0001")
    assert [r["label"] for r in harm.rows] == ["25%", "50%", "75%"]


def test_a_rerun_of_the_design_is_identical():
    """Seeded end to end: the same replicate gives the same verdicts and evidence."""
    one = evaluate_findings(summary(simulate(PLANTED, Design(), 11)))
    two = evaluate_findings(summary(simulate(replace(PLANTED), Design(), 11)))
    assert [(f.name, f.verdict, f.evidence) for f in one] == [(f.name, f.verdict, f.evidence) for f in two]
