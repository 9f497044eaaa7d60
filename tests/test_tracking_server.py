"""Tracking against a real ``mlflow server`` on 127.0.0.1: a whole smoke run and what it costs in requests, the
server going away mid-run (one clear line, then a re-run resumes), and two runs of one suite at once.

The server has a SQLite store and proxies artifacts into its own folder (``--serve-artifacts``, the default of
``mlflow server``), so every artifact upload is a request it receives too. These tests start servers and train the
smoke suite (minutes on a busy 2-core machine): marked slow, run by CI's plain ``pytest``.
"""

from __future__ import annotations

import collections
import os
import threading
import time
from pathlib import Path

import pytest

from benchmark import cli, execute, pipeline
from benchmark.categorize import categorize_suite
from benchmark.errors import BenchmarkError
from benchmark.suite import load_suite
from benchmark.tracking import Tracker
from tests.stores import SMOKE, MlflowServer, free_port, own_cache, statuses

pytestmark = pytest.mark.slow
EPOCHS = 3 * 3  # the smoke suite: 3 variants x 3 epochs
# Tracking requests (everything but artifact file uploads: what a server with direct artifact storage, e.g. S3,
# receives). With the server proxying artifacts, each artifact file is one request more: 22 files for the smoke
# suite, 13 of them the parent's, so the total is bounded separately. Besides these, each epoch's metrics are sent
# while its variant trains, at most one request per epoch (benchmark.execute.LiveEpochs), counted apart.
MAX_TRACKING_REQUESTS_PER_EPOCH = 3
MAX_REQUESTS_PER_EPOCH = 5
MAX_LIVE_REQUESTS_PER_EPOCH = 1


@pytest.fixture(scope="module")
def session_cache() -> Path:
    """The session cache, with the smoke suite's world, world model and SliCK table built once."""
    categorize_suite(load_suite(SMOKE))
    return Path(os.environ["SLICK_BENCH_CACHE"])


@pytest.fixture
def cache(tmp_path, session_cache, monkeypatch) -> Path:
    root = own_cache(tmp_path / "cache", session_cache)
    monkeypatch.setenv("SLICK_BENCH_CACHE", str(root))
    return root


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    running = MlflowServer(tmp_path_factory.mktemp("mlflow-server")).start()
    yield running
    running.stop()


def test_smoke_run_on_a_server_costs_few_requests_per_epoch(server, cache, monkeypatch, tmp_path):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", server.uri)
    live, real_log_epoch = [], Tracker.log_epoch

    def counting(self, run_id, metrics, epoch):
        live.append(epoch)
        return real_log_epoch(self, run_id, metrics, epoch)

    monkeypatch.setattr(Tracker, "log_epoch", counting)
    before = len(server.requests())
    started = time.monotonic()
    document = pipeline.run_suite(load_suite(SMOKE, ["tracking.experiment=server-smoke"]), SMOKE, log=lambda _: None)
    seconds = time.monotonic() - started
    received = server.requests()[before:]

    epochs = sum(int(v["epochs"]) for v in document["variants"])
    assert epochs == EPOCHS and not any(v["reused"] for v in document["variants"])
    uploads = [r for r in received if r.startswith("PUT /api/2.0/mlflow-artifacts/")]
    tracking = [r for r in received if r not in uploads]
    kinds = collections.Counter(tracking) + collections.Counter(
        "PUT artifact " + r.rsplit("/artifacts/", 1)[1] for r in uploads)
    print(f"\n{len(received)} requests for {epochs} epochs = {len(received) / epochs:.2f} per epoch: "
          f"{len(tracking)} tracking ({len(tracking) / epochs:.2f} per epoch; {len(live)} of them live epochs) + "
          f"{len(uploads)} artifact uploads ({seconds:.0f} s)")
    for kind, count in sorted(kinds.items(), key=lambda kv: (-kv[1], kv[0])):
        print(f"  {count:3d}  {kind}")
    assert len(live) / epochs <= MAX_LIVE_REQUESTS_PER_EPOCH
    assert (len(tracking) - len(live)) / epochs <= MAX_TRACKING_REQUESTS_PER_EPOCH, kinds
    assert (len(received) - len(live)) / epochs <= MAX_REQUESTS_PER_EPOCH, kinds
    assert len(set(uploads)) == len(uploads), "an artifact uploaded twice"
    runs = 1 + len(document["variants"])
    # All of a run's values at once, besides the live epochs.
    assert sum(r.endswith("/runs/log-batch") for r in tracking) <= runs + 1 + len(live)

    # Everything reads back from the server: runs, metrics, per-epoch history, artifacts.
    tracker = Tracker("server-smoke")
    parent = tracker.client.get_run(document["parent_run_id"])
    assert parent.info.status == "FINISHED" and "linear/beta_unk" in parent.data.metrics
    assert statuses(tracker, document["parent_run_id"]) == {v["name"]: ["FINISHED"] for v in document["variants"]}
    child = document["variants"][1]["run_id"]
    assert {"train/acc/Unknown", "early_stop/test/acc/all", "convergence/test/acc/all"} <= set(
        tracker.latest_metrics(child))
    assert [step for step, _ in tracker.metric_history(child, "dev/acc/all")] == [1, 2, 3]
    predictions = Path(tracker.client.download_artifacts(child, "predictions.json", str(tmp_path)))
    assert '"columns"' in predictions.read_text() and "prediction" in predictions.read_text()
    assert '"predictions.json"' in tracker.client.get_run(child).data.tags["mlflow.loggedArtifacts"]
    categories = tracker.client.download_artifacts(document["parent_run_id"], "slick/categories.parquet", str(tmp_path))
    assert Path(categories).stat().st_size > 0
    assert tracker.client.search_registered_models() == []  # the suite's claim is gone with the run


def test_requests_grow_by_at_most_one_per_epoch(server, cache, monkeypatch):
    """The smoke suite at 2 and at 4 epochs per variant: each epoch is sent while its variant trains, at most one
    log-batch call per epoch (benchmark.execute.LiveEpochs; epochs that finish while a call is out go together in
    the next one), plus one per run at its end; everything else a run sends is per run and does not grow with
    epochs. Only the claim's heartbeat, one request per 2 minutes of wall clock, grows with time (left out)."""
    monkeypatch.setenv("MLFLOW_TRACKING_URI", server.uri)
    batches, others = {}, {}
    for epochs in (2, 4):
        before = len(server.requests())
        document = pipeline.run_suite(load_suite(SMOKE, [f"tracking.experiment=server-epochs-{epochs}",
                                                         f"train.epochs={epochs}"]), SMOKE, log=lambda _: None)
        assert sum(int(v["epochs"]) for v in document["variants"]) == 3 * epochs
        sent = [r for r in server.requests()[before:]
                if "registered-models/set-tag" not in r and "mlflow-artifacts" not in r]
        batches[epochs] = sum("runs/log-batch" in r for r in sent)
        others[epochs] = len(sent) - batches[epochs]
    runs = 1 + 3  # the parent and its three variants
    total = {e: batches[e] + others[e] for e in batches}
    print(f"\ntracking requests: {total[2]} at 2 epochs per variant, {total[4]} at 4 "
          f"({total[4] / 12:.2f} per epoch at 4, live epochs included; log-batch {batches[2]} and {batches[4]})")
    assert others[2] == others[4]  # per run, not per epoch
    for epochs in (2, 4):
        assert batches[epochs] <= 3 * epochs + runs
    assert total[4] / 12 <= MAX_TRACKING_REQUESTS_PER_EPOCH


def test_each_epoch_reaches_the_server_while_its_variant_trains(server, cache, monkeypatch):
    """At the third epoch's evaluation of a variant, its first epochs are already on the server."""
    from mlflow import MlflowClient

    import benchmark.train.epochs

    monkeypatch.setenv("MLFLOW_TRACKING_URI", server.uri)
    client = MlflowClient(server.uri)
    real_evaluate, seen = benchmark.train.epochs.evaluate_epoch, []

    def evaluate_and_look(*args, **kwargs):
        if len(seen) == 2:  # epochs 1 and 2 are done and reported; this variant is still training
            experiment = client.get_experiment_by_name("server-live")
            (run,) = client.search_runs([experiment.experiment_id], "tags.`slick.variant` = 'unknown_0'")
            deadline = time.monotonic() + 30
            steps = []
            while time.monotonic() < deadline and steps != [1, 2]:
                steps = [m.step for m in client.get_metric_history(run.info.run_id, "dev/acc/all")]
                time.sleep(0.2)
            seen.append(steps)
        else:
            seen.append(None)
        return real_evaluate(*args, **kwargs)

    monkeypatch.setattr(benchmark.train.epochs, "evaluate_epoch", evaluate_and_look)
    document = pipeline.run_suite(load_suite(SMOKE, ["tracking.experiment=server-live"]), SMOKE,
                                  log=lambda _: None, only=["unknown_0"])
    assert seen[2] == [1, 2]
    (variant,) = document["variants"]
    assert [step for step, _ in Tracker("server-live").metric_history(variant["run_id"], "dev/acc/all")] == [1, 2, 3]


def test_server_gone_mid_run_fails_in_one_line_and_a_rerun_resumes(tmp_path, cache, monkeypatch, capsys):
    server = MlflowServer(tmp_path / "server", port=free_port()).start()
    try:
        monkeypatch.setenv("MLFLOW_TRACKING_URI", server.uri)
        monkeypatch.setenv("SLICK_BENCH_TRACKING_TIMEOUT", "3")
        real_job, calls = execute.run_variant_job, []

        def server_dies_before_the_second_variant(job):
            calls.append(job.name)
            if len(calls) == 2:
                server.stop()
            return real_job(job)

        monkeypatch.setattr(execute, "run_variant_job", server_dies_before_the_second_variant)
        capsys.readouterr()
        started = time.monotonic()
        # Two epochs a variant: the failure and the resume do not depend on how long each variant trains.
        code = cli.main(["run", str(SMOKE), "--set", "tracking.experiment=server-down", "--set", "train.epochs=2"])
        err = capsys.readouterr().err
        errors = [line for line in err.splitlines() if line.startswith("error:")]
        assert code == 2 and len(errors) == 1, err
        assert server.uri in errors[0] and "could not" in errors[0] and "SLICK_BENCH_TRACKING_TIMEOUT" in errors[0]
        assert "Traceback" not in err
        assert len(calls) == 2  # it stopped at the first write after the server went away
        print(f"\n{errors[0]}\n(after {time.monotonic() - started:.0f} s)")

        server.start()  # same port, same store
        monkeypatch.setattr(execute, "run_variant_job", real_job)
        document = pipeline.run_suite(load_suite(SMOKE, ["tracking.experiment=server-down", "train.epochs=2"]),
                                      SMOKE, log=lambda _: None)
        tracker = Tracker("server-down")
        assert statuses(tracker, document["parent_run_id"]) == {v["name"]: ["FINISHED"] for v in document["variants"]}
        assert [v["reused"] for v in document["variants"]] == [True, False, False]
        parents = tracker._find({"slick.role": "parent"})
        assert [p.info.status for p in parents] == ["FINISHED"]
    finally:
        server.stop()


def test_two_runs_of_one_suite_at_once_finish_each_variant_once(cache, monkeypatch):
    """On the session's SQLite store: two writers of one database, the claim decided by its unique constraint."""
    suite = load_suite(SMOKE, ["tracking.experiment=concurrent"])
    real_job, training = execute.run_variant_job, threading.Event()

    def job(job):
        training.set()
        return real_job(job)

    monkeypatch.setattr(execute, "run_variant_job", job)
    first: dict = {}

    def run_first():
        try:
            first["document"] = pipeline.run_suite(suite, SMOKE, log=lambda _: None)
        except BaseException as exc:  # noqa: BLE001 - reported by the assertion below
            first["error"] = exc

    thread = threading.Thread(target=run_first)
    thread.start()
    assert training.wait(1800), first
    with pytest.raises(BenchmarkError, match=r"already being run into .* pid \d+ .*run it again when that run ends"):
        pipeline.run_suite(suite, SMOKE, log=lambda _: None)
    thread.join(3600)
    assert "document" in first, first
    tracker = Tracker("concurrent")
    parent_id = first["document"]["parent_run_id"]
    assert statuses(tracker, parent_id) == {v["name"]: ["FINISHED"] for v in first["document"]["variants"]}

    again = pipeline.run_suite(suite, SMOKE, log=lambda _: None)  # the claim was given back: a re-run reuses
    assert again["parent_run_id"] == parent_id and all(v["reused"] for v in again["variants"])
    assert len(tracker._find({"slick.role": "parent"})) == 1
