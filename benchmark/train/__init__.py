"""Fine-tune any causal LM on question/answer pairs with Lightning, evaluating it every epoch (docs/method.md §4).

    fine_tune(model, train, dev, test, config, run_dir, on_epoch) -> FineTuneResult
      ├─ QADataModule      tokenised prompt + completion pairs, batches of similar length
      ├─ FineTuneModule    the model, AdamW with linear warmup, loss on the completion only
      └─ EpochEnd          every epoch, in this order: evaluate (benchmark.evaluate) → on_epoch(metrics, epoch)
                           → best.ckpt (if dev improved) → last.ckpt

Modules (``benchmark.train`` re-exports the names the rest of the code uses, importing a module only when one of
its names is asked for, so ``benchmark.train.config`` stays torch-free for ``validate`` and ``categorize``):

    config.py    TrainConfig (the suite's ``train:`` section) and result_settings (what keys and fingerprints see)
    data.py      encode_examples, Collate, LengthGroupedBatchSampler, QADataModule
    model.py     apply_dropout, add_lora, LrSchedule, make_optimizer, FineTuneModule
    epochs.py    EpochEnd (every epoch: evaluate, report, save), early_stop_epoch, summarise
    run.py       fine_tune, train_rank (one rank of a started run), export, FineTuneResult, the run directory's checks

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

import importlib

# The names the rest of the code imports from ``benchmark.train``, and the module that defines each.
_HOMES = {
    "TrainConfig": "config", "result_settings": "config",
    "IGNORE_INDEX": "data", "Collate": "data", "LengthGroupedBatchSampler": "data", "QADataModule": "data",
    "encode_examples": "data",
    "FineTuneModule": "model", "add_lora": "model", "apply_dropout": "model", "make_optimizer": "model",
    "early_stop_epoch": "epochs",
    "FineTuneResult": "run", "export": "run", "fine_tune": "run", "make_trainer": "run", "saved_state": "run",
    "train_rank": "run",
}
__all__ = sorted(_HOMES)


def __getattr__(name: str):
    """Import the defining module on first use (PEP 562): Lightning and torch load only with what needs them."""
    if name not in _HOMES:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_HOMES[name]}"), name)


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_HOMES))
