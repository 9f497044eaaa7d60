"""Pinned CPU numerics: the same bits at any thread count, and across the CPUs measured so far (see below for
the one that differs).

Without a pin, PyTorch and its libraries pick the fastest code path of the CPU they run on, and each path rounds
differently. Measured: on an Intel Xeon with AVX-512 and AMX, the world model pretrained in float32 differed at 1
and 2 threads and from a simulated AVX2-only CPU; in bfloat16 it also differed between AMX and AVX-512 paths. So
every result (SliCK counts, betas) moved from machine to machine. What decides the bits, and how it is pinned:

- ``ATEN_CPU_CAPABILITY=avx2``: PyTorch's own kernels (element-wise ops, reductions, the random number
  generators that initialise weights) use their AVX2 build on every CPU that has AVX2, the same instructions on
  Intel and AMD. Left alone, an AVX-512 CPU takes the AVX-512 build.
- ``MKL_CBWR=COMPATIBLE,STRICT``: MKL's matrix products (every ``nn.Linear``) take the one code branch MKL documents
  as identical on Intel and non-Intel CPUs. The branch ``AVX2`` exists on Intel CPUs only: on this AMD EPYC,
  MKL reports ``AUTO,STRICT`` for ``MKL_CBWR=AVX2,STRICT`` (``mkl_cbwr()`` below), so it would not pin anything
  across vendors. ``MKL_DYNAMIC=FALSE`` keeps MKL from changing its thread count behind our back (MKL's own
  reproducibility conditions).
- MKL runs on one thread (``set_threads``): MKL's CNR modes promise equal bits only at a fixed thread count, and
  measured here, even ``COMPATIBLE,STRICT`` gave another 8x8192x8 product at 2 threads than at 1. PyTorch's own
  kernels keep every thread asked for; they partition by output, so they do not change the bits.
- ``ONEDNN_MAX_CPU_ISA=AVX2``: oneDNN (bfloat16 matmuls, convolutions) stops at AVX2, never AMX or AVX-512.

What is still not pinned: an Intel Xeon with AVX-512, AVX512-FP16 and AMX pretrains another default world model
than the AMD EPYCs (SliCK on train: 762/189/444/1,005 HighlyKnown/MaybeKnown/WeaklyKnown/Unknown against
781/171/457/991), although ``COMPATIBLE`` is MKL's documented cross-vendor branch. On that Xeon, ``COMPATIBLE``
gives the ``SSE2`` branch's bits and ``AVX2,STRICT`` yet another model (759/181/467/993), so MKL's branch does
decide the bits there, and neither branch gives the AMD ones. Which kernel differs between the vendors is not
known: it needs both machines side by side.

These must be in the environment before torch is first imported (ATen and MKL read them once). ``pin()`` runs
when ``benchmark`` is imported (``benchmark/__init__.py``), before any module of ours imports torch, so every
entry point gets it: the CLI, spawned local workers and DDP ranks (they inherit the driver's environment), Ray
tasks (``executors/ray.py`` passes ``PINNED`` in each task's runtime environment) and the test session.

float32 is what makes a CPU result reproducible: bfloat16 goes through oneDNN's reduced-precision kernels, whose
rounding differs between ISA paths, and GPUs have their own kernels and reduction orders. Neither is promised
bit-equal across machines; ``reproducibility()`` says which case a run is in, and every parent run records it.

Opting out, for speed: ``SLICK_BENCH_NATIVE_NUMERICS=1`` leaves the environment and MKL's threads as they are; the
run's tags and report then say its numbers are not bitwise reproducible on another machine.
"""

from __future__ import annotations

import os
import platform
import sys
from pathlib import Path

from benchmark.settings import NATIVE_NUMERICS

OPT_OUT = NATIVE_NUMERICS.name
PINNED = {
    "ATEN_CPU_CAPABILITY": "avx2",
    "MKL_CBWR": "COMPATIBLE,STRICT",
    "MKL_DYNAMIC": "FALSE",
    "ONEDNN_MAX_CPU_ISA": "AVX2",
}
# The CPU flags that decide which code paths exist (shown in the run's tags and report).
ISA_FLAGS = ("sse4_2", "avx", "avx2", "fma", "avx512f", "avx512_bf16", "avx512_vnni", "amx_bf16", "amx_tile")
# MKL's named constants for CNR control (mkl_cbwr_get), as MKL's reference lists them.
_CBWR_BRANCHES = {0: "OFF", 1: "BRANCH_OFF", 2: "AUTO", 3: "COMPATIBLE", 4: "SSE2", 6: "SSSE3", 7: "SSE4_1",
                  8: "SSE4_2", 9: "AVX", 10: "AVX2", 12: "AVX512", 14: "AVX512_E1", 15: "AVX512_E2",
                  16: "AVX512_E3", 17: "AVX512_E4", 18: "AVX2_E1", 19: "AVX512_E5"}
_CBWR_STRICT = 0x10000

# Whether torch was already imported when ``pin()`` ran (a library user who imported torch first): then the
# variables may have come too late, and the run's tags say so.
_late: bool | None = None


def opted_out() -> bool:
    return NATIVE_NUMERICS.is_on()


def pin() -> None:
    """Write ``PINNED`` into this process's environment (children inherit it), unless the user opted out."""
    global _late
    if opted_out():
        return
    if _late is None:
        _late = "torch" in sys.modules
    os.environ.update(PINNED)


def _mkl():
    """MKL's C functions inside libtorch_cpu (linked statically there), or None where this torch has no MKL."""
    import ctypes

    import torch

    if not torch.backends.mkl.is_available():
        return None
    try:
        return ctypes.CDLL(str(Path(torch.__file__).parent / "lib" / "libtorch_cpu.so"))
    except OSError:
        return None


def set_threads(count: int) -> None:
    """torch's thread count for this process, with MKL kept at one thread while pinned (see the module doc)."""
    import torch

    torch.set_num_threads(count)
    if opted_out():
        return
    lib = _mkl()
    if lib is None:
        return
    # ATen re-applies its thread count to MKL (as this thread's MKL setting) the first time a thread runs a
    # parallel loop; make that happen now, so that the setting below is not undone by the next tensor op.
    torch.zeros(1 << 16).add_(1)
    # torch.set_num_threads just gave MKL ``count`` threads, as this thread's setting: take it back, and make one
    # thread MKL's default for threads that have no setting of their own. (The C entry points: the lower-case
    # names in libtorch_cpu are the Fortran ones, which take a pointer.)
    for name in ("MKL_Set_Num_Threads", "MKL_Set_Num_Threads_Local"):
        setter = getattr(lib, name, None)
        if setter is not None:
            setter(1)


def mkl_cbwr() -> str:
    """MKL's CNR branch as MKL itself reports it (``mkl_cbwr_get``), e.g. ``COMPATIBLE,STRICT``; '' without MKL."""
    import ctypes

    lib = _mkl()
    getter = getattr(lib, "mkl_serv_cbwr_get", None) if lib is not None else None
    if getter is None:
        return ""
    getter.restype, getter.argtypes = ctypes.c_int, [ctypes.c_int]
    value = getter(-1)  # MKL_CBWR_ALL
    branch = _CBWR_BRANCHES.get(value & 0xFFFF, str(value & 0xFFFF))
    return branch + (",STRICT" if value & _CBWR_STRICT else "")


def _library_versions() -> dict[str, str]:
    import torch

    versions = {"torch": torch.__version__}
    for line in torch.__config__.show().splitlines():
        line = line.strip(" -")
        if "Math Kernel Library Version" in line:
            versions["mkl"] = line.split("Version", 1)[1].split()[0]
        elif line.startswith(("Intel(R) MKL-DNN", "oneDNN", "Intel(R) oneDNN")):
            versions["onednn"] = next((w for w in line.split() if w.startswith("v")), line)
    return versions


def cpu_description() -> tuple[str, list[str]]:
    """The CPU's model name and which of ``ISA_FLAGS`` it has (from /proc/cpuinfo; elsewhere, platform's)."""
    name, flags = platform.processor() or platform.machine(), set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name" and name in ("", platform.machine(), platform.processor()):
                name = value.strip()
            elif key.strip() == "flags":
                flags = set(value.split())
                break
    except OSError:
        pass
    return name, [f for f in ISA_FLAGS if f in flags]


def reproducibility(dtypes: list[str], device: str) -> str:
    """What a reader may expect of this run's numbers on another machine, in one line."""
    if opted_out():
        return (f"not bitwise reproducible: {OPT_OUT} was set, so the CPU's fastest paths were used; another CPU "
                "or thread count may round differently")
    if _late:
        return ("not guaranteed: torch was imported before benchmark, so the pinned variables may have come too "
                "late; start from `python -m benchmark` or import benchmark first")
    if device != "cpu":
        return (f"not bitwise reproducible across machines: {device} kernels and reduction orders differ between "
                "GPU models and library versions; expect agreement to sampling noise, not to the bit")
    if platform.machine() not in ("x86_64", "AMD64"):
        return (f"not bitwise reproducible against x86-64: {platform.machine()} has its own kernels; runs on the "
                "same kind of machine agree")
    if any(d in ("bfloat16", "float16", "bf16-mixed", "16-mixed", "bf16-true") for d in dtypes):
        return ("not bitwise reproducible across CPUs: reduced-precision (bfloat16/float16) kernels round "
                "differently on each ISA path; float32 runs are")
    # Measured: two AMD EPYCs (AVX2 only, AVX-512) gave the default sweep to the last digit; an Intel Xeon with
    # AVX-512 and AMX gave another world model (other SliCK counts), with MKL_CBWR COMPATIBLE and AVX2 alike.
    return ("bitwise reproducible at any thread count (float32, pinned numerics); across CPUs measured equal on AMD "
            "EPYCs with AVX2 and AVX-512, not between them and an Intel Xeon with AMX")


def environment_tags(dtypes: list[str], device: str) -> dict[str, str]:
    """The numeric environment of this process, as parent-run tags (``numerics.*``)."""
    import torch

    name, flags = cpu_description()
    tags = {"numerics.pinned": "false" if opted_out() else ("late" if _late else "true"),
            "numerics.cpu": name, "numerics.isa": " ".join(flags),
            "numerics.aten_capability": torch.backends.cpu.get_cpu_capability(),
            "numerics.mkl_cbwr": mkl_cbwr(),
            "numerics.env": " ".join(f"{k}={os.environ.get(k, '')}" for k in PINNED),
            "numerics.threads": str(torch.get_num_threads()),
            "numerics.dtype": ",".join(dict.fromkeys(dtypes)), "numerics.device": device,
            "numerics.reproducible": reproducibility(dtypes, device)}
    tags |= {f"numerics.{k}": v for k, v in _library_versions().items()}
    return tags
