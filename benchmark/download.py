"""Downloading and unpacking a public data zip, only ever on a user's explicit ``data fetch``: a failed download,
a full disk or a zip bomb is one clear error, and nothing half written is left behind."""

from __future__ import annotations

import errno
import shutil
import urllib.error
import urllib.request
import zipfile
from pathlib import Path

from benchmark.errors import BenchmarkError

CONNECT_TIMEOUT_S = 10.0
# What a zip may unpack to: a data release (ENTITYQUESTIONS is ~0.2 GB of JSON in ~50 files of at most a few MB,
# which deflate about 6x). A member beyond these is not a release (a zip bomb fills the disk: 60 MB from a 61 KB
# zip was seen).
MAX_MEMBER_BYTES = 256 << 20
MAX_TOTAL_BYTES = 4 << 30
MAX_RATIO = 100  # uncompressed / compressed, for members of more than 1 MB
NO_SPACE = (errno.ENOSPC, errno.EDQUOT)


def no_space(exc: BaseException | None) -> bool:
    return isinstance(exc, OSError) and exc.errno in NO_SPACE


def download(url: str, out, part: str, timeout: float, by_hand: str) -> None:
    """Stream ``url`` into the open binary file ``out`` (written at ``part``). ``by_hand`` says how to get the
    data without this, and ends every error."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            shutil.copyfileobj(response, out, 1 << 20)
    except urllib.error.HTTPError as exc:
        raise BenchmarkError(f"could not download {url} (HTTP {exc.code}); {by_hand}") from exc
    except (urllib.error.URLError, OSError, ValueError) as exc:
        if no_space(exc) or no_space(getattr(exc, "reason", None)):
            raise BenchmarkError(f"{part}: no space left on the device while downloading {url} (the zip goes to "
                                 f"the temporary folder first: TMPDIR); free some space, or {by_hand}") from exc
        reason = getattr(exc, "reason", exc)
        raise BenchmarkError(f"could not download {url} ({reason}; offline?); {by_hand}") from exc


def extract(zip_path: Path, into: Path) -> None:
    """Unpack ``zip_path`` into ``into`` after refusing, before anything is written, a zip whose members would
    unpack far beyond a data release's size."""
    try:
        with zipfile.ZipFile(zip_path) as archive:
            _check_sizes(zip_path, archive)
            archive.extractall(into)  # zipfile strips absolute paths and '..' from member names
    except zipfile.BadZipFile as exc:
        raise BenchmarkError(f"{zip_path}: not a zip file ({exc})") from exc


def _check_sizes(zip_path: Path, archive: zipfile.ZipFile) -> None:
    members = archive.infolist()
    for info in members:
        ratio = info.file_size / max(1, info.compress_size)
        if info.file_size > MAX_MEMBER_BYTES or (info.file_size > 1 << 20 and ratio > MAX_RATIO):
            raise BenchmarkError(f"{zip_path}: member {info.filename} would unpack to {info.file_size} bytes from "
                                 f"{info.compress_size} (at most {MAX_MEMBER_BYTES} bytes and {MAX_RATIO}x for a "
                                 "release file); not the release, not unpacked")
    total = sum(info.file_size for info in members)
    if total > MAX_TOTAL_BYTES:
        raise BenchmarkError(f"{zip_path}: would unpack to {total} bytes (the release is far smaller, at most "
                             f"{MAX_TOTAL_BYTES} allowed); not unpacked")
