"""What generates for SliCK, behind one interface (``base.Backend``); the suite's ``slick.backend`` chooses.

    engine   engine.py    batched, prefix-cached, early-exit generation on any torch device (the default)
    naive    naive.py     one generate() call per question and prompt: the reference the engine is checked against
    vllm     vllm.py      vLLM on a CUDA GPU (optional extra, imported only when chosen)

``decoding.py`` holds the decoding primitives they share with evaluation and training; ``noise.py`` the
counter-based sampling noise the engine and the reference share; ``kv_cache.py`` the engine's cache layers.
Back-ends never import a stage; the category rule they need is ``benchmark.categories``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from benchmark.backends.base import Backend
    from benchmark.slick_config import SliCKConfig

# The code each back-end's results come from (hashed into SliCK's cache key with the stage's own modules).
BACKEND_CODE = {
    "engine": ("benchmark.backends.base", "benchmark.backends.engine", "benchmark.backends.noise",
               "benchmark.backends.kv_cache", "benchmark.backends.decoding"),
    "naive": ("benchmark.backends.base", "benchmark.backends.naive", "benchmark.backends.noise",
              "benchmark.backends.decoding"),
    "vllm": ("benchmark.backends.base", "benchmark.backends.vllm", "benchmark.backends.decoding"),
}


def needs_loaded_model(config: SliCKConfig) -> bool:
    """Whether the back-end runs on the model loaded through its component (engine, naive) or loads it itself."""
    return config.backend != "vllm"


def open_backend(config: SliCKConfig, seed: int, *, loaded=None, component=None, device: str = "cpu") -> Backend:
    """The back-end the config names: engine and naive on ``loaded`` (a LoadedModel), vLLM from ``component``."""
    if config.backend == "engine":
        from benchmark.backends.engine import open_engine

        return open_engine(loaded, config, seed)
    if config.backend == "naive":
        from benchmark.backends.naive import NaiveBackend

        return NaiveBackend(loaded, seed)
    from benchmark.backends.vllm import open_vllm

    return open_vllm(component, config, seed, device)


def check_available(config: SliCKConfig, device: str) -> None:
    """Fail with one line, before any model is loaded, when the chosen back-end cannot run here."""
    if config.backend == "vllm":
        from benchmark.backends.vllm import availability_problem
        from benchmark.errors import BenchmarkError

        problem = availability_problem(device)
        if problem:
            raise BenchmarkError(problem)


def key_facts(config: SliCKConfig) -> dict:
    """What the back-end's results depend on beyond the code and the config (for the cache key): vLLM's version
    and batch-invariance settings; nothing for the engine and the reference."""
    if config.backend == "vllm":
        from benchmark.backends.vllm import settings

        return settings()
    return {}
