"""Every prompt the benchmark shows a model, in one place (docs/method.md §1 and §4).

- SliCK few-shot prompt (base model, no chat template): k exemplars "Q: <q>\\nA: <a>\\n", then "Q: <q>\\nA:"
  (``question_block``). The exemplar block ends with a newline and the question starts with "Q:": BPE
  pre-tokenisers split there, so the block's tokens are a prefix of the whole prompt's and the SliCK engine can
  prefill the block once and each question after it.
- Fine-tuning and test prompt: "Answer the following question. <q>\\nA:"; the completion is " <answer>\\n".
  The loss applies to the completion only (answer tokens and the newline terminator), never to the prompt.
- P(True) prompt, from Kadavath et al. as used by the paper.
The answer a model gives is its generated text up to the first newline. Every prompt ends with "A:" (no trailing
space): the answer's leading space belongs to its first token, as BPE vocabularies tokenise " Paris".

**Token ids.** Everything that depends on the tokenizer is here too, so SliCK (the engine, the naive reference and
P(True)), fine-tuning and evaluation show a model the same ids for the same text (torch is imported only where a
mask is built, so this module stays light to import):

- **Start of sequence.** A text is encoded as the tokens the tokenizer puts at the start of a sequence (BOS for
  Llama-family tokenizers, which degrade without it; nothing for GPT-2, SmolLM2 or the embedded world's), then the
  text's own tokens, and nothing at the end (tokenizers that append EOS with ``add_special_tokens=True`` would
  tell the model the text is over). ``start_ids`` finds those tokens by encoding a probe text with and without
  special tokens, so it follows what the tokenizer does rather than its config (SmolLM2 has a ``bos_token`` but
  its GGUF says ``add_bos_token: false``, and it adds none).
- **Whole strings, split by token position.** A prompt and what follows it (a completion; a question after the
  shared exemplar block) are encoded as one string, and the boundary is a token position: the prompt's own
  encoding must be a prefix of the whole's (``encode_pair``). Encoding the two parts separately and concatenating
  would put a second BOS in the middle, and a tokenizer's merges or normaliser may treat the start of a text
  differently from the same characters mid-text (SentencePiece's dummy space, the world's leading space). The
  prompts split where BPE pre-tokenisers split too: after "A:" (the answer's leading space belongs to its first
  token in GPT-2, Llama-3 and SentencePiece vocabularies alike) and after the newline before "Q:". Where a
  tokenizer still merges across the boundary, ``encode_pair`` falls back to the longest common token prefix and
  warns; the SliCK engine shares the longest common token prefix of whole-prompt encodings, exact by construction.
- **Stops.** An answer ends at the first generated token whose text contains a newline (BPE vocabularies have many:
  "\\n\\n", ".\\n", " \\n", ...) or at EOS. ``stops`` finds them once per tokenizer by decoding every vocabulary
  entry. Text a stop token carries before its newline is part of the answer (".\\n" after " Paris" gives
  "Paris."). The *terminators* are the stop tokens with nothing but white space before the newline, and EOS: they
  end an answer without changing it, so the token-exact check "the gold answer's tokens, then the end"
  (``ends_like``) accepts any terminator where the gold completion ends with one, and otherwise the gold's own
  last token.
- **Answers.** Generated ids are decoded with special tokens skipped, cut at the first newline and stripped
  (``answer_texts``), so a leading space inside the answer's first token, and white space before the newline,
  never reach the answer.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import TYPE_CHECKING

from benchmark.answers import first_line

if TYPE_CHECKING:
    from torch import Tensor

TERMINATOR = "\n"
FINETUNE_INSTRUCTION = "Answer the following question."


def exemplar_block(exemplars: Sequence[tuple[str, str]]) -> str:
    return "".join(f"Q: {q}\nA: {a}\n" for q, a in exemplars)


def question_block(question: str) -> str:
    """The asked question after the exemplar block; the answer follows "A:"."""
    return f"Q: {question}\nA:"


def few_shot_prompt(exemplars: Sequence[tuple[str, str]], question: str) -> str:
    return exemplar_block(exemplars) + question_block(question)


def finetune_prompt(question: str) -> str:
    return f"{FINETUNE_INSTRUCTION} {question}\nA:"


def completion(answer: str) -> str:
    """What follows a prompt: the answer after one space, then the terminator."""
    return f" {answer}{TERMINATOR}"


def p_true_prompt(question: str, proposed_answer: str) -> str:
    return (f"Question: {question}\nProposed Answer: {proposed_answer}\n"
            "Is the proposed answer:\n (A) True\n (B) False\nThe proposed answer is:")


# ---------------------------------------------------------------------------------------------------------------
# Token ids
# ---------------------------------------------------------------------------------------------------------------
_PROBE = "x"


@lru_cache(maxsize=16)
def start_ids(tokenizer) -> tuple[int, ...]:
    """The ids the tokenizer puts before a text's own tokens when it adds special tokens (usually BOS, or none)."""
    plain = tokenizer(_PROBE, add_special_tokens=False)["input_ids"]
    special = tokenizer(_PROBE)["input_ids"]
    for at in range(len(special) - len(plain) + 1):
        if special[at:at + len(plain)] == plain:
            return tuple(special[:at])
    bos = getattr(tokenizer, "bos_token_id", None)  # the probe's own tokens changed: trust the first id if BOS
    return (bos,) if bos is not None and special[:1] == [bos] and plain[:1] != [bos] else ()


def encode(tokenizer, text: str) -> list[int]:
    """Token ids of one whole sequence: the start ids (BOS, if the tokenizer adds one), then the text's tokens."""
    return [*start_ids(tokenizer), *tokenizer(text, add_special_tokens=False)["input_ids"]]


def encode_batch(tokenizer, texts: Sequence[str]) -> list[list[int]]:
    """``encode`` for many texts in one tokenizer call."""
    if not texts:
        return []
    start = list(start_ids(tokenizer))
    return [start + ids for ids in tokenizer(list(texts), add_special_tokens=False)["input_ids"]]


def common_prefix_length(a: Sequence[int], b: Sequence[int]) -> int:
    n = min(len(a), len(b))
    i = 0
    while i < n and a[i] == b[i]:
        i += 1
    return i


def encode_pairs(tokenizer, prompts: Sequence[str], continuations: Sequence[str]) -> list[tuple[list[int], int]]:
    """Per pair: the ids of ``prompt + continuation`` encoded whole, and where the continuation's tokens start.

    The split is exact when the prompt's own encoding is a prefix of the whole's (it is for every prompt and
    tokenizer the benchmark uses: tests/test_prompts.py). Otherwise a merge crosses the boundary; the split then
    falls at the longest common token prefix (the merged token counts as continuation) and a warning says so.
    """
    wholes = encode_batch(tokenizer, [p + c for p, c in zip(prompts, continuations, strict=True)])
    heads = encode_batch(tokenizer, list(prompts))
    pairs = []
    for whole, head, prompt in zip(wholes, heads, prompts, strict=True):
        start = common_prefix_length(whole, head)
        if start != len(head):
            warnings.warn(f"{type(tokenizer).__name__} merges tokens across the end of the prompt {prompt[-20:]!r}: "
                          "the continuation is taken to start at the last token the prompt shares with the whole",
                          stacklevel=2)
        pairs.append((whole, start))
    return pairs


def encode_pair(tokenizer, prompt: str, continuation: str) -> tuple[list[int], int]:
    (pair,) = encode_pairs(tokenizer, [prompt], [continuation])
    return pair


def pad_id(tokenizer) -> int:
    """The id padding is written with (it is always masked out): the pad token, else EOS, else 0."""
    for candidate in (tokenizer.pad_token_id, tokenizer.eos_token_id):
        if candidate is not None:
            return candidate
    return 0


# ---------------------------------------------------------------------------------------------------------------
# Stops and answers
# ---------------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Stops:
    """``stop``: ids that end an answer (text containing a newline, or EOS); ``terminators``: those among them that
    carry no answer text (only white space before the newline, or EOS)."""

    stop: frozenset[int]
    terminators: frozenset[int]
    size: int

    def mask(self, device=None, size: int | None = None, *, terminators: bool = False) -> Tensor:
        """Boolean mask over the vocabulary (``size`` at least the tokenizer's, e.g. a model's padded logits)."""
        import torch

        mask = torch.zeros(max(self.size, size or 0), dtype=torch.bool)
        mask[list(self.terminators if terminators else self.stop)] = True
        return mask.to(device) if device is not None else mask

    def ends_like(self, gold_last: int, chosen: Tensor, terminator_mask: Tensor) -> Tensor:
        """Per token id in ``chosen``: does it end an answer exactly as ``gold_last`` ends the gold completion? Any
        terminator does where ``gold_last`` is one; else only ``gold_last`` itself (it carries answer text, e.g.
        ".\\n"). ``terminator_mask`` is ``mask(terminators=True)`` on ``chosen``'s device."""
        if gold_last in self.terminators:
            return terminator_mask[chosen]
        return chosen == gold_last


@lru_cache(maxsize=16)
def stops(tokenizer) -> Stops:
    """The tokenizer's stop tokens, from its whole vocabulary (decoded once, then cached per tokenizer)."""
    size = len(tokenizer)
    pieces = tokenizer.batch_decode([[i] for i in range(size)])
    stop = {i for i, piece in enumerate(pieces) if "\n" in piece}
    terminators = {i for i in stop if not pieces[i].split("\n", 1)[0].strip()}
    if tokenizer.eos_token_id is not None:
        stop.add(tokenizer.eos_token_id)
        terminators.add(tokenizer.eos_token_id)
    return Stops(frozenset(stop), frozenset(terminators), size)


def stop_token_mask(tokenizer, device, size: int | None = None) -> Tensor:
    """Boolean mask of the stop tokens over the vocabulary (``size``: at least this many entries)."""
    return stops(tokenizer).mask(device, size)


def logits_width(model, tokenizer) -> int:
    """Entries a mask over the model's logits needs: models may pad their vocabulary beyond the tokenizer's."""
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    weight = getattr(head, "weight", None)
    width = weight.shape[0] if weight is not None else getattr(getattr(model, "config", None), "vocab_size", 0)
    return max(len(tokenizer), int(width or 0))


def answer_texts(tokenizer, rows: Sequence[Sequence[int]]) -> list[str]:
    """Answers from generated ids: decoded (special tokens skipped), up to the first newline, stripped."""
    return [first_line(text) for text in tokenizer.batch_decode([list(r) for r in rows], skip_special_tokens=True)]
