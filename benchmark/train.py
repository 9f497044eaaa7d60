"""Fine-tune any causal LM on question/answer pairs with Lightning, evaluating it every epoch (docs/method.md §4).

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

**Run directory** (given by the caller; ``benchmark.checkpoints``): ``best.ckpt`` and ``convergence.ckpt`` (the
weights at EARLY_STOP and CONVERGENCE, weights only, the adapter only with LoRA), ``last.ckpt`` (everything to
resume: weights, optimizer, scheduler, loop position, history, RNG state; one, rewritten every
``checkpoint_every`` epochs, removed when the run finishes), ``state.json`` (the finished run's history and
predictions), ``progress.jsonl`` (each epoch's metrics as it ends), ``train_config.json``. Each has its checksum
(hashed while written); a damaged one is reported and never resumed from. Checkpoints load with
``torch.load(path, weights_only=True)``. A finished run is returned without training; an unfinished one continues
from ``last.ckpt``; a run directory of another model, data set or configuration is refused. While one process
trains a run directory it holds its lock (``benchmark.cache.stage_lock``): another one waits, then reuses it.

One device (the default)::

    fine_tune(model, train, dev, test, TrainConfig(), Path("runs/x"))

Several devices, from a plain call (a script, ``python -m benchmark run``, a test)::

    TrainConfig(strategy="fsdp", accelerator="gpu", devices=8, precision="bf16-mixed")   # an 8B full fine-tune
    TrainConfig(strategy="ddp", accelerator="cpu", devices=2)                            # gloo; what tests run

**Ranks.** Several devices, or FSDP on any number, train in rank processes that ``fine_tune`` starts
(``benchmark.launch``: ``python -m benchmark train-step RUN_DIR`` per rank, never the caller's command line again);
the caller waits, calls ``on_epoch`` in its own process as each epoch is reported, and reads the result from
``state.json``. Called in processes that torchrun, srun or mpirun started as several ranks, ``fine_tune`` joins
them instead. Strategies, sharding and precision: ``benchmark.parallel``. ``batch_size`` is per rank: n ranks of
batch B take the optimizer steps of one process with batch B and ``accumulate_grad_batches=n`` (tested: the same
weights under DDP; up to float summation order under FSDP).

**Evaluation on several ranks**: every rank answers its share of the questions (``benchmark.evaluate``: whole
batches of the one-process batching, so the answers are the one-process answers) and every rank gets all the
answers, so all keep the same history and decide alike whether to save ``best.ckpt`` (saving is collective).
Rank 0 alone reports (``on_epoch``, ``progress.jsonl``). Resuming restores rank 0's RNG state on every rank: exact
without dropout, an equally valid but different draw with it.

**Precision**: trained weights are float32 (master weights) whatever the model was loaded in; ``precision``
chooses the compute dtype (``benchmark.parallel``).
"""

from __future__ import annotations

import copy
import json
import math
import signal
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from time import perf_counter

import lightning as L
import polars as pl
import torch
from torch.utils.data import DataLoader

from benchmark import checkpoints, parallel, progress
from benchmark.analyse import fitting_speed
from benchmark.backends.decoding import encode_pairs, positions
from benchmark.cache import content_key, report_corrupt, stage_lock
from benchmark.checkpoints import BEST, CONVERGENCE, LAST
from benchmark.errors import BenchmarkError
from benchmark.evaluate import EvaluationSets, evaluate_epoch, predictions_table
from benchmark.launch import ModelRef, inside_ranks, ranks_started_by_a_launcher
from benchmark.prompts import completion, finetune_prompt
from benchmark.runtime import quiet_lightning
from benchmark.thread_invariant import make_thread_invariant
from benchmark.train_config import TrainConfig, result_settings
from components.base import LoadedModel

IGNORE_INDEX = -100  # label value that cross-entropy skips: prompt and padding tokens
CONFIG_FILE = "train_config.json"
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

    def configure_model(self) -> None:
        """Under FSDP: shard the causal LM over the ranks (Lightning calls this once the ranks have met)."""
        if parallel.sharded(self.config) and not parallel.fsdp_units(self.causal_lm):
            parallel.shard(self.causal_lm, self.device_mesh["data_parallel"], self.config)

    def weights(self) -> dict[str, torch.Tensor]:
        """What a weights-only checkpoint holds, named as Lightning names them (``model.<name>``): every weight,
        or with LoRA the trained ones (the adapter). Under FSDP, this rank's shards."""
        if parallel.sharded(self.config):
            from torch.distributed.checkpoint.state_dict import get_model_state_dict

            state = get_model_state_dict(self.model)
        else:
            state = self.model.state_dict()
        if self.config.method == "lora":
            trained = {name for name, p in self.model.named_parameters() if p.requires_grad}
            state = {k: v for k, v in state.items() if k in trained}
        return {f"model.{k}": v for k, v in state.items()}


# ---------------------------------------------------------------- every epoch


def early_stop_epoch(history: Sequence[dict[str, float]]) -> int:
    """EARLY_STOP: the epoch with the best dev accuracy; on a tie, the earliest of them."""
    best = max(row["dev/acc/all"] for row in history)
    return min(int(row["epoch"]) for row in history if row["dev/acc/all"] == best)


class EpochEnd(L.Callback):
    """Once per epoch, on every rank: evaluate (each rank its share), report (rank 0: ``progress.jsonl`` and
    ``on_epoch``), save best.ckpt (dev improved), then either last.ckpt (every ``checkpoint_every`` epochs) or, at
    the last epoch, convergence.ckpt and state.json, and last.ckpt goes.

    Reporting comes before last.ckpt is written: a run killed in between repeats (and reports again) that epoch
    rather than skip it. The state below travels in last.ckpt and, without the RNG state, in state.json.
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
        self.checkpoint_io = checkpoints.streaming_checkpoint_io()

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

        started = perf_counter()
        pl_module.eval()
        with parallel.gathered(pl_module.causal_lm), torch.no_grad(), trainer.precision_plugin.forward_context():
            result = evaluate_epoch(pl_module.causal_lm, self.tokenizer, self.sets, ranks=parallel.ranks_of(trainer),
                                    batch_size=self.config.eval_batch_size, idk_answer=self.config.idk_answer)
        pl_module.train()
        # Optimizer steps so far: what a comparison on equal footing must hold equal besides the epochs.
        metrics = {**result.metrics, "train/loss": loss, "train/optimizer_steps": float(trainer.global_step),
                   "time/epoch_seconds": train_seconds,
                   "time/train_tokens_per_s": tokens / max(train_seconds, 1e-9),
                   "time/eval_seconds": perf_counter() - started}
        # Every rank has every answer; rank 0's timings go to all, so every rank keeps the same history.
        metrics = trainer.strategy.broadcast(metrics, src=0)
        test_predictions = result.test_predictions

        self.history.append({"epoch": epoch, **metrics})
        improved = early_stop_epoch(self.history) == epoch
        if improved:
            self.best_epoch, self.best_predictions = epoch, test_predictions
        self.last_predictions = test_predictions
        self.finished = epoch >= self.config.epochs

        if trainer.is_global_zero:
            progress.append(self.run_dir, metrics, epoch)
            if self.on_epoch is not None:
                self.on_epoch(metrics, epoch)
        if improved:
            self._save_weights(trainer, pl_module, BEST, epoch)
        if self.finished:
            self._save_weights(trainer, pl_module, CONVERGENCE, epoch)
            if trainer.is_global_zero:
                checkpoints.write_state(self.run_dir, self.result_state())
            trainer.strategy.barrier("EpochEnd.finished")
            if trainer.is_global_zero:  # the resume state is not needed any more
                checkpoints.remove(self.run_dir / LAST)
        elif epoch % self.config.checkpoint_every == 0:
            self._save_resumable(trainer)

    def _save_weights(self, trainer, pl_module: FineTuneModule, name: str, epoch: int) -> None:
        checkpoints.save_weights(pl_module.weights(), self.run_dir / name, epoch=epoch,
                                 trainable_only=self.config.method == "lora", ranks=parallel.ranks_of(trainer),
                                 sharded=parallel.sharded(self.config))
        trainer.strategy.barrier("EpochEnd.weights")

    def _save_resumable(self, trainer) -> None:
        """last.ckpt through Lightning (everything to resume), replaced atomically with its checksum."""
        final = self.run_dir / LAST
        # Sharded: every rank writes under one agreed name; a single file: under a name of this process alone.
        sharded = parallel.sharded(self.config)
        tmp = checkpoints.temporary(final) if sharded else checkpoints.private_temporary(final)
        ranks = parallel.ranks_of(trainer)
        if sharded:
            if trainer.is_global_zero:
                checkpoints.remove(tmp)
            trainer.strategy.barrier("EpochEnd.resumable")
            trainer.save_checkpoint(tmp)  # a torch.distributed.checkpoint folder: each rank writes its shard
            checkpoints.finish_sharded(tmp, final, ranks)
        else:
            trainer.save_checkpoint(tmp)  # rank 0 writes it, hashed as it streams out (StreamingCheckpointIO)
            if trainer.is_global_zero:
                checkpoints.commit(tmp, final, self.checkpoint_io.written.pop(str(tmp)))
        trainer.strategy.barrier("EpochEnd.resumable")

    def result_state(self) -> dict:
        """What a finished run needs to be returned again (state.json)."""
        return {"fingerprint": self.fingerprint, "history": self.history, "best_epoch": self.best_epoch,
                "best_predictions": self.best_predictions, "last_predictions": self.last_predictions,
                "finished": self.finished}

    def state_dict(self) -> dict:
        rng = {"torch": torch.get_rng_state()}
        if torch.cuda.is_available():
            rng["cuda"] = torch.cuda.get_rng_state_all()
        return {**self.result_state(), "rng": rng}

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
    best_checkpoint: Path  # weights at EARLY_STOP
    convergence_checkpoint: Path  # weights at CONVERGENCE


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
                          best_checkpoint=run_dir / BEST, convergence_checkpoint=run_dir / CONVERGENCE)


def model_identity(model: LoadedModel | ModelRef) -> str:
    return model.identity


def run_fingerprint(identity: str, train: pl.DataFrame, dev: pl.DataFrame, test: pl.DataFrame,
                    config: TrainConfig) -> str:
    """What a run directory's checkpoints were computed from; resuming with anything else is refused. The layout
    counts only where it changes the numbers (``train_config.result_settings``), so a run may resume on another
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
