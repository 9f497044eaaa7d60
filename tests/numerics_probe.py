"""Run by tests/test_numerics.py in a fresh process, so that the environment it is given applies to torch: pretrain
the test world's model for one epoch, fine-tune it on 48 of its questions for two epochs, and print the sha256 of
both sets of weights with what the process saw of its numerics, as one JSON line.

    SLICK_BENCH_CACHE=/tmp/c python tests/numerics_probe.py THREADS
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

import benchmark  # noqa: F401  (first, as every entry point: pins the numerics before torch is imported)


def weights_digest(model) -> str:
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().contiguous().numpy().tobytes())
    return digest.hexdigest()


def main(threads: int) -> None:
    import polars as pl
    import torch

    from benchmark.numerics import environment_tags, set_threads
    from benchmark.registry import Registry
    from benchmark.train import fine_tune
    from benchmark.train.config import TrainConfig

    set_threads(threads)
    component = Registry().model("toy-gpt-test", {"epochs": 1})
    loaded = component.load()  # pretrains into $SLICK_BENCH_CACHE
    pretrained = weights_digest(loaded.model)
    questions = component.source().questions().sort("qid")
    categories = ["HighlyKnown", "MaybeKnown", "WeaklyKnown", "Unknown"]
    train = questions.filter(pl.col("split") == "train").head(48)
    train = train.with_columns(pl.Series("category", [categories[i % 4] for i in range(train.height)]))
    dev = questions.filter(pl.col("split") == "dev").head(8)
    test = questions.filter(pl.col("split") == "test").head(8)
    test = test.with_columns(pl.Series("category", [categories[i % 4] for i in range(test.height)]))
    config = TrainConfig(epochs=2, lr=3e-4, batch_size=8, dropout=float(sys.argv[3]) if len(sys.argv) > 3 else 0.1, eval_batch_size=8)
    result = fine_tune(loaded, train, dev, test, config, Path(sys.argv[2]), in_place=True)
    print(json.dumps({"pretrained": pretrained, "fine_tuned": weights_digest(loaded.model),
                      "history": result.history.drop([c for c in result.history.columns if c.startswith("time/")])
                      .to_dicts(), "threads": torch.get_num_threads(),
                      "numerics": environment_tags(["float32"], "cpu")}))


if __name__ == "__main__":
    main(int(sys.argv[1]))
