"""The variants' stage: finished variants reused from the store, the others fine-tuned and evaluated on an
executor, each epoch sent to MLflow while it trains. A variant's job is a function of the job alone (no MLflow,
nothing printed), so it runs the same here, in a worker or on a Ray node; only the driver talks to the store.

Reuse: a finished variant's results are never dropped from the analysis. A file the cache lacks or that is
damaged is read back from its run in the store (and put back into the cache); a variant whose run lacks them
too is trained again (its checkpoint, if the cache has one, is reused).
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import polars as pl

from benchmark.analyse import measures
from benchmark.cache import read_parquet, stage_dir, write_parquet
from benchmark.errors import BenchmarkError
from benchmark.plan import Variant
from benchmark.record import Artifact, acc_metric
from benchmark.recorder import record_variant
from benchmark.tracking import Tracker
from benchmark.train.config import TrainConfig

Progress = Callable[[str, int, int], None]  # (label, done, total): a progress bar's update


@dataclass
class Finished:
    """The finished variants' results, by variant name: what the analysis reads."""

    outcomes: dict[str, dict] = field(default_factory=dict)
    histories: dict[str, pl.DataFrame] = field(default_factory=dict)
    predictions: dict[str, pl.DataFrame] = field(default_factory=dict)

    def add(self, variant: Variant, outcome: dict, history: pl.DataFrame, predictions: pl.DataFrame) -> None:
        self.outcomes[variant.name] = outcome
        self.histories[variant.name], self.predictions[variant.name] = history, predictions


def history_from_tracking(tracker: Tracker, run_id: str) -> pl.DataFrame:
    """Per-epoch metrics of a finished variant whose local cache is gone, rebuilt from MLflow's metric history."""
    metrics = tracker.latest_metrics(run_id)
    by_epoch: dict[int, dict] = {}
    for key in metrics:
        for step, value in tracker.metric_history(run_id, key):
            if step > 0:
                by_epoch.setdefault(step, {"epoch": step})[key] = value
    return pl.DataFrame(sorted(by_epoch.values(), key=lambda r: r["epoch"]))


@dataclass
class VariantJob:
    name: str
    model: str
    model_overrides: dict
    registry_root: str
    rows: pl.DataFrame
    dev: pl.DataFrame
    test: pl.DataFrame
    train: TrainConfig
    run_dir: Path
    device: str


@dataclass
class VariantResult:
    history: pl.DataFrame
    summary: dict[str, float]
    predictions: pl.DataFrame
    run_dir: Path


def run_variant_job(job: VariantJob) -> VariantResult:
    """Fine-tune and evaluate one variant (resuming from its checkpoint when one is there). The model goes by
    name: it is loaded where it trains (here, or in each of the variant's rank processes), never twice."""
    from benchmark.launch import ModelRef
    from benchmark.train import fine_tune  # Lightning is imported only where something is trained

    model = ModelRef(job.model, job.model_overrides, job.registry_root)
    result = fine_tune(model, job.rows, job.dev, job.test, job.train, job.run_dir / "train", in_place=True)
    write_parquet(result.history, job.run_dir / Artifact.HISTORY)  # with its checksum (benchmark.cache)
    return VariantResult(result.history, dict(result.summary), result.predictions, job.run_dir)


class LiveEpochs:
    """Each running variant's per-epoch metrics to MLflow while it trains, one call per epoch: a thread of the
    driver (the only process that talks to MLflow) reads the ``progress.jsonl`` that rank 0 of every variant
    appends to in its run directory, wherever it trains (here, a worker, a Ray node: the cache is shared). The
    driver's own tracker calls for a variant happen under ``lock``, so the two never talk to the store at once.
    A failure of the store stops the thread; the driver's next call reports it."""

    def __init__(self, tracker: Tracker, poll: float = 2.0, progress: Progress | None = None):
        import threading

        self.tracker, self.poll, self.progress = tracker, poll, progress
        self.lock = threading.RLock()
        self._tails: dict = {}
        self.epochs_done, self.epochs_total = 0, 0  # over every variant watched: the progress bar's, and its ETA
        self._total: dict[str, int] = {}  # run id -> its epochs still to train when it was watched
        self._seen: dict[str, int] = {}  # run id -> of those, how many have been reported
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="live-epochs", daemon=True)

    def watch(self, run_id: str, run_dir: Path, after: int, epochs: int) -> None:
        from benchmark.progress import PROGRESS, Tail

        self._tails[run_id] = Tail(run_dir / PROGRESS, after=after)
        self._total[run_id] = epochs - after
        self.epochs_total += epochs - after

    def start(self) -> None:
        if self.progress and self.epochs_total:  # the bar (and the pace behind its time left) starts with training
            self.progress("epochs, all variants", 0, self.epochs_total)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()

    def _run(self) -> None:
        while not self._stop.wait(self.poll):
            try:
                self.send()
            except BenchmarkError:
                return

    def send(self) -> None:
        with self.lock:
            for run_id, tail in list(self._tails.items()):
                for metrics, epoch in tail.new():
                    self.tracker.log_epoch(run_id, metrics, epoch)
                    self._count(run_id, 1)

    def _count(self, run_id: str, epochs: int) -> None:
        epochs = min(epochs, self._total.get(run_id, 0) - self._seen.get(run_id, 0))
        if epochs <= 0:
            return
        self._seen[run_id] = self._seen.get(run_id, 0) + epochs
        self.epochs_done += epochs
        if self.progress:
            self.progress("epochs, all variants", self.epochs_done, self.epochs_total)

    def finish(self, run_id: str, history: pl.DataFrame | None = None) -> None:
        """The variant ended: stop watching it, and buffer (with its other results) the epochs of ``history`` that
        were not sent live. A variant that failed counts its epochs as done: none of them is still to come."""
        tail = self._tails.pop(run_id, None)
        if history is not None:
            after = tail.after if tail is not None else 0
            self.tracker.log_history(run_id, history.filter(pl.col("epoch") > after))
        self._count(run_id, self._total.get(run_id, 0))

    def left(self, elapsed: float) -> str:
        """The time the watched variants still need at the pace of the epochs so far ("" before the first)."""
        if not self.epochs_done or self.epochs_done >= self.epochs_total:
            return ""
        seconds = int(elapsed / self.epochs_done * (self.epochs_total - self.epochs_done))
        return f"; about {seconds // 60} min {seconds % 60:02d} s to go"


def _fitting(history: pl.DataFrame) -> dict[str, float]:
    return {name: float("nan") if epochs is None else float(epochs)
            for name, epochs in measures.fitting_speed(history).items()}


def _outcome(variant: Variant, run_id: str, status: str, reused: bool, metrics: dict) -> dict:
    return {"name": variant.name, "mixture": variant.mixture.name, "kind": variant.mixture.kind,
            "seed": variant.seed, "run_id": run_id, "status": status, "reused": reused,
            "unknown_fraction": variant.mixture.params.get("unknown_fraction"),
            "realized_unknown_fraction": variant.mixture.params.get("realized_unknown_fraction"),
            "epochs": metrics.get("convergence/epoch"),
            "final_train_fit": metrics.get(acc_metric("train", stop="convergence")),
            "early_stop_test_acc": metrics.get(acc_metric("test", stop="early_stop")),
            "convergence_test_acc": metrics.get(acc_metric("test", stop="convergence")), "metrics": metrics}


def reuse_finished(tracker: Tracker, parent_id: str, variants: list[Variant], fresh: bool, finished: Finished,
                   log: Callable[[str], None]) -> list[Variant]:
    """Each variant with a finished run of its key is added to ``finished``; returns the others (all with
    ``fresh``), which still have to train."""
    pending = []
    for variant in variants:
        existing = None if fresh else tracker.finished_variant(parent_id, variant.key)
        found = None if existing is None else _read_back(tracker, variant, existing, log)
        if found is None:
            pending.append(variant)
            continue
        history, predictions = found
        # The summary the analysis derives from the history, recomputed: benchmark.analyse may have changed
        # since the run was logged, and it is not part of the variant's key.
        metrics = {**tracker.latest_metrics(existing), **_fitting(history)}
        finished.add(variant, _outcome(variant, existing, "FINISHED", True, metrics), history, predictions)
        log(f"{variant.name}: reused finished run {existing}")
    return pending


def _read_back(tracker: Tracker, variant: Variant, run_id: str, log: Callable[[str], None]
               ) -> tuple[pl.DataFrame, pl.DataFrame] | None:
    """(history, predictions) of a finished variant, from the cache or else its run; None when neither has them."""
    run_dir = stage_dir("variants", variant.key)
    history_file, predictions_file = run_dir / Artifact.HISTORY, run_dir / "predictions.parquet"
    history = read_parquet(history_file)
    if history is None:
        history = history_from_tracking(tracker, run_id)
    table = read_parquet(predictions_file)
    if table is None:
        table = tracker.read_table(run_id, Artifact.PREDICTIONS)
        if table is not None:
            predictions_file.parent.mkdir(parents=True, exist_ok=True)
            write_parquet(table, predictions_file)
            log(f"{variant.name}: predictions read back from its finished run {run_id} (not in the cache)")
    if table is None or history.is_empty():
        log(f"{variant.name}: its finished run {run_id} lacks its "
            f"{'predictions' if table is None else 'history'}, and so does the cache: running it again")
        return None
    return history, table


def open_jobs(tracker: Tracker, parent_id: str, suite, pending: list[Variant], fresh: bool, *, registry_root: str,
              dev: pl.DataFrame, test: pl.DataFrame, device: str) -> tuple[list[VariantJob], dict[str, str]]:
    """A run and a job per pending variant, all scored on the same ``dev`` and ``test`` questions: (jobs, variant
    name -> its open run id)."""
    jobs, open_runs = [], {}
    for variant in pending:
        if fresh:  # --fresh recomputes: a finished checkpoint in the cache would otherwise be returned as is
            shutil.rmtree(stage_dir("variants", variant.key), ignore_errors=True)
        open_runs[variant.name] = tracker.open_variant(
            parent_id, variant.name, variant.key, variant.params,
            variant.record(suite.model, suite.knowledge_source).tags())
        jobs.append(VariantJob(variant.name, suite.model, suite.model_overrides, registry_root, variant.mixture.rows,
                               dev, test, variant.train, stage_dir("variants", variant.key), device))
    return jobs, open_runs


def train_pending(tracker: Tracker, runner, pending: list[Variant], jobs: list[VariantJob], open_runs: dict[str, str],
                  finished: Finished, *, progress: Progress | None, log: Callable[[str], None], started: float
                  ) -> list[str]:
    """Every pending variant trained on ``runner``, each logged and closed as it ends (a failed one is marked
    FAILED; the others still run). ``open_runs`` loses each variant that ends. Returns the failed names."""
    live = LiveEpochs(tracker, progress=progress)  # each epoch in MLflow as it ends, while its variant trains
    for variant, job in zip(pending, jobs, strict=True):
        run_id = open_runs[variant.name]
        live.watch(run_id, job.run_dir / "train", after=tracker.logged_epochs(run_id), epochs=variant.train.epochs)
    failures = []
    training_started = time.time()
    live.start()
    try:
        for done, outcome in enumerate(runner.run(run_variant_job, jobs), 1):
            variant = pending[outcome.index]
            run_id = open_runs[variant.name]
            with live.lock:  # the epochs not yet sent, then the rest, then the run ends
                if outcome.error is not None:
                    live.finish(run_id)
                    tracker.set_tags(run_id, {"slick.error": str(outcome.error)[:5000]})
                    tracker.close(run_id, "FAILED")
                else:
                    live.finish(run_id, outcome.value.history)
                    metrics = record_variant(tracker, run_id, variant, outcome.value, log)
                    tracker.close(run_id, "FINISHED")
            open_runs.pop(variant.name)  # closed: no longer one for an interrupt to close
            if outcome.error is not None:
                failures.append(variant.name)
                finished.outcomes[variant.name] = _outcome(variant, run_id, "FAILED", False, {})
                log(f"{variant.name}: FAILED: {outcome.error}")
                continue
            finished.add(variant, _outcome(variant, run_id, "FINISHED", False, metrics), outcome.value.history,
                         outcome.value.predictions)
            # A line per variant, with the time left at the epochs' pace (the bar, or a line every 30 s off a
            # terminal, counts the epochs of every variant).
            log(f"{variant.name}: finished ({done}/{len(jobs)}, {time.time() - started:.0f} s into the run"
                f"{live.left(time.time() - training_started)})")
    finally:
        live.stop()
    return failures
