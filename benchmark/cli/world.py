"""``world``: the embedded knowledge-controlled world: write its files, pretrain its model into a folder, probe it."""

from __future__ import annotations

import json
from pathlib import Path

from benchmark.cli.terminal import console, emit, table
from benchmark.errors import BenchmarkError


def cmd_world(args) -> None:
    {"build": _build, "pretrain": _pretrain, "probe": _probe}[args.world_command](args)


def _build(args) -> None:
    from components.world.source import build_world_files

    out = Path(args.out) if args.out else None
    document = build_world_files(seed=args.seed, out=out, size=args.size)
    emit(args, document, _print_json)


def _pretrain(args) -> None:
    from components.world.pretrain import pretrain_into

    config = pretrain_config(args.set)
    stats = pretrain_into(Path(args.out), config, size=args.size, seed=args.seed, progress=not args.json)
    emit(args, {"path": str(Path(args.out).resolve()), "size": args.size, "seed": args.seed, **stats}, _print_json)


def pretrain_config(settings: list[str]):
    """``PretrainConfig`` with ``--set KEY=VALUE`` overrides, each key checked (with a did-you-mean) and typed."""
    from pydantic import ValidationError

    from benchmark.registry import did_you_mean, format_validation_error
    from components.world.pretrain import PretrainConfig

    overrides = {}
    for item in settings:
        key, equals, value = item.partition("=")
        if not equals:
            raise BenchmarkError(f"--set {item}: expected KEY=VALUE, e.g. epochs=2")
        overrides[key.strip()] = value.strip()
    keys = list(PretrainConfig.model_fields)
    hints = {k: did_you_mean(k, keys).removeprefix("; ") for k in overrides if k not in keys}
    try:
        return PretrainConfig.model_validate(overrides)
    except ValidationError as exc:
        raise BenchmarkError(format_validation_error("world pretrain --set", exc, hints=hints)) from None


def _probe(args) -> None:
    from components.world.probe import probe

    document = probe(model_name=args.model)

    def human(doc):
        rows = [[f"{b['min_exposure']}-{b['max_exposure']}", b["n"], b["accuracy"]] for b in doc["buckets"]]
        console.print(table(f"4-shot greedy accuracy by exposure ({args.model})", ["exposure", "n", "accuracy"], rows))

    emit(args, document, human)


def _print_json(doc: dict) -> None:
    console.print_json(json.dumps(doc, default=str))
