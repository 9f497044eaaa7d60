"""Each of the paper's findings on constructed summaries: one that holds, one not shown, one contradicted."""

import math

import numpy as np
import polars as pl
import pytest

from benchmark.findings import (
    CONTRADICTED,
    HOLDS,
    NOT_SHOWN,
    Finding,
    beta_kn_comparable,
    beta_unk_negative,
    direction_verdict,
    early_stop_neutral,
    equivalence_verdict,
    evaluate_findings,
    idk_removes_late_drop,
    maybe_known_best,
    unknown_fitted_slower,
    unknown_harms_at_convergence,
)
from benchmark.stats import linear_model_ci


def run(mixture: str, kind: str, seed: int = 0, **fields) -> dict:
    return {"mixture": mixture, "kind": kind, "seed": seed, **fields}


def d_pairs(d_acc: list[float], known_acc: list[float], *, stage: str = "convergence", x: float = 0.5,
            other: float = 0.3) -> list[dict]:
    """D_X and D_Known_X for seeds 0.., with the given accuracies at ``stage`` (the other stage at ``other``)."""
    rest = "early_stop" if stage == "convergence" else "convergence"
    runs = []
    for seed, (d, k) in enumerate(zip(d_acc, known_acc, strict=True)):
        runs.append(run(f"unknown_{round(x * 100)}", "unknown_fraction", seed, unknown_fraction=x,
                        realised_unknown_fraction=x, **{f"{stage}_acc": d, f"{rest}_acc": other}))
        runs.append(run(f"unknown_{round(x * 100)}_known_only", "known_only", seed, unknown_fraction=x,
                        realised_unknown_fraction=0.0, **{f"{stage}_acc": k, f"{rest}_acc": other}))
    return runs


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
    finding = unknown_fitted_slower(summary)
    assert finding.verdict == HOLDS
    assert finding.numbers["difference"] == 5.0 and finding.numbers["difference_ci_low"] > 0
    assert finding.numbers["known_epochs_ci_low"] == finding.numbers["known_epochs_ci_high"] == 2.0
    assert finding.numbers["difference/unknown_50"] == 4.0
    assert "Unknown 50% fitted at epoch 7.0 [" in finding.evidence and "Known at 2.0 [2.0, 2.0]" in finding.evidence


def test_unknown_fitted_slower_contradicted_and_not_shown():
    faster = {"runs": [fitting_run("a", 0, 7, 2), fitting_run("b", 0, 6, 2), fitting_run("c", 0, 8, 2)]}
    assert unknown_fitted_slower(faster).verdict == CONTRADICTED
    mixed = {"runs": [fitting_run("a", 0, 2, 5), fitting_run("b", 0, 5, 2), fitting_run("c", 0, 3, 4)]}
    assert unknown_fitted_slower(mixed).verdict == NOT_SHOWN
    single = unknown_fitted_slower({"runs": [fitting_run("a", 0, 2, 9)]})
    assert single.verdict == NOT_SHOWN and "[no interval]" in single.evidence


def test_unknown_never_fitted_counts_as_one_epoch_past_training():
    summary = {"runs": [fitting_run("a", 0, 2, None, epochs=10), fitting_run("b", 0, 2, float("nan"), epochs=10),
                        fitting_run("c", 0, 3, 9, epochs=10)]}
    finding = unknown_fitted_slower(summary)
    assert finding.numbers["unknown_epochs"] == pytest.approx((11 + 11 + 9) / 3)
    assert finding.numbers["n_unknown_never_fitted"] == 2
    assert "counted as epochs trained + 1" in finding.evidence
    assert finding.verdict == HOLDS


def test_unknown_fitted_slower_needs_runs_with_both_categories():
    only_single = {"runs": [run("Unknown", "single_category", n_train_known=0, n_train_unknown=100,
                                epochs_trained=10, fit_epochs_unknown=5),
                            run("idk_unknown_50", "idk_relabel", n_train_known=50, n_train_unknown=50,
                                epochs_trained=10, fit_epochs_known=2, fit_epochs_unknown=5)]}
    assert unknown_fitted_slower(only_single) is None
    assert unknown_fitted_slower({}) is None


# ---------------------------------------------------------------- harm at convergence


def test_unknown_harms_at_convergence_from_the_d_known_gap():
    holds = unknown_harms_at_convergence({"runs": d_pairs([0.20, 0.22, 0.19], [0.25, 0.26, 0.25])})
    assert holds.verdict == HOLDS and holds.numbers["gap_d_minus_d_known_ci_high"] < 0
    assert holds.numbers["gap_d_minus_d_known"] == pytest.approx(-0.05)
    assert "t over 3 paired runs" in holds.evidence
    reverse = unknown_harms_at_convergence({"runs": d_pairs([0.25, 0.26, 0.25], [0.20, 0.22, 0.19])})
    assert reverse.verdict == CONTRADICTED
    mixed = unknown_harms_at_convergence({"runs": d_pairs([0.20, 0.26, 0.24], [0.25, 0.22, 0.24])})
    assert mixed.verdict == NOT_SHOWN


def test_unknown_harms_pairs_by_fraction_and_seed():
    runs = d_pairs([0.20, 0.21], [0.25, 0.27], x=0.25) + d_pairs([0.10, 0.12], [0.24, 0.22], x=0.75)
    finding = unknown_harms_at_convergence({"runs": runs})
    assert finding.numbers["gap_d_minus_d_known_n_pairs"] == 4
    assert finding.numbers["gap_d_minus_d_known"] == pytest.approx((-0.05 - 0.06 - 0.14 - 0.10) / 4)


def test_unknown_harms_with_one_pair_uses_the_papers_per_question_test():
    rng = np.random.default_rng(0)
    known_only = rng.random(1000) < 0.3
    d = known_only & (rng.random(1000) < 0.7)  # D loses ~30% of what D_Known gets right
    runs = d_pairs([d.mean()], [known_only.mean()])
    runs[0]["convergence_correct"], runs[1]["convergence_correct"] = d.tolist(), known_only.tolist()
    finding = unknown_harms_at_convergence({"runs": runs})
    assert finding.verdict == HOLDS and "100 question parts" in finding.evidence
    assert finding.numbers["gap_d_minus_d_known"] == pytest.approx(d.mean() - known_only.mean())
    runs[0]["convergence_correct"] = known_only.tolist()
    assert unknown_harms_at_convergence({"runs": runs}).verdict == NOT_SHOWN


def test_unknown_harms_without_d_known_falls_back_to_the_slope():
    rng = np.random.default_rng(1)
    runs = [run(f"unknown_{round(x * 100)}", "unknown_fraction", seed, unknown_fraction=x,
                realised_unknown_fraction=x, convergence_acc=0.3 - 0.15 * x + rng.normal(0, 0.01),
                early_stop_acc=0.35 - 0.02 * x + rng.normal(0, 0.01))
            for x in (0.0, 0.25, 0.5, 0.75, 1.0) for seed in (0, 1)]
    finding = unknown_harms_at_convergence({"runs": runs})
    assert finding.verdict == HOLDS
    assert finding.numbers["slope"] == pytest.approx(-0.15, abs=0.03) and finding.numbers["slope_ci_high"] < 0
    assert finding.numbers["early_stop_slope"] > finding.numbers["slope"]
    assert math.isnan(finding.numbers["gap_d_minus_d_known"])
    rising = [dict(r, convergence_acc=0.2 + 0.15 * r["unknown_fraction"] + rng.normal(0, 0.01)) for r in runs]
    assert unknown_harms_at_convergence({"runs": rising}).verdict == CONTRADICTED
    flat = [dict(r, convergence_acc=0.2 + rng.normal(0, 0.05)) for r in runs]
    assert unknown_harms_at_convergence({"runs": flat}).verdict == NOT_SHOWN


def test_unknown_harms_absent_without_a_sweep():
    assert unknown_harms_at_convergence({"runs": [run("MaybeKnown", "single_category", convergence_acc=0.3)]}) is None


# ---------------------------------------------------------------- early stop


def test_early_stop_neutral_holds_within_the_margin_and_contrasts_convergence():
    runs = d_pairs([0.301, 0.298, 0.300], [0.300, 0.300, 0.299], stage="early_stop")
    for r, late in zip(runs, [0.20, 0.25, 0.21, 0.26, 0.20, 0.25], strict=True):
        r["convergence_acc"] = late
    finding = early_stop_neutral({"runs": runs})
    assert finding.verdict == HOLDS
    assert finding.numbers["gap_convergence"] == pytest.approx(-0.05)
    assert "margin ±0.020" in finding.evidence and "at CONVERGENCE -0.050" in finding.evidence


def test_early_stop_neutral_contradicted_and_not_shown():
    harmed = early_stop_neutral({"runs": d_pairs([0.24, 0.25, 0.245], [0.30, 0.30, 0.30], stage="early_stop")})
    assert harmed.verdict == CONTRADICTED
    noisy = early_stop_neutral({"runs": d_pairs([0.27, 0.30, 0.31], [0.30, 0.30, 0.30], stage="early_stop")})
    assert noisy.verdict == NOT_SHOWN
    wide_margin = early_stop_neutral({"runs": d_pairs([0.27, 0.30, 0.31], [0.30, 0.30, 0.30],
                                                      stage="early_stop")}, margin=0.2)
    assert wide_margin.verdict == HOLDS
    assert early_stop_neutral({"runs": d_pairs([0.3], [0.3])[:1]}) is None


# ---------------------------------------------------------------- linear model


def linear_points(beta_kn: float, beta_unk: float, seed: int = 0, variants: int = 12) -> pl.DataFrame:
    rng = np.random.default_rng(seed)
    rows = []
    for v in range(variants):
        unknown_share = rng.uniform(0, 0.8)
        offset = rng.normal(0, 0.005)
        for epoch in range(1, 11):
            kn = (1 - unknown_share) * min(1.0, 0.4 * epoch)
            unk = unknown_share * min(1.0, rng.uniform(0.05, 0.15) * epoch)
            rows.append({"variant": f"v{v}", "epoch": epoch, "known_fitted_share": kn, "unknown_fitted_share": unk,
                         "acc": 0.37 + beta_kn * kn + beta_unk * unk + offset + rng.normal(0, 0.003)})
    return pl.DataFrame(rows)


def linear_summary(beta_kn: float, beta_unk: float) -> dict:
    return {"runs": [], "linear": {"in_distribution": linear_model_ci(linear_points(beta_kn, beta_unk), "acc")}}


def test_beta_unk_negative():
    holds = beta_unk_negative(linear_summary(0.073, -0.083))
    assert holds.verdict == HOLDS and holds.numbers["beta_unk_ci_high"] < 0
    assert "cluster bootstrap over 12 variants" in holds.evidence and "OLS t-interval [" in holds.evidence
    assert beta_unk_negative(linear_summary(0.073, 0.083)).verdict == CONTRADICTED
    unclear = {"linear": {"in_distribution": {"beta_unk": -0.01, "beta_unk_ci_low": -0.05,
                                              "beta_unk_ci_high": 0.03}}}
    assert beta_unk_negative(unclear).verdict == NOT_SHOWN
    assert beta_unk_negative({"runs": []}) is None
    assert beta_unk_negative({"linear": {"ood": {"beta_unk": -0.1}}}) is None


def test_beta_kn_comparable():
    holds = beta_kn_comparable(linear_summary(0.073, -0.083))
    assert holds.verdict == HOLDS
    assert 0.5 <= holds.numbers["unk_kn_ratio_ci_low"] <= holds.numbers["unk_kn_ratio_ci_high"] <= 2
    far_stronger = beta_kn_comparable(linear_summary(0.05, -0.4))
    assert far_stronger.verdict == CONTRADICTED and far_stronger.numbers["unk_kn_ratio_ci_low"] > 2
    same_sign = beta_kn_comparable(linear_summary(0.073, 0.083))
    assert same_sign.verdict == CONTRADICTED
    unclear = {"linear": {"in_distribution": {"beta_kn": 0.07, "beta_kn_ci_low": 0.02, "beta_kn_ci_high": 0.1,
                                              "beta_unk": -0.08, "unk_kn_ratio": 1.1, "unk_kn_ratio_ci_low": 0.3,
                                              "unk_kn_ratio_ci_high": 1.6}}}
    assert beta_kn_comparable(unclear).verdict == NOT_SHOWN
    # A ratio inside the bounds is not enough when β_kn itself is not shown to be positive.
    unclear["linear"]["in_distribution"].update(unk_kn_ratio_ci_low=0.8, beta_kn_ci_low=-0.01)
    assert beta_kn_comparable(unclear).verdict == NOT_SHOWN
    unclear["linear"]["in_distribution"]["beta_kn_ci_low"] = 0.01
    assert beta_kn_comparable(unclear).verdict == HOLDS


# ---------------------------------------------------------------- single-category sets


def single_runs(accuracies: dict[str, list[float]]) -> list[dict]:
    return [run(category if category != "Natural" else "natural",
                "natural" if category == "Natural" else "single_category", seed,
                category=None if category == "Natural" else category, convergence_acc=acc, early_stop_acc=acc + 0.02)
            for category, values in accuracies.items() for seed, acc in enumerate(values)]


def test_maybe_known_best_holds():
    summary = {"runs": single_runs({"HighlyKnown": [0.35, 0.37, 0.34], "MaybeKnown": [0.40, 0.41, 0.39],
                                    "WeaklyKnown": [0.30, 0.33, 0.31], "Unknown": [0.20, 0.22, 0.19],
                                    "Natural": [0.39, 0.42, 0.38]})}
    finding = maybe_known_best(summary)
    assert finding.verdict == HOLDS
    assert finding.numbers["gap_HighlyKnown"] == pytest.approx(0.04667, abs=1e-4)
    assert "gap_Natural" in finding.numbers and "early_stop/gap_Unknown" in finding.numbers
    assert finding.evidence.startswith("D_MaybeKnown at CONVERGENCE − HighlyKnown 0.047 [")


def test_maybe_known_best_contradicted_and_not_shown():
    highly_better = {"runs": single_runs({"HighlyKnown": [0.45, 0.46, 0.44], "MaybeKnown": [0.40, 0.41, 0.39],
                                          "Unknown": [0.20, 0.22, 0.19]})}
    finding = maybe_known_best(highly_better)
    assert finding.verdict == CONTRADICTED and "significantly better: HighlyKnown" in finding.evidence
    weakly_better = {"runs": single_runs({"HighlyKnown": [0.35, 0.37, 0.34], "MaybeKnown": [0.40, 0.41, 0.39],
                                          "WeaklyKnown": [0.45, 0.47, 0.46]})}
    assert maybe_known_best(weakly_better).verdict == CONTRADICTED
    tied = {"runs": single_runs({"HighlyKnown": [0.38, 0.42, 0.40], "MaybeKnown": [0.40, 0.41, 0.39]})}
    assert maybe_known_best(tied).verdict == NOT_SHOWN
    # D_Natural is reported but not judged: being worse than it does not contradict the single-category claim.
    natural_better = {"runs": single_runs({"HighlyKnown": [0.35, 0.37, 0.34], "MaybeKnown": [0.40, 0.41, 0.39],
                                           "Natural": [0.50, 0.52, 0.51]})}
    assert maybe_known_best(natural_better).verdict == HOLDS


def test_maybe_known_best_one_seed_uses_the_papers_test():
    rng = np.random.default_rng(2)
    highly = rng.random(800) < 0.3
    maybe = highly | (rng.random(800) < 0.15)
    runs = single_runs({"HighlyKnown": [highly.mean()], "MaybeKnown": [maybe.mean()]})
    runs[0]["convergence_correct"], runs[1]["convergence_correct"] = highly.tolist(), maybe.tolist()
    finding = maybe_known_best({"runs": runs})
    assert finding.verdict == HOLDS and "question parts" in finding.evidence
    assert math.isnan(finding.numbers["early_stop/gap_HighlyKnown_ci_low"])  # no early-stop vectors given


def test_maybe_known_best_absent_without_single_category_sets():
    assert maybe_known_best({"runs": d_pairs([0.2], [0.3])}) is None
    assert maybe_known_best({"runs": single_runs({"MaybeKnown": [0.4], "Unknown": [0.2]})}) is None


# ---------------------------------------------------------------- IDK


def idk_runs(idk_answered: list[float], plain: list[float]) -> list[dict]:
    runs = []
    for seed, (i, p) in enumerate(zip(idk_answered, plain, strict=True)):
        runs.append(run("idk_unknown_50", "idk_relabel", seed, unknown_fraction=0.5, realised_unknown_fraction=0.5,
                        convergence_acc_answered=i, early_stop_acc_answered=i + 0.01,
                        convergence_answered_fraction=0.45, convergence_acc=i * 0.45))
        runs.append(run("unknown_50", "unknown_fraction", seed, unknown_fraction=0.5, realised_unknown_fraction=0.5,
                        convergence_acc=p, early_stop_acc=0.29))
    return runs


def test_idk_removes_late_drop():
    holds = idk_removes_late_drop({"runs": idk_runs([0.50, 0.52, 0.48], [0.12, 0.13, 0.11])})
    assert holds.verdict == HOLDS and holds.numbers["gap_idk_answered_minus_d"] == pytest.approx(0.38)
    assert "answering 45% of questions" in holds.evidence and "D_50%" in holds.evidence
    assert "0.290 → 0.120" in holds.evidence
    assert idk_removes_late_drop({"runs": idk_runs([0.10, 0.11, 0.09], [0.20, 0.21, 0.19])}).verdict == CONTRADICTED
    assert idk_removes_late_drop({"runs": idk_runs([0.10, 0.30, 0.15], [0.20, 0.21, 0.19])}).verdict == NOT_SHOWN
    assert idk_removes_late_drop({"runs": d_pairs([0.2], [0.3])}) is None


def test_idk_one_seed_uses_a_paired_bootstrap_over_questions():
    rng = np.random.default_rng(3)
    answered = rng.random(600) < 0.5
    idk_correct = answered & (rng.random(600) < 0.6)
    plain_correct = rng.random(600) < 0.15
    runs = idk_runs([idk_correct[answered].mean()], [plain_correct.mean()])
    runs[0].update(convergence_correct=idk_correct.tolist(), convergence_answered=answered.tolist())
    runs[1]["convergence_correct"] = plain_correct.tolist()
    finding = idk_removes_late_drop({"runs": runs})
    assert finding.verdict == HOLDS and "paired bootstrap over questions" in finding.evidence
    no_vectors = idk_removes_late_drop({"runs": idk_runs([0.5], [0.1])})
    assert no_vectors.verdict == NOT_SHOWN and "[no interval]" in no_vectors.evidence


# ---------------------------------------------------------------- all together


def test_evaluate_findings_runs_only_what_applies():
    sweep = d_pairs([0.20, 0.22, 0.19], [0.25, 0.26, 0.25])
    for r in sweep:
        r.update(n_train_known=50, n_train_unknown=50 if r["kind"] == "unknown_fraction" else 0,
                 epochs_trained=10, fit_epochs_known=2, fit_epochs_unknown=7 + r["seed"])
    names = [f.name for f in evaluate_findings({"runs": sweep})]
    assert names == ["unknown_fitted_slower", "unknown_harms_at_convergence", "early_stop_neutral"]

    everything = {"runs": sweep + single_runs({"HighlyKnown": [0.35, 0.37, 0.34], "MaybeKnown": [0.40, 0.41, 0.39]})
                  + idk_runs([0.5, 0.52, 0.48], [0.12, 0.13, 0.11])[::2],
                  "linear": linear_summary(0.073, -0.083)["linear"]}
    findings = evaluate_findings(everything)
    assert [f.name for f in findings] == ["unknown_fitted_slower", "unknown_harms_at_convergence",
                                          "early_stop_neutral", "beta_unk_negative", "beta_kn_comparable",
                                          "maybe_known_best", "idk_removes_late_drop"]
    assert all(f.verdict in (HOLDS, NOT_SHOWN, CONTRADICTED) and f.statement and f.evidence for f in findings)
    assert evaluate_findings({"runs": []}) == []


def test_summary_may_be_a_polars_frame():
    rows = d_pairs([0.20, 0.22, 0.19], [0.25, 0.26, 0.25])
    frame = pl.DataFrame(rows)
    assert unknown_harms_at_convergence({"runs": frame}) == unknown_harms_at_convergence({"runs": rows})


def test_finding_tags_and_metrics():
    finding = Finding("beta_unk_negative", "claim", HOLDS, "β_unk -0.08 [-0.1, -0.05]",
                      {"beta_unk": -0.08, "n": 40})
    assert finding.tags() == {"finding/beta_unk_negative": "holds",
                              "finding/beta_unk_negative/evidence": "β_unk -0.08 [-0.1, -0.05]",
                              "finding/beta_unk_negative/statement": "claim"}
    assert finding.metrics() == {"finding/beta_unk_negative/beta_unk": -0.08, "finding/beta_unk_negative/n": 40.0}
