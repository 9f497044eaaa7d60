"""The world's tiny GPT-2 as a base-model component: pretrained on first use, cached, loaded like any HF model.

Component files ``components/models/toy-gpt.yaml`` (on ``world``) and ``toy-gpt-test.yaml`` (on ``world-test``)::

    family: world
    description: ...
    world: world          # the dataset component (family world) whose corpus it is pretrained on
    epochs: 8             # any PretrainConfig field (components/world/pretrain.py) may be set here

The model folder is ``$SLICK_BENCH_CACHE/world-model/<key>/`` with key = hash(world identity, training
configuration, code version); it is written atomically, so an interrupted run leaves nothing, a second load reuses
it, and an edited component file trains a new one. It holds ``save_pretrained`` output (model and tokenizer, so
``AutoModelForCausalLM.from_pretrained(folder)`` works) and ``world_model.json`` (resolved configuration and
training statistics)::

    from benchmark.registry import Registry
    loaded = Registry().model("toy-gpt").load()      # ~3 min on 2 free cores the first time, then a second
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal

from pydantic import Field

from benchmark.cache import atomic_dir, cache_hit, stage_dir
from benchmark.errors import BenchmarkError
from benchmark.hashing import code_key, content_key
from benchmark.thread_invariant import make_thread_invariant
from components.base import ComponentSpec, LoadedModel, ModelComponent
from components.hf_causal_lm import load_hf
from components.world.corpus import vocabulary_texts
from components.world.generate import generate_world
from components.world.pretrain import PretrainConfig, pretrain
from components.world.source import WorldSource, build_lock

MANIFEST = "world_model.json"
# The code whose edits change the weights; hashed into the model folder's key.
PRETRAIN_CODE = ("components.world.pretrain", "components.world.tokenizer", "benchmark.thread_invariant")


class WorldModel(ModelComponent):
    """A GPT-2 pretrained on the embedded world's corpus (docs/method.md §2)."""

    class Spec(ComponentSpec, PretrainConfig):
        world: str = Field("world", description="name of the dataset component (family world) it is pretrained on")
        dtype: Literal["float32", "bfloat16"] = Field("float32", description="weights dtype when loaded")

    _source: WorldSource | None = None
    pretraining_cost = "about 17 minutes for the default world model on 2 CPU cores"  # said by prepare()

    def source(self) -> WorldSource:
        """The world it is pretrained on, resolved once (identity, key and load all ask for it)."""
        if self._source is not None:
            return self._source
        from benchmark.registry import Registry

        # The registry this component file belongs to (components/models/x.yaml -> components/), so a custom
        # registry root resolves its own world.
        source = Registry(root=self.file.resolve().parent.parent).dataset(self.spec.world)
        if not isinstance(source, WorldSource):
            raise BenchmarkError(f"{self.file}: world: '{self.spec.world}' is not a world dataset "
                                 f"(family '{source.spec.family}'); a world model needs the world's corpus")
        self._source = source
        return source

    def training_config(self) -> PretrainConfig:
        return PretrainConfig.model_validate(self.spec.model_dump(include=set(PretrainConfig.model_fields)))

    def key(self) -> str:
        return content_key(self.source().identity(), self.training_config().model_dump(), code_key(*PRETRAIN_CODE))

    def identity(self) -> str:
        return f"world-model:{self.key()}"

    def folder(self) -> Path:
        return stage_dir("world-model", self.key())

    def ensure_pretrained(self) -> Path:
        """The model folder, pretraining it first if the cache has none for this exact configuration."""
        final = self.folder()
        if cache_hit(final, MANIFEST, report=False):
            return final
        with build_lock(final):
            if not cache_hit(final, MANIFEST):  # missing, or damaged (reported): pretrain it again
                source = self.source()
                documents = source.documents()
                world = generate_world(source.config())
                config = self.training_config()
                with atomic_dir(final) as tmp:
                    stats = pretrain(documents, vocabulary_texts(world, documents), config, tmp)
                    manifest = {"model": self.name, "world": source.name, "world_identity": source.identity(),
                                "pretrain": config.model_dump(), "code_key": code_key(*PRETRAIN_CODE), "stats": stats}
                    (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2))
        return final

    def prepare(self, log=None) -> None:
        if log is None or cache_hit(self.folder(), MANIFEST, report=False):
            self.ensure_pretrained()
            return
        # Off a terminal nothing else would be printed for the whole pretraining (minutes to tens of minutes).
        log(f"pretraining {self.name} on {self.spec.world} (first use; {self.pretraining_cost})")
        stats = json.loads((self.ensure_pretrained() / MANIFEST).read_text())["stats"]
        log(f"pretrained {self.name}: {stats['parameters']:,} parameters, {stats['trained_tokens']:,} tokens in "
            f"{stats['total_seconds']:.0f} s ({stats['tokens_per_second']:,} tokens/s), final loss {stats['final_loss']}")

    def manifest(self) -> dict:
        return json.loads((self.ensure_pretrained() / MANIFEST).read_text())

    def parameters(self) -> int | None:
        return int(self.manifest()["stats"]["parameters"])

    def load(self, *, device: str = "cpu", dtype: str | None = None) -> LoadedModel:
        folder = self.ensure_pretrained()
        loaded = load_hf(self.name, str(folder), device=device, dtype=dtype or self.spec.dtype, source=str(self.file))
        loaded.identity = self.identity()
        make_thread_invariant(loaded.model)  # the LayerNorm it was pretrained with
        return loaded

    def tokenizer(self):
        """The tokenizer alone (for back-ends that load the weights themselves)."""
        from components.hf_causal_lm import load_tokenizer

        return load_tokenizer(str(self.ensure_pretrained()))

    def vllm_args(self) -> dict:
        """vLLM keywords: the saved GPT-2 folder (vLLM's kernels, not the thread-invariant LayerNorm)."""
        return {"model": str(self.ensure_pretrained()), "dtype": self.spec.dtype}
