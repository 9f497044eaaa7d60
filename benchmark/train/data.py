"""The fine-tuning set: prompt + completion pairs tokenised once, padded with the loss mask, and drawn in batches of
similar length whose order depends only on (seed, epoch)."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import lightning as L
import polars as pl
import torch
from torch.utils.data import DataLoader

from benchmark.backends.decoding import encode_pairs, positions
from benchmark.prompts import completion, finetune_prompt
from benchmark.train.config import TrainConfig

IGNORE_INDEX = -100  # label value that cross-entropy skips: prompt and padding tokens


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
