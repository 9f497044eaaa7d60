"""The whole pipeline on the smoke suite: a run, a reusing re-run, and interrupted runs that resume.

Real code end to end: the test-size world and its pretrained tiny GPT, SliCK, mixtures, Lightning fine-tuning,
per-epoch evaluation and MLflow (a per-session SQLite store, see conftest).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from benchmark import cli, execute, pipeline
from benchmark.plan import planned_variant_names
from benchmark.suite import load_suite
from benchmark.tracking import Tracker

REPO = Path(__file__).resolve().parent.parent
SMOKE = REPO / "suites" / "smoke.yaml"


def final_metrics(tracker: Tracker, document: dict) -> dict[str, dict[str, float]]:
    out = {}
    for variant in document["variants"]:
        metrics = tracker.latest_metrics(variant["run_id"])
        out[variant["name"]] = {k: v for k, v in metrics.items() if not k.startswith("time/")}
    return out


def statuses(tracker: Tracker, parent_id: str) -> dict[str, list[str]]:
    runs: dict[str, list[str]] = {}
    for run in tracker.children(parent_id):
        runs.setdefault(run.data.tags["slick.variant"], []).append(run.info.status)
    return runs


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """One uninterrupted smoke run in its own experiment."""
    suite = load_suite(SMOKE, ["tracking.experiment=smoke-reference"])
    document = pipeline.run_suite(suite, SMOKE, log=lambda _: None)
    return suite, document, final_metrics(Tracker("smoke-reference"), document)


def test_smoke_run_logs_every_variant(reference):
    suite, document, metrics = reference
    names = [v["name"] for v in document["variants"]]
    assert names == ["unknown_0", "unknown_50", "unknown_50_known_only"]
    assert all(v["status"] == "FINISHED" and not v["reused"] for v in document["variants"])
    tracker = Tracker("smoke-reference")
    run = metrics["unknown_50"]
    for key in ("train/acc/Unknown", "train/acc/HighlyKnown", "test/acc/all", "early_stop/test/acc/all",
                "convergence/test/acc/all", "dev/acc/all", "fit/epochs_to_50pct/Known"):
        assert key in run, key
    # Equal footing: every variant trains every epoch of the suite; CONVERGENCE is the same epoch for all.
    assert {name: m["convergence/epoch"] for name, m in metrics.items()} == dict.fromkeys(names, suite.train.epochs)
    assert all(v["epochs"] == suite.train.epochs for v in document["variants"])
    history = tracker.metric_history(document["variants"][1]["run_id"], "train/acc/Unknown")
    assert [step for step, _ in history] == [1, 2, 3]
    # Equal footing in steps too: D_Known (half of D's examples) takes D's optimizer steps, epoch by epoch.
    d, d_known = metrics["unknown_50"], metrics["unknown_50_known_only"]
    assert d_known["train/optimizer_steps"] == d["train/optimizer_steps"] == metrics["unknown_0"]["train/optimizer_steps"]
    assert d_known["train/steps_per_epoch"] * suite.train.epochs == d["train/optimizer_steps"]
    params = {r.data.tags["slick.variant"]: r.data.params for r in tracker.children(document["parent_run_id"])}
    assert params["unknown_50_known_only"]["examples_per_epoch"] == params["unknown_50"]["size"]
    assert int(params["unknown_50_known_only"]["size"]) < int(params["unknown_50"]["size"])
    parent = tracker.client.get_run(document["parent_run_id"])
    assert parent.info.status == "FINISHED" and parent.data.tags["base_model"] == "toy-gpt-test"
    assert "linear/beta_unk" in parent.data.metrics
    assert planned_variant_names(suite) == names  # what --only is checked against before SliCK runs


def test_rerun_reuses_everything_and_says_so_plainly_off_a_terminal(reference, capsys):
    """Re-run through the CLI, its output captured as a log file would hold it."""
    suite, document, _ = reference
    tracker = Tracker("smoke-reference")
    (before,) = tracker._find({"slick.role": "parent"})
    capsys.readouterr()
    assert cli.main(["run", str(SMOKE), "--set", "tracking.experiment=smoke-reference", "--no-report"]) == 0
    err = capsys.readouterr().err
    (parent,) = tracker._find({"slick.role": "parent"})
    assert parent.info.run_id == document["parent_run_id"]
    # Nothing trained, so the finished parent is left as it was: its Duration is the first run's, not stretched.
    assert parent.info.status == "FINISHED" and parent.info.end_time == before.info.end_time
    assert parent.info.run_name == pipeline.parent_run_name(suite) == f"smoke:toy-gpt-test:{suite.settings_key()[:6]}"
    assert sorted(r.info.run_id for r in tracker.children(parent.info.run_id)) == sorted(
        v["run_id"] for v in document["variants"])  # no new child run: each variant reused
    assert all(s == ["FINISHED"] for s in statuses(tracker, document["parent_run_id"]).values())
    assert err.count("reused finished run") == 3
    # What a person reads: the model in the header, tables whole (not cut at 80 columns), the one-seed caveat, and
    # one line per mixture notice's reason (the relations it concerns named together).
    assert f"smoke-reference: toy-gpt-test (parent run {document['parent_run_id']}" in err
    assert "\u2026" not in err and "unknown_50_known_only" in err
    assert "One seed, so no interval across seeds" in err and "note: one seed" in err
    (notice,) = [line for line in err.splitlines() if line.startswith("mixtures (")]  # one summarised line
    reasons = [part.partition(": ")[2] for part in notice.partition("): ")[2].split(" | ")]
    assert len(reasons) >= 2 and len(reasons) == len(set(reasons))


def test_interrupted_between_and_within_variants_resumes_to_the_same_result(reference, monkeypatch):
    _, _, expected = reference
    suite = load_suite(SMOKE, ["tracking.experiment=smoke-interrupted"])
    # Variant caches are keyed by content, shared across experiments: drop the reference run's so these train.
    shutil.rmtree(Path(os.environ["SLICK_BENCH_CACHE"]) / "variants", ignore_errors=True)
    real_job = execute.run_variant_job
    calls = {"n": 0}

    def interrupt_second_variant(job):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt  # between variants: the second one never starts training
        return real_job(job)

    monkeypatch.setattr(execute, "run_variant_job", interrupt_second_variant)
    with pytest.raises(KeyboardInterrupt):
        pipeline.run_suite(suite, SMOKE, log=lambda _: None)
    monkeypatch.setattr(execute, "run_variant_job", real_job)

    tracker = Tracker("smoke-interrupted")
    parent = tracker._find({"slick.role": "parent"})[0]
    assert parent.info.status == "KILLED"
    # Every variant still to run had its run opened (queued for the executor); the unfinished ones are KILLED.
    assert statuses(tracker, parent.info.run_id) == {"unknown_0": ["FINISHED"], "unknown_50": ["KILLED"],
                                                     "unknown_50_known_only": ["KILLED"]}

    # Now interrupt inside the second variant, after its first epoch was checkpointed.
    import benchmark.train.epochs

    real_evaluate = benchmark.train.epochs.evaluate_epoch
    epochs = {"n": 0}

    def interrupt_mid_variant(*args, **kwargs):
        epochs["n"] += 1
        if epochs["n"] == 2:
            raise KeyboardInterrupt
        return real_evaluate(*args, **kwargs)

    monkeypatch.setattr(benchmark.train.epochs, "evaluate_epoch", interrupt_mid_variant)
    with pytest.raises(KeyboardInterrupt):
        pipeline.run_suite(suite, SMOKE, log=lambda _: None)
    monkeypatch.setattr(benchmark.train.epochs, "evaluate_epoch", real_evaluate)
    assert statuses(tracker, parent.info.run_id)["unknown_50"] == ["KILLED"]
    variant_dirs = [p for p in (Path(os.environ["SLICK_BENCH_CACHE"]) / "variants").iterdir()
                    if (p / "train" / "last.ckpt").exists()]
    assert variant_dirs, "the interrupted variant keeps its checkpoint"

    document = pipeline.run_suite(suite, SMOKE, log=lambda _: None)
    final = statuses(tracker, parent.info.run_id)
    assert final == {name: ["FINISHED"] for name in expected}, final
    assert [v["reused"] for v in document["variants"]] == [True, False, False]
    got = final_metrics(tracker, document)
    for name, metrics in expected.items():
        for key, value in metrics.items():
            assert got[name].get(key) == pytest.approx(value, abs=1e-6, nan_ok=True), (name, key)


def test_a_suite_whose_mixtures_cannot_be_filled_starts_no_run(reference):
    from benchmark.errors import BenchmarkError

    suite = load_suite(SMOKE, ["tracking.experiment=smoke-unfillable", "mixtures.size=100000"])
    with pytest.raises(BenchmarkError, match="cannot be filled: relation P"):
        pipeline.run_suite(suite, SMOKE, log=lambda _: None)
    tracker = Tracker("smoke-unfillable")
    assert tracker.client.search_runs([tracker.experiment_id]) == []


def test_live_epochs_count_every_epoch_once_for_the_progress_bar(tmp_path):
    """Epochs reach the bar as the training process writes them (and the rest when a variant ends); a resumed
    variant counts only the epochs it still has to train."""
    import polars as pl

    from benchmark import progress as epochs_file

    tracker = Tracker("live-epochs")
    parent, _ = tracker.open_parent("live-epochs-key", "live", {})
    runs = [tracker.open_variant(parent, name, f"key-{name}", {}, {}) for name in ("a", "b")]
    seen = []
    live = execute.LiveEpochs(tracker, progress=lambda *args: seen.append(args))
    for run_id, name, after in zip(runs, "ab", (0, 2), strict=True):
        (tmp_path / name).mkdir()
        live.watch(run_id, tmp_path / name, after=after, epochs=3)
    assert live.epochs_total == 3 + 1 and live.left(10.0) == ""
    epochs_file.append(tmp_path / "a", {"test/acc/all": 0.5}, 1)
    live.send()
    assert seen == [("epochs, all variants", 1, 4)] and live.left(10.0) == "; about 0 min 30 s to go"
    live.send()  # nothing new: nothing counted twice
    history = pl.DataFrame({"epoch": [1, 2, 3], "test/acc/all": [0.5, 0.6, 0.7]})
    live.finish(runs[0], history)  # epochs 2 and 3 arrive with the history
    live.finish(runs[1])  # failed: its one epoch left will not come
    assert seen[-2:] == [("epochs, all variants", 3, 4), ("epochs, all variants", 4, 4)]
    tracker.close(runs[0]), tracker.close(runs[1], "FAILED"), tracker.close(parent)
    assert [step for step, _ in tracker.metric_history(runs[0], "test/acc/all")] == [1, 2, 3]
