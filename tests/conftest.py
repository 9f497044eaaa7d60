"""Shared fixtures: real code on small inputs. No network: HF offline mode for every test."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

import benchmark  # noqa: F401  (first: pins the numeric environment before anything imports torch)

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

REPO = Path(__file__).resolve().parent.parent
EQ_SAMPLE = REPO.parent / "shared" / "entityquestions-sample"


@pytest.fixture(autouse=True, scope="session")
def _isolated_cache(tmp_path_factory):
    """The test session gets its own cache and MLflow store, never the user's .cache/ or mlruns/.

    Session-scoped (and set in os.environ directly) so module- and session-scoped fixtures see it too.
    """
    root = tmp_path_factory.getbasetemp()
    saved = {k: os.environ.get(k) for k in ("SLICK_BENCH_CACHE", "MLFLOW_TRACKING_URI")}
    os.environ["SLICK_BENCH_CACHE"] = str(root / "cache")
    os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{root / 'mlflow.db'}"
    yield
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


def make_tiny_lm(texts: list[str], seed: int = 0, layers: int = 2, width: int = 32):
    """A randomly initialised GPT-2 with the world's word-level tokenizer over ``texts``."""
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    from components.base import LoadedModel
    from components.world.tokenizer import build_tokenizer

    tokenizer = build_tokenizer(texts)
    torch.manual_seed(seed)
    config = GPT2Config(vocab_size=len(tokenizer), n_positions=256, n_embd=width, n_layer=layers, n_head=2,
                        bos_token_id=tokenizer.eos_token_id, eos_token_id=tokenizer.eos_token_id,
                        pad_token_id=tokenizer.pad_token_id)
    model = GPT2LMHeadModel(config).eval()
    return LoadedModel(name=f"tiny-random-{seed}", model=model, tokenizer=tokenizer, identity=f"tiny-random:{seed}")


@pytest.fixture
def tiny_lm():
    texts = ["Q: Where was Zorvik born?\nA: Tarsk\n", "Answer the following question. Who is Mira's child?\nA: Olen\n",
             "Tarsk Olen Vell Brin Quor Dask Mira Zorvik capital of is the who where what which"]
    return make_tiny_lm(texts)
