"""Several ranks and reduced precision inside one variant's training: the strategy, FSDP2 sharding, master weights,
and the gather that sharded evaluation ends with.

- **Strategies.** One rank trains in the caller's process. ``strategy: ddp`` (or ``auto`` on several devices) keeps
  the whole model on every rank and averages gradients (Lightning's DDP). ``strategy: fsdp`` shards weights,
  gradients and optimizer state over the ranks with FSDP2 (``torch.distributed.fsdp.fully_shard``, through
  Lightning's ``ModelParallelStrategy``): every transformer block is one FSDP unit, the rest of the model
  (embeddings, final norm, head) the root unit. The ranks are processes the benchmark starts (``benchmark.launch``)
  or a launcher starts (torchrun, srun); here they only join.
- **Master weights.** Weights that are trained are kept in float32 whatever the checkpoint's dtype: a bfloat16
  weight of 0.02 moves in steps of 1.2e-4, so an AdamW step of 1e-5 (the paper's learning rate) leaves most of them
  where they were. ``precision: bf16-mixed`` computes in bfloat16 (autocast on one rank and under DDP; under FSDP
  the all-gathered weights are bfloat16, gradients are reduced in float32: ``MixedPrecisionPolicy``) and updates
  the float32 weights. Under FSDP every weight, frozen ones too, is float32 before sharding (FSDP all-gathers one
  dtype per unit); each block is cast just before it is sharded, so a rank never holds the whole model in float32.
- **Gradient clipping** is torch's ``clip_grad_norm_`` (Lightning's, for every strategy): over FSDP2's DTensor
  gradients it computes the norm of the whole gradient across the ranks, as one process would.
- **Evaluation under FSDP** calls the sharded module itself (its forward, with FSDP's hooks), on every rank. Its
  weights are gathered once for the whole evaluation (``gathered``) and kept gathered across forward calls, so each
  rank can answer its own share of the questions, any number of forward passes, with no collective in between;
  ``Ranks.gather`` then brings every rank's answers to every rank.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch

from benchmark.train.config import TrainConfig


def world_size(config: TrainConfig) -> int:
    return config.devices * config.num_nodes


def sharded(config: TrainConfig) -> bool:
    return config.strategy == "fsdp"


def needs_ranks(config: TrainConfig) -> bool:
    """Whether training runs in rank processes (several ranks, or FSDP even on one) rather than in the caller."""
    return world_size(config) > 1 or sharded(config)


def lightning_precision(config: TrainConfig) -> str:
    """What Lightning's precision plugin does. Under FSDP the ``MixedPrecisionPolicy`` casts (no autocast on top)."""
    return "32-true" if sharded(config) else config.precision


def make_strategy(config: TrainConfig):
    """``Trainer(strategy=...)`` for a rank that was started externally (see the module docstring)."""
    if sharded(config):
        from lightning.pytorch.strategies import ModelParallelStrategy

        return ModelParallelStrategy(data_parallel_size=world_size(config), tensor_parallel_size=1,
                                     save_distributed_checkpoint=True)
    if world_size(config) == 1:
        return "auto"
    from lightning.pytorch.strategies import DDPStrategy

    return DDPStrategy()


def master_weights(model: torch.nn.Module) -> None:
    """float32 copies of every trained weight (bfloat16/float16 ones otherwise lose most small updates)."""
    for parameter in model.parameters():
        if parameter.requires_grad and parameter.dtype != torch.float32:
            parameter.data = parameter.data.float()


def block_classes(model: torch.nn.Module) -> tuple[str, ...]:
    """The transformer block classes of a Hugging Face model (``_no_split_modules``: one FSDP unit each)."""
    names = getattr(model, "_no_split_modules", None) or ()
    return tuple(names)


def transformer_blocks(model: torch.nn.Module) -> list[torch.nn.Module]:
    """The model's blocks: modules of a ``_no_split_modules`` class, else the items of its longest ModuleList."""
    wanted = set(block_classes(model))
    blocks = [m for m in model.modules() if type(m).__name__ in wanted and m is not model]
    if blocks:
        return blocks
    lists = [m for m in model.modules() if isinstance(m, torch.nn.ModuleList)]
    return list(max(lists, key=len)) if lists else []


def mixed_precision_policy(config: TrainConfig):
    from torch.distributed.fsdp import MixedPrecisionPolicy

    if config.precision == "bf16-mixed":
        return MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32)
    return MixedPrecisionPolicy()


def shard(model: torch.nn.Module, mesh, config: TrainConfig) -> None:
    """FSDP2 over ``mesh``: each block, then the root (the causal LM whose forward training and evaluation call).
    Each unit is cast to float32 just before it is sharded (see the module docstring)."""
    from torch.distributed.fsdp import fully_shard

    policy = mixed_precision_policy(config)
    for block in transformer_blocks(model):
        block.float()
        fully_shard(block, mesh=mesh, mp_policy=policy)
    model.float()
    fully_shard(model, mesh=mesh, mp_policy=policy)


def fsdp_units(model: torch.nn.Module) -> list[torch.nn.Module]:
    from torch.distributed.fsdp import FSDPModule

    return [m for m in model.modules() if isinstance(m, FSDPModule)]


@contextlib.contextmanager
def gathered(model: torch.nn.Module) -> Iterator[None]:
    """FSDP units' weights all-gathered on every rank for the block (a collective: every rank enters it), kept
    gathered across forward calls, resharded afterwards. Without FSDP: nothing to do."""
    units = fsdp_units(model)
    for unit in units:
        unit.unshard()
        unit.set_reshard_after_forward(False)
    try:
        yield
    finally:
        for unit in units:
            unit.reshard()
            unit.set_reshard_after_forward(True)


@dataclass(frozen=True)
class Ranks:
    """This process's place among the ranks of one training run (``world`` 1: alone)."""

    rank: int = 0
    world: int = 1

    def gather(self, value: Any) -> list[Any]:
        """Every rank's ``value``, in rank order, on every rank (a collective)."""
        if self.world == 1:
            return [value]
        values: list[Any] = [None] * self.world
        torch.distributed.all_gather_object(values, value)
        return values


ALONE = Ranks()


def ranks_of(trainer) -> Ranks:
    return Ranks(trainer.global_rank, trainer.world_size)
