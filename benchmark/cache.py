"""Content-addressed cache: every stage's output is keyed by a hash of everything it was computed from.

The cache lives under ``$SLICK_BENCH_CACHE`` (default ``.cache/`` in the working directory, git-ignored).
Writes go to a temporary sibling and are renamed into place, so an interrupted stage never leaves a
half-written entry that a later run would mistake for a finished one.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import importlib.util
import json
import os
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path

from benchmark.errors import BenchmarkError


def cache_root() -> Path:
    return Path(os.environ.get("SLICK_BENCH_CACHE", ".cache")).resolve()


def ensure_writable(*places: Path | str) -> None:
    """Fail fast, naming the folder, if a run could not write its results: each place is a folder (created if
    missing) or a storage URI (``sqlite:///<file>`` checks the file's folder, ``file:`` the folder; a remote
    server is not checked). Called before any compute, so a bad SLICK_BENCH_CACHE or MLFLOW_TRACKING_URI costs
    nothing."""
    for place in places:
        folder, source = _local_folder(place), ""
        if folder is None:
            continue
        if isinstance(place, str) and ":" in place:
            source = f" (the folder of {place})"
        elif folder == cache_root():
            source = " (SLICK_BENCH_CACHE)"
        try:
            folder.mkdir(parents=True, exist_ok=True)
            handle, probe = tempfile.mkstemp(prefix=".writable.", dir=folder)
            os.close(handle)
            os.unlink(probe)
        except (OSError, ValueError) as exc:
            reason = getattr(exc, "strerror", None) or str(exc)
            raise BenchmarkError(f"{folder}: cannot write here{source}: {reason}") from exc


def _local_folder(place: Path | str) -> Path | None:
    if isinstance(place, Path):
        return place
    scheme, sep, rest = place.partition(":")
    if not sep or len(scheme) == 1:  # a plain path (or a Windows drive letter)
        return Path(place)
    rest = rest.split("?")[0]
    if scheme == "sqlite":
        file = rest.removeprefix("///")
        return Path(file).parent if rest.startswith("///") and file else None  # sqlite:// is in memory
    if scheme == "file":
        return Path(rest.removeprefix("//"))
    return None


def content_key(*parts: object) -> str:
    """A short stable hash of JSON-serialisable parts (dict keys sorted, so order of keys does not matter)."""
    blob = json.dumps(parts, sort_keys=True, default=str, separators=(",", ":")).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


@functools.cache
def code_key(*modules: str) -> str:
    """Hash of the source files of ``modules`` and of the torch and transformers versions.

    Part of every stage's cache key, so editing the code that computes a stage, or upgrading the libraries
    whose kernels it runs on, can never reuse a stale result. Versions come from package metadata, so keys are
    computed without importing torch.
    """
    from importlib.metadata import PackageNotFoundError, version

    digest = hashlib.sha256()
    for module in sorted(modules):
        spec = importlib.util.find_spec(module)
        if spec is None or spec.origin is None:
            raise ValueError(f"code_key: no source for module '{module}'")
        digest.update(module.encode())
        digest.update(Path(spec.origin).read_bytes())
    for package in ("torch", "transformers"):
        try:
            digest.update(f"{package}=={version(package)}".encode())
        except PackageNotFoundError:
            digest.update(f"{package} absent".encode())
    return digest.hexdigest()[:16]


def files_digest(paths: Iterable[Path]) -> str:
    """Hash of file names and contents, for data files and local model weights."""
    digest = hashlib.sha256()
    for path in sorted(Path(p) for p in paths):
        digest.update(path.name.encode())
        with open(path, "rb") as handle:
            for chunk in iter(lambda: handle.read(1 << 20), b""):
                digest.update(chunk)
    return digest.hexdigest()[:16]


def stage_dir(stage: str, key: str) -> Path:
    return cache_root() / stage / key


@contextlib.contextmanager
def atomic_dir(final: Path) -> Iterator[Path]:
    """Yield a temporary directory that becomes ``final`` only if the block finishes without error."""
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", dir=final.parent))
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)


def atomic_write_bytes(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_bytes(data)
    os.replace(tmp, path)
