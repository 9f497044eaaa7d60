"""A LayerNorm whose gradients do not depend on the number of torch threads.

PyTorch's fused CPU LayerNorm backward splits the rows over threads and adds per-thread partial sums of the
weight and bias gradients, so the same pretraining or fine-tuning run gives different weights at 1 and 2
threads (measured on torch 2.13: 10 of 28 GPT-2 gradients differed, all of them LayerNorm parameters; every
matmul, attention and embedding gradient was identical). Written with plain tensor operations, the parameter
gradients become sums over a non-reduced output dimension, which ATen parallelises over outputs: each output
is reduced by one thread in one order, whatever the thread count. The world models use it in pretraining,
fine-tuning and inference, so a speed choice (threads) never changes a result.
"""

from __future__ import annotations

import torch
from torch import nn


class ThreadInvariantLayerNorm(nn.LayerNorm):
    """Same parameters, state dict and (to float rounding) outputs as ``nn.LayerNorm``."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        centred = x - x.mean(-1, keepdim=True)
        normalised = centred * torch.rsqrt((centred * centred).mean(-1, keepdim=True) + self.eps)
        if self.weight is None:
            return normalised
        return normalised * self.weight + self.bias if self.bias is not None else normalised * self.weight


def make_thread_invariant(model: nn.Module) -> nn.Module:
    """Swap every ``nn.LayerNorm`` of ``model`` for the thread-invariant one, in place (parameters kept)."""
    for module in model.modules():
        if type(module) is nn.LayerNorm:
            module.__class__ = ThreadInvariantLayerNorm
    return model
