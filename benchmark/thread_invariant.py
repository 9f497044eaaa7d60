"""Layers whose gradients do not depend on the number of torch threads: LayerNorm and attention with dropout.

Two of PyTorch's fused CPU backward kernels cut their work into one piece per thread, and the piece boundaries
change the rounding, so the same pretraining or fine-tuning run gave other weights at 1 and at 2 threads:

- **LayerNorm** backward adds per-thread partial sums of the weight and bias gradients (measured on torch 2.13: 10
  of 28 GPT-2 gradients differed at 1 vs 2 threads, all of them LayerNorm parameters).
- **softmax** backward over a short last dimension (attention over 30 tokens: not a multiple of the 8-wide AVX2
  vector) treats the elements at each thread's piece boundary with scalar code, which rounds otherwise than the
  vector code. Attention meets it only with dropout on: without dropout, scaled-dot-product attention takes its
  fused kernel, whose backward has no softmax of its own; with dropout, PyTorch falls back to the plain path.

Written with plain tensor operations, each element comes from one single-rounding operation and each reduction runs
along a dimension that is not split between threads, so every result is the same whatever the thread count (and
with pinned numerics, whatever the x86-64 CPU: ``benchmark.numerics``). The world models use them in pretraining,
fine-tuning and inference; ``benchmark.train`` applies them to every model it fine-tunes on a CPU.
"""

from __future__ import annotations

import torch
from torch import nn

ATTENTION = "slick_thread_invariant"  # the name under which transformers finds the attention below


class ThreadInvariantLayerNorm(nn.LayerNorm):
    """Same parameters, state dict and (to float rounding) outputs as ``nn.LayerNorm``."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        centred = x - x.mean(-1, keepdim=True)
        normalised = centred * torch.rsqrt((centred * centred).mean(-1, keepdim=True) + self.eps)
        if self.weight is None:
            return normalised
        return normalised * self.weight + self.bias if self.bias is not None else normalised * self.weight


def softmax(scores: torch.Tensor) -> torch.Tensor:
    """Softmax over the last dimension from plain operations (autograd differentiates each one)."""
    exp = (scores - scores.detach().amax(-1, keepdim=True)).exp()
    return exp / exp.sum(-1, keepdim=True)


def attention(module, query, key, value, attention_mask, dropout: float = 0.0, scaling: float | None = None,
              is_causal: bool | None = None, **kwargs):
    """A transformers attention function (``AttentionInterface``) with the contract of its "sdpa" one: without
    dropout it is that function (whose fused CPU kernel is thread-invariant); with dropout it computes attention
    from plain operations and ``softmax`` above, with the same masks (boolean, from transformers' sdpa mask)."""
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    if dropout == 0.0 or not module.training:
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling,
                                      is_causal=is_causal, **kwargs)
    groups = query.shape[1] // key.shape[1]  # grouped-query attention: each key/value head serves `groups` heads
    if groups > 1:
        key, value = key.repeat_interleave(groups, dim=1), value.repeat_interleave(groups, dim=1)
    scale = scaling if scaling is not None else query.shape[-1] ** -0.5
    scores = torch.matmul(query, key.transpose(-1, -2)) * scale
    lowest = torch.finfo(scores.dtype).min  # a row with no visible key gets uniform weights, never NaN
    if attention_mask is None:
        causal = is_causal if is_causal is not None else getattr(module, "is_causal", True)
        if causal and query.shape[2] > 1:
            visible = torch.ones(query.shape[2], key.shape[2], dtype=torch.bool, device=scores.device)
            scores = scores.masked_fill(~visible.tril(key.shape[2] - query.shape[2]), lowest)
    elif attention_mask.dtype == torch.bool:
        scores = scores.masked_fill(~attention_mask, lowest)
    else:
        scores = scores + attention_mask
    weights = nn.functional.dropout(softmax(scores).to(value.dtype), p=dropout, training=True)
    return torch.matmul(weights, value).transpose(1, 2).contiguous(), None


def _register_attention() -> None:
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

    AttentionInterface.register(ATTENTION, attention)
    AttentionMaskInterface.register(ATTENTION, sdpa_mask)  # it reads the masks "sdpa" reads


def make_thread_invariant(model: nn.Module) -> nn.Module:
    """In place: swap every ``nn.LayerNorm`` for the thread-invariant one (parameters kept), and give a
    transformers model on the CPU that uses "sdpa" attention the thread-invariant attention. On a GPU the fused
    kernels stay: thread counts do not apply there."""
    for module in model.modules():
        if type(module) is nn.LayerNorm:
            module.__class__ = ThreadInvariantLayerNorm
    config = getattr(model, "config", None)
    on_cpu = all(p.device.type == "cpu" for p in model.parameters())
    if on_cpu and getattr(config, "_attn_implementation", None) == "sdpa" and hasattr(model, "set_attn_implementation"):
        _register_attention()
        model.set_attn_implementation(ATTENTION)
    return model
