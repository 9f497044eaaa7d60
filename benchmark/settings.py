"""Every environment variable slick-bench reads as a setting of its own, in one place: its name, what it sets and
its default. Each is read when asked for, not at import, so a test or a worker that sets one sees it.

Variables that are another tool's protocol (torchrun's and srun's rank variables, ``CUDA_VISIBLE_DEVICES``, Hugging
Face's cache and offline variables, ``RAY_ADDRESS``) are read where that protocol is spoken, not here.
"""

from __future__ import annotations

import os
from dataclasses import dataclass


@dataclass(frozen=True)
class Setting:
    name: str
    help: str
    default: str = ""

    def value(self) -> str:
        """The variable as set (surrounding space removed), else the default."""
        return os.environ.get(self.name, "").strip() or self.default

    def is_on(self) -> bool:
        return self.value().lower() not in ("", "0", "false", "no")


CACHE = Setting("SLICK_BENCH_CACHE", "the folder of cached stages (pretrained world models, SliCK, variants)", ".cache")
THREADS = Setting("SLICK_BENCH_THREADS", "torch threads per process (default: every core it may run on); a speed "
                  "choice only, results are the same at any count")
DEBUG = Setting("SLICK_BENCH_DEBUG", "1: library warnings and loading logs are shown (the CLI's --debug sets it)")
NATIVE_NUMERICS = Setting("SLICK_BENCH_NATIVE_NUMERICS", "1: the CPU's fastest kernels instead of the pinned, "
                          "bitwise-reproducible ones (results may then differ between CPUs)")
TRACKING_URI = Setting("MLFLOW_TRACKING_URI", "the MLflow store (default: sqlite:///mlruns/mlflow.db here)")
TRACKING_TIMEOUT = Setting("SLICK_BENCH_TRACKING_TIMEOUT", "seconds a request to the MLflow store is retried in all",
                           "60")

SETTINGS = (CACHE, THREADS, DEBUG, NATIVE_NUMERICS, TRACKING_URI, TRACKING_TIMEOUT)
