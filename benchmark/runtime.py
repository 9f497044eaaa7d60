"""Process-level settings every compute stage shares: torch thread count and Lightning's console noise."""

from __future__ import annotations

import contextlib
import logging
import os
import warnings
from collections.abc import Iterator


def compute_threads() -> int:
    """Torch threads to use: ``$SLICK_BENCH_THREADS``, else every core this process may run on.

    A speed choice only: results are identical at any thread count (benchmark.thread_invariant, benchmark.numerics;
    tested). It is never derived from the machine's load, which once made the embedded world differ from run
    to run. On a busy machine set ``SLICK_BENCH_THREADS=1`` (two threads beside another process collapsed to
    1.1k tokens/s against 6.1k with one, measured in the prototype), or run variants in parallel workers of one thread each.
    """
    from benchmark.settings import THREADS

    if THREADS.value():
        return max(1, int(THREADS.value()))
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


@contextlib.contextmanager
def torch_threads(count: int) -> Iterator[None]:
    import torch

    from benchmark.numerics import set_threads

    before = torch.get_num_threads()
    set_threads(count)
    try:
        yield
    finally:
        set_threads(before)


def quiet_libraries() -> None:
    """Library warnings, transformers' weight-loading bars and config notices are noise next to our own progress
    bars. The CLI calls this unless ``--debug``; so does every worker process, which inherits none of it."""
    from benchmark.settings import DEBUG

    if DEBUG.value():
        return
    from benchmark.errors import BenchmarkWarning

    warnings.filterwarnings("ignore")
    # The project's own warnings (questions or relations its preprocessing dropped) are not noise: one line each.
    warnings.filterwarnings("default", category=BenchmarkWarning)
    if getattr(warnings.formatwarning, "__module__", None) != __name__:
        warnings.formatwarning = _one_line(warnings.formatwarning)
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    try:
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity_error()
        hf_logging.disable_progress_bar()
    except ImportError:
        pass


def _one_line(previous):
    """``warnings.formatwarning`` that writes a ``BenchmarkWarning`` as ``warning: <message>`` (no source line)."""
    from benchmark.errors import BenchmarkWarning

    def formatwarning(message, category, filename, lineno, line=None):
        if issubclass(category, BenchmarkWarning):
            return f"warning: {message}\n"
        return previous(message, category, filename, lineno, line)

    return formatwarning


LIGHTNING_LOGGERS = ("lightning.pytorch", "lightning.fabric", "lightning")


def silence_lightning() -> None:
    """Lightning's start-up banners and data-loader hints are not for our users; only the CLI prints. For good:
    what a process started only to train (a spawned DDP rank) calls; ``quiet_lightning`` undoes it afterwards."""
    for name in LIGHTNING_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", message=".*does not have many workers.*")
    warnings.filterwarnings("ignore", message=".*(GPU|TPU|HPU) available.*")
    warnings.filterwarnings("ignore", message=".*LeafSpec.*is deprecated.*")  # Lightning 2.6 with torch 2.10+
    warnings.filterwarnings("ignore", message=".*treespec, LeafSpec.*")


@contextlib.contextmanager
def quiet_lightning() -> Iterator[None]:
    """``silence_lightning`` for the duration of a block."""
    loggers = [logging.getLogger(n) for n in LIGHTNING_LOGGERS]
    levels = [logger.level for logger in loggers]
    with warnings.catch_warnings():
        silence_lightning()
        try:
            yield
        finally:
            for logger, level in zip(loggers, levels, strict=True):
                logger.setLevel(level)
