"""Content-addressed cache: every stage's output is keyed by a hash of everything it was computed from.

The cache lives under ``$SLICK_BENCH_CACHE`` (default ``.cache/`` in the working directory, git-ignored).
Writes go to a temporary sibling and are renamed into place, so an interrupted stage never leaves a
half-written entry that a later run would mistake for a finished one.

Every cache file carries a sha256: a folder written by ``atomic_dir`` holds ``checksums.json`` (every file in it),
a file rewritten in place (a training checkpoint) has a ``<name>.sha256`` beside it. A cache hit is verified
(``cache_hit``, ``verify_file``): a truncated or corrupted entry is reported in one warning naming the file and
treated as a miss, so the stage rebuilds it; it is never used. Entries written before checksums existed (no
``checksums.json``) are not trusted either: they are reported and rebuilt.

**Large files are hashed once, while they are written.** A checkpoint of an 8B model is tens of GB: reading it back
to hash it, and again before every resume, costs minutes of idle accelerators. ``save_torch`` hashes the bytes as
``torch.save`` streams them to disk and records sha256, size and mtime. A file of at least ``REHASH_LIMIT`` bytes
whose size and mtime are still the recorded ones is trusted without being read again (truncation, rewriting and
any later write change them); smaller files, and any file whose mtime moved, are hashed in full as before. What the
shortcut cannot see: bits that rot on disk without any write.

Keys and checksums are computed in ``benchmark.hashing``; stage locks are ``benchmark.locks``.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import shutil
import tempfile
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

from benchmark import settings
from benchmark.errors import BenchmarkError
from benchmark.hashing import HashingWriter, sha256_file

CHECKSUMS = "checksums.json"
# Files at least this large are trusted without rereading while their size and mtime are the recorded ones.
REHASH_LIMIT = 256 << 20
_log = logging.getLogger("benchmark.cache")


def cache_root() -> Path:
    return Path(settings.CACHE.value()).resolve()


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


_REMOTE_STORES = ("databricks", "databricks-uc", "uc")


def _local_folder(place: Path | str) -> Path | None:
    if isinstance(place, Path):
        return place
    scheme, sep, rest = place.partition(":")
    if place in _REMOTE_STORES:  # MLflow's names for a Databricks workspace, not folders in the working directory
        return None
    if not sep or len(scheme) == 1:  # a plain path (or a Windows drive letter)
        return Path(place)
    rest = rest.split("?")[0]
    if scheme == "sqlite":
        file = rest.removeprefix("///")
        return Path(file).parent if rest.startswith("///") and file else None  # sqlite:// is in memory
    if scheme == "file":
        return Path(rest.removeprefix("//"))
    return None


def stage_dir(stage: str, key: str) -> Path:
    return cache_root() / stage / key


def _ours(folder: Path, replaces: Callable[[Path], bool] | None) -> bool:
    """Whether ``atomic_dir`` may replace ``folder``: an empty folder, one it wrote with checksums (a cache entry,
    ``checksums.json``), an entry of the cache from before checksums (``<cache>/<stage>/<16 hex>``: only stages
    write there), or one its caller recognises as its own output (``replaces``: a release or world layout). Anything
    else is the user's folder: a ``--dest`` or ``--out`` pointed at it must never delete it."""
    if (folder / CHECKSUMS).is_file() or not any(folder.iterdir()):
        return True
    if replaces is not None and replaces(folder):
        return True
    return folder.parent.parent == cache_root() and bool(re.fullmatch(r"[0-9a-f]{16}", folder.name))


@contextlib.contextmanager
def atomic_dir(final: Path, *, checksums: bool = True,
               replaces: Callable[[Path], bool] | None = None) -> Iterator[Path]:
    """Yield a temporary directory that becomes ``final`` only if the block finishes without error; its files'
    checksums are written into it first (``checksums.json``), so a later hit can be verified. An existing ``final``
    is replaced only if it is ours (``_ours``); any other folder is refused before the block runs, in one line
    naming it, and left exactly as it was."""
    final = Path(final)
    if final.exists() and not final.is_dir():
        raise BenchmarkError(f"{final}: exists and is a file, not a folder; not replaced")
    if final.is_dir() and not _ours(final, replaces):
        shown = sorted(p.name for p in final.iterdir())[0]
        raise BenchmarkError(f"{final}: exists and holds files slick-bench did not write (e.g. '{shown}'); not "
                             "replaced: choose an empty or new folder")
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
    """``data`` at ``path``, whole or not at all: a full disk leaves the old file (and no temporary) behind."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        tmp.write_bytes(data)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


# ---------------------------------------------------------------------------------------------------------------
# Checksums
# ---------------------------------------------------------------------------------------------------------------
def _entry(path: Path, sha256: str | None = None) -> dict:
    """What is recorded of a file: its sha256 (computed here unless given), size and mtime."""
    digest = sha256 if sha256 is not None else sha256_file(path)
    stat = path.stat()
    return {"sha256": digest, "size": stat.st_size, "mtime_ns": stat.st_mtime_ns}


def save_torch(obj, path: Path) -> dict:
    """``torch.save(obj)`` to ``path`` (created or replaced atomically, through a temporary sibling) with its
    checksum recorded beside it (``<name>.sha256``), hashed while it is written. Returns the recorded entry."""
    import torch

    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    with HashingWriter(tmp) as out:
        torch.save(obj, out)
    entry = _entry(tmp, out.digest.hexdigest())
    record_checksum(path, tmp, entry=entry)
    os.replace(tmp, path)  # a rename keeps the mtime recorded above
    return entry


def write_checksums(folder: Path, known: dict[str, dict] | None = None) -> dict[str, dict]:
    """Record the sha256, size and mtime of every file under ``folder`` (hidden files and lock files excepted) in
    ``folder/checksums.json``; returns the record. ``known``: entries already computed (by the processes that
    wrote those files, e.g. each rank its shard of a sharded checkpoint), not hashed again here."""
    folder = Path(folder)
    known = known or {}
    sums = {name: known.get(name) or _entry(p) for p in sorted(folder.rglob("*"))
            if p.is_file() and p.name != CHECKSUMS and not p.name.startswith(".")
            for name in [p.relative_to(folder).as_posix()]}
    sums |= {name: entry for name, entry in known.items() if name not in sums and (folder / name).is_file()}
    atomic_write_bytes(folder / CHECKSUMS, json.dumps(sums, indent=1, sort_keys=True).encode())
    return sums


def _mismatch(path: Path, expected: dict) -> str | None:
    """Why ``path`` does not match its recorded checksum, or None when it does."""
    if not path.is_file():
        return "missing"
    stat = path.stat()
    size = stat.st_size
    if size != expected["size"]:
        return f"truncated or overwritten ({size} bytes, {expected['size']} recorded)"
    if size >= REHASH_LIMIT and stat.st_mtime_ns == expected.get("mtime_ns"):
        return None  # not written to since it was hashed (see the module docstring)
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
    ``atomic_dir`` replaces the folder. An entry without ``checksums.json`` is a miss too (reported): nothing
    says its files are whole (a truncated table was once blessed that way, and every later run crashed on it),
    and ``atomic_dir`` writes the record with every entry it makes."""
    folder = Path(folder)
    if not (folder / marker).is_file():
        if report and (folder / CHECKSUMS).is_file():
            report_corrupt(f"{folder / marker}: missing")
        return False
    bad = verify_checksums(folder)
    if bad:
        if report:
            report_corrupt(bad[0] if len(bad) == 1 else f"{bad[0]} (and {len(bad) - 1} more)")
        return False
    return True


def _sidecar(path: Path) -> Path:
    return path.with_name(f"{path.name}.sha256")


def record_checksum(path: Path, new_file: Path, *, entry: dict | None = None) -> None:
    """Before ``new_file`` is renamed onto ``path`` (a file rewritten in place, e.g. a checkpoint), record its
    checksum beside ``path`` in ``<name>.sha256`` (``entry``: computed while it was written; else hashed here).
    The previous checksum stays accepted too, so a kill between this and the rename leaves a valid pair either
    way."""
    sidecar = _sidecar(path)
    entries = [entry or _entry(new_file)]
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
