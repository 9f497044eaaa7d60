"""The run record: an ``Analysis`` written by ``recorder.record_analysis`` into a real MLflow store and read back by
``results.load_models`` (the reader of the report, compare and the CLI) is the analysis that was written."""

from __future__ import annotations

import math

import numpy as np
import polars as pl
from polars.testing import assert_frame_equal

from benchmark.analyse.suite import analyse
from benchmark.record import LinearFit, SignificanceTest
from benchmark.recorder import record_analysis
from benchmark.results import load_models
from benchmark.simulate import PLANTED, Design, simulate
from benchmark.tracking import ResultStore, Tracker
from tests.test_findings_null import outcomes_of, variants_of


def _same(a: float | None, b: float | None) -> bool:
    return (a is None and b is None) or (a is not None and b is not None and
                                         (a == b or (math.isnan(a) and math.isnan(b))))


def test_an_analysis_reads_back_as_it_was_written():
    sim = simulate(PLANTED, Design(), 0)
    variants = variants_of(sim)
    outcomes = outcomes_of(sim)
    for outcome in outcomes:  # the paired test needs each variant's correctness: give every run its test answers
        outcome["metrics"] |= {"early_stop/dev/acc/all": 0.5, "convergence/dev/acc/all": 0.5}
    rng = np.random.default_rng(0)  # answers right at each run's simulated accuracy, on 200 shared questions
    correct = {row["variant"]: (rng.random(200) < row["convergence_acc"]).tolist() for row in sim.runs}
    predictions = {name: pl.DataFrame({"checkpoint": ["early_stop"] * len(c) + ["convergence"] * len(c),
                                       "ood": [False] * (2 * len(c)), "correct": c + c, "prediction": ["x"] * (2 * len(c))})
                   for name, c in correct.items()}
    test = pl.DataFrame({"category": ["HighlyKnown"] * len(next(iter(correct.values()))), "ood": False})
    analysis = analyse(list(variants.values()), sim.histories, predictions, outcomes, test)
    assert analysis is not None and analysis.findings and analysis.significance["convergence"]

    tracker = Tracker("record-round-trip")
    parent, _ = tracker.open_parent("round-trip", "record:simulated", {"base_model": "simulated"})
    record_analysis(tracker, parent, analysis)
    tracker.close(parent)

    (model,) = load_models(["record-round-trip"], store=ResultStore())
    written = LinearFit.model_validate(analysis.fits[""]["in_distribution"])
    read = model.linear()
    for name in ("beta0", "beta_kn", "beta_unk", "r2", "beta_unk_ci_low", "beta_unk_ci_high"):
        assert _same(read[name], getattr(written, name)), name
    assert LinearFit.read(model.metrics, "in_distribution_steps").beta_steps is None  # not read by the report
    assert model.metrics["linear/steps/beta_steps"] == analysis.fits[""]["in_distribution_steps"]["beta_steps"]

    for stop, tests in analysis.significance.items():
        read = model.significance(stop)
        for name, test_ in tests.items():
            expected = SignificanceTest.model_validate(test_)
            for what in SignificanceTest.VALUES:
                value = getattr(expected, what)
                assert (what not in read[name]) if math.isnan(value) else read[name][what] == value

    assert [(f["name"], f["verdict"]) for f in model.findings] == [(f.name, f.verdict) for f in analysis.findings]
    assert_frame_equal(model.mixtures, analysis.mixtures)
    assert model.tags["best/convergence"] == analysis.best["best/convergence"]
