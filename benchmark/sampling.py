"""The fast generation engine behind SliCK: greedy answers and temperature samples for many few-shot prompts.

SliCK asks the same model 170 times per question (10 prompts x (1 greedy + 16 samples), DESIGN.md §1.1), and
every prompt of a relation starts with the same exemplar block. The engine exploits that structure:

- **Prefix cache.** The token prefix shared by every prompt of a group (the exemplar block) is prefilled once and
  its KV cache copied into each batch (``Cache`` objects are extended in place by a forward pass, so the shared
  one is never handed to the model itself).
- **Question cache.** For sampling, each question's remaining tokens are prefilled once and that cache is repeated
  for its samples, instead of prefilling the whole prompt once per sample as ``generate`` with
  ``num_return_sequences`` does.
- **Short, ragged decoding.** Rows stop at their first newline (any token whose text contains one, or EOS) or after
  ``max_new_tokens``; finished rows leave the batch at once, and so do every remaining row of a question that is
  already decided (``stop_at_hit``).
- **Counter-based randomness.** A sample is drawn by Gumbel-max over the top-k tokens of logits / T, with each
  token's uniform a hash of (seed, question id, prompt index, sample index, step, token id). No generator state is
  consumed, so how rows are batched, ordered or dropped never changes which samples are drawn, and the naive
  reference (``benchmark/slick_reference.py``) draws the very same samples through ``generate``.

Batches mix rows of different lengths by padding *between* the shared prefix and each row's own tokens; the
attention mask hides the gap and position ids come from the mask, so each row sees exactly the positions it would
see alone. That is what makes engine greedy equal plain greedy decoding, for GPT-2 and Llama-style models alike.

Tokenisation is of the whole prompt; the shared prefix is the longest common token prefix of a group's prompts,
so tokenizers whose merges cross the exemplar/question boundary are served exactly (they just share less).
Special tokens are not added, as in ``benchmark.generation``.
"""

from __future__ import annotations

import copy
import hashlib
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch

from benchmark.answers import exact_match, first_line
from benchmark.generation import cache_kwargs, output_cache, positions, stop_token_mask

# ---------------------------------------------------------------------------------------------------------------
# Counter-based noise
# ---------------------------------------------------------------------------------------------------------------
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
    values, tokens = torch.topk(logits.float(), min(top_k, logits.shape[-1]) if top_k else logits.shape[-1], dim=-1)
    gumbel = -torch.log(-torch.log(counter_uniform(keys.to(tokens.device), step, tokens)))
    scores = values.double() / temperature + gumbel
    return tokens.gather(-1, scores.argmax(-1, keepdim=True)).squeeze(-1)


# ---------------------------------------------------------------------------------------------------------------
# Jobs
# ---------------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class PromptJob:
    """One prompt: ``prefix + question`` is the full text; ``prefix`` is the part shared with other jobs."""

    prefix: str
    question: str
    qid: str
    prompt_index: int
    gold: str = ""

    @property
    def text(self) -> str:
        return self.prefix + self.question


Judge = Callable[[str, str], bool]


@dataclass
class EngineStats:
    """What the engine spent: forward passes, prefills, sequences decoded, decoded tokens."""

    forwards: int = 0
    prefix_prefills: int = 0
    sequences: int = 0
    tokens: int = 0
    extra: dict = field(default_factory=dict)


def _common_prefix_length(rows: Sequence[Sequence[int]]) -> int:
    first = rows[0]
    n = min(len(r) for r in rows)
    for row in rows[1:]:
        i = 0
        while i < n and row[i] == first[i]:
            i += 1
        n = i
    return n


@dataclass
class _Group:
    """Jobs that share one token prefix: ``shared`` token ids, then each job's own ``tails``."""

    shared: tuple[int, ...]
    indices: list[int]
    tails: list[list[int]]


class Engine:
    """Batched greedy and sampled answers for ``PromptJob``s, for any HF causal LM (see the module docstring)."""

    def __init__(self, model, tokenizer, *, max_new_tokens: int = 16, temperature: float = 0.5, top_k: int = 40,
                 seed: int = 0, batch_size: int | str = "auto", judge: Judge = exact_match,
                 prefix_cache_entries: int = 64):
        self.model, self.tokenizer = model, tokenizer
        self.max_new_tokens, self.temperature, self.top_k, self.seed = max_new_tokens, temperature, top_k, seed
        self.judge = judge
        self.device = next(model.parameters()).device
        self.stops = stop_token_mask(tokenizer, self.device)
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        self.rows = self._auto_rows() if batch_size == "auto" else int(batch_size)
        self.stats = EngineStats()
        self._prefixes: OrderedDict[tuple[int, ...], object] = OrderedDict()
        self._prefix_entries = prefix_cache_entries
        self._keeps_logits = "logits_to_keep" in _forward_parameters(model)

    # -- public -------------------------------------------------------------------------------------------------
    @torch.inference_mode()
    def greedy(self, jobs: Sequence[PromptJob]) -> list[str]:
        """The greedy answer (text up to the first newline) of every job."""
        answers: list[str] = [""] * len(jobs)
        for group in self._groups(jobs):
            order = sorted(range(len(group.indices)), key=lambda i: len(group.tails[i]))
            for chunk in _chunks(order, self.rows):
                logits, state = self._prefill(group.shared, [group.tails[i] for i in chunk])
                texts = self._decode(logits, state, keys=None)
                for i, text in zip(chunk, texts, strict=True):
                    answers[group.indices[i]] = text
        return answers

    @torch.inference_mode()
    def sample(self, jobs: Sequence[PromptJob], n_samples: int, *, stop_at_hit: bool = False) -> list[list[str | None]]:
        """``n_samples`` sampled answers per job, in sample-index order.

        With ``stop_at_hit``, a job's remaining samples are abandoned once one of its samples matches its gold
        answer (by ``judge``); abandoned samples are ``None``. Every listed sample (answer or None) was started.
        """
        results: list[list[str | None]] = [[None] * n_samples for _ in jobs]
        qkeys = {job.qid: question_key(self.seed, job.qid) for job in jobs}
        per_batch = max(1, self.rows // n_samples)
        for group in self._groups(jobs):
            order = sorted(range(len(group.indices)), key=lambda i: len(group.tails[i]))
            for chunk in _chunks(order, per_batch):
                chunk_jobs = [jobs[group.indices[i]] for i in chunk]
                logits, state = self._prefill(group.shared, [group.tails[i] for i in chunk])
                # The question's cache is shared by its samples: repeat it rather than prefill each sample again.
                state.repeat(n_samples)
                logits = logits.repeat_interleave(n_samples, dim=0)
                keys = sample_keys(
                    torch.tensor([qkeys[j.qid] for j in chunk_jobs], dtype=torch.long).repeat_interleave(n_samples),
                    torch.tensor([j.prompt_index for j in chunk_jobs], dtype=torch.long).repeat_interleave(n_samples),
                    torch.arange(n_samples, dtype=torch.long).repeat(len(chunk_jobs)),
                )
                golds = [j.gold for j in chunk_jobs] if stop_at_hit else None
                texts = self._decode(logits, state, keys=keys, group_size=n_samples, golds=golds)
                for c, job_index in enumerate(chunk):
                    results[group.indices[job_index]] = texts[c * n_samples:(c + 1) * n_samples]
        return results

    # -- batching -----------------------------------------------------------------------------------------------
    def _auto_rows(self) -> int:
        """Rows per forward pass. On CPU, moderate batches beat huge ones (DESIGN.md §3); accelerators take more,
        scaled down for big models so the per-row KV caches fit."""
        if self.device.type == "cpu":
            return 128
        params = sum(p.numel() for p in self.model.parameters())
        return 1024 if params < 1e9 else 256

    def _groups(self, jobs: Sequence[PromptJob]) -> list[_Group]:
        by_prefix: dict[str, list[int]] = {}
        for i, job in enumerate(jobs):
            by_prefix.setdefault(job.prefix, []).append(i)
        groups = []
        for indices in by_prefix.values():
            encoded = [self.tokenizer(jobs[i].text, add_special_tokens=False)["input_ids"] for i in indices]
            # Each row keeps at least one token of its own, so the prefill yields its next-token logits.
            shared = min(_common_prefix_length(encoded), min(len(e) for e in encoded) - 1)
            groups.append(_Group(tuple(encoded[0][:shared]), indices, [e[shared:] for e in encoded]))
        return groups

    # -- model calls --------------------------------------------------------------------------------------------
    def _forward(self, **kwargs):
        cache = kwargs.pop("cache", None)
        self.stats.forwards += 1
        return self.model(**kwargs, use_cache=True, **cache_kwargs(self.model, cache))

    def _prefix_cache(self, shared: tuple[int, ...]):
        """The KV cache of the shared prefix (one row), prefilled once and kept for later batches and calls."""
        if shared in self._prefixes:
            self._prefixes.move_to_end(shared)
            return self._prefixes[shared]
        ids = torch.tensor([shared], dtype=torch.long, device=self.device)
        out = self._forward(input_ids=ids, attention_mask=torch.ones_like(ids), position_ids=positions(torch.ones_like(ids)),
                            **self._logits_kwargs())
        self.stats.prefix_prefills += 1
        self._prefixes[shared] = output_cache(out)
        if len(self._prefixes) > self._prefix_entries:
            self._prefixes.popitem(last=False)
        return self._prefixes[shared]

    def _logits_kwargs(self) -> dict:
        return {"logits_to_keep": 1} if self._keeps_logits else {}

    def _prefill(self, shared: tuple[int, ...], tails: list[list[int]]) -> tuple[torch.Tensor, _DecodeState]:
        """Prefill ``tails`` after the shared prefix; padding sits between prefix and tail, hidden by the mask."""
        rows, width = len(tails), max(len(t) for t in tails)
        ids = torch.full((rows, width), self.pad_id, dtype=torch.long)
        tail_mask = torch.zeros((rows, width), dtype=torch.long)
        for r, tail in enumerate(tails):
            ids[r, width - len(tail):] = torch.tensor(tail, dtype=torch.long)
            tail_mask[r, width - len(tail):] = 1
        ids, tail_mask = ids.to(self.device), tail_mask.to(self.device)
        if shared:
            cache = copy.deepcopy(self._prefix_cache(shared))
            _repeat_cache(cache, rows)
            mask = torch.cat([torch.ones((rows, len(shared)), dtype=torch.long, device=self.device), tail_mask], dim=1)
        else:
            cache, mask = None, tail_mask
        pos = positions(mask)
        out = self._forward(input_ids=ids, attention_mask=mask, position_ids=pos[:, -width:], cache=cache,
                            **self._logits_kwargs())
        return out.logits[:, -1].float(), _DecodeState(output_cache(out), mask, pos[:, -1:])

    def _decode(self, logits: torch.Tensor, state: _DecodeState, *, keys: torch.Tensor | None,
                group_size: int = 1, golds: Sequence[str] | None = None) -> list[str | None]:
        """Decode every row to its first stop token; returns answers (None for rows abandoned by ``golds``)."""
        total = logits.shape[0]
        tokens = torch.full((total, self.max_new_tokens), self.pad_id, dtype=torch.long)
        lengths = torch.zeros(total, dtype=torch.long)
        active = torch.arange(total)  # row ids (on CPU) of the rows still in the batch
        abandoned = torch.zeros(total, dtype=torch.bool)
        decided = torch.zeros(total // group_size, dtype=torch.bool)
        self.stats.sequences += total
        for step in range(self.max_new_tokens):
            row_keys = None if keys is None else keys[active]
            next_token = choose_tokens(logits, row_keys, step, temperature=self.temperature, top_k=self.top_k)
            cpu_token = next_token.cpu()
            tokens[active, step] = cpu_token
            lengths[active] += 1
            self.stats.tokens += len(active)
            finished = self.stops[next_token].cpu() | (step == self.max_new_tokens - 1)
            if golds is not None and bool(finished.any()):
                for row in active[finished].tolist():
                    group = row // group_size
                    if not decided[group] and self.judge(self._text(tokens[row, :lengths[row]]), golds[group]):
                        decided[group] = True
                keep = ~finished & ~decided[active // group_size]
                abandoned[active[~finished & ~keep]] = True
            else:
                keep = ~finished
            if not bool(keep.any()) or step == self.max_new_tokens - 1:
                break
            if not bool(keep.all()):
                index = keep.nonzero().squeeze(-1)
                active, cpu_token = active[index], cpu_token[index]
                state.select(index.to(self.device))
            state.advance()
            out = self._forward(input_ids=cpu_token[:, None].to(self.device), attention_mask=state.mask,
                                position_ids=state.pos, cache=state.cache)
            state.cache = output_cache(out)
            logits = out.logits[:, -1].float()
        texts = self.tokenizer.batch_decode([tokens[r, :lengths[r]].tolist() for r in range(total)],
                                            skip_special_tokens=True)
        return [None if abandoned[r] else first_line(texts[r]) for r in range(total)]

    def _text(self, ids: torch.Tensor) -> str:
        return first_line(self.tokenizer.decode(ids.tolist(), skip_special_tokens=True))


@dataclass
class _DecodeState:
    cache: object
    mask: torch.Tensor
    pos: torch.Tensor  # position of each row's last token, [rows, 1]

    def repeat(self, n: int) -> None:
        _repeat_cache(self.cache, n)
        self.mask = self.mask.repeat_interleave(n, dim=0)
        self.pos = self.pos.repeat_interleave(n, dim=0)

    def select(self, index: torch.Tensor) -> None:
        self.cache.batch_select_indices(index)
        self.mask, self.pos = self.mask[index], self.pos[index]

    def advance(self) -> None:
        self.mask = torch.cat([self.mask, torch.ones_like(self.mask[:, :1])], dim=1)
        self.pos = self.pos + 1


def _repeat_cache(cache, n: int) -> None:
    if n != 1:
        cache.batch_repeat_interleave(n)


def _chunks(items: list[int], size: int) -> list[list[int]]:
    return [items[i:i + size] for i in range(0, len(items), size)]


def _forward_parameters(model) -> set[str]:
    import inspect

    return set(inspect.signature(model.forward).parameters)


# ---------------------------------------------------------------------------------------------------------------
# Scoring
# ---------------------------------------------------------------------------------------------------------------
@torch.inference_mode()
def option_probability(model, tokenizer, prompts: Sequence[str], *, option: str = " True", other: str = " False",
                       batch_size: int = 64) -> list[float]:
    """P(option) / (P(option) + P(other)) for the next token after each prompt (first token of each option).

    The option tokens are taken in context (the token that follows the first prompt in ``prompt + option``), so
    tokenizers that treat a leading space differently at the start of a text are served too. Raises ValueError
    when the two options start with the same token (the comparison would be meaningless).
    """
    option_id, other_id = (_next_token_id(tokenizer, prompts[0], text) for text in (option, other))
    if option_id == other_id or tokenizer.unk_token_id in (option_id, other_id) and tokenizer.unk_token_id is not None:
        raise ValueError(f"the tokenizer does not tell '{option.strip()}' from '{other.strip()}' after the prompt")
    device = next(model.parameters()).device
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    encoded = [tokenizer(p, add_special_tokens=False)["input_ids"] for p in prompts]
    result = [0.0] * len(prompts)
    order = sorted(range(len(encoded)), key=lambda i: len(encoded[i]))
    keep = {"logits_to_keep": 1} if "logits_to_keep" in _forward_parameters(model) else {}
    for chunk in _chunks(order, batch_size):
        width = max(len(encoded[i]) for i in chunk)
        ids = torch.full((len(chunk), width), pad, dtype=torch.long)
        mask = torch.zeros((len(chunk), width), dtype=torch.long)
        for r, i in enumerate(chunk):
            ids[r, width - len(encoded[i]):] = torch.tensor(encoded[i])
            mask[r, width - len(encoded[i]):] = 1
        ids, mask = ids.to(device), mask.to(device)
        logits = model(input_ids=ids, attention_mask=mask, position_ids=positions(mask), **keep).logits[:, -1].float()
        pair = torch.log_softmax(logits, -1)[:, [option_id, other_id]].softmax(-1)[:, 0].cpu().tolist()
        for r, i in enumerate(chunk):
            result[i] = pair[r]
    return result


def _next_token_id(tokenizer, prompt: str, continuation: str) -> int:
    base = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    full = tokenizer(prompt + continuation, add_special_tokens=False)["input_ids"]
    if full[:len(base)] != base or len(full) == len(base):
        raise ValueError(f"'{continuation.strip()}' does not start a new token after the prompt")
    return full[len(base)]
