"""The ``naive`` back-end, SliCK's reference: for every question and prompt, ``generate`` once greedily and once
with 16 samples.

170 generations per question, no batching across questions, no caching, no early exit: the straightforward way,
kept only to measure the engine against and to cross-check its categories (``backend: naive``,
``benchmark.perf.slick.bench_slick``).

The one departure from stock ``generate``: its random numbers. A logits processor makes each sample's choice the
same counter-based Gumbel-max draw the engine makes (``backends/noise.py``), keyed by (seed,
question, prompt, sample index, step), and hands ``generate`` a distribution with all its mass on that token.
``generate`` still samples (``do_sample=True, temperature, top_k, num_return_sequences``) and pays every cost it
normally pays; it just cannot draw anything else. Without this, two correct implementations agree only ~90-95% on
WeaklyKnown vs Unknown (measured in the prototype), and the cross-check could not tell a bug from chance.

Prompts are encoded, stopped and decoded exactly as the engine does (``benchmark.prompts``): the whole prompt with
BOS first where the tokenizer adds one, generation ends at any token containing a newline (or EOS), and the answer
is the decoded text up to the first newline.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from benchmark.answers import exact_match, golds, row_gold
from benchmark.backends.base import Outcome, ProgressTracker
from benchmark.backends.decoding import answer_token_limits, p_true_scores
from benchmark.backends.noise import choose_tokens, question_key, sample_keys
from benchmark.prompts import answer_texts, encode, pad_id, question_block, stops


class CounterNoiseProcessor:
    """Forces ``generate``'s sampler to pick the counter-based Gumbel-max token for each (sample, step).

    Runs before ``generate``'s own temperature and top-k warpers (transformers places user processors first), so
    it sees raw logits and applies T and top-k itself; those warpers leave a one-hot distribution one-hot.
    """

    def __init__(self, keys: torch.Tensor, prompt_length: int, *, temperature: float, top_k: int):
        self.keys, self.prompt_length, self.temperature, self.top_k = keys, prompt_length, temperature, top_k

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        if 0 < self.top_k < scores.shape[-1] and int(torch.isfinite(scores[0]).sum()) <= self.top_k:
            raise RuntimeError("CounterNoiseProcessor received filtered scores; it must run before top-k")
        step = input_ids.shape[1] - self.prompt_length
        chosen = choose_tokens(scores, self.keys.to(scores.device), step, temperature=self.temperature,
                               top_k=self.top_k)
        forced = torch.full_like(scores, float("-inf"))
        forced.scatter_(1, chosen[:, None], 0.0)
        return forced


@dataclass
class NaiveBackend:
    """The reference as a ``Backend`` (``backends/base.py``) on an already loaded model (``LoadedModel``)."""

    loaded: object
    seed: int = 0
    name: str = "naive"

    def outcomes(self, todo, prompts, config, progress=None) -> dict[str, Outcome]:
        return naive_outcomes(self.loaded, todo, prompts, config, seed=self.seed, progress=progress)

    def p_true(self, questions, answers):
        return p_true_scores(self.loaded, questions, answers)

    def info(self) -> dict[str, str]:
        return {"backend": self.name, "device": str(next(self.loaded.model.parameters()).device)}


def open_naive(loaded, config, seed: int, *, component=None, device: str | None = None) -> NaiveBackend:
    """The reference as a SliCK back-end (the opener of ``BackendEntry``), on an already loaded model."""
    return NaiveBackend(loaded, seed)


def naive_outcomes(loaded, todo, prompts, config, *, seed: int = 0, progress=None) -> dict[str, Outcome]:
    """An ``Outcome`` for every row of ``todo``, the slow way; always exhaustive."""
    from transformers import LogitsProcessorList

    model, tokenizer = loaded.model, loaded.tokenizer
    device = next(model.parameters()).device
    stop_ids = sorted(stops(tokenizer).stop)
    pad = pad_id(tokenizer)
    tracker = ProgressTracker(todo, progress, " (naive)")
    # SliCK sets each relation's answer length on its prompts; called without one, the same rule applies here.
    own_limits = answer_token_limits(tokenizer, todo["relation"].to_list(), golds(todo))
    outcomes = {}
    for row in todo.iter_rows(named=True):
        relation_prompts = prompts[row["relation"]]
        greedy_answers, samples = [], []
        for p in range(config.n_prompts):
            text = relation_prompts.prefix(p, row["qid"], row["question"]) + question_block(row["question"])
            ids = torch.tensor([encode(tokenizer, text)], device=device)
            limit = relation_prompts.max_new_tokens or config.max_new_tokens or own_limits[row["relation"]]
            common = {"attention_mask": torch.ones_like(ids), "max_new_tokens": limit,
                      "eos_token_id": stop_ids, "pad_token_id": pad}
            with torch.inference_mode():
                greedy = model.generate(ids, do_sample=False, **common)
            greedy_answers += answer_texts(tokenizer, greedy[:, ids.shape[1]:].tolist())
            keys = sample_keys(torch.full((config.n_samples,), question_key(seed, row["qid"]), dtype=torch.long),
                               torch.full((config.n_samples,), p, dtype=torch.long),
                               torch.arange(config.n_samples, dtype=torch.long))
            noise = CounterNoiseProcessor(keys, ids.shape[1], temperature=config.temperature, top_k=config.top_k)
            with torch.inference_mode():
                sampled = model.generate(ids, do_sample=True, temperature=config.temperature, top_k=config.top_k,
                                         num_return_sequences=config.n_samples,
                                         logits_processor=LogitsProcessorList([noise]), **common)
            samples += [exact_match(t, row_gold(row)) for t in answer_texts(tokenizer, sampled[:, ids.shape[1]:].tolist())]
        outcomes[row["qid"]] = Outcome(greedy_answers, [exact_match(a, row_gold(row)) for a in greedy_answers],
                                       samples, config.n_prompts * config.n_samples)
        tracker.done([row])
    return outcomes
