"""What the pinned numerics cost (``slick-bench bench numerics``): world-model pretraining, pinned against the
CPU's native paths (``SLICK_BENCH_NATIVE_NUMERICS=1``), each in a fresh process (the variables are read when torch
starts), interleaved ``repeats`` times so both see the same machine load; the figure is the best of each.

    .venv/bin/python -m benchmark bench numerics                      # toy-gpt-test, 3 epochs, 3 repeats
    .venv/bin/python -m benchmark bench numerics --model toy-gpt --epochs 0.5

The fit's own wall time (``pretrain``'s ``train_seconds``: no imports, no corpus building) is compared, at the
thread count ``compute_threads`` gives (``SLICK_BENCH_THREADS``).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from benchmark.numerics import OPT_OUT, PINNED

_CHILD = """
import benchmark, json, sys
from pathlib import Path
from benchmark.numerics import environment_tags
from benchmark.registry import Registry
from components.world.corpus import vocabulary_texts
from components.world.generate import generate_world
from components.world.pretrain import pretrain
component = Registry().model(sys.argv[1], {"epochs": float(sys.argv[2])})
source = component.source()
documents = source.documents()
stats = pretrain(documents, vocabulary_texts(generate_world(source.config()), documents),
                 component.training_config(), Path(sys.argv[3]))
print(json.dumps({**stats, "pinned": environment_tags(["float32"], "cpu")["numerics.pinned"]}))
"""


def _pretrain(model: str, epochs: float, pinned: bool, out: Path) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in (*PINNED, OPT_OUT)}
    if not pinned:
        env[OPT_OUT] = "1"
    done = subprocess.run([sys.executable, "-c", _CHILD, model, str(epochs), str(out)], env=env, text=True,
                          capture_output=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(done.stderr[-2000:])
    return json.loads(done.stdout.strip().splitlines()[-1])


def bench_numerics(model: str = "toy-gpt-test", epochs: float = 3.0, repeats: int = 3) -> dict:
    """Best pretraining fit time pinned and native over ``repeats`` interleaved pairs, and their ratio."""
    runs: dict[str, list[dict]] = {"pinned": [], "native": []}
    with tempfile.TemporaryDirectory() as tmp:
        for repeat in range(repeats):
            for name in ("pinned", "native"):
                runs[name].append(_pretrain(model, epochs, name == "pinned", Path(tmp) / f"{name}{repeat}"))
    best = {name: min(r["train_seconds"] for r in found) for name, found in runs.items()}
    return {"model": model, "epochs": epochs, "repeats": repeats, "threads": runs["pinned"][0]["threads"],
            "trained_tokens": runs["pinned"][0]["trained_tokens"],
            "pinned_seconds": best["pinned"], "native_seconds": best["native"],
            "pinned_tokens_per_s": max(r["tokens_per_second"] for r in runs["pinned"]),
            "native_tokens_per_s": max(r["tokens_per_second"] for r in runs["native"]),
            "cost_ratio": best["pinned"] / best["native"],
            "identical_losses_within_mode": len({r["final_loss"] for r in runs["pinned"]}) == 1}
