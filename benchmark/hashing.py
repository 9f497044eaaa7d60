"""Hashing: the one place that turns inputs, code and files into keys and checksums.

Cache keys (``content_key`` of a stage's inputs, with ``code_key`` of the code that computes it and ``files_digest``
of its data files or weights) name a stage's entry under ``benchmark.cache.stage_dir``; file checksums
(``sha256_file``, ``HashingWriter``) are what ``benchmark.cache`` records beside every cache file and verifies on a
hit. All are sha256.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import json
import os
from collections.abc import Iterable
from pathlib import Path


def content_key(*parts: object) -> str:
    """A short stable hash of JSON-serialisable parts (dict keys sorted, so order of keys does not matter)."""
    blob = json.dumps(parts, sort_keys=True, default=str, separators=(",", ":")).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


@functools.cache
def code_key(*modules: str) -> str:
    """Hash of the source files of ``modules`` (all of a package's) and of the torch and transformers versions.

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
        # A package is keyed by every module in it, so code moved between its files is still in the key.
        sources = (sorted(Path(spec.origin).parent.rglob("*.py")) if spec.submodule_search_locations
                   else [Path(spec.origin)])
        digest.update(module.encode())
        for source in sources:
            digest.update(source.read_bytes())
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
        with open(path, "rb") as handle:  # the running digest goes on with this file's bytes (same keys as before)
            hashlib.file_digest(handle, lambda: digest)
    return digest.hexdigest()[:16]


def sha256_file(path: Path) -> str:
    with open(path, "rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


class HashingWriter:
    """A binary file that hashes what is written to it: ``torch.save`` streams into it, so a checkpoint's sha256
    is known when the last byte is on disk, without reading the file back."""

    def __init__(self, path: Path):
        self._file = open(path, "wb")  # noqa: SIM115 - closed in close()
        self.digest = hashlib.sha256()

    def write(self, data) -> int:
        self.digest.update(data)
        return self._file.write(data)

    def flush(self) -> None:
        self._file.flush()

    def close(self) -> None:
        self._file.flush()
        os.fsync(self._file.fileno())
        self._file.close()

    def __enter__(self) -> HashingWriter:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
