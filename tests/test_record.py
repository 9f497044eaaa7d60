"""The run record (``benchmark.record``) through a real MLflow store: what the pipeline's writers log (an
``Analysis`` by ``recorder.record_analysis``, a parent's ``ParentRecord``, a variant's ``VariantRecord``) reads back
through ``results.load_models`` (the reader of the report, compare and the CLI) as the same typed values."""

from __future__ import annotations

import json
import math

import numpy as np
import polars as pl
import pytest
from polars.testing import assert_frame_equal

from benchmark.analyse.suite import analyse
from benchmark.record import Finding, LinearFit, ParentRecord, SignificanceTest, VariantRecord, best_tag
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
    logged = ("n", "r2", *LinearFit.TERMS, *(f"{t}_ci_{side}" for t in LinearFit.TERMS for side in ("low", "high")))
    for split, written in analysis.fits[""].items():
        read = LinearFit.read(model.metrics, split)
        names = logged + (("beta_steps", "beta_steps_ci_low", "beta_steps_ci_high") if split.endswith("_steps") else ())
        for name in names:
            assert _same(read.value(name), written.value(name)), (split, name)
    assert model.linear() == LinearFit.read(model.metrics).model_dump(exclude_none=True)

    for stop, tests in analysis.significance.items():
        read = model.significance(stop)
        for name, expected in tests.items():
            for what in SignificanceTest.VALUES:
                value = getattr(expected, what)
                assert (what not in read[name]) if math.isnan(value) else read[name][what] == value

    # Every part of each finding but its numbers (those are in findings.json), rows and all (NaN kept).
    def parts(f: Finding) -> tuple:
        return f.name, f.statement, f.verdict, f.evidence, json.dumps(list(f.rows), allow_nan=True)

    assert [parts(f) for f in model.findings] == [parts(f) for f in analysis.findings]
    assert any(f.rows for f in model.findings)
    assert_frame_equal(model.mixtures, analysis.mixtures)
    assert model.tags[best_tag("convergence")] == analysis.best[best_tag("convergence")]


@pytest.mark.parametrize("parent, variants", [
    (ParentRecord(base_model="toy-gpt", model_params=502_656, knowledge_source="world", suite_key="abc",
                  settings_key="def", code_version="0.1+g123", suite_file="suites/smoke.yaml", seeds=(0, 1, 7),
                  epochs=3),
     [VariantRecord(name="unknown_50_seed7", mixture="unknown_50", kind="unknown_fraction", seed=7,
                    unknown_fraction=0.5, base_model="toy-gpt", knowledge_source="world"),
      VariantRecord(name="MaybeKnown_seed0", mixture="MaybeKnown", kind="single_category", seed=0,
                    base_model="toy-gpt", knowledge_source="world")]),
    # A model whose size is not known without loading it, run from the command line (no suite file).
    (ParentRecord(base_model="hf:org/model", knowledge_source="entityquestions", suite_key="k", settings_key="s",
                  code_version="v", suite_file="", seeds=(3,), epochs=1),
     [VariantRecord(name="unknown_0.333_seed3", mixture="unknown_0.333", kind="unknown_fraction", seed=3,
                    unknown_fraction=1 / 3, base_model="hf:org/model", knowledge_source="entityquestions")]),
])
def test_a_parent_and_its_variants_read_back_as_they_were_written(parent, variants):
    experiment = f"record-identity-{parent.suite_key}"
    tracker = Tracker(experiment)
    parent_id, _ = tracker.open_parent(parent.suite_key, "suite:model", parent.tags())
    for variant in variants:
        run_id = tracker.open_variant(parent_id, variant.name, f"key-{variant.name}", {}, variant.tags())
        tracker.close(run_id)
    tracker.close(parent_id)

    (model,) = load_models([experiment], store=ResultStore(), details=False)
    assert model.record == parent
    assert (model.base_model, model.model_params, model.knowledge_source) == \
        (parent.base_model, parent.model_params, parent.knowledge_source)
    read = {c.name: c for c in model.children}
    for variant in variants:
        child = read[variant.name]
        again = VariantRecord.read(tracker.client.get_run(child.run_id).data.tags, child.params, child.name)
        # A tag is text: a fraction reads back to the digits ``:g`` keeps.
        assert again == variant.model_copy(update={"unknown_fraction": _six(variant.unknown_fraction)})
        assert (child.mixture, child.kind, child.seed, child.unknown_fraction) == \
            (variant.mixture, variant.kind, variant.seed, _six(variant.unknown_fraction))


def _six(value: float | None) -> float | None:
    return None if value is None else float(f"{value:g}")


def test_the_metrics_a_variant_writes_are_named_as_the_record_declares():
    """``benchmark.evaluate`` and ``benchmark.train`` (whose source keys every variant's cached results) write the
    per-epoch and per-stop names themselves: they must be the ones the readers ask for."""
    from benchmark.categories import CATEGORIES
    from benchmark.evaluate import accuracy_metrics
    from benchmark.record import acc_metric, fit_metric
    from benchmark.train.epochs import summarise

    categories = list(CATEGORIES)
    history = {"epoch": [1, 2]}
    for split in ("train", "dev", "test", "ood"):
        written = accuracy_metrics(f"{split}/acc", [True, False, True, True], None if split == "dev" else categories)
        groups = ["all"] if split == "dev" else ["all", *CATEGORIES, "Known"]
        assert set(written) == {acc_metric(split, g) for g in groups}
        for name in written:
            history[name] = [0.25, 0.75]
    summary = summarise(pl.DataFrame(history), early_stop_epoch=1)
    for stop in ("early_stop", "convergence"):
        assert acc_metric("test", "Unknown", stop) in summary and acc_metric("train", stop=stop) in summary
    assert summary[fit_metric("Unknown")] == 2.0


def test_a_verdict_tag_that_is_no_verdict_is_an_error_naming_the_run_and_tag():
    from benchmark.errors import BenchmarkError

    tags = {"finding/beta_unk_negative": "probably", "finding/beta_unk_negative/evidence": "β_unk -0.1"}
    with pytest.raises(BenchmarkError, match=r"run r1: tag 'finding/beta_unk_negative' is 'probably'; expected one "
                                             r"of 'holds', 'not shown', 'contradicted'"):
        Finding.read(tags, "beta_unk_negative", "r1")
    tags["finding/beta_unk_negative"] = "holds"
    assert Finding.read(tags, "beta_unk_negative").evidence == "β_unk -0.1"
