"""Content-addressed cache: every stage's output is keyed by a hash of everything it was computed from.

The cache lives under ``$SLICK_BENCH_CACHE`` (default ``.cache/`` in the working directory, git-ignored).
Writes go to a temporary sibling and are renamed into place, so an interrupted stage never leaves a
half-written entry that a later run would mistake for a finished one.

Every cache file carries a sha256: a folder written by ``atomic_dir`` holds ``checksums.json`` (every file in it),
a file rewritten in place (a training checkpoint) has a ``<name>.sha256`` beside it. A cache hit is verified
(``cache_hit``, ``verify_file``): a truncated or corrupted entry is reported in one warning naming the file and
treated as a miss, so the stage rebuilds it; it is never used. Entries written before checksums existed are adopted
(their checksums are written on first use).
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import importlib.util
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path

from benchmark.errors import BenchmarkError

CHECKSUMS = "checksums.json"
_log = logging.getLogger("benchmark.cache")


def cache_root() -> Path:
    return Path(os.environ.get("SLICK_BENCH_CACHE", ".cache")).resolve()


def ensure_writable(*places: Path | str) -> None:
    """Fail fast, naming the folder, if a run could not write its results: each place is a folder (created if
    missing) or a storage URI (``sqlite:///<file>`` checks the file's folder, ``file:`` the folder; an
    ``http(s)`` tracking server must answer, once, within a few seconds: whether it lets us write is its own
    business). Called before any compute, so a bad SLICK_BENCH_CACHE or MLFLOW_TRACKING_URI costs nothing."""
    for place in places:
        folder, source = _local_folder(place), ""
        if isinstance(place, str) and place.startswith(("http://", "https://")):
            from benchmark.tracking import check_reachable

            check_reachable(place)
            continue
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
def atomic_dir(final: Path, *, checksums: bool = True) -> Iterator[Path]:
    """Yield a temporary directory that becomes ``final`` only if the block finishes without error; its files'
    checksums are written into it first (``checksums.json``), so a later hit can be verified."""
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", dir=final.parent))
    try:
        yield tmp
        if checksums:
            write_checksums(tmp)
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


# ---------------------------------------------------------------------------------------------------------------
# Checksums
# ---------------------------------------------------------------------------------------------------------------
def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _entry(path: Path) -> dict:
    return {"sha256": sha256_file(path), "size": path.stat().st_size}


def write_checksums(folder: Path) -> dict[str, dict]:
    """Record the sha256 and size of every file under ``folder`` (hidden files and lock files excepted) in
    ``folder/checksums.json``; returns the record."""
    folder = Path(folder)
    sums = {p.relative_to(folder).as_posix(): _entry(p) for p in sorted(folder.rglob("*"))
            if p.is_file() and p.name != CHECKSUMS and not p.name.startswith(".")}
    atomic_write_bytes(folder / CHECKSUMS, json.dumps(sums, indent=1, sort_keys=True).encode())
    return sums


def _mismatch(path: Path, expected: dict) -> str | None:
    """Why ``path`` does not match its recorded checksum, or None when it does."""
    if not path.is_file():
        return "missing"
    size = path.stat().st_size
    if size != expected["size"]:
        return f"truncated or overwritten ({size} bytes, {expected['size']} recorded)"
    if sha256_file(path) != expected["sha256"]:
        return "corrupted (sha256 differs from the recorded one)"
    return None


# Folders verified in this process, by the size and mtime of their files: an unchanged folder is not hashed again.
_verified: dict[Path, tuple] = {}


def _signature(folder: Path, names: Iterable[str]) -> tuple:
    out = []
    for name in (CHECKSUMS, *names):
        try:
            stat = (folder / name).stat()
            out.append((name, stat.st_size, stat.st_mtime_ns))
        except OSError:
            out.append((name, None, None))
    return tuple(out)


def verify_checksums(folder: Path) -> list[str]:
    """The files of ``folder`` that do not match ``checksums.json`` (missing, truncated, changed), as
    ``"<path>: <why>"``; ``["<folder>/checksums.json: missing"]`` when there is no record; [] when all match."""
    folder = Path(folder)
    try:
        sums = json.loads((folder / CHECKSUMS).read_text())
    except FileNotFoundError:
        return [f"{folder / CHECKSUMS}: missing"]
    except (OSError, ValueError) as exc:
        return [f"{folder / CHECKSUMS}: unreadable ({exc})"]
    signature = _signature(folder, sums)
    if _verified.get(folder) == signature:
        return []
    bad = [f"{folder / name}: {why}" for name, expected in sums.items()
           if (why := _mismatch(folder / name, expected)) is not None]
    if not bad:
        _verified[folder] = signature
    return bad


def report_corrupt(problem: str) -> None:
    """One warning line naming the file; the caller rebuilds what it belongs to."""
    _log.warning("warning: cache file %s; not used, rebuilding it", problem)


def cache_hit(folder: Path, marker: str, *, report: bool = True) -> bool:
    """True when ``folder`` is a finished cache entry (``marker`` is in it) whose files all match their
    checksums. A corrupted entry is reported (``report``) and is a miss: the caller rebuilds it, and
    ``atomic_dir`` replaces the folder. An entry from before checksums existed is adopted."""
    folder = Path(folder)
    if not (folder / marker).is_file():
        if report and (folder / CHECKSUMS).is_file():
            report_corrupt(f"{folder / marker}: missing")
        return False
    bad = verify_checksums(folder)
    if bad and bad[0].endswith(f"{CHECKSUMS}: missing"):
        try:
            write_checksums(folder)  # written by an earlier version: trust it from now on
        except OSError:
            pass
        return True
    if bad:
        if report:
            report_corrupt(bad[0] if len(bad) == 1 else f"{bad[0]} (and {len(bad) - 1} more)")
        return False
    return True


def _sidecar(path: Path) -> Path:
    return path.with_name(f"{path.name}.sha256")


def record_checksum(path: Path, new_file: Path) -> None:
    """Before ``new_file`` is renamed onto ``path`` (a file rewritten in place, e.g. a checkpoint), record its
    checksum beside ``path`` in ``<name>.sha256``. The previous checksum stays accepted too, so a kill between
    this and the rename leaves a valid pair either way."""
    sidecar = _sidecar(path)
    entries = [_entry(new_file)]
    try:
        previous = json.loads(sidecar.read_text())["accepted"][0]
        if path.is_file() and previous != entries[0]:
            entries.append(previous)
    except (OSError, ValueError, KeyError, IndexError):
        pass
    atomic_write_bytes(sidecar, json.dumps({"accepted": entries}).encode())


def verify_file(path: Path) -> str | None:
    """Why ``path`` cannot be trusted (``"<path>: <why>"``), or None when it matches its recorded checksum (or
    predates checksums: no ``.sha256`` beside it) or does not exist."""
    path = Path(path)
    if not path.exists():
        return None
    try:
        accepted = json.loads(_sidecar(path).read_text())["accepted"]
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError) as exc:
        return f"{_sidecar(path)}: unreadable ({exc})"
    reasons = [_mismatch(path, entry) for entry in accepted]
    return None if None in reasons else f"{path}: {reasons[0]}"


def write_parquet(table, path: Path) -> None:
    """A Parquet cache file (a ``polars.DataFrame``), written atomically with its checksum beside it."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    table.write_parquet(tmp)
    record_checksum(path, tmp)
    os.replace(tmp, path)


def read_parquet(path: Path):
    """The Parquet cache file at ``path``, or None when it is missing or damaged (reported): rebuild it then."""
    import polars as pl

    path = Path(path)
    if not path.is_file():
        return None
    problem = verify_file(path)
    if problem is None:
        try:
            return pl.read_parquet(path)
        except Exception as exc:  # noqa: BLE001 - unreadable without a recorded checksum (an older file)
            problem = f"{path}: unreadable ({type(exc).__name__})"
    report_corrupt(problem)
    return None


def remove_with_checksum(path: Path) -> None:
    for file in (Path(path), _sidecar(Path(path))):
        file.unlink(missing_ok=True)
