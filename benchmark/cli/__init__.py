"""Command line: ``python -m benchmark <command>``.

    python -m benchmark ls                                  # models, knowledge sources and suites
    python -m benchmark validate suites/unknown_sweep.yaml  # schema check; prints the resolved suite
    python -m benchmark run suites/unknown_sweep.yaml       # the whole pipeline, tracked in MLflow
    python -m benchmark categorize suites/unknown_sweep.yaml --json
    python -m benchmark world build --seed 1 --out /tmp/world
    python -m benchmark world pretrain --size test --out /tmp/toy-gpt-test   # the world's model into a folder
    python -m benchmark world probe --json
    python -m benchmark bench slick --questions 500 --json
    python -m benchmark bench train --json
    python -m benchmark bench numerics --json                # what the pinned numerics cost
    python -m benchmark report [--experiment NAME] [--out DIR]   # HTML report, models side by side
    python -m benchmark compare [--experiment NAME] [--json]     # the cross-model table
    python -m benchmark ui                                  # MLflow UI on 127.0.0.1

Humans get rich progress bars and tables on stderr; ``--json`` prints one JSON document on stdout for scripts.
Errors are one line; ``--debug`` shows the traceback.

Where things are: ``parser`` (every subcommand's options, one ``add_<command>`` each); ``terminal`` (the console,
progress bars and lines, tables, ``emit``: the only place that prints); one module per group of commands, each
``cmd_<command>(args)`` with its rendering: ``run`` (``run``, the ``--model``/``--limit`` shortcuts, the launcher
guard), ``categorize``, ``inspect`` (``ls``, ``validate``, ``report``, ``compare``, ``ui``), ``world``, ``bench``,
``data``, ``variant`` (``export``, ``train-step``). This module: ``main``, which turns a ``BenchmarkError`` into
one line and exit code 2, and Ctrl-C or SIGTERM into 130 or 128 + the signal.
"""

from __future__ import annotations

import os

from rich.markup import escape

from benchmark import settings
from benchmark.cli.parser import build_parser
from benchmark.cli.terminal import console, sigterm_as_interrupt
from benchmark.errors import BenchmarkError
from benchmark.runtime import quiet_libraries


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    if args.debug:
        os.environ[settings.DEBUG.name] = "1"  # model loading logs and warns too, in worker processes as well
    else:
        quiet_libraries()
    try:
        with sigterm_as_interrupt(args.command == "run") as received:
            args.func(args)
    except BenchmarkError as exc:
        if args.debug:
            raise
        # The message quotes the user's own text (names, keys, paths): printed as text, never as markup.
        console.print(f"[red]error:[/red] {escape(str(exc))}", markup=True, highlight=False, soft_wrap=True)
        return 2
    except KeyboardInterrupt:
        resume = "; open runs are marked KILLED, run the same command again to resume" if args.command == "run" else ""
        console.print(f"[yellow]interrupted[/yellow]{' (SIGTERM)' if received else ''}{resume}", highlight=False)
        return 128 + received[0] if received else 130
    return 0
