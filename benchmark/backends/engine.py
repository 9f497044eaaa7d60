"""The ``engine`` back-end: SliCK's fast generator, greedy answers and temperature samples for many few-shot prompts.

SliCK asks the same model 170 times per question (10 prompts x (1 greedy + 16 samples), docs/method.md §1), every
prompt of a relation starts with the same exemplar block, and a sample only matters through one bit: does it
equal the gold answer. The engine exploits that structure:

- **Prefix cache.** The token prefix shared by every prompt of a group (the exemplar block) is prefilled once and
  its KV cache copied into each batch (the shared one is never handed to the model, which extends caches in place).
- **Question cache.** Each (question, prompt) is prefilled once. Its samples' first tokens come from that one set
  of next-token logits (greedy decoding already computed them: their top-k is kept), and only samples still
  running after their first token get a copy of the question's cache; nothing is prefilled once per sample, as
  ``generate`` with ``num_return_sequences`` does.
- **Early verdicts.** A sample stops as soon as its text can no longer exact-match the gold answer after
  normalisation (``can_still_match`` in ``backends/verdicts.py``, sound: it never stops a sample that could
  still match); with ``stop_at_hit`` a question's remaining samples stop at its first hit. Most samples of an
  unknown fact diverge at their first token, so most samples never reach the model. Greedy answers are decoded
  in full.
- **Short, ragged decoding.** Rows stop at their first newline (any token whose text contains one, or EOS) or
  after their job's ``max_new_tokens`` (SliCK's per-relation answer length; the engine's own where a job has
  none); finished rows leave the batch once enough have finished to pay for the copy.
  Plain ``DynamicLayer`` caches are swapped for preallocated ones (``backends/kv_cache.py``), so a step writes one
  position instead of concatenating the whole cache.
- **Counter-based randomness** (``backends/noise.py``). A sample is drawn by Gumbel-max over the top-k tokens of
  logits / T, with each token's uniform a hash of (seed, question id, prompt index, sample index, step, token id).
  No generator state is consumed, so how rows are batched, ordered or dropped never changes which samples are
  drawn, and the naive reference (``backends/naive.py``) draws the very same samples through ``generate``.

Batches mix rows of different lengths by padding *between* the shared prefix and each row's own tokens; the
attention mask hides the gap and position ids come from the mask, so each row sees exactly the positions it would
see alone. That is what makes engine greedy equal plain greedy decoding, for GPT-2 and Llama-style models alike.

Tokenisation is of the whole prompt (``benchmark.prompts.encode``: BOS first where the tokenizer adds one, as in
fine-tuning, evaluation and P(True)). The shared prefix is the longest common token prefix of a group's
whole-prompt encodings, so prefix + tail is always exactly the whole prompt's encoding, BOS sits once at the start
of the cached prefix and never in a tail, and a tokenizer whose merges crossed the exemplar/question boundary would
be served exactly too (it would just share less). The boundary is the newline before "Q:", where BPE
pre-tokenisers split, so in practice the whole exemplar block is cached (tests/test_prompts.py checks it for
GPT-2-style, Llama-3-style and word-level tokenizers).

``open_engine`` wraps an ``Engine`` as a ``Backend`` (``backends/base.py``): the staged procedure drives it, or
teacher forcing for ``estimator: exact``; P(True) is one forward pass per question (``decoding.option_probability``).
"""

from __future__ import annotations

import copy
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

from benchmark.backends.base import GeneratorBackend, PromptJob
from benchmark.backends.decoding import (
    cache_kwargs,
    last_logits_only,
    left_padded,
    output_cache,
    p_true_scores,
    positions,
)
from benchmark.backends.kv_cache import repeat_cache, roomy_cache
from benchmark.backends.noise import choose_from_candidates, choose_tokens, question_key, sample_keys
from benchmark.backends.verdicts import Rows
from benchmark.prompts import (
    common_prefix_length,
    completion,
    encode_batch,
    encode_pairs,
    logits_width,
    pad_id,
    stops,
)

if TYPE_CHECKING:
    from benchmark.slick_config import SliCKConfig

__all__ = ["Engine", "EngineStats", "PromptJob", "open_engine"]

# ---------------------------------------------------------------------------------------------------------------
# The back-end
# ---------------------------------------------------------------------------------------------------------------
def open_engine(loaded, config: SliCKConfig, seed: int, *, component=None,
                device: str | None = None) -> GeneratorBackend:
    """The engine as a SliCK back-end, on an already loaded model (``LoadedModel``, already on its device: the
    opener's ``component`` and ``device``, ``BackendEntry``, are not needed)."""
    # SliCK gives every job its relation's answer length (``slick.answer_limits``); a fixed one, if the suite sets
    # it, is the engine's own too.
    fixed = {"max_new_tokens": config.max_new_tokens} if config.max_new_tokens is not None else {}
    engine = Engine(loaded.model, loaded.tokenizer, temperature=config.temperature, top_k=config.top_k, seed=seed,
                    batch_size=config.batch_size, **fixed)
    return GeneratorBackend("engine", engine, scorer=lambda q, a: p_true_scores(loaded, q, a),
                            details={"device": str(engine.device)})


# ---------------------------------------------------------------------------------------------------------------
# The engine
# ---------------------------------------------------------------------------------------------------------------
@dataclass
class EngineStats:
    """What the engine spent: forward passes, prefills, sequences decoded, decoded tokens."""

    forwards: int = 0
    prefix_prefills: int = 0
    sequences: int = 0
    tokens: int = 0
    out_of_memory_retries: int = 0


def _common_prefix_length(rows: Sequence[Sequence[int]]) -> int:
    first = rows[0]
    n = min(len(r) for r in rows)
    for row in rows[1:]:
        n = common_prefix_length(first[:n], row)
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
                 seed: int = 0, batch_size: int | str = "auto", prefix_cache_entries: int = 64):
        self.model, self.tokenizer = model, tokenizer
        self.max_new_tokens, self.temperature, self.top_k, self.seed = max_new_tokens, temperature, top_k, seed
        self.device = next(model.parameters()).device
        self.ends = stops(tokenizer)
        vocab = logits_width(model, tokenizer)
        self.stops = self.ends.mask(self.device, vocab)
        self.stops_cpu = self.stops.cpu()
        self.terminators = self.ends.mask(self.device, vocab, terminators=True)
        self.pad_id = pad_id(tokenizer)
        self.rows = self._auto_rows() if batch_size == "auto" else int(batch_size)
        self.min_group = 4  # prefix groups smaller than this are pooled (see _groups)
        self.roomy = True  # preallocated cache layers where the model's cache allows (see kv_cache.roomy_cache)
        self.compact_below = 0.5  # compact a decoding batch when fewer than this share of its rows still run
        self.stats = EngineStats()
        self._prefixes: OrderedDict[tuple[int, ...], object] = OrderedDict()
        self._prefix_entries = prefix_cache_entries
        self._keeps_logits = bool(last_logits_only(model))
        self._room = max_new_tokens  # decoding steps the current call's caches must hold (its jobs' longest limit)
        # First-step candidates (top-k logits) of the last greedy() call's prompts, by prompt text: a sample's
        # first token needs nothing else, so sampling a prompt greedy already prefilled starts without the model.
        self._first_steps: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}

    # -- public -------------------------------------------------------------------------------------------------
    def greedy(self, jobs: Sequence[PromptJob]) -> list[str]:
        """The greedy answer (text up to the first newline) of every job."""
        return self._adapting(self._greedy, jobs)

    def sample(self, jobs: Sequence[PromptJob], n_samples: int, *, stop_at_hit: bool = False) -> list[list[bool | None]]:
        """Whether each of ``n_samples`` samples per job matches the job's gold answer, in sample-index order.

        A sample stops as soon as its text can no longer match the gold answer (``can_still_match``): its
        verdict is then known (False), and no more tokens are spent on it. With ``stop_at_hit``, a job's other
        samples are abandoned (None) once one of them matches.
        """
        rows = self._adapting(self._sample, jobs, n_samples, golds=[j.gold for j in jobs], stop_at_hit=stop_at_hit)
        return [rows.verdict[i * n_samples:(i + 1) * n_samples] for i in range(len(jobs))]

    def sample_texts(self, jobs: Sequence[PromptJob], n_samples: int) -> list[list[str]]:
        """The full text (up to the first newline) of ``n_samples`` samples per job, in sample-index order."""
        texts = self._adapting(self._sample, jobs, n_samples, golds=None, stop_at_hit=False).texts()
        return [texts[i * n_samples:(i + 1) * n_samples] for i in range(len(jobs))]

    def _adapting(self, run, *args, **kwargs):
        """Run a call; if the accelerator runs out of memory, halve the batch size and run it again. Results do
        not depend on batching, so the retry gives what the first attempt would have."""
        while True:
            try:
                with torch.inference_mode():
                    return run(*args, **kwargs)
            except torch.OutOfMemoryError:
                if self.rows <= 1:
                    raise
                self.rows //= 2
                self.stats.out_of_memory_retries += 1
                self._prefixes.clear()
                if torch.cuda.is_available():
                    torch.cuda.empty_cache()

    def _limits(self, jobs: Sequence[PromptJob]) -> torch.Tensor:
        """Each job's answer length: its own ``max_new_tokens``, else the engine's."""
        limits = torch.tensor([job.max_new_tokens or self.max_new_tokens for job in jobs], dtype=torch.long)
        self._room = int(limits.max()) if len(jobs) else self.max_new_tokens
        return limits

    def _greedy(self, jobs: Sequence[PromptJob]) -> list[str]:
        answers: list[str] = [""] * len(jobs)
        self._first_steps = {}
        memo = 0 < self.top_k <= 256
        limits = self._limits(jobs)
        for shared, indices, tails in self._batches(jobs, [1] * len(jobs)):
            logits, state = self._prefill(shared, tails)
            if memo:
                values, tokens = self._candidates(logits)
                values, tokens = values.cpu(), tokens.cpu()
                for r, i in enumerate(indices):
                    self._first_steps[jobs[i].text] = (values[r], tokens[r])
            live = torch.arange(len(indices))
            rows = Rows(self, live, golds=None, limits=limits[indices])
            first = logits.argmax(-1).cpu()
            rows.record(live, first, 0)
            self._continue(state, rows, live, first, keys=None)
            for i, text in zip(indices, rows.texts(), strict=True):
                answers[i] = text
        return answers

    def teacher_forced(self, jobs: Sequence[PromptJob]) -> list[tuple[bool, float]]:
        """Per job, from one forward pass over prompt + " gold" + newline (no decoding): whether greedy decoding
        emits exactly the gold answer's tokens and then ends the answer as the gold completion does (any terminator
        -- a bare newline token, EOS -- where its last token is one; that token itself where it carries text, as
        ".\\n" does: ``benchmark.prompts.Stops.ends_like``), and the chance q that one T/top-k sample does (the
        product over its tokens of each token's probability under softmax(top-k logits / T), the last factor summed
        over the tokens that end it so; 0 if a token is outside the top k).

        Token-exact: it covers the gold answer's own tokenisation and casing only, so q is a lower bound on the
        chance of an exact match after normalisation (measured in the prototype).
        """
        return self._adapting(self._teacher_forced, jobs)

    def _teacher_forced(self, jobs: Sequence[PromptJob]) -> list[tuple[bool, float]]:
        scored = [PromptJob(job.prefix, job.question + completion(job.gold), job.qid, job.prompt_index, job.gold)
                  for job in jobs]
        pairs = encode_pairs(self.tokenizer, [job.text for job in jobs], [completion(job.gold) for job in jobs])
        answer = [full[start:] for full, start in pairs]
        results: list[tuple[bool, float]] = [(False, 0.0)] * len(jobs)
        own = [len(a) + 1 for a in answer]
        for shared, indices, tails in self._batches(scored, [1] * len(jobs), own):
            width = max(len(answer[i]) for i in indices)
            logits, _ = self._prefill(shared, tails, decode=False, last=width + 1)
            for r, i in enumerate(indices):
                target = torch.tensor(answer[i], device=logits.device)
                m = len(target)
                at = logits[r, width - m:width]  # position t predicts answer token t; the last one the terminator
                # The last position must end the answer as the gold completion does (Stops.ends_like).
                last = answer[i][-1]
                hit = torch.cat([at[:-1].argmax(-1) == target[:-1],
                                 self.ends.ends_like(last, at[-1:].argmax(-1), self.terminators)])
                k = min(self.top_k, at.shape[-1]) if self.top_k else at.shape[-1]
                values, tokens = torch.topk(at, k, dim=-1)
                wanted = torch.cat([tokens[:-1] == target[:-1, None], self.ends.ends_like(last, tokens[-1:], self.terminators)])
                chance = (torch.softmax(values.double() / self.temperature, -1) * wanted).sum(-1).prod()
                results[i] = (bool(hit.all()), float(chance))
        return results

    # -- sampling -----------------------------------------------------------------------------------------------
    def _sample(self, jobs: Sequence[PromptJob], n_samples: int, *, golds, stop_at_hit: bool) -> Rows:
        """Row i * n_samples + s is sample s of job i. Step 0 of every row comes from its job's first-step
        candidates (kept from greedy, or from a prefill here); only jobs with rows still running after it are
        prefilled for decoding, and their cache is copied once per running sample, never prefilled again."""
        count = len(jobs)
        group = torch.arange(count).repeat_interleave(n_samples)
        rows = Rows(self, group, golds=golds, stop_at_hit=stop_at_hit, limits=self._limits(jobs))
        if not count:
            return rows
        qkeys = torch.tensor([question_key(self.seed, j.qid) for j in jobs], dtype=torch.long)
        prompts = torch.tensor([j.prompt_index for j in jobs], dtype=torch.long)
        keys = sample_keys(qkeys[group], prompts[group], torch.arange(n_samples, dtype=torch.long).repeat(count))
        values, tokens = self._first_step_candidates(jobs)
        first = choose_from_candidates(values[group], tokens[group], keys, 0, temperature=self.temperature)
        rows.record(torch.arange(len(group)), first, 0)
        running = rows.open.nonzero().squeeze(-1)
        if not len(running):
            return rows
        needed = group[running].unique().tolist()
        weight = torch.bincount(group[running], minlength=count)
        for shared, indices, tails in self._batches([jobs[i] for i in needed], [int(weight[i]) for i in needed]):
            _, state = self._prefill(shared, tails)
            members = [needed[i] for i in indices]
            position = torch.full((count,), -1, dtype=torch.long)
            position[members] = torch.arange(len(members))
            live = running[position[group[running]] >= 0]
            state.select(position[group[live]].to(self.device))
            self._continue(state, rows, live, rows.tokens[live, 0], keys=keys)
        return rows

    def _first_step_candidates(self, jobs: Sequence[PromptJob]) -> tuple[torch.Tensor, torch.Tensor]:
        """Top-k logits and their tokens at each job's first answer position, [jobs, k] (on CPU)."""
        found = [self._first_steps.get(j.text) for j in jobs]
        missing = [i for i, f in enumerate(found) if f is None]
        for shared, indices, tails in self._batches([jobs[i] for i in missing], [1] * len(missing)):
            logits, _ = self._prefill(shared, tails, decode=False)
            values, tokens = self._candidates(logits)
            values, tokens = values.cpu(), tokens.cpu()
            for r, i in enumerate(indices):
                found[missing[i]] = (values[r], tokens[r])
        return torch.stack([f[0] for f in found]), torch.stack([f[1] for f in found])

    def _candidates(self, logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if 0 < self.top_k < logits.shape[-1]:
            return torch.topk(logits, self.top_k, dim=-1)
        return logits, torch.arange(logits.shape[-1], device=logits.device).expand_as(logits)

    def _continue(self, state: _DecodeState, rows: Rows, live: torch.Tensor, last: torch.Tensor, *,
                  keys: torch.Tensor | None) -> None:
        """Decode from step 1 the rows ``live`` (batch position p holds logical row live[p]; ``last`` = their
        step-0 tokens) until every row is closed. Closed rows stay in the batch, computing unused tokens, until
        fewer than ``compact_below`` of it still runs: compacting copies the whole KV cache, so doing it for every
        finished row would cost more than it saves."""
        for step in range(1, rows.tokens.shape[1]):
            running = rows.open[live]
            alive = int(running.sum())
            if alive == 0:
                return
            if alive < self.compact_below * len(live):
                index = running.nonzero().squeeze(-1)
                live, last, running = live[index], last[index], running[index]
                state.select(index.to(self.device))
            state.advance()
            out = self._forward(input_ids=last[:, None].to(self.device), attention_mask=state.mask,
                                position_ids=state.pos, cache=state.cache)
            state.cache = output_cache(out)
            last = choose_tokens(out.logits[:, -1].float(), None if keys is None else keys[live],
                                 step, temperature=self.temperature, top_k=self.top_k).cpu()
            rows.record(live[running], last[running], step)

    # -- batching -----------------------------------------------------------------------------------------------
    def _auto_rows(self) -> int:
        """Rows per forward pass to start from. On CPU, moderate batches beat huge ones (measured in the prototype; 64-512 were
        within 10% of each other on the default world); accelerators take more, fewer for big models, and halve
        on running out of memory (``_adapting``)."""
        if self.device.type == "cpu":
            return 128
        params = sum(p.numel() for p in self.model.parameters())
        return 1024 if params < 1e9 else 256

    def _batches(self, jobs: Sequence[PromptJob], weights: Sequence[int], own: Sequence[int] | None = None):
        """(shared prefix, job indices, tails) per batch: jobs of one prefix group, by tail length, cut so each
        batch's rows (``weights``: rows a job will occupy) stay within the batch size."""
        for group in self._groups(jobs, own):
            order = sorted(range(len(group.indices)), key=lambda i: len(group.tails[i]))
            batch: list[int] = []
            load = 0
            for i in order:
                w = max(1, weights[group.indices[i]])
                if batch and load + w > self.rows:
                    yield group.shared, [group.indices[b] for b in batch], [group.tails[b] for b in batch]
                    batch, load = [], 0
                batch.append(i)
                load += w
            if batch:
                yield group.shared, [group.indices[b] for b in batch], [group.tails[b] for b in batch]

    def _groups(self, jobs: Sequence[PromptJob], own: Sequence[int] | None = None) -> list[_Group]:
        """Jobs grouped by prefix text. Groups too small to fill a batch (a dev question whose prompt had one of
        its exemplars swapped) are pooled into one, which shares only the token prefix common to all of them.
        Job i keeps at least ``own[i]`` (default 1) tokens of its own, whose logits the caller needs."""
        by_prefix: dict[str, list[int]] = {}
        for i, job in enumerate(jobs):
            by_prefix.setdefault(job.prefix, []).append(i)
        encoded = encode_batch(self.tokenizer, [job.text for job in jobs])
        large = [indices for indices in by_prefix.values() if len(indices) >= self.min_group]
        small = [i for indices in by_prefix.values() if len(indices) < self.min_group for i in indices]
        groups = []
        for indices in large + ([small] if small else []):
            rows = [encoded[i] for i in indices]
            shared = min(_common_prefix_length(rows), min(len(encoded[i]) - (own[i] if own else 1) for i in indices))
            groups.append(_Group(tuple(rows[0][:shared]), indices, [e[shared:] for e in rows]))
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
                            **last_logits_only(self.model))
        self.stats.prefix_prefills += 1
        self._prefixes[shared] = output_cache(out)
        if len(self._prefixes) > self._prefix_entries:
            self._prefixes.popitem(last=False)
        return self._prefixes[shared]

    def _prefill(self, shared: tuple[int, ...], tails: list[list[int]], *, decode: bool = True,
                 last: int = 1) -> tuple[torch.Tensor, _DecodeState]:
        """Prefill ``tails`` after the shared prefix; padding sits between prefix and tail, hidden by the mask.
        Returns the next-token logits ([rows, V], or [rows, last, V] for the last ``last`` positions) and the state
        to decode from (``decode=False``: no room kept for decoding)."""
        ids, tail_mask = left_padded(tails, self.pad_id, self.device)
        rows, width = ids.shape
        if shared:
            prefix = self._prefix_cache(shared)
            cache = roomy_cache(prefix, rows, width + (self._room if decode else 0)) if self.roomy else None
            if cache is None:
                cache = copy.deepcopy(prefix)
                repeat_cache(cache, rows)
            mask = torch.cat([torch.ones((rows, len(shared)), dtype=torch.long, device=self.device), tail_mask], dim=1)
        else:
            cache, mask = None, tail_mask
        pos = positions(mask)
        keep = {"logits_to_keep": last} if self._keeps_logits else {}
        out = self._forward(input_ids=ids, attention_mask=mask, position_ids=pos[:, -width:], cache=cache, **keep)
        logits = out.logits[:, -1] if last == 1 else out.logits[:, -last:]
        return logits.float(), _DecodeState(output_cache(out), mask, pos[:, -1:])


@dataclass
class _DecodeState:
    cache: object
    mask: torch.Tensor
    pos: torch.Tensor  # position of each row's last token, [rows, 1]

    def select(self, index: torch.Tensor) -> None:
        self.cache.batch_select_indices(index)
        self.mask, self.pos = self.mask[index], self.pos[index]

    def advance(self) -> None:
        self.mask = torch.cat([self.mask, torch.ones_like(self.mask[:, :1])], dim=1)
        self.pos = self.pos + 1
