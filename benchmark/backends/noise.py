"""Counter-based sampling noise: each sample's random numbers depend only on (seed, question, prompt, sample, step,
token), never on generator state (so that batching never changes a sample).

A sample is drawn by Gumbel-max over the top-k tokens of logits / T, with each token's uniform a hash of those
counters (MurmurHash3's finaliser). So how rows are batched, ordered or dropped never changes which samples are
drawn: the engine (``backends/engine.py``) and the naive reference (``backends/naive.py``, through a logits
processor on ``generate``) draw the very same samples, and their categories can be compared exactly.
"""

from __future__ import annotations

import hashlib

import torch

MASK32 = 0xFFFFFFFF


def _fmix32(h: torch.Tensor) -> torch.Tensor:
    """MurmurHash3's 32-bit finaliser on int64 tensors holding uint32 values (products wrap; the mask keeps 32 bits)."""
    h = h ^ (h >> 16)
    h = (h * 0x85EBCA6B) & MASK32
    h = h ^ (h >> 13)
    h = (h * 0xC2B2AE35) & MASK32
    return h ^ (h >> 16)


def question_key(seed: int, qid: str) -> int:
    """32-bit key of (seed, question id): stable across processes and platforms (no Python ``hash``)."""
    return int.from_bytes(hashlib.blake2b(f"{seed}\x1f{qid}".encode(), digest_size=4).digest(), "little")


def sample_keys(question_keys: torch.Tensor, prompt_index: torch.Tensor, sample_index: torch.Tensor) -> torch.Tensor:
    """One 32-bit key per row from (question key, prompt index, sample index)."""
    inner = _fmix32((prompt_index.long() * 0x9E3779B1 + sample_index.long() * 0x7FEB352D + 0x27D4EB2F) & MASK32)
    return _fmix32(question_keys.long() ^ inner)


def counter_uniform(keys: torch.Tensor, step: int, tokens: torch.Tensor) -> torch.Tensor:
    """Uniforms in (0, 1), float64, shape of ``tokens`` [rows, k]: a pure function of (row key, step, token id)."""
    at_step = _fmix32(keys.long() ^ (((step + 1) * 0x165667B1) & MASK32))
    h = _fmix32(at_step[:, None] ^ ((tokens.long() * 0x9E3779B1) & MASK32))
    return (h.double() + 0.5) / 4294967296.0


def choose_tokens(logits: torch.Tensor, keys: torch.Tensor | None, step: int, *, temperature: float,
                  top_k: int) -> torch.Tensor:
    """Next token per row: argmax when ``keys`` is None (greedy) or T == 0, else a T/top-k sample by Gumbel-max.

    Gumbel-max over the top-k of logits / T draws exactly from softmax(logits / T) restricted to the top k, which
    is what ``generate(do_sample=True, temperature=T, top_k=k)`` samples from (up to exact ties at the k-th logit).
    """
    if keys is None or temperature == 0:
        return logits.argmax(-1)
    k = min(top_k, logits.shape[-1]) if top_k else logits.shape[-1]
    values, tokens = torch.topk(logits.float(), k, dim=-1)
    return choose_from_candidates(values, tokens, keys, step, temperature=temperature)


def choose_from_candidates(values: torch.Tensor, tokens: torch.Tensor, keys: torch.Tensor, step: int, *,
                           temperature: float) -> torch.Tensor:
    """Gumbel-max among candidate tokens [rows, k] with logits ``values``; the noise is keyed by token id, so the
    candidates' order does not matter."""
    gumbel = -torch.log(-torch.log(counter_uniform(keys.to(tokens.device), step, tokens)))
    scores = values.double() / temperature + gumbel
    return tokens.gather(-1, scores.argmax(-1, keepdim=True)).squeeze(-1)


