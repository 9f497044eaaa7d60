"""Batched decoding primitives shared by SliCK's back-ends, evaluation, training and the embedded world's probe.

- ``greedy_generate``: batched greedy decoding with a KV cache, stopping each row at its first newline.
- ``teacher_forced_match``: whether greedy decoding *would* produce a given completion, from one forward pass:
  greedy reproduces the completion's tokens (answer + terminator) exactly when the argmax at every completion
  position is the next completion token. No autoregressive loop, so it is the cheap way to score train fitting.
- ``option_probability``: P(option) against P(other) for the next token (the P(True) baseline), one forward pass.
- ``answer_token_limits``: how many tokens an answer may run to, per relation: the longest gold answer of the
  relation (with its terminator) plus ``EXTRA_NEW_TOKENS``. SliCK and evaluation both cut answers by it, so a
  question is judged with the same room whichever stage asks it.

Token ids, stop tokens and answer texts come from ``benchmark.prompts`` (BOS once at the start where the tokenizer
adds one; any token containing a newline ends an answer). Prompts are sorted by length and cut into batches so
padding stays small; padding is on the left and position ids are computed from the attention mask, so results do
not depend on how rows are batched.
"""

from __future__ import annotations

import inspect
import warnings
from collections.abc import Sequence
from functools import lru_cache

import torch

from benchmark.prompts import (
    answer_texts,
    completion,
    encode,
    encode_batch,
    encode_pairs,
    finetune_prompt,
    logits_width,
    p_true_prompt,
    pad_id,
    stop_token_mask,
    stops,
)

# Room beyond the longest gold answer, so a prediction that runs on is seen as wrong (not cut to look right).
EXTRA_NEW_TOKENS = 2


def length_batches(lengths: Sequence[int], batch_size: int) -> list[list[int]]:
    """Indices grouped into batches of similar length (longest first, so memory peaks early)."""
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    return [order[i:i + batch_size] for i in range(0, len(order), batch_size)]


def positions(attention_mask: torch.Tensor) -> torch.Tensor:
    return (attention_mask.long().cumsum(-1) - 1).clamp(min=0)


def _device(model) -> torch.device:
    return next(model.parameters()).device


@lru_cache(maxsize=32)
def _forward_parameters(model_class: type) -> frozenset[str]:
    # Looked up once per model class: greedy decoding asks on every step, and inspect.signature is not free.
    return frozenset(inspect.signature(model_class.forward).parameters)


def cache_kwargs(model, cache) -> dict:
    """transformers 5 renamed ``past_key_values`` to ``cache``; accept both so users on 4.x are served too."""
    if cache is None:
        return {}
    return {"cache": cache} if "cache" in _forward_parameters(type(model)) else {"past_key_values": cache}


def last_logits_only(model) -> dict:
    """Ask for the last position's logits only, where the model supports it (saves the vocabulary projection)."""
    return {"logits_to_keep": 1} if "logits_to_keep" in _forward_parameters(type(model)) else {}


def left_padded(rows: Sequence[Sequence[int]], pad_id: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    """Token rows padded on the left into one batch: (input ids, attention mask)."""
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, row in enumerate(rows):
        ids[i, width - len(row):] = torch.tensor(row, dtype=torch.long)
        mask[i, width - len(row):] = 1
    return ids.to(device), mask.to(device)


def output_cache(out):
    return out.get("cache", None) if out.get("cache", None) is not None else out.get("past_key_values", None)


def answer_token_limit(tokenizer, answers: Sequence[str]) -> int:
    """Tokens the longest of ``answers`` takes as a completion (" <answer>" and its terminator, counted in context
    after a prompt ending in "A:", as SliCK's and the fine-tuning prompt both end), plus ``EXTRA_NEW_TOKENS``."""
    distinct = sorted(set(answers))
    pairs = encode_pairs(tokenizer, [finetune_prompt("?")] * len(distinct), [completion(a) for a in distinct])
    return max((len(ids) - start for ids, start in pairs), default=1) + EXTRA_NEW_TOKENS


def answer_token_limits(tokenizer, relations: Sequence[str], answers: Sequence,
                        extra: Sequence[str] = ()) -> dict[str, int]:
    """``answer_token_limit`` per relation over its gold ``answers`` (aligned with ``relations``; a gold may be the
    aliases of one answer: every alias counts) and ``extra`` (answers any relation's questions may get, e.g. the
    IDK relabelling answer)."""
    from benchmark.answers import all_answers

    golds: dict[str, list[str]] = {}
    for relation, answer in zip(relations, answers, strict=True):
        golds.setdefault(relation, []).extend(all_answers([answer]))
    return {relation: answer_token_limit(tokenizer, [*own, *extra]) for relation, own in golds.items()}


@torch.inference_mode()
def greedy_generate(model, tokenizer, prompts: Sequence[str], *, max_new_tokens: int | Sequence[int] = 16,
                    batch_size: int = 32) -> list[str]:
    """Greedy continuation of every prompt, up to (not including) the first newline, and at most
    ``max_new_tokens`` tokens: one number for every prompt, or one per prompt."""
    device = _device(model)
    ends = stop_token_mask(tokenizer, device, logits_width(model, tokenizer))
    pad = pad_id(tokenizer)
    encoded = encode_batch(tokenizer, prompts)
    limits = [max_new_tokens] * len(prompts) if isinstance(max_new_tokens, int) else list(max_new_tokens)
    if len(limits) != len(prompts) or any(limit < 1 for limit in limits):
        raise ValueError(f"max_new_tokens: {len(prompts)} positive limits needed, got {max_new_tokens!r}")
    results: list[str] = [""] * len(prompts)
    for batch in length_batches([len(e) for e in encoded], batch_size):
        ids, mask = left_padded([encoded[i] for i in batch], pad, device)
        pos = positions(mask)
        out = model(input_ids=ids, attention_mask=mask, position_ids=pos, use_cache=True, **last_logits_only(model))
        past, pos = output_cache(out), pos[:, -1:]
        tokens: list[torch.Tensor] = []
        done = torch.zeros(len(batch), dtype=torch.bool, device=device)
        row_limits = torch.tensor([limits[i] for i in batch], device=device)
        longest = int(row_limits.max())
        next_token = out.logits[:, -1].argmax(-1)
        for step in range(longest):
            tokens.append(torch.where(done, pad, next_token))
            done |= ends[next_token] | (row_limits == step + 1)  # a row at its own limit stops there
            if bool(done.all()) or step == longest - 1:
                break
            mask = torch.cat([mask, torch.ones_like(mask[:, :1])], dim=1)
            pos = pos + 1
            out = model(input_ids=next_token[:, None], attention_mask=mask, position_ids=pos,
                        use_cache=True, **cache_kwargs(model, past))
            past, next_token = output_cache(out), out.logits[:, -1].argmax(-1)
        # Rows keep their stop token: text it carries before its newline is part of the answer. A row cut at its
        # limit keeps exactly that many tokens (the padding after it is no answer text).
        rows = [row[:limits[i]] for i, row in zip(batch, torch.stack(tokens, dim=1).tolist(), strict=True)]
        for i, text in zip(batch, answer_texts(tokenizer, rows), strict=True):
            results[i] = text
    return results


@torch.inference_mode()
def teacher_forced_match(model, tokenizer, prompts: Sequence[str], completions: Sequence[str], *,
                         batch_size: int = 64) -> list[bool]:
    """For each pair: would greedy decoding from ``prompt`` emit exactly ``completion`` (answer + terminator)?"""
    device = _device(model)
    ends = stops(tokenizer)
    terminators = ends.mask(size=logits_width(model, tokenizer), terminators=True)
    pairs = encode_pairs(tokenizer, prompts, completions)
    results = [False] * len(pairs)
    for batch in length_batches([len(f) for f, _ in pairs], batch_size):
        ids, mask = left_padded([pairs[i][0] for i in batch], pad_id(tokenizer), device)
        width = ids.shape[1]
        logits = model(input_ids=ids, attention_mask=mask, position_ids=positions(mask)).logits
        predicted = logits[:, :-1].argmax(-1).cpu()  # predicted[t] is the greedy choice for token t+1
        ids = ids.cpu()
        for row, i in enumerate(batch):
            full, start = pairs[i]
            offset = width - len(full)
            chosen, wanted = predicted[row, offset + start - 1:width - 1], ids[row, offset + start:]
            same = chosen == wanted
            # Greedy decoding stops at any stop token; where the completion ends with a bare terminator (a newline,
            # EOS), any terminator there ends the answer identically (``benchmark.prompts.Stops.ends_like``).
            same[-1:] = ends.ends_like(int(wanted[-1]), chosen[-1:], terminators)
            results[i] = bool(same.all())
    return results


@torch.inference_mode()
def option_probability(model, tokenizer, prompts: Sequence[str], *, option: str = " True", other: str = " False",
                       batch_size: int = 64) -> list[float]:
    """P(option) / (P(option) + P(other)) for the next token after each prompt (first token of each option).

    The option tokens are taken in context (the token that follows the first prompt in ``prompt + option``), so
    tokenizers that treat a leading space differently at the start of a text are served too. Raises ValueError
    when the two options start with the same token (the comparison would be meaningless).
    """
    option_id, other_id = (next_token_id(tokenizer, prompts[0], text) for text in (option, other))
    if option_id == other_id or tokenizer.unk_token_id in (option_id, other_id) and tokenizer.unk_token_id is not None:
        raise ValueError(f"the tokenizer does not tell '{option.strip()}' from '{other.strip()}' after the prompt")
    device = next(model.parameters()).device
    pad = pad_id(tokenizer)
    encoded = encode_batch(tokenizer, prompts)
    result = [0.0] * len(prompts)
    for chunk in length_batches([len(e) for e in encoded], batch_size):
        ids, mask = left_padded([encoded[i] for i in chunk], pad, device)
        logits = model(input_ids=ids, attention_mask=mask, position_ids=positions(mask),
                       **last_logits_only(model)).logits[:, -1].float()
        pair = torch.log_softmax(logits, -1)[:, [option_id, other_id]].softmax(-1)[:, 0].cpu().tolist()
        for r, i in enumerate(chunk):
            result[i] = pair[r]
    return result


def p_true_scores(loaded, questions: Sequence[str], answers: Sequence[str]) -> list[float | None]:
    """P(True) from one forward pass per question; None everywhere where the tokenizer cannot tell " True" from
    " False" (a word-level vocabulary without them)."""
    prompts = [p_true_prompt(q, a) for q, a in zip(questions, answers, strict=True)]
    if not prompts:
        return []
    try:
        return option_probability(loaded.model, loaded.tokenizer, prompts)
    except ValueError as exc:
        warnings.warn(f"P(True) not computed for {loaded.name}: {exc}", stacklevel=2)
        return [None] * len(prompts)


def next_token_id(tokenizer, prompt: str, continuation: str) -> int:
    base, full = encode(tokenizer, prompt), encode(tokenizer, prompt + continuation)
    if full[:len(base)] != base or len(full) == len(base):
        raise ValueError(f"'{continuation.strip()}' does not start a new token after the prompt")
    return full[len(base)]
