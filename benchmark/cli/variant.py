"""A variant's run directory: ``export`` its weights; ``train-step``, one of its training ranks."""

from __future__ import annotations

from pathlib import Path

from benchmark.cli.terminal import emit, say


def cmd_train_step(args) -> None:
    from benchmark.launch import run_rank

    run_rank(Path(args.run_dir))


def cmd_export(args) -> None:
    from benchmark.cache import stage_dir
    from benchmark.train import export

    run_dir = Path(args.run)
    if not run_dir.exists() and "/" not in args.run:  # a variant's key (its MLflow tag slick.content_key)
        run_dir = stage_dir("variants", args.run) / "train"
    elif (run_dir / "train").is_dir():
        run_dir = run_dir / "train"
    out = export(run_dir, args.checkpoint, Path(args.out))
    emit(args, {"run_dir": str(run_dir), "checkpoint": args.checkpoint, "out": str(out)},
         lambda doc: say(f"{doc['checkpoint']} weights of {doc['run_dir']} exported to {doc['out']}"))
