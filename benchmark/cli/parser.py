"""The argument parser: one ``add_<command>`` per subcommand, each setting the function that runs it."""

from __future__ import annotations

import argparse

from benchmark.cli.bench import cmd_bench
from benchmark.cli.categorize import cmd_categorize
from benchmark.cli.data import cmd_data
from benchmark.cli.inspect import cmd_compare, cmd_ls, cmd_report, cmd_ui, cmd_validate
from benchmark.cli.run import cmd_run
from benchmark.cli.variant import cmd_export, cmd_train_step
from benchmark.cli.world import cmd_world
from benchmark.executors import EXECUTORS

DESCRIPTION = "Command line: ``python -m benchmark <command>``."


class Parser(argparse.ArgumentParser):
    """argparse, with a did-you-mean for a mistyped choice (a subcommand, ``--executor``, ``--size``): its
    subcommands' parsers are of this class too."""

    def _check_value(self, action, value):
        try:
            super()._check_value(action, value)
        except argparse.ArgumentError as exc:
            from benchmark.registry import did_you_mean

            hint = did_you_mean(str(value), [str(c) for c in action.choices])
            if not hint.startswith("; did you mean"):  # argparse lists every choice already
                raise
            raise argparse.ArgumentError(action, exc.message + hint) from None


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="python -m benchmark", description=DESCRIPTION,
                    formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for add in (add_run, add_validate, add_categorize, add_ls, add_world, add_bench, add_data, add_report,
                add_compare, add_export, add_train_step, add_ui):
        add(sub)
    return parser


def _count_or_all(text: str) -> int | None:
    if text == "all":
        return None
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number or 'all', got '{text}'") from None
    if value < 1:
        raise argparse.ArgumentTypeError("expected at least 1")
    return value


def _suite_command(sub, name: str, help: str) -> argparse.ArgumentParser:
    p = sub.add_parser(name, help=help)
    p.add_argument("suite", help="suite YAML file")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a suite key, e.g. train.lr=3e-5")
    p.add_argument("--json", action="store_true", help="print one JSON document on stdout")
    return p


def add_run(sub) -> None:
    run = _suite_command(sub, "run", "run a suite: categorise, build mixtures, fine-tune and evaluate each variant, "
                         "analyse")
    run.add_argument("--fresh", action="store_true", help="rerun every stage and variant, reusing nothing")
    run.add_argument("--only", action="append", metavar="VARIANT", help="run only these variants (repeatable)")
    run.add_argument("--executor", choices=list(EXECUTORS), help="where variants run (default: the suite's "
                     "executor.kind); results are the same on every executor")
    run.add_argument("--workers", type=int, metavar="N", help="local executor: variants trained at once, one "
                     "thread each (default: the suite's executor.workers)")
    run.add_argument("--no-report", action="store_true", help="do not build the report at the end")
    run.add_argument("--model", metavar="NAME", help="the base model instead of the suite's: a component name, or "
                     "hf:<hub id or local folder> without a component file (family hf, float32, no remote code)")
    run.add_argument("--limit", type=int, metavar="N", help="at most N questions of each relation in each split "
                     "(slick.limit): a quick, smaller run of a real source; recorded in the suite key")
    run.set_defaults(func=cmd_run)


def add_validate(sub) -> None:
    validate = _suite_command(sub, "validate", "check a suite against the schema (no model loaded) and print it "
                              "resolved")
    validate.set_defaults(func=cmd_validate)


def add_categorize(sub) -> None:
    categorize = sub.add_parser("categorize", help="run only SliCK categorisation (cached) and print the category "
                                "counts: of a suite, or of a question file or knowledge source (--source, --model)")
    categorize.add_argument("suite", nargs="?", help="suite YAML file (or --source and --model instead)")
    categorize.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a suite key; "
                            "with --source: slick.* keys and device, e.g. slick.k_shot=2")
    categorize.add_argument("--source", metavar="FILE_OR_COMPONENT", help="a question file (JSONL, CSV, Parquet; "
                            "columns question, answers, optional relation and split) or a knowledge source component")
    categorize.add_argument("--model", metavar="NAME", help="the base model: a component name, or hf:<hub id or "
                            "local folder> (family hf, its defaults); with a suite, instead of the suite's")
    categorize.add_argument("--limit", type=int, metavar="N", help="at most N questions of each relation in each "
                            "split (slick.limit)")
    chosen = categorize.add_mutually_exclusive_group()
    chosen.add_argument("--keep", metavar="CATEGORIES", help="also write the examples of these categories as a "
                        "fine-tuning file in the input's format, e.g. HighlyKnown,MaybeKnown,WeaklyKnown")
    chosen.add_argument("--drop", metavar="CATEGORIES", help="the same, keeping every category but these, e.g. Unknown")
    categorize.add_argument("--out", metavar="DIR", help="where the files go (default reports/categorized/<source>.<model>)")
    categorize.add_argument("--experiment", default="categorize", help="MLflow experiment of --source runs "
                            "(default categorize)")
    categorize.add_argument("--json", action="store_true", help="print one JSON document on stdout")
    categorize.set_defaults(func=cmd_categorize)


def add_ls(sub) -> None:
    ls = sub.add_parser("ls", help="list base models, knowledge sources and suites (--fields: every key a suite "
                        "and each component family takes)")
    ls.add_argument("--fields", action="store_true", help="every key of a suite and of each component family, with "
                    "its type, default and meaning, instead")
    ls.add_argument("--json", action="store_true")
    ls.set_defaults(func=cmd_ls)


def add_world(sub) -> None:
    world = sub.add_parser("world", help="the embedded knowledge-controlled world")
    world_sub = world.add_subparsers(dest="world_command", required=True, metavar="WORLD_COMMAND")
    build = world_sub.add_parser("build", help="write the world: question files, corpus, exposures")
    build.add_argument("--seed", type=int, default=0)
    build.add_argument("--out", help="folder to write (default: the cache)")
    build.add_argument("--size", default="default", choices=["default", "test"])
    build.add_argument("--json", action="store_true")
    pretrain = world_sub.add_parser("pretrain", help="pretrain the world's model into a folder, not the cache "
                                    "(save_pretrained: model and tokenizer); prints its training statistics")
    pretrain.add_argument("--seed", type=int, default=0, help="world seed")
    pretrain.add_argument("--out", required=True, help="folder to write")
    pretrain.add_argument("--size", default="default", choices=["default", "test"])
    pretrain.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="a pretraining setting "
                          "(a PretrainConfig field, components/world/pretrain.py), e.g. epochs=2 (repeatable)")
    pretrain.add_argument("--json", action="store_true")
    probe = world_sub.add_parser("probe", help="pretrain (or reuse) the world's model; 4-shot accuracy by exposure")
    probe.add_argument("--model", default="toy-gpt", help="a world model component (default toy-gpt)")
    probe.add_argument("--json", action="store_true")
    world.set_defaults(func=cmd_world)


def add_bench(sub) -> None:
    bench = sub.add_parser("bench", help="speed of the engine against its reference, in one process")
    bench_sub = bench.add_subparsers(dest="bench_command", required=True, metavar="BENCH")
    _add_bench_slick(bench_sub)
    train = bench_sub.add_parser("train", help="Lightning training vs a plain PyTorch loop; eval vs train time")
    train.add_argument("--model", default="toy-gpt")
    train.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    train.add_argument("--steps", type=int, default=40, help="timed training steps, after 5 warm-up steps (default 40)")
    train.add_argument("--train-size", type=int, default=200, help="train examples (default 200, batch 16)")
    train.add_argument("--dev-size", type=int, default=None, help="default: every in-distribution dev question")
    train.add_argument("--test-size", type=int, default=None, help="default: every test question (with OOD)")
    train.add_argument("--json", action="store_true")
    numerics = bench_sub.add_parser("numerics", help="world-model pretraining, pinned numerics vs the CPU's own paths")
    numerics.add_argument("--model", default="toy-gpt-test", help="a world model (family world)")
    numerics.add_argument("--epochs", type=float, default=3.0, help="pretraining epochs per run")
    numerics.add_argument("--repeats", type=int, default=3, help="interleaved pinned/native pairs; the best counts")
    numerics.add_argument("--json", action="store_true")
    bench.set_defaults(func=cmd_bench)


def _add_bench_slick(bench_sub) -> None:
    slick = bench_sub.add_parser("slick", help="SliCK engine vs naive model.generate")
    slick.add_argument("--questions", type=_count_or_all, default=500, metavar="N|all",
                       help="in-distribution train questions to categorise (a seeded random subset; all: every one)")
    slick.add_argument("--model", default="toy-gpt")
    slick.add_argument("--dataset", "--source", dest="dataset", default="world", help="knowledge source component")
    slick.add_argument("--exact", action="store_true", help="also time the exact estimator and compare its "
                       "categories with two sampled runs that differ only in sample noise")
    slick.add_argument("--threads", type=int, default=1, help="torch threads (default 1: CPU-time speed-ups then "
                       "hold on a machine shared with other jobs)")
    slick.add_argument("--dtype", choices=["float32", "bfloat16", "float16"], default=None,
                       help="weights' dtype for engine and reference alike (default: the component's)")
    slick.add_argument("--reference-questions", type=_count_or_all, default=None, metavar="N",
                       help="run the naive reference on N of the questions only and extrapolate its time to all of "
                       "them from its CPU time per question, with a 95%% interval (it costs the same for every "
                       "question; the whole SmolLM2 slice would take about 11 hours)")
    slick.add_argument("--json", action="store_true")


def add_data(sub) -> None:
    data = sub.add_parser("data", help="datasets: download a release; count what each preprocessing step keeps")
    data_sub = data.add_subparsers(dest="data_command", required=True, metavar="DATA_COMMAND")
    data_stats = data_sub.add_parser("stats", help="counts per split and relation after each preprocessing step")
    data_stats.add_argument("dataset", choices=["entityquestions"])
    data_stats.add_argument("--path", required=True, help="release folder (holding dataset/ and relation_query_templates.json)")
    data_stats.add_argument("--json", action="store_true")
    data_fetch = data_sub.add_parser("fetch", help="download and unpack the public release (the only command that downloads data)")
    data_fetch.add_argument("dataset", choices=["entityquestions"])
    data_fetch.add_argument("--dest", help="folder to unpack into (default $SLICK_BENCH_CACHE/data/entityquestions, "
                            "else .cache/data/entityquestions)")
    data_fetch.add_argument("--url", help="where to download the zip from (default: the public release)")
    data_fetch.add_argument("--sha256", help="expected sha256 of the zip (default: the one recorded in the code, if any)")
    data_fetch.add_argument("--force", action="store_true", help="download again even if DEST holds a release")
    data_fetch.add_argument("--json", action="store_true")
    data.set_defaults(func=cmd_data)


def add_report(sub) -> None:
    report_ = _store_reader(sub, "report", "HTML report and Markdown summary of finished runs, models side by "
                            "side, from the MLflow store alone", "every experiment with suite runs", cmd_report)
    report_.add_argument("--out", metavar="DIR", help="output folder (default reports/<experiments>)")
    report_.add_argument("--no-log", action="store_true", help="do not attach the report to the parent runs")


def add_compare(sub) -> None:
    _store_reader(sub, "compare", "models side by side: accuracy per category, fitting speed, betas, verdicts "
                  "(latest finished run per model)", "all", cmd_compare)


def _store_reader(sub, name: str, help: str, experiments: str, func) -> argparse.ArgumentParser:
    """A command that reads finished runs from the MLflow store, by experiment."""
    parser = sub.add_parser(name, help=help)
    parser.add_argument("--experiment", action="append", metavar="NAME",
                        help=f"experiment (repeatable; default: {experiments})")
    parser.add_argument("--json", action="store_true")
    parser.set_defaults(func=func)
    return parser


def add_export(sub) -> None:
    export_ = sub.add_parser("export", help="a variant's EARLY_STOP or CONVERGENCE model as a save_pretrained (or "
                             "LoRA adapter) folder")
    export_.add_argument("run", help="the variant's run directory, or its key (the MLflow tag slick.content_key)")
    export_.add_argument("--checkpoint", choices=["early_stop", "convergence"], default="early_stop")
    export_.add_argument("--out", required=True, help="folder to write")
    export_.add_argument("--json", action="store_true")
    export_.set_defaults(func=cmd_export)


def add_train_step(sub) -> None:
    step = sub.add_parser("train-step", help="one training rank of a variant (started by `run` itself, or by srun "
                          "inside a SLURM allocation; not for direct use)")
    step.add_argument("run_dir", help="the variant's run directory (its job/ folder says what to train)")
    step.set_defaults(func=cmd_train_step)


def add_ui(sub) -> None:
    ui = sub.add_parser("ui", help="MLflow UI for the local store, bound to 127.0.0.1")
    ui.add_argument("--port", type=int, default=5000)
    ui.set_defaults(func=cmd_ui)
