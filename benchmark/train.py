"""Fine-tune any causal LM on question/answer pairs with Lightning, evaluating it every epoch (DESIGN.md §1.4).

    fine_tune(model, train, dev, test, config, run_dir, on_epoch) -> FineTuneResult
      ├─ QADataModule      tokenised prompt + completion pairs, batches of similar length
      ├─ FineTuneModule    the model, AdamW with linear warmup, loss on the completion only
      └─ EpochEnd          every epoch, in this order: evaluate (benchmark.evaluate) → on_epoch(metrics, epoch)
                           → best.ckpt (if dev improved) → last.ckpt

**Loss.** Each example is ``finetune_prompt(q) + completion(a)`` = "Answer the following question. <q>\\nA: <a>\\n".
Labels are -100 on every prompt token and every padding token: the loss covers the answer's tokens and the
newline terminator, nothing else (the model learns to answer and to stop, not to write questions).

**Epochs** are numbered from 1 (epoch 1 = the model after one pass over the train set). EARLY_STOP is the
epoch with the best dev accuracy (ties → the earliest), CONVERGENCE the last epoch run.

**The caller's model is never changed**: ``fine_tune`` trains a deep copy (dropout and LoRA are applied to the
copy). For a model too large to hold twice, ``in_place=True`` trains the caller's object itself; reload the
base model before the next variant then.

**Run directory** (given by the caller): ``last.ckpt`` (weights, optimizer, scheduler, loop position, history,
RNG state: everything to resume), ``best.ckpt`` (weights at the best dev epoch), ``train_config.json``; each
checkpoint has its sha256 in ``<name>.sha256`` beside it, and a damaged one is reported and never resumed from. Both
checkpoints are plain Lightning checkpoints that load with ``torch.load(path, weights_only=True)``. If
``last.ckpt`` exists, training continues from it (and a finished run is returned without training); a run
directory from another model, data set or configuration is refused.

One device (the default)::

    fine_tune(model, train, dev, test, TrainConfig(), Path("runs/x"))

Several devices on one machine, from a plain call (a script, ``python -m benchmark run``, a test)::

    TrainConfig(strategy="ddp", accelerator="gpu", devices=8, precision="bf16-mixed")
    TrainConfig(strategy="ddp", accelerator="cpu", devices=2)   # gloo; what the tests run

**How DDP starts.** Lightning's plain ``"ddp"`` starts ranks 1..n by re-running the command line of the calling
process: the whole ``benchmark run`` (SliCK, MLflow runs) or the whole pytest session once more per rank. So when
no launcher has started the ranks, ``strategy: ddp`` spawns them (``torch.multiprocessing``, start method
spawn): only ``fine_tune``'s training runs in them, the caller's process waits, then reads the results back from
``last.ckpt`` (and gets the trained weights when ``in_place``). Under ``torchrun``, ``srun``, ``mpirun`` or LSF
(the ranks exist already) ``"ddp"`` joins them as Lightning does. ``batch_size`` is per rank: n ranks of batch B
take the same optimizer steps as one process with batch B and ``accumulate_grad_batches=n`` (tested, equal up
to float summation order in ``train/loss``). FSDP and DeepSpeed keep Lightning's own launch (start them with
``torchrun``/``srun``); they need a GPU and are not tested here.

**Evaluation under DDP** runs on rank 0 alone, on the whole model every rank holds, while the others wait; its
metrics and predictions are broadcast, so every rank keeps the same history and decides alike whether to save
``best.ckpt`` (saving is collective). Sharded strategies (FSDP, DeepSpeed) need every rank in each forward pass,
so there every rank evaluates. Only global rank zero calls ``on_epoch``: with spawned ranks it runs in rank 0's
process, so it must be picklable (a module-level function, not a lambda). Resuming a DDP run restores rank 0's RNG
state on every rank: exact without dropout, an equally valid but different draw with it.
"""

from __future__ import annotations

import copy
import json
import math
import os
import signal
import threading
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from time import perf_counter

import lightning as L
import polars as pl
import torch
from torch.utils.data import DataLoader

from benchmark.analyse import fitting_speed
from benchmark.backends.decoding import encode_pairs, positions
from benchmark.cache import content_key, record_checksum, remove_with_checksum, report_corrupt, verify_file
from benchmark.errors import BenchmarkError
from benchmark.evaluate import EvaluationSets, evaluate_epoch, predictions_table
from benchmark.layernorm import make_thread_invariant
from benchmark.prompts import completion, finetune_prompt
from benchmark.runtime import quiet_lightning, silence_lightning
from benchmark.train_config import RUNTIME_ONLY_FIELDS, TrainConfig
from components.base import LoadedModel

IGNORE_INDEX = -100  # label value that cross-entropy skips: prompt and padding tokens
LAST, BEST, CONFIG_FILE = "last.ckpt", "best.ckpt", "train_config.json"
# Hugging Face config fields that hold a dropout probability (GPT-2, Llama/Qwen, BERT-style names).
DROPOUT_FIELDS = ("resid_pdrop", "embd_pdrop", "attn_pdrop", "dropout", "attention_dropout", "hidden_dropout",
                  "hidden_dropout_prob", "attention_probs_dropout_prob", "activation_dropout")
OnEpoch = Callable[[dict[str, float], int], None]


# ---------------------------------------------------------------- data


def encode_examples(tokenizer, questions: Sequence[str], answers: Sequence[str]) -> list[tuple[list[int], int]]:
    """Token ids of prompt + completion for each pair, and the index where the completion starts."""
    return encode_pairs(tokenizer, [finetune_prompt(q) for q in questions], [completion(a) for a in answers])


@dataclass(frozen=True)
class Collate:
    """Right-pads a batch. Labels: -100 on the prompt and the padding, the token ids on the completion.
    Position ids come from the attention mask (0, 1, 2, ... on the real tokens), as the HF model needs."""

    pad_token_id: int

    def __call__(self, examples: Sequence[tuple[list[int], int]]) -> dict[str, torch.Tensor]:
        width = max(len(ids) for ids, _ in examples)
        input_ids = torch.full((len(examples), width), self.pad_token_id, dtype=torch.long)
        labels = torch.full((len(examples), width), IGNORE_INDEX, dtype=torch.long)
        attention_mask = torch.zeros((len(examples), width), dtype=torch.long)
        for row, (ids, completion_start) in enumerate(examples):
            input_ids[row, :len(ids)] = torch.tensor(ids)
            labels[row, completion_start:len(ids)] = torch.tensor(ids[completion_start:])
            attention_mask[row, :len(ids)] = 1
        return {"input_ids": input_ids, "attention_mask": attention_mask,
                "position_ids": positions(attention_mask), "labels": labels}


class LengthGroupedBatchSampler:
    """Batches of similar length, in a new random order every epoch that depends only on (seed, epoch).

    Each epoch: draw the epoch's example slots (below), shuffle them, cut the shuffled list into pools of
    ``batch_size * length_grouping``, sort each pool by length, cut it into batches, shuffle the batches.
    ``epoch`` is read when iteration starts (``epoch_of()``), so a resumed run draws the same batches as an
    uninterrupted one. Under DDP each rank takes every ``num_replicas``-th batch (the tail that does not divide
    evenly is dropped).

    **Slots per epoch.** ``examples_per_epoch`` None (or the set's size n): one pass, every example once. A larger
    m = q·n + r: q seeded permutations of the set (so an epoch covers every example), plus r examples taken in turn
    from one fixed seeded cycle over the set, epoch e taking positions e·r to (e + 1)·r − 1 of it: over E epochs
    every example is drawn q·E + ⌊E·r/n⌋ or one more times. ``len`` and the batch sizes are then those of a set of
    m examples, so a smaller set trained with m = |D| takes exactly the optimizer steps, and gets exactly the
    learning-rate schedule (sized from ``len``), of the set of |D| it is compared with. An example may then sit
    twice in one batch (copies have the same length, so length grouping puts them near each other).
    """

    def __init__(self, lengths: Sequence[int], batch_size: int, *, seed: int, length_grouping: int = 8,
                 epoch_of: Callable[[], int] = lambda: 0, num_replicas: int = 1, rank: int = 0,
                 examples_per_epoch: int | None = None):
        self.lengths, self.batch_size, self.seed = list(lengths), batch_size, seed
        self.length_grouping, self.epoch_of = length_grouping, epoch_of
        self.num_replicas, self.rank = num_replicas, rank
        self.slots = len(self.lengths) if examples_per_epoch is None else examples_per_epoch

    def epoch_slots(self, epoch: int, generator: torch.Generator) -> list[int]:
        """The example index of every slot of ``epoch``, in a random order (see the class docstring)."""
        n, m = len(self.lengths), self.slots
        if m == n or n == 0:  # one pass: exactly the order a plain shuffled epoch has
            return torch.randperm(n, generator=generator).tolist()
        passes, extra = divmod(m, n)
        slots = [i for _ in range(passes) for i in torch.randperm(n, generator=generator).tolist()]
        if extra:
            # Its own generator, seeded apart from every epoch's, so the cycle is the same in every epoch.
            cycle = torch.randperm(n, generator=torch.Generator().manual_seed((1 << 62) + self.seed)).tolist()
            slots += [cycle[(epoch * extra + j) % n] for j in range(extra)]
        return [slots[i] for i in torch.randperm(m, generator=generator).tolist()]

    def batches(self, epoch: int) -> list[list[int]]:
        generator = torch.Generator().manual_seed(self.seed * 100_003 + epoch)
        order = self.epoch_slots(epoch, generator)
        pool_size = self.batch_size * self.length_grouping
        batches = []
        for start in range(0, len(order), pool_size):
            pool = sorted(order[start:start + pool_size], key=lambda i: self.lengths[i])  # stable: ties stay random
            batches += [pool[i:i + self.batch_size] for i in range(0, len(pool), self.batch_size)]
        batches = [batches[i] for i in torch.randperm(len(batches), generator=generator).tolist()]
        usable = len(batches) - len(batches) % self.num_replicas
        return batches[self.rank:usable:self.num_replicas]

    def __iter__(self) -> Iterator[list[int]]:
        yield from self.batches(self.epoch_of())

    def __len__(self) -> int:
        return math.ceil(self.slots / self.batch_size) // self.num_replicas


class QADataModule(L.LightningDataModule):
    """The fine-tuning set, tokenised once. Dev and test are evaluated by ``EpochEnd``, not by a val loop."""

    def __init__(self, tokenizer, train: pl.DataFrame, config: TrainConfig):
        super().__init__()
        self.config = config
        self.examples = encode_examples(tokenizer, train["question"].to_list(), train["answer"].to_list())
        self.collate = Collate(tokenizer.pad_token_id)

    def _epoch(self) -> int:
        return self.trainer.current_epoch if self.trainer is not None else 0

    def train_dataloader(self) -> DataLoader:
        trainer = self.trainer
        sampler = LengthGroupedBatchSampler(
            [len(ids) for ids, _ in self.examples], self.config.batch_size, seed=self.config.seed,
            length_grouping=self.config.length_grouping, epoch_of=self._epoch,
            num_replicas=trainer.world_size if trainer else 1, rank=trainer.global_rank if trainer else 0,
            examples_per_epoch=self.config.examples_per_epoch)
        # Its own generator, so building the loader each epoch never draws from the global RNG (dropout's).
        return DataLoader(self.examples, batch_sampler=sampler, collate_fn=self.collate, num_workers=0,
                          generator=torch.Generator().manual_seed(self.config.seed))


# ---------------------------------------------------------------- model


def apply_dropout(model: torch.nn.Module, p: float) -> None:
    """Set dropout to ``p`` in the HF config fields that exist and in the layers already built from them."""
    for name in DROPOUT_FIELDS:
        if isinstance(getattr(model.config, name, None), int | float):
            setattr(model.config, name, p)
    for module in model.modules():
        if isinstance(module, torch.nn.Dropout):
            module.p = p
        elif isinstance(getattr(module, "attention_dropout", None), float):  # Llama-style attention reads a float
            module.attention_dropout = p


def add_lora(model: torch.nn.Module, config: TrainConfig) -> torch.nn.Module:
    try:
        from peft import LoraConfig, get_peft_model
    except ImportError as exc:
        raise BenchmarkError("method: lora needs peft (pip install 'slick-bench[lora]')") from exc
    lora = LoraConfig(task_type="CAUSAL_LM", r=config.lora_r, lora_alpha=config.lora_alpha,
                      lora_dropout=config.lora_dropout, target_modules=config.lora_target_modules)
    try:
        return get_peft_model(model, lora)
    except ValueError as exc:
        raise BenchmarkError(f"lora_target_modules: {exc} (name the layers, e.g. [q_proj, v_proj])") from exc


@dataclass
class LrSchedule:
    """Multiplier of the peak learning rate at each optimizer step: linear warmup, then constant or decay."""

    warmup_steps: int
    total_steps: int
    kind: str = "constant"

    def __call__(self, step: int) -> float:
        if step < self.warmup_steps:
            return (step + 1) / (self.warmup_steps + 1)
        if self.kind == "constant":
            return 1.0
        progress = min(1.0, (step - self.warmup_steps) / max(1, self.total_steps - self.warmup_steps))
        return 1.0 - progress if self.kind == "linear" else 0.5 * (1.0 + math.cos(math.pi * progress))


def make_optimizer(model: torch.nn.Module, config: TrainConfig, total_steps: int):
    """AdamW (weight decay on matrices only) and the per-step learning-rate schedule."""
    trainable = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    groups = [{"params": [p for _, p in trainable if p.ndim >= 2], "weight_decay": config.weight_decay},
              {"params": [p for _, p in trainable if p.ndim < 2], "weight_decay": 0.0}]
    optimizer = torch.optim.AdamW([g for g in groups if g["params"]], lr=config.lr)
    schedule = LrSchedule(round(config.warmup_ratio * total_steps), total_steps, config.lr_schedule)
    return optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)


class FineTuneModule(L.LightningModule):
    """The model being fine-tuned. ``causal_lm`` is the HF model itself (with LoRA layers inside, if any)."""

    def __init__(self, model: torch.nn.Module, config: TrainConfig):
        super().__init__()
        self.model, self.config = model, config
        self.reset_epoch_totals()

    @property
    def causal_lm(self) -> torch.nn.Module:
        return self.model.get_base_model() if hasattr(self.model, "get_base_model") else self.model

    def reset_epoch_totals(self) -> None:
        self._loss_sum, self._target_tokens, self._input_tokens = 0.0, 0, 0

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        # HF shifts the labels and averages cross-entropy over the positions whose label is not -100:
        # exactly the completion tokens (answer + "\n").
        out = self.causal_lm(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                             position_ids=batch["position_ids"], labels=batch["labels"], use_cache=False)
        targets = (batch["labels"][:, 1:] != IGNORE_INDEX).sum()
        self._loss_sum = self._loss_sum + out.loss.detach() * targets
        self._target_tokens = self._target_tokens + targets
        self._input_tokens = self._input_tokens + batch["attention_mask"].sum()
        return out.loss

    def epoch_totals(self) -> tuple[float, int]:
        """Mean loss per completion token and input tokens seen this epoch, summed over every rank."""
        totals = torch.tensor([float(self._loss_sum), float(self._target_tokens), float(self._input_tokens)],
                              device=self.device)
        totals = self.trainer.strategy.reduce(totals, reduce_op="sum")
        loss_sum, targets, inputs = totals.tolist()
        return loss_sum / max(targets, 1.0), int(inputs)

    def configure_optimizers(self):
        optimizer, scheduler = make_optimizer(self.model, self.config, int(self.trainer.estimated_stepping_batches))
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}


# ---------------------------------------------------------------- every epoch


def early_stop_epoch(history: Sequence[dict[str, float]]) -> int:
    """EARLY_STOP: the epoch with the best dev accuracy; on a tie, the earliest of them."""
    best = max(row["dev/acc/all"] for row in history)
    return min(int(row["epoch"]) for row in history if row["dev/acc/all"] == best)


def evaluates_on_rank_zero_only(strategy) -> bool:
    """DDP keeps the whole model on every rank, so rank 0 evaluates alone. Sharded strategies (FSDP, DeepSpeed,
    anything else parallel) need every rank in each forward pass."""
    from lightning.pytorch.strategies import DDPStrategy, DeepSpeedStrategy, ParallelStrategy

    if not isinstance(strategy, ParallelStrategy):
        return True
    return isinstance(strategy, DDPStrategy) and not isinstance(strategy, DeepSpeedStrategy)


class EpochEnd(L.Callback):
    """Once per epoch: evaluate, hand the metrics to ``on_epoch``, save best.ckpt (dev improved) and last.ckpt.

    ``on_epoch`` runs before last.ckpt is written: a run killed in between repeats (and reports again) that
    epoch rather than skip it. The state below travels in last.ckpt and is all a finished run needs.
    """

    def __init__(self, sets: EvaluationSets, tokenizer, config: TrainConfig, run_dir: Path,
                 on_epoch: OnEpoch | None, fingerprint: str):
        self.sets, self.tokenizer, self.config, self.run_dir = sets, tokenizer, config, run_dir
        self.on_epoch, self.fingerprint = on_epoch, fingerprint
        self.history: list[dict[str, float]] = []
        self.best_epoch = 0
        self.best_predictions: list[str] = []
        self.last_predictions: list[str] = []
        self.finished = False
        self._started = 0.0

    @property
    def state_key(self) -> str:
        return "EpochEnd"

    def on_train_epoch_start(self, trainer, pl_module: FineTuneModule) -> None:
        pl_module.reset_epoch_totals()
        self._started = perf_counter()

    def on_train_epoch_end(self, trainer, pl_module: FineTuneModule) -> None:
        train_seconds = perf_counter() - self._started
        epoch = trainer.current_epoch + 1
        loss, tokens = pl_module.epoch_totals()

        evaluated = None
        if trainer.is_global_zero or not evaluates_on_rank_zero_only(trainer.strategy):
            started = perf_counter()
            pl_module.eval()
            with torch.no_grad(), trainer.precision_plugin.forward_context():
                result = evaluate_epoch(pl_module.causal_lm, self.tokenizer, self.sets,
                                        batch_size=self.config.eval_batch_size, idk_answer=self.config.idk_answer)
            pl_module.train()
            # Optimizer steps so far: what a comparison on equal footing must hold equal besides the epochs.
            metrics = {**result.metrics, "train/loss": loss, "train/optimizer_steps": float(trainer.global_step),
                       "time/epoch_seconds": train_seconds,
                       "time/train_tokens_per_s": tokens / max(train_seconds, 1e-9),
                       "time/eval_seconds": perf_counter() - started}
            evaluated = (metrics, result.test_predictions)
        # Rank 0's numbers on every rank (one process: a no-op), so all keep the same state and save alike.
        metrics, test_predictions = trainer.strategy.broadcast(evaluated, src=0)

        self.history.append({"epoch": epoch, **metrics})
        improved = early_stop_epoch(self.history) == epoch
        if improved:
            self.best_epoch, self.best_predictions = epoch, test_predictions
        self.last_predictions = test_predictions
        self.finished = epoch >= self.config.epochs

        if trainer.is_global_zero and self.on_epoch is not None:
            self.on_epoch(metrics, epoch)
        if improved:
            self._save(trainer, BEST, weights_only=True)
        self._save(trainer, LAST, weights_only=False)

    def _save(self, trainer, name: str, *, weights_only: bool) -> None:
        """Write to a temporary name, then rename: a kill mid-write never leaves a broken checkpoint."""
        tmp = self.run_dir / f".{name}.tmp"
        trainer.save_checkpoint(tmp, weights_only=weights_only)
        trainer.strategy.barrier("EpochEnd._save")
        if trainer.is_global_zero:
            record_checksum(self.run_dir / name, tmp)  # verified before a resume (benchmark.cache)
            os.replace(tmp, self.run_dir / name)

    def state_dict(self) -> dict:
        rng = {"torch": torch.get_rng_state()}
        if torch.cuda.is_available():
            rng["cuda"] = torch.cuda.get_rng_state_all()
        return {"fingerprint": self.fingerprint, "history": self.history, "best_epoch": self.best_epoch,
                "best_predictions": self.best_predictions,
                "last_predictions": self.last_predictions, "finished": self.finished, "rng": rng}

    def load_state_dict(self, state: dict) -> None:
        self.history, self.best_epoch = state["history"], state["best_epoch"]
        self.best_predictions, self.last_predictions = state["best_predictions"], state["last_predictions"]
        self.finished = state["finished"]
        # Dropout draws from the global RNG: continue exactly where the interrupted run stopped.
        torch.set_rng_state(state["rng"]["torch"])
        if "cuda" in state["rng"] and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["rng"]["cuda"])


# ---------------------------------------------------------------- the stage


@dataclass
class FineTuneResult:
    history: pl.DataFrame  # one row per epoch: epoch + every per-epoch metric
    early_stop_epoch: int
    convergence_epoch: int
    # early_stop/..., convergence/..., fit/epochs_to_<p>pct/<Category> (NaN = never), train/optimizer_steps (the
    # run's total) and train/steps_per_epoch
    summary: dict[str, float]
    predictions: pl.DataFrame  # test predictions at EARLY_STOP and CONVERGENCE (column checkpoint)
    best_checkpoint: Path
    last_checkpoint: Path


def summarise(history: pl.DataFrame, early_stop_epoch: int) -> dict[str, float]:
    """Every non-timing metric at EARLY_STOP and at CONVERGENCE, the two epochs, and the fitting speed."""
    convergence_epoch = int(history["epoch"].max())
    summary: dict[str, float] = {"early_stop/epoch": float(early_stop_epoch),
                                 "convergence/epoch": float(convergence_epoch)}
    names = [c for c in history.columns if c != "epoch" and not c.startswith("time/")]
    for label, epoch in (("early_stop", early_stop_epoch), ("convergence", convergence_epoch)):
        row = history.filter(pl.col("epoch") == epoch).row(0, named=True)
        summary.update({f"{label}/{name}": float(row[name]) for name in names if row[name] is not None})
    for name, epochs in fitting_speed(history).items():
        summary[name] = float("nan") if epochs is None else float(epochs)
    if "train/optimizer_steps" in history.columns:  # every epoch takes the same number of steps
        total = float(history.filter(pl.col("epoch") == convergence_epoch)["train/optimizer_steps"][0])
        summary["train/optimizer_steps"] = total
        summary["train/steps_per_epoch"] = total / convergence_epoch
    return summary


def result_from_state(state: dict, test: pl.DataFrame, run_dir: Path) -> FineTuneResult:
    history = pl.DataFrame(state["history"])
    predictions = pl.concat([predictions_table(test, state["best_predictions"], "early_stop"),
                             predictions_table(test, state["last_predictions"], "convergence")])
    return FineTuneResult(history=history, early_stop_epoch=state["best_epoch"],
                          convergence_epoch=int(history["epoch"].max()),
                          summary=summarise(history, state["best_epoch"]), predictions=predictions,
                          best_checkpoint=run_dir / BEST, last_checkpoint=run_dir / LAST)


def run_fingerprint(model: LoadedModel, train: pl.DataFrame, dev: pl.DataFrame, test: pl.DataFrame,
                    config: TrainConfig) -> str:
    """What a run directory's checkpoints were computed from; resuming with anything else is refused."""
    settings = config.model_dump(mode="json", exclude=RUNTIME_ONLY_FIELDS)
    return content_key(model.identity, settings, train.select("question", "answer", "category").rows(),
                       dev.select("question", "answer").rows(),
                       test.select("question", "answer", "category", "ood").rows())


def saved_state(checkpoint: Path) -> dict:
    return torch.load(checkpoint, map_location="cpu", weights_only=True, mmap=True)["callbacks"]["EpochEnd"]


def ranks_started_by_a_launcher() -> bool:
    """torchrun, srun, mpirun, LSF (or Lightning itself) started this process as one rank of several: the cluster
    environments Lightning's own connector looks for, in its order."""
    from lightning.fabric.plugins.environments import (
        LSFEnvironment,
        MPIEnvironment,
        SLURMEnvironment,
        TorchElasticEnvironment,
    )

    return "LOCAL_RANK" in os.environ or any(
        env.detect() for env in (TorchElasticEnvironment, SLURMEnvironment, LSFEnvironment, MPIEnvironment))


class SpawnedDDP(L.pytorch.strategies.DDPStrategy):
    """DDP whose ranks this process spawns (``torch.multiprocessing``). Each rank starts as quiet as the caller:
    a spawned process inherits neither warning filters nor log levels."""

    def __init__(self, **kwargs):
        from transformers.utils import logging as hf_logging

        super().__init__(start_method="spawn", **kwargs)
        self._caller = (list(warnings.filters), hf_logging.get_verbosity())

    def setup_environment(self) -> None:
        from transformers.utils import logging as hf_logging

        filters, verbosity = self._caller
        warnings.filters[:] = filters
        hf_logging.set_verbosity(verbosity)
        silence_lightning()
        super().setup_environment()


def make_strategy(config: TrainConfig):
    """What ``Trainer(strategy=...)`` gets: ``ddp`` (and ``auto`` on several devices, which Lightning makes DDP)
    spawns its ranks unless a launcher started them (see the module docstring); every other choice goes to
    Lightning as it is."""
    if config.strategy not in ("ddp", "auto") or config.devices * config.num_nodes == 1 \
            or ranks_started_by_a_launcher():
        return config.strategy
    return SpawnedDDP()


def make_trainer(config: TrainConfig, callbacks: list[L.Callback], run_dir: Path, **overrides) -> L.Trainer:
    settings = dict(
        accelerator=config.accelerator, devices=config.devices, num_nodes=config.num_nodes,
        strategy=make_strategy(config), precision=config.precision, max_epochs=config.epochs,
        accumulate_grad_batches=config.accumulate_grad_batches, gradient_clip_val=config.gradient_clip,
        callbacks=callbacks, default_root_dir=run_dir, logger=False, enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0, limit_val_batches=0,
        use_distributed_sampler=False,  # LengthGroupedBatchSampler shards by rank itself
    )
    return L.Trainer(**{**settings, **overrides})


def fine_tune(model: LoadedModel, train: pl.DataFrame, dev: pl.DataFrame, test: pl.DataFrame, config: TrainConfig,
              run_dir: Path, on_epoch: OnEpoch | None = None, *, in_place: bool = False) -> FineTuneResult:
    """Fine-tune ``model`` on ``train`` (question, answer, category), evaluating on ``dev`` (question, answer)
    and ``test`` (qid, relation, question, answer, category, ood) after every epoch.

    ``on_epoch(metrics, epoch)`` is called once per epoch with every per-epoch metric. Resumes from
    ``run_dir/last.ckpt`` when present. Trains a copy of ``model.model`` unless ``in_place``.
    """
    if dev.height == 0:
        raise BenchmarkError("the dev set is empty: EARLY_STOP needs dev questions")
    slots = config.examples_per_epoch or train.height
    ranks, batches = config.devices * config.num_nodes, math.ceil(slots / config.batch_size)
    if ranks > 1 and batches < ranks:  # each rank takes whole batches; with fewer, some ranks would get none
        raise BenchmarkError(f"train: {slots} example slots per epoch make {batches} batch(es) of batch_size "
                             f"{config.batch_size}, fewer than the {ranks} ranks ({config.devices} devices x "
                             f"{config.num_nodes} nodes); lower train.batch_size")
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    fingerprint = run_fingerprint(model, train, dev, test, config)
    last = run_dir / LAST
    damaged = [problem for name in (LAST, BEST) if (problem := verify_file(run_dir / name))]
    if damaged:  # never resume from a truncated or corrupted checkpoint: start the variant again
        report_corrupt(damaged[0])
        for name in (LAST, BEST):
            remove_with_checksum(run_dir / name)
    if last.exists():
        state = saved_state(last)
        if state["fingerprint"] != fingerprint:
            raise BenchmarkError(f"{run_dir}: holds a run of another model, data set or train configuration; "
                                 "use a fresh run directory")
        if state["finished"]:
            return result_from_state(state, test, run_dir)
    (run_dir / CONFIG_FILE).write_text(json.dumps(
        {"model": model.identity, "prompt": finetune_prompt("<question>") + completion("<answer>"),
         "train": config.model_dump(mode="json")}, indent=2))

    L.seed_everything(config.seed, verbose=False)
    network = make_thread_invariant(model.model if in_place else copy.deepcopy(model.model))
    if config.dropout is not None:
        apply_dropout(network, config.dropout)
    if config.method == "lora":
        network = add_lora(network, config)
    network.train()  # loaded models come in eval mode; Lightning keeps each module's mode as it finds it
    module = FineTuneModule(network, config)
    data = QADataModule(model.tokenizer, train, config)
    epoch_end = EpochEnd(EvaluationSets(train, dev, test), model.tokenizer, config, run_dir, on_epoch, fingerprint)
    main_thread = threading.current_thread() is threading.main_thread()
    interrupt_handler = signal.getsignal(signal.SIGINT) if main_thread else None
    port = os.environ.get("MASTER_PORT")
    with quiet_lightning():
        trainer = make_trainer(config, [epoch_end], run_dir)
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
            if port is None:  # spawned ranks were given a free port; the next run picks its own
                os.environ.pop("MASTER_PORT", None)
    network.eval()
    # Spawned DDP ranks trained in other processes: this one's EpochEnd never ran, their last.ckpt holds the run.
    state = epoch_end.state_dict() if epoch_end.finished else saved_state(last)
    return result_from_state(state, test, run_dir)
