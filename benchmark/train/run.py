"""The stage: ``fine_tune`` checks the run directory, trains in this process or on the ranks it starts, and returns
the run's ``FineTuneResult``; ``export`` writes its weights out as a ``save_pretrained`` folder."""

from __future__ import annotations

import copy
import json
import math
import signal
import threading
from dataclasses import dataclass
from pathlib import Path

import lightning as L
import polars as pl
import torch

from benchmark import checkpoints, parallel, progress
from benchmark.cache import report_corrupt
from benchmark.checkpoints import BEST, CONVERGENCE, LAST
from benchmark.errors import BenchmarkError
from benchmark.evaluate import EvaluationSets, predictions_table
from benchmark.hashing import content_key
from benchmark.launch import ModelRef, inside_ranks, ranks_started_by_a_launcher
from benchmark.locks import stage_lock
from benchmark.prompts import completion, finetune_prompt
from benchmark.runtime import quiet_lightning
from benchmark.thread_invariant import make_thread_invariant
from benchmark.train.config import TrainConfig, result_settings
from benchmark.train.data import QADataModule
from benchmark.train.epochs import EpochEnd, OnEpoch, summarise
from benchmark.train.model import FineTuneModule, add_lora, apply_dropout
from components.base import LoadedModel

CONFIG_FILE = "train_config.json"


@dataclass
class FineTuneResult:
    history: pl.DataFrame  # one row per epoch: epoch + every per-epoch metric
    early_stop_epoch: int
    convergence_epoch: int
    # early_stop/..., convergence/..., fit/epochs_to_<p>pct/<Category> (NaN = never), train/optimizer_steps (the
    # run's total) and train/steps_per_epoch
    summary: dict[str, float]
    predictions: pl.DataFrame  # test predictions at EARLY_STOP and CONVERGENCE (column checkpoint)
    best_checkpoint: Path  # weights at EARLY_STOP
    convergence_checkpoint: Path  # weights at CONVERGENCE


def result_from_state(state: dict, test: pl.DataFrame, run_dir: Path) -> FineTuneResult:
    history = pl.DataFrame(state["history"])
    predictions = pl.concat([predictions_table(test, state["best_predictions"], "early_stop"),
                             predictions_table(test, state["last_predictions"], "convergence")])
    return FineTuneResult(history=history, early_stop_epoch=state["best_epoch"],
                          convergence_epoch=int(history["epoch"].max()),
                          summary=summarise(history, state["best_epoch"]), predictions=predictions,
                          best_checkpoint=run_dir / BEST, convergence_checkpoint=run_dir / CONVERGENCE)


def model_identity(model: LoadedModel | ModelRef) -> str:
    return model.identity


def run_fingerprint(identity: str, train: pl.DataFrame, dev: pl.DataFrame, test: pl.DataFrame,
                    config: TrainConfig) -> str:
    """What a run directory's checkpoints were computed from; resuming with anything else is refused. The layout
    counts only where it changes the numbers (``config.result_settings``), so a run may resume on another
    number of devices."""
    return content_key(identity, result_settings(config, train.height),
                       train.select("question", "answer", "category").rows(), dev.select("question", "answer").rows(),
                       test.select("question", "answer", "category", "ood").rows())


def saved_state(checkpoint: Path) -> dict:
    """The EpochEnd state in a resumable checkpoint (``last.ckpt``, a file or a sharded folder)."""
    return checkpoints.resume_state(checkpoint)


def make_trainer(config: TrainConfig, callbacks: list[L.Callback], run_dir: Path, *, checkpoint_io=None,
                 **overrides) -> L.Trainer:
    from lightning.fabric.plugins.environments import LightningEnvironment

    # The ranks the benchmark starts (and a single process) use Lightning's plain environment, which reads only
    # LOCAL_RANK/NODE_RANK/MASTER_*: an enclosing sbatch's SLURM_* variables (a one-task job) would otherwise make
    # Lightning take SLURM's world for this run's. Ranks that torchrun or srun started keep Lightning's detection.
    plugins = [] if ranks_started_by_a_launcher() else [LightningEnvironment()]
    if checkpoint_io is not None and not parallel.sharded(config):
        plugins.append(checkpoint_io)
    settings = dict(
        accelerator=config.accelerator, devices=config.devices, num_nodes=config.num_nodes,
        strategy=parallel.make_strategy(config), precision=parallel.lightning_precision(config),
        max_epochs=config.epochs, accumulate_grad_batches=config.accumulate_grad_batches,
        gradient_clip_val=config.gradient_clip, plugins=plugins,
        callbacks=callbacks, default_root_dir=run_dir, logger=False, enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0, limit_val_batches=0,
        use_distributed_sampler=False,  # LengthGroupedBatchSampler shards by rank itself
    )
    return L.Trainer(**{**settings, **overrides})


def _check_batches(train: pl.DataFrame, config: TrainConfig) -> None:
    slots = config.examples_per_epoch or train.height
    ranks, batches = config.devices * config.num_nodes, math.ceil(slots / config.batch_size)
    if ranks > 1 and batches < ranks:  # each rank takes whole batches; with fewer, some ranks would get none
        raise BenchmarkError(f"train: {slots} example slots per epoch make {batches} batch(es) of batch_size "
                             f"{config.batch_size}, fewer than the {ranks} ranks ({config.devices} devices x "
                             f"{config.num_nodes} nodes); lower train.batch_size")


def _existing(run_dir: Path, fingerprint: str, config: TrainConfig) -> dict | None:
    """What the run directory already holds: the finished run's state (returned), or None (train; from
    last.ckpt if it is there). Damaged checkpoints are reported and removed; another run's are refused."""
    names = (LAST, BEST, CONVERGENCE, checkpoints.STATE)
    for name in (LAST, BEST, CONVERGENCE):
        checkpoints.recover(run_dir / name)
    damaged = [why for name in names if (why := checkpoints.problem(run_dir / name))]
    if damaged:  # never resume from (or return) a truncated or corrupted checkpoint: start the variant again
        report_corrupt(damaged[0])
        for name in names:
            checkpoints.remove(run_dir / name)
    finished = checkpoints.read_state(run_dir)
    last = run_dir / LAST
    saved = finished if finished is not None else (saved_state(last) if last.exists() else None)
    if saved is not None and saved["fingerprint"] != fingerprint:
        raise BenchmarkError(f"{run_dir}: holds a run of another model, data set or train configuration; "
                             "use a fresh run directory")
    if finished is not None and finished["finished"]:
        checkpoints.remove(last)  # a kill between state.json and its removal left it
        return finished
    if last.exists() and last.is_dir() != parallel.sharded(config):
        # Resumed under another strategy: FSDP's sharded folder and a single-file checkpoint do not convert.
        import logging

        logging.getLogger("benchmark.train").warning(
            "warning: %s was written under another strategy; training %s again from the start", last, run_dir)
        checkpoints.remove(last)
    if not last.exists():
        progress.keep_through(run_dir, 0)
    else:
        progress.keep_through(run_dir, len(saved_state(last)["history"]))
    return None


def fine_tune(model: LoadedModel | ModelRef, train: pl.DataFrame, dev: pl.DataFrame, test: pl.DataFrame,
              config: TrainConfig, run_dir: Path, on_epoch: OnEpoch | None = None, *,
              in_place: bool = False) -> FineTuneResult:
    """Fine-tune ``model`` (loaded, or a ``ModelRef`` that is loaded where it trains) on ``train`` (question,
    answer, category), evaluating on ``dev`` (question, answer) and ``test`` (qid, relation, question, answer,
    category, ood) after every epoch.

    ``on_epoch(metrics, epoch)`` is called once per epoch with every per-epoch metric, in this process. Resumes
    from ``run_dir/last.ckpt`` when present; a finished run is returned as it is. Trains a copy of ``model.model``
    unless ``in_place`` (in rank processes the caller's object is never touched: they load their own).
    """
    if dev.height == 0:
        raise BenchmarkError("the dev set is empty: EARLY_STOP needs dev questions")
    _check_batches(train, config)
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    identity = model_identity(model)
    fingerprint = run_fingerprint(identity, train, dev, test, config)
    if inside_ranks():  # torchrun/srun started this as one of several ranks: every rank trains, none waits
        if not isinstance(model, LoadedModel):
            model = model.load("cpu")
        return _train(model, train, dev, test, config, run_dir, on_epoch, fingerprint, in_place=in_place)
    with stage_lock(run_dir):  # another process training this run directory finishes first; then it is reused
        finished = _existing(run_dir, fingerprint, config)
        if finished is not None:
            return result_from_state(finished, test, run_dir)
        source = model.spec() if isinstance(model, ModelRef) else None
        (run_dir / CONFIG_FILE).write_text(json.dumps(
            {"model": identity, "model_source": source, "prompt": finetune_prompt("<question>") + completion("<answer>"),
             "train": config.model_dump(mode="json")}, indent=2))
        if parallel.needs_ranks(config):
            from benchmark.launch import train_on_ranks

            last = run_dir / LAST
            done = len(saved_state(last)["history"]) if last.exists() else 0
            train_on_ranks(model, train, dev, test, config, run_dir, on_epoch, fingerprint=fingerprint,
                           reported_through=done, threads=torch.get_num_threads())
            state = checkpoints.read_state(run_dir)
            if state is None or not state["finished"]:
                raise BenchmarkError(f"{run_dir}: the ranks ended without a finished run")
            return result_from_state(state, test, run_dir)
        if not isinstance(model, LoadedModel):
            model, in_place = model.load("cpu"), True
        return _train(model, train, dev, test, config, run_dir, on_epoch, fingerprint, in_place=in_place)


def train_rank(model: LoadedModel, train: pl.DataFrame, dev: pl.DataFrame, test: pl.DataFrame,
               config: TrainConfig, run_dir: Path, *, fingerprint: str) -> None:
    """One rank of a run that ``fine_tune`` started (``benchmark.launch.run_rank``): it checked the run
    directory already, and holds its lock."""
    _train(model, train, dev, test, config, Path(run_dir), None, fingerprint, in_place=True)


def _train(model: LoadedModel, train: pl.DataFrame, dev: pl.DataFrame, test: pl.DataFrame, config: TrainConfig,
           run_dir: Path, on_epoch: OnEpoch | None, fingerprint: str, *, in_place: bool) -> FineTuneResult:
    last = run_dir / LAST
    L.seed_everything(config.seed, verbose=False)
    network = make_thread_invariant(model.model if in_place else copy.deepcopy(model.model))
    if config.dropout is not None:
        apply_dropout(network, config.dropout)
    if config.method == "lora":
        network = add_lora(network, config)
    if not parallel.sharded(config):  # FSDP casts each unit as it shards it (benchmark.parallel.shard)
        parallel.master_weights(network)
    network.train()  # loaded models come in eval mode; Lightning keeps each module's mode as it finds it
    module = FineTuneModule(network, config)
    data = QADataModule(model.tokenizer, train, config)
    epoch_end = EpochEnd(EvaluationSets(train, dev, test), model.tokenizer, config, run_dir, on_epoch, fingerprint)
    main_thread = threading.current_thread() is threading.main_thread()
    interrupt_handler = signal.getsignal(signal.SIGINT) if main_thread else None
    with quiet_lightning():
        trainer = make_trainer(config, [epoch_end], run_dir, checkpoint_io=epoch_end.checkpoint_io)
        try:
            trainer.fit(module, datamodule=data, ckpt_path=last if last.exists() else None, weights_only=True)
        except SystemExit as exc:
            # Lightning turns Ctrl-C into sys.exit(1); give the caller its KeyboardInterrupt back so it can mark
            # the run KILLED (and resume it later) rather than FAILED.
            if isinstance(exc.__context__, KeyboardInterrupt):
                raise KeyboardInterrupt from exc
            raise
        finally:
            if main_thread and interrupt_handler is not None:
                signal.signal(signal.SIGINT, interrupt_handler)  # Lightning ignores Ctrl-C after one
    network.eval()
    return result_from_state(epoch_end.result_state(), test, run_dir)


def export(run_dir: Path, which: str, out: Path, base: LoadedModel | ModelRef | None = None) -> Path:
    """The run's EARLY_STOP (``which="early_stop"``) or CONVERGENCE weights as a ``save_pretrained`` folder (an
    adapter folder with LoRA) in ``out``. ``base``: the model the run started from; by default the component
    named in the run's train_config.json (runs of the pipeline)."""
    run_dir = Path(run_dir)
    if base is None:
        source = json.loads((run_dir / CONFIG_FILE).read_text()).get("model_source")
        if not source:
            raise BenchmarkError(f"{run_dir / CONFIG_FILE}: names no model component; pass the base model")
        base = ModelRef(source["name"], source["overrides"], source["registry_root"])
    if isinstance(base, ModelRef):
        base = base.load("cpu")
    return checkpoints.export(run_dir, which, out, base)
