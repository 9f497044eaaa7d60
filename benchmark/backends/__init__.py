"""What generates for SliCK, behind one interface (``base.Backend``); the suite's ``slick.backend`` chooses.

    engine   engine.py    batched, prefix-cached, early-exit generation on any torch device (the default)
    naive    naive.py     one generate() call per question and prompt: the reference the engine is checked against
    vllm     vllm.py      vLLM on a CUDA GPU (optional extra, imported only when chosen)

``BACKENDS`` declares each once (``BackendEntry``): a new back-end is one entry there, or one ``BACKENDS.register``
call, plus its test; the schema's choices, the cache key and everything SliCK asks before it runs come from it.
``decoding.py`` holds the decoding primitives they share with evaluation and training; ``noise.py`` the
counter-based sampling noise the engine and the reference share; ``kv_cache.py`` the engine's cache layers and
``verdicts.py`` its early verdicts. Back-ends never import a stage; the category rule they need is
``benchmark.categories``.
"""

from __future__ import annotations

from dataclasses import dataclass

from benchmark.choices import Choices
from benchmark.registry import import_object

# The functions below take the suite's ``slick:`` section (a ``SliCKConfig``) and read its ``backend``. It is not
# imported for their annotations: the schema imports this registry for its choices, and an import back, even for
# type checking only, would close a cycle.


@dataclass(frozen=True)
class BackendEntry:
    """One back-end, declared once. Code is named by ``"module:function"`` strings, imported only when used.

    ``opener(loaded, config, seed, *, component, device) -> Backend``: ``loaded`` is the model loaded through its
    component (a LoadedModel) when ``loads_model``, else None and the back-end loads ``component`` itself.
    """

    opener: str
    code: tuple[str, ...]  # the modules its results come from (hashed into SliCK's cache key with the stage's own)
    description: str  # what the suite's ``slick.backend`` documents it as
    loads_model: bool = True  # False: SliCK loads nothing; the back-end loads the component itself (vLLM)
    # ``availability(device) -> str | None``: one line saying why it cannot run here, asked before any model loads.
    availability: str | None = None
    # ``facts() -> dict``: what its results depend on beyond the code and the config (for the cache key).
    facts: str | None = None
    # ``gpus(config) -> int``: the GPUs one copy of it holds, where it runs on GPUs whatever the suite's device
    # (vLLM: its tensor-parallel width). None: one GPU where the suite's device is CUDA, else none.
    gpus: str | None = None


BACKENDS: Choices[BackendEntry] = Choices("back-end", {
    "engine": BackendEntry(
        "benchmark.backends.engine:open_engine",
        ("benchmark.backends.base", "benchmark.backends.engine", "benchmark.backends.verdicts",
         "benchmark.backends.noise", "benchmark.backends.kv_cache", "benchmark.backends.decoding"),
        "batched, cached, early-exit generation (any device)"),
    "naive": BackendEntry(
        "benchmark.backends.naive:open_naive",
        ("benchmark.backends.base", "benchmark.backends.naive", "benchmark.backends.noise",
         "benchmark.backends.decoding"),
        "one generate() call per question and prompt (slow; the reference the engine is checked against)"),
    "vllm": BackendEntry(
        "benchmark.backends.vllm:open_vllm",
        ("benchmark.backends.base", "benchmark.backends.vllm", "benchmark.backends.decoding"),
        "vLLM on a CUDA GPU (optional extra; prefix caching, its own sampler, so its categories agree with the "
        "engine's statistically, not sample for sample)",
        # vLLM loads the model itself, in its own process, from the component's files.
        loads_model=False, availability="benchmark.backends.vllm:availability_problem",
        # vLLM's version and batch-invariance settings; nothing for the engine and the reference.
        facts="benchmark.backends.vllm:settings", gpus="benchmark.backends.vllm:gpus_per_copy"),
})
# The schema's type for ``slick.backend`` (benchmark.slick_config).
BackendName = BACKENDS.annotation()


def needs_loaded_model(config) -> bool:
    """Whether the back-end runs on the model loaded through its component (engine, naive) or loads it itself."""
    return BACKENDS[config.backend].loads_model


def gpus_per_copy(config, device: str) -> int:
    """The GPUs one copy of the back-end holds (one SliCK shard's): its entry's ``gpus``, else one on CUDA."""
    entry = BACKENDS[config.backend]
    return import_object(entry.gpus)(config) if entry.gpus else int(device == "cuda")


def open_backend(config, seed: int, *, loaded=None, component=None, device: str = "cpu"):
    """The back-end (a ``base.Backend``) the config names, on ``loaded`` (a LoadedModel) or, if it loads the
    model itself, ``component``."""
    opener = import_object(BACKENDS[config.backend].opener)
    return opener(loaded, config, seed, component=component, device=device)


def check_available(config, device: str) -> None:
    """Fail with one line, before any model is loaded, when the chosen back-end cannot run here."""
    availability = BACKENDS[config.backend].availability
    if availability:
        from benchmark.errors import BenchmarkError

        problem = import_object(availability)(device)
        if problem:
            raise BenchmarkError(problem)


def key_facts(config) -> dict:
    """What the back-end's results depend on beyond the code and the config (for the cache key)."""
    facts = BACKENDS[config.backend].facts
    return import_object(facts)() if facts else {}
