"""How much Lightning costs, and how much of an epoch evaluation takes (``slick-bench bench train``).

Two figures, on the embedded model:

- **throughput**: tokens/s of ``FineTuneModule`` under the Lightning ``Trainer`` against ``plain_train``, a plain
  PyTorch loop doing the same work (same model copy, dropout, batches, AdamW groups, schedule, gradient clipping),
  over the same steps after the same warm-up. Target: ratio ≥ 0.9. Seconds are the process's CPU time, and each
  figure is the best of ``repeats`` interleaved runs, so other jobs on a shared machine do not skew the
  comparison; with the default single torch thread this is the wall-clock rate of an idle machine.
- **evaluation share**: seconds of per-epoch evaluation (teacher-forced train fitting, greedy answers to every dev
  and test question) against seconds of training, from a short ``fine_tune`` run. Target: eval ≤ 0.5 × train.
  Evaluation costs about one forward pass per evaluated question and training about three per train example, so
  the share is set by the set sizes: it meets the target only when dev + test are smaller than about half the
  train set; with the default world's full dev and test sets (1,525 questions against 200 train) it is ~2-3×.

    .venv/bin/python -m benchmark bench train                # toy-gpt on the world, full dev and test
    .venv/bin/python -m benchmark bench train --dev-size 100 --test-size 300
    .venv/bin/python -m benchmark bench train --model toy-gpt-test   # on world-test (seconds)
"""

from __future__ import annotations

import copy
import itertools
import tempfile
from pathlib import Path
from time import process_time

import lightning as L
import polars as pl
import torch

from benchmark.categories import CATEGORIES
from benchmark.runtime import quiet_lightning, torch_threads
from benchmark.train import (
    Collate,
    FineTuneModule,
    LengthGroupedBatchSampler,
    QADataModule,
    TrainConfig,
    apply_dropout,
    encode_examples,
    fine_tune,
    make_optimizer,
    make_trainer,
)
from components.base import LoadedModel

DATASET_OF = {"toy-gpt": "world", "toy-gpt-test": "world-test"}


def trainable_copy(model: LoadedModel, config: TrainConfig) -> torch.nn.Module:
    network = copy.deepcopy(model.model)
    if config.dropout is not None:
        apply_dropout(network, config.dropout)
    return network.train()


def plain_train(model: LoadedModel, train: pl.DataFrame, config: TrainConfig, steps: int, *,
                timed_from: int = 0) -> tuple[torch.nn.Module, float]:
    """The reference loop: what ``FineTuneModule`` under Lightning does, without Lightning. Returns the trained
    copy and its tokens per CPU-second over the steps from ``timed_from`` on. Single device, fp32, no accumulation."""
    torch.manual_seed(config.seed)
    network = trainable_copy(model, config)
    examples = encode_examples(model.tokenizer, train["question"].to_list(), train["answer"].to_list())
    sampler = LengthGroupedBatchSampler([len(ids) for ids, _ in examples], config.batch_size, seed=config.seed,
                                        length_grouping=config.length_grouping)
    collate = Collate(model.tokenizer.pad_token_id)
    batches = (batch for epoch in itertools.count() for batch in sampler.batches(epoch))
    optimizer, scheduler = make_optimizer(network, config, total_steps=steps)
    parameters = [p for p in network.parameters() if p.requires_grad]
    tokens, started = 0, process_time()
    for step, indices in enumerate(itertools.islice(batches, steps)):
        if step == timed_from:
            tokens, started = 0, process_time()
        batch = collate([examples[i] for i in indices])
        out = network(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                      position_ids=batch["position_ids"], labels=batch["labels"], use_cache=False)
        out.loss.backward()
        if config.gradient_clip is not None:
            torch.nn.utils.clip_grad_norm_(parameters, config.gradient_clip)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        tokens += int(batch["attention_mask"].sum())
    return network, tokens / (process_time() - started)


class StepTimer(L.Callback):
    """Tokens per CPU-second over the batches from ``timed_from`` on."""

    def __init__(self, timed_from: int):
        self.timed_from, self.seen, self.tokens, self.started, self.ended = timed_from, 0, 0, 0.0, 0.0

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if self.seen == self.timed_from:
            self.started = process_time()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if self.seen >= self.timed_from:
            self.tokens += int(batch["attention_mask"].sum())
            self.ended = process_time()
        self.seen += 1

    @property
    def tokens_per_s(self) -> float:
        return self.tokens / (self.ended - self.started)


def lightning_train(model: LoadedModel, train: pl.DataFrame, config: TrainConfig, steps: int, *,
                    timed_from: int = 0) -> tuple[torch.nn.Module, float]:
    """``FineTuneModule`` + ``QADataModule`` under the Trainer that ``fine_tune`` builds, for ``steps`` steps."""
    torch.manual_seed(config.seed)
    network = trainable_copy(model, config)
    timer = StepTimer(timed_from)
    with quiet_lightning(), tempfile.TemporaryDirectory() as tmp:
        trainer = make_trainer(config, [timer], Path(tmp), max_steps=steps, max_epochs=-1)
        trainer.fit(FineTuneModule(network, config), datamodule=QADataModule(model.tokenizer, train, config))
    return network, timer.tokens_per_s


def throughput(model: LoadedModel, train: pl.DataFrame, config: TrainConfig, *, warmup_steps: int, steps: int,
               repeats: int) -> tuple[float, float]:
    """(Lightning tokens/s, plain tokens/s): the best of ``repeats`` interleaved runs each."""
    lightning, plain = [], []
    for _ in range(repeats):
        lightning.append(lightning_train(model, train, config, warmup_steps + steps, timed_from=warmup_steps)[1])
        plain.append(plain_train(model, train, config, warmup_steps + steps, timed_from=warmup_steps)[1])
    return max(lightning), max(plain)


def bench_sets(questions: pl.DataFrame, train_size: int, dev_size: int | None, test_size: int | None,
               seed: int) -> tuple[pl.DataFrame, pl.DataFrame, pl.DataFrame]:
    """Train rows (in-distribution), dev rows (in-distribution: they pick EARLY_STOP) and test rows (in-distribution
    and OOD), each a random sample of the given size or all of them (None). Categories are assigned round-robin:
    evaluation costs the same whatever the categories are."""

    def take(rows: pl.DataFrame, n: int | None) -> pl.DataFrame:
        rows = rows.sample(min(n, rows.height), seed=seed) if n is not None else rows
        return rows.with_columns(pl.Series("category", [CATEGORIES[i % 4] for i in range(rows.height)]))

    split, in_distribution = pl.col("split"), ~pl.col("ood")
    return (take(questions.filter(split == "train", in_distribution), train_size),
            take(questions.filter(split == "dev", in_distribution), dev_size),
            take(questions.filter(split == "test"), test_size))


def bench_train(model: str = "toy-gpt", *, dataset: str | None = None, test_world: bool = False,
                train_size: int = 200, dev_size: int | None = None, test_size: int | None = None,
                warmup_steps: int = 5, steps: int = 40, repeats: int = 3, epochs: int = 3, threads: int = 1,
                seed: int = 0) -> dict:
    """Lightning vs plain-loop training throughput, and per-epoch evaluation vs training seconds.

    The train set has the size of the prototype's fine-tuning run (200 examples, batch 16); dev and test are, by
    default, everything the default suite evaluates every epoch (all in-distribution dev questions, all test
    questions with OOD). ``test_world`` uses toy-gpt-test on world-test.
    """
    from benchmark.registry import Registry

    if test_world:
        model, dataset = "toy-gpt-test", "world-test"
    registry = Registry()
    loaded = registry.model(model).load()
    questions = registry.dataset(dataset or DATASET_OF.get(model, "entityquestions-sample")).questions()
    train, dev, test = bench_sets(questions, train_size, dev_size, test_size, seed)
    config = TrainConfig(epochs=epochs, seed=seed)

    with torch_threads(threads):
        lightning_tps, plain_tps = throughput(loaded, train, config, warmup_steps=warmup_steps, steps=steps,
                                              repeats=repeats)
        with tempfile.TemporaryDirectory() as tmp:
            history = fine_tune(loaded, train, dev, test, config, Path(tmp)).history
    later = history.filter(pl.col("epoch") > 1) if history.height > 1 else history  # epoch 1 pays start-up costs
    return {
        "lightning_tokens_per_s": lightning_tps,
        "plain_tokens_per_s": plain_tps,
        "ratio": lightning_tps / plain_tps,
        "eval_seconds_per_epoch": float(later["time/eval_seconds"].mean()),
        "train_seconds_per_epoch": float(later["time/epoch_seconds"].mean()),
        "model": model, "train_size": train.height, "dev_size": dev.height, "test_size": test.height,
        "batch_size": config.batch_size, "steps": steps, "threads": threads,
    }
