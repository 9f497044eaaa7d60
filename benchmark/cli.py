"""Command line: ``python -m benchmark <command>``.

    python -m benchmark ls                                  # models, knowledge sources and suites
    python -m benchmark validate suites/unknown_sweep.yaml  # schema check; prints the resolved suite
    python -m benchmark run suites/unknown_sweep.yaml       # the whole pipeline, tracked in MLflow
    python -m benchmark categorize suites/unknown_sweep.yaml --json
    python -m benchmark world build --seed 1 --out /tmp/world
    python -m benchmark world probe --json
    python -m benchmark bench slick --questions 500 --json
    python -m benchmark bench train --json
    python -m benchmark bench numerics --json                # what the pinned numerics cost
    python -m benchmark report [--experiment NAME] [--out DIR]   # HTML report, models side by side
    python -m benchmark compare [--experiment NAME] [--json]     # the cross-model table
    python -m benchmark ui                                  # MLflow UI on 127.0.0.1

Humans get rich progress bars and tables on stderr; ``--json`` prints one JSON document on stdout for scripts.
Errors are one line; ``--debug`` shows the traceback.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import threading
import time
from contextlib import contextmanager
from pathlib import Path

from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table
from rich.text import Text

from benchmark.errors import BenchmarkError
from benchmark.runtime import quiet_libraries

# Off a terminal (a log file, CI) rich would cut tables at 80 columns ("unknow…", "FINISH…"); a log is read
# whole, so it gets room for every column. COLUMNS, where set, still decides.
console = Console(stderr=True, width=None if sys.stderr.isatty() or "COLUMNS" in os.environ else 160)


@contextmanager
def progress_bars(enabled: bool = True, every: float = 30.0):
    """Yields ``update(description, completed, total)``: one bar per description, created on first use. Off a
    terminal (a log file, a scheduler's output) bars are not drawn until they end, so each description gets a line
    instead, at most every ``every`` seconds and at its end, with the time left at its pace so far."""
    if not enabled:
        yield lambda *args, **kwargs: None
        return
    if not console.is_terminal:
        yield progress_lines(say, every)
        return
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
               TimeRemainingColumn())
    with Progress(*columns, console=console, transient=False) as progress:
        tasks: dict[str, int] = {}

        def update(description: str, completed: int, total: int) -> None:
            if description not in tasks:  # descriptions name relations and models: text, not markup
                tasks[description] = progress.add_task(escape(description), total=total)
            progress.update(tasks[description], completed=completed, total=total)

        yield update


def progress_lines(write, every: float = 30.0, clock=time.monotonic):
    """``update(description, completed, total)`` that writes ``<description>: 5/9 (0:00:40 so far, about 0:00:32
    to go)``: on its first call, then at most every ``every`` seconds, and when it completes."""
    first: dict[str, tuple[float, int]] = {}
    last: dict[str, float] = {}

    def update(description: str, completed: int, total: int) -> None:
        now = clock()
        start, start_done = first.setdefault(description, (now, completed))
        if description in last and now - last[description] < every and completed < total:
            return
        last[description] = now
        elapsed, done = now - start, completed - start_done
        left = (f", about {_clock(elapsed / done * (total - completed))} to go" if done > 0 and completed < total
                else "")
        write(f"{description}: {completed}/{total} ({_clock(elapsed)} so far{left})")

    return update


def _clock(seconds: float) -> str:
    seconds = int(round(seconds))
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


@contextmanager
def sigterm_as_interrupt(enabled: bool = True):
    """SIGTERM (``kill``, a scheduler ending the job) takes Ctrl-C's path: the open MLflow runs are marked KILLED,
    checkpoints stay, and running the same command again resumes. Yields the list the signal number lands in."""
    received: list[int] = []
    if not enabled or threading.current_thread() is not threading.main_thread():
        yield received
        return

    def interrupt(signum, frame):
        received.append(signum)
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield received
    finally:
        signal.signal(signal.SIGTERM, previous)


def emit(args, document: dict, human) -> None:
    """One JSON document on stdout with --json; otherwise the human rendering on stderr."""
    if getattr(args, "json", False):
        print(json.dumps(document, indent=2, default=str))
    else:
        human(document)


def table(title: str, columns: list[str], rows: list[list]) -> Table:
    """A rich table of plain text: names, keys, paths and values are escaped, never read as markup (a ``[/x]`` in
    a name would raise, a ``[red]`` recolour); a cell that is a ``rich.text.Text`` keeps its style."""
    out = Table(title=escape(title))
    for column in columns:
        out.add_column(escape(str(column)))
    for row in rows:
        out.add_row(*[v if isinstance(v, Text) else escape(f"{v:.3f}" if isinstance(v, float) else str(v))
                      for v in row])
    return out


def say(text: str) -> None:
    """A line of plain text (a pipeline's progress messages carry suite, variant and file names) on stderr."""
    console.print(escape(text), highlight=False, soft_wrap=True)


# -- commands ---------------------------------------------------------------------------------------------------
def cmd_ls(args) -> None:
    from benchmark.registry import Registry, read_yaml, suite_files

    if args.fields:
        from benchmark.fields import family_schemas

        def fields(doc):
            for schema, rows in doc["fields"].items():
                title = "Suite keys" if schema == "suite" else f"Keys of family {schema.partition('/')[2]} ({schema})"
                console.print(table(title, ["key", "type", "default", "description"],
                                    [[r["key"], r["type"], r["default"], r["description"]] for r in rows]))

        return emit(args, {"fields": family_schemas()}, fields)
    registry = Registry()
    document = {
        "models": {e.name: e.description for e in registry.entries("models")},
        "knowledge_sources": {e.name: e.description for e in registry.entries("datasets")},
        "suites": {},
        "unavailable": {},  # component -> why it cannot run here (its weights or data are not on this machine)
    }
    for kind in ("models", "datasets"):
        for entry in registry.entries(kind):
            try:  # the file and its local paths, as a run would check them; nothing is loaded
                registry._resolve(kind, entry.name, check_paths=True)
            except BenchmarkError as exc:
                document["unavailable"][entry.name] = str(exc).splitlines()[0].rpartition(": ")[2]
    for path in suite_files():
        name = str(path.relative_to(Path.cwd()) if path.is_relative_to(Path.cwd()) else path)
        try:
            lines = str(read_yaml(path).get("description", "")).strip().splitlines()
            document["suites"][name] = lines[0] if lines else ""
        except BenchmarkError as exc:
            document["suites"][name] = f"(unreadable: {exc})"

    def human(doc):
        for key, title in (("models", "Base models"), ("knowledge_sources", "Knowledge sources"), ("suites", "Suites")):
            console.print(table(title, ["name", "description"],
                                [[k, v + (f" [not usable here: {doc['unavailable'][k]}]" if k in doc["unavailable"]
                                          and key != "suites" else "")] for k, v in doc[key].items()]))

    emit(args, document, human)


def cmd_validate(args) -> None:
    from benchmark.suite import check_components, load_suite

    suite = load_suite(args.suite, args.set)
    # Components are resolved too, and their local folders checked: a suite that validates can start.
    for each in suite.per_model():
        check_components(each, args.suite, check_paths=True, origin_key="models" if suite.models else "model")
    document = {"suite": args.suite, "valid": True, "key": suite.key(), "resolved": suite.model_dump(mode="json")}

    def human(doc):
        import yaml

        console.print(yaml.safe_dump(doc["resolved"], sort_keys=False), markup=False, highlight=False)
        console.print(f"[green]valid[/green] {escape(str(doc['suite']))} (key {doc['key']})")

    emit(args, document, human)


def cmd_world(args) -> None:
    if args.world_command == "build":
        from components.world.source import build_world_files

        out = Path(args.out) if args.out else None
        document = build_world_files(seed=args.seed, out=out, size=args.size)
        emit(args, document, lambda doc: console.print_json(json.dumps(doc, default=str)))
    else:
        from components.world.probe import probe

        document = probe(model_name=args.model)

        def human(doc):
            rows = [[f"{b['min_exposure']}-{b['max_exposure']}", b["n"], b["accuracy"]] for b in doc["buckets"]]
            console.print(table(f"4-shot greedy accuracy by exposure ({args.model})", ["exposure", "n", "accuracy"], rows))

        emit(args, document, human)


def refuse_launcher_ranks(command: str) -> None:
    """A suite runs once, as one driver: started by torchrun, srun or mpirun as one of several ranks, every rank
    would categorise and log the whole suite again. Only a launcher's own world size counts (``benchmark.launch``):
    a one-task sbatch job, or a batch script that starts ``benchmark run`` once, is one driver; the training ranks
    the benchmark starts run ``train-step``, never ``run``."""
    from benchmark.launch import launcher_world_size, started_by_the_benchmark

    ranks = launcher_world_size()
    if ranks > 1 and not started_by_the_benchmark():
        raise BenchmarkError(
            f"`benchmark {command}` was started as one of {ranks} ranks (torchrun, srun or mpirun); start it once "
            "(in a SLURM job: `python -m benchmark run ...` in the batch script, not under srun): it starts each "
            "variant's training ranks itself (train.devices: N per node, train.num_nodes: M under SLURM) and "
            "spreads variants over machines with --executor ray")


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


def cmd_categorize(args) -> None:
    from benchmark.pipeline import categorize_suite
    from benchmark.suite import load_suite

    refuse_launcher_ranks("categorize")
    if args.source is not None or (args.model is not None and args.suite is None):
        return _categorize_source(args)
    if args.suite is None:
        raise BenchmarkError("categorize: name a suite file, or --source FILE_OR_COMPONENT and --model NAME")
    for flag in ("keep", "drop", "out"):
        if getattr(args, flag) is not None:
            raise BenchmarkError(f"--{flag} goes with --source FILE_OR_COMPONENT --model NAME, not with a suite")
    suite = load_suite(args.suite, shortcut_overrides(args))
    with progress_bars(not args.json) as progress:
        document, confusion = categorize_suite(suite, progress=progress)

    def human(doc):
        splits = doc["counts_by_split"] | ({"OOD (in test)": doc["counts_ood"]} if doc.get("counts_ood") else {})
        console.print(table("SliCK categories per split", ["category", *splits],
                            [[c, *(counts.get(c, 0) for counts in splits.values())] for c in doc["counts"]]))
        if confusion is not None:
            console.print(table("SliCK category x pretraining exposure (train, non-guessable relations)",
                                confusion.columns, [list(r) for r in confusion.iter_rows()]))
        console.print(f"{doc['generations']} generations, {doc['seconds']:.1f} s, cache hit: {doc['cache_hit']}")

    emit(args, document, human)


def _categorize_source(args) -> None:
    """``categorize --source FILE_OR_COMPONENT --model NAME``: SliCK on one question file or knowledge source."""
    from benchmark.categories import CATEGORIES
    from benchmark.pipeline import categorize_source, resolve_source, source_settings
    from benchmark.registry import Registry, did_you_mean

    if args.suite is not None:
        raise BenchmarkError(f"categorize: a suite file ({args.suite}) or --source, not both")
    if args.source is None or args.model is None:
        raise BenchmarkError("categorize: --source FILE_OR_COMPONENT and --model NAME go together")
    keep = None
    if args.keep is not None or args.drop is not None:
        named = [c.strip() for c in (args.keep if args.keep is not None else args.drop).split(",") if c.strip()]
        for name in named:
            if name not in CATEGORIES:
                raise BenchmarkError(f"--{'keep' if args.keep is not None else 'drop'} {name}: not a SliCK "
                                     f"category{did_you_mean(name, list(CATEGORIES))}")
        keep = tuple(c for c in CATEGORIES if (c in named) == (args.keep is not None))
    source = resolve_source(args.source)
    model = Registry().model(args.model, check_paths=True)
    config, device = source_settings(shortcut_overrides(args, model=False), source)
    out = Path(args.out) if args.out else Path("reports") / "categorized" / f"{source.name}.{model.name}"
    with progress_bars(not args.json) as progress:
        document = categorize_source(source, model, config, out=out, keep=keep, device=device,
                                     experiment=args.experiment, progress=progress)

    def human(doc):
        rows = [[relation, *(counts[c] for c in CATEGORIES), sum(counts.values())]
                for relation, counts in doc["counts_by_relation"].items()]
        if len(rows) > 1:  # one relation's row is already the total
            rows.append(["all relations", *(doc["counts"][c] for c in CATEGORIES), doc["questions"]])
        console.print(table(f"SliCK categories of {doc['source']} with {doc['model']}", ["relation", *CATEGORIES,
                                                                                         "total"], rows))
        for reason, count in doc["not_categorised"].items():
            if count:
                console.print(f"not categorised: {count} row(s) ({reason.replace('_', ' ')})", highlight=False)
        if "keep" in doc:
            console.print(escape(f"kept {doc['kept']} of {doc['questions']} ({', '.join(doc['keep'])}), dropped "
                                 f"{doc['dropped']} ({doc['dropped_share']:.1%}): {doc['filtered']}"),
                          highlight=False, soft_wrap=True)
        console.print(escape(f"every example with its P_Correct values and category: {' and '.join(doc['files'])}"),
                      highlight=False, soft_wrap=True)
        console.print(f"{doc['generations']} generations, {doc['seconds']:.1f} s, cache hit: {doc['cache_hit']}; "
                      f"MLflow run {doc['run_id']} in experiment '{escape(doc['experiment'])}'", highlight=False)

    emit(args, document, human)


def _whole(value):
    """A count logged as a float (MLflow metrics are floats) shown as the whole number it is: "3", not "3.000"."""
    return int(value) if isinstance(value, float) and value.is_integer() else value


def shortcut_overrides(args, model: bool = True) -> list[str]:
    """``--model`` (unless ``model`` is False: ``categorize --source`` takes it as the model itself) and
    ``--limit`` as the suite keys they stand for, after (so over) the ``--set`` ones."""
    extra = []
    if model and getattr(args, "model", None):
        extra += [f"model={json.dumps(args.model)}", "models=[]"]  # quoted: YAML reads it as the string it is
    if getattr(args, "limit", None):
        extra.append(f"slick.limit={args.limit}")
    return [*args.set, *extra]


def cmd_run(args) -> None:
    from benchmark.pipeline import run_suite
    from benchmark.suite import load_suite

    refuse_launcher_ranks("run")
    suite = load_suite(args.suite, shortcut_overrides(args))
    log = (lambda msg: None) if args.json else say
    documents, failures = [], []
    with progress_bars(not args.json) as progress:
        for each in suite.per_model():  # a model ladder (suite key `models`) runs once per model, one experiment
            try:
                documents.append(run_suite(each, suite_file=Path(args.suite), fresh=args.fresh, only=args.only,
                                           progress=progress, log=log, executor=args.executor, workers=args.workers))
            except BenchmarkError as exc:
                if not suite.models:
                    raise
                failures.append(f"{each.model}: {exc}")
                if not args.json:
                    console.print(f"[red]{escape(each.model)} failed:[/red] {escape(str(exc))}", highlight=False)
    built = None if args.no_report or not documents else _report_after_run(suite.experiment, documents, log)

    def interval(row: dict, metric: str) -> str:
        from benchmark.stats import fmt_interval

        value = row.get(metric)
        if value is None:
            return "-"
        return fmt_interval(value, row.get(f"{metric}/ci_low", float("nan")), row.get(f"{metric}/ci_high", float("nan")), 3)

    def human(doc):
        rows = [[v["name"], v["status"], "yes" if v["reused"] else "no",
                 "-" if v.get("realized_unknown_fraction") is None else f"{v['realized_unknown_fraction']:.3f}",
                 _whole(v.get("epochs")), v.get("final_train_fit"), v.get("early_stop_test_acc"),
                 v.get("convergence_test_acc")]
                for v in doc["variants"]]
        model = f": {doc['model']}" if doc.get("model") else ""
        console.print(table(f"{doc['experiment']}{model} (parent run {doc['parent_run_id']}, {doc['seconds']:.0f} s)",
                            ["variant", "status", "reused", "% Unknown (realised)", "epochs", "final train fit",
                             "EARLY_STOP test acc", "CONVERGENCE test acc"], rows))
        baseline = doc.get("majority_baseline") or {}
        if baseline:  # the accuracy of always giving each relation's most common answer, beside every accuracy
            parts = [f"{part} {baseline[f'baseline/majority/{part}/all']:.3f}" for part in ("test", "ood")
                     if f"baseline/majority/{part}/all" in baseline]
            console.print(f"majority-answer baseline: {', '.join(parts)} (per relation: slick/relations.json on "
                          "the parent run)", highlight=False)
        if doc.get("mixtures"):
            seeds = max(m["seeds"] for m in doc["mixtures"])
            title = ("One seed, so no interval across seeds (in-distribution test)" if seeds == 1 else
                     f"Mean over {seeds} seeds, 95% interval across seeds (in-distribution test)")
            console.print(table(title,
                                ["mixture", "% Unknown (realised)", "EARLY_STOP", "CONVERGENCE"],
                                [[m["mixture"], f"{m['realised_unknown_fraction']:.3f}",
                                  interval(m, "early_stop/test/acc/all"), interval(m, "convergence/test/acc/all")]
                                 for m in doc["mixtures"]]))
        if doc.get("linear"):
            from benchmark.stats import fmt_interval

            console.print(table("Linear model: acc = b0 + b_kn*N_kn/|D| + b_unk*N_unk/|D| (95% CR2 cluster-robust)",
                                ["split", "beta0", "beta_kn", "beta_unk", "R2"],
                                [[k, *(fmt_interval(v[b], v[f"{b}_ci_low"], v[f"{b}_ci_high"], 3)
                                       for b in ("beta0", "beta_kn", "beta_unk")), v["r2"]]
                                 for k, v in doc["linear"].items()]))
        if doc.get("findings"):
            from rich.markup import escape

            from benchmark.stats import fmt_bounds

            colours = {"holds": "green", "not shown": "yellow", "contradicted": "red"}
            for finding in doc["findings"]:
                colour = colours[finding["verdict"]]
                # Evidence is data, not markup: an interval's brackets would otherwise vanish as rich tags.
                console.print(f"[{colour}]{finding['verdict']:>12}[/{colour}]  {escape(finding['statement'])} "
                              f"{escape(finding['evidence'])}", highlight=False)
                for row in finding.get("rows") or []:  # a per-fraction verdict: one line per fraction
                    bounds = fmt_bounds(row["ci_low"], row["ci_high"], 3) or "(no interval)"
                    holm = f", Holm p {row['p_holm']:.3g}" if row.get("p_holm") is not None else ""
                    console.print(f"{'':14}{row['label']:>6}  {row['estimate']:+.3f} {bounds} "
                                  f"({row['confidence']:.1%}{holm}): {row['verdict']}", highlight=False)
            if doc.get("seeds") == 1:
                console.print("[yellow]note:[/yellow] one seed: these verdicts check that the analysis runs; they are "
                              "not evidence either way (the paper's design, suites/unknown_sweep.yaml, runs 3 seeds "
                              "of every variant)", highlight=False)

    def human_all(doc):
        for one in doc.get("runs", [doc]):
            human(one)
        if len(doc.get("runs", [])) > 1:  # a ladder: its models side by side, as `compare` shows them
            from benchmark.compare import compare
            from benchmark.results import load_models

            print_comparison(compare(load_models([doc["experiment"]], details=False)))
        if doc.get("report"):
            say(f"report: {doc['report']['index']}  (also logged on the parent run(s) as report/index.html)")

    document = documents[0] if len(documents) == 1 and not suite.models else {"experiment": suite.experiment,
                                                                              "runs": documents}
    document["report"] = built
    emit(args, document, human_all)
    if failures:
        raise BenchmarkError(f"{len(failures)} model(s) of the ladder failed: " + "; ".join(failures))


def _report_after_run(experiment: str, documents: list[dict], log) -> dict | None:
    """The experiment's report (every model in it side by side), logged on the parent runs just made. A report
    that cannot be built is a warning: the run itself succeeded."""
    from benchmark.report_html import report_experiments

    try:
        return report_experiments([experiment], log_to=[d["parent_run_id"] for d in documents])
    except Exception as exc:  # noqa: BLE001 - the run's results are safe in MLflow; `report` can rebuild it
        log(f"warning: report not built ({type(exc).__name__}: {exc}); "
            f"retry with: python -m benchmark report --experiment {experiment}")
        return None


def cmd_report(args) -> None:
    from benchmark.report_html import report_experiments

    document = report_experiments(args.experiment or None, Path(args.out) if args.out else None, log=not args.no_log)

    def human(doc):
        say(f"{len(doc['models'])} model(s): {', '.join(m['label'] for m in doc['models']) or 'none'}")
        say(f"report: {doc['index']}\nsummary: {doc['summary']}")
        if doc["logged_to"]:
            say(f"logged as report/ on parent run(s) {', '.join(doc['logged_to'])}")

    emit(args, document, human)


def cmd_compare(args) -> None:
    from benchmark.compare import compare
    from benchmark.results import load_models

    document = compare(load_models(args.experiment or None, details=False))

    emit(args, document, print_comparison)


def print_comparison(doc: dict) -> None:
    """The cross-model tables of ``benchmark.compare.compare``'s document."""
    from benchmark.results import format_params
    from benchmark.stats import fmt_interval

    def number(value, digits: int = 3) -> str:
        return "-" if value is None else f"{value:.{digits}f}"

    rows = doc["models"]
    if not rows:
        console.print("no finished suite runs in the store")
        return
    if doc.get("warning"):
        console.print(f"[yellow]warning:[/yellow] {escape(doc['warning'])}", highlight=False)
    short = {"all": "all", "HighlyKnown": "HK", "MaybeKnown": "MK", "WeaklyKnown": "WK", "Unknown": "Unk",
             "Known": "Known"}
    groups = doc["categories"]
    mixtures = sorted({r["reference_mixture"] or "-" for r in rows})
    console.print(table(f"Test accuracy on {', '.join(mixtures)}, mean over seeds (ES = EARLY_STOP, CONV = "
                        "CONVERGENCE; HK/MK/WK/Unk = the test questions' SliCK category)",
                        ["model", "epochs", "seeds", "settings key", *[f"ES {short[g]}" for g in groups],
                         *[f"CONV {short[g]}" for g in groups]],
                        [[r["label"], r["settings"]["epochs"] or "-", r["settings"]["seeds"] or "-",
                          (r["settings"]["key"] or "-")[:6],
                          *[number(r["accuracy"]["early_stop"][g]) for g in groups],
                          *[number(r["accuracy"]["convergence"][g]) for g in groups]] for r in rows]))
    categories = list(rows[0]["fit_epochs_50pct"])

    def fit(cell):
        if cell["mean"] is None:
            return "never" if cell["never"] else "-"
        return number(cell["mean"], 1) + (f" ({cell['never']} never)" if cell["never"] else "")

    console.print(table("Fitting speed: epochs until 50% of a category's train examples are fitted (mean over "
                        "variants)", ["model", *[short[c] for c in categories]],
                        [[r["label"], *[fit(r["fit_epochs_50pct"][c]) for c in categories]] for r in rows]))

    def beta(cell):
        if cell.get("value") is None:
            return "-"
        return fmt_interval(cell["value"], cell["ci_low"], cell["ci_high"], 3)

    console.print(table("Linear model acc = b0 + b_kn*N_kn/|D| + b_unk*N_unk/|D| (95% CR2 cluster-robust; paper: "
                        "0.369, 0.073, -0.083, R2 0.86)", ["model", "params", "beta0", "beta_kn", "beta_unk", "R2"],
                        [[r["label"], format_params(r["parameters"]),
                          *[beta(r["linear"].get(b, {})) for b in ("beta0", "beta_kn", "beta_unk")],
                          number(r["linear"].get("r2"), 2)] for r in rows]))
    colours = {"holds": "green", "not shown": "yellow", "contradicted": "red"}
    console.print(table("The paper's findings (python -m benchmark report: each with its deciding interval)",
                        ["model", *doc["findings"]],
                        [[r["label"], *[Text(v, style=colours.get(v, "white")) if (v := r["findings"].get(f)) else "-"
                                        for f in doc["findings"]]] for r in rows]))


def cmd_bench(args) -> None:
    if args.bench_command == "slick":
        from benchmark.perf.slick import bench_slick

        document = bench_slick(questions=args.questions, model=args.model, dataset=args.dataset, exact=args.exact,
                               threads=args.threads, reference_questions=args.reference_questions,
                               dtype=args.dtype)
    elif args.bench_command == "numerics":
        from benchmark.perf.numerics import bench_numerics

        document = bench_numerics(model=args.model, epochs=args.epochs, repeats=args.repeats)
    else:
        from benchmark.perf.train import bench_train

        document = bench_train(model=args.model)
    emit(args, document, lambda doc: console.print(table(f"bench {args.bench_command}", ["figure", "value"],
                                                         [[k, v] for k, v in doc.items()])))


def cmd_data(args) -> None:
    from rich.markup import escape

    from components.entityquestions import DATASET_SHA256, DATASET_URL, fetch_release, release_stats

    if args.data_command == "stats":
        document = release_stats(args.path)

        def human(doc):
            for section in ("train", "dev", "test", "ood_test", "ood_dev"):
                if section not in doc:  # ood_dev: only where the folder has the OOD relations' dev files
                    continue
                counts = doc[section]["relations"]
                columns = ["relation", "raw", "after_multi_answer", *(["after_overlap"] if section == "train" else []),
                           "template_mismatch", "empty_answer", "final"]
                rows = [[r, *(c[k] for k in columns[1:])] for r, c in counts.items()]
                rows.append(["total", *(sum(c[k] for c in counts.values()) for k in columns[1:])])
                console.print(table(f"ENTITYQUESTIONS {section} ({doc['path']})", columns, rows))
            for mismatch in doc["template_mismatches"]:
                console.print(f"[yellow]warning:[/yellow] {escape(mismatch['file'])}: does not match its template "
                              f"(subject unknown), dropped: {escape(repr(mismatch['question']))}", soft_wrap=True)
            if doc["full_release"]:
                verdict = "[green]match[/green]" if doc["matches_paper"] else "[red]do NOT match[/red]"
                console.print(f"totals {verdict} the paper's {doc['paper_totals']}")
            else:
                console.print(escape(doc["full_release_note"]))
    else:
        document = fetch_release(args.dest, url=args.url or DATASET_URL, expected_sha256=args.sha256 or DATASET_SHA256,
                                 force=args.force)

        def human(doc):
            console.print(escape(doc["note"]), highlight=False, soft_wrap=True)
            console.print(f"path: {escape(doc['path'])}    [dim]# for a component file in components/datasets/[/dim]",
                          highlight=False, soft_wrap=True)

    emit(args, document, human)


def cmd_ui(args) -> None:
    from benchmark.tracking import ui_command, ui_links

    command = ui_command(port=args.port)
    console.print(f"MLflow UI on http://127.0.0.1:{args.port} (Ctrl-C to stop)")
    for name, url in ui_links(port=args.port):  # straight to the runs compared in charts, "Model training" mode
        say(f"  {name}: {url}")
    sys.stdout.flush()
    sys.stderr.flush()
    # Become the server (exec, not a child), so a SIGTERM or a closed terminal reaches it and nothing is orphaned.
    os.execv(sys.executable, [sys.executable, "-m", "mlflow", *command[1:]])


# -- parser -----------------------------------------------------------------------------------------------------
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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m benchmark", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def suite_command(name: str, help: str):
        p = sub.add_parser(name, help=help)
        p.add_argument("suite", help="suite YAML file")
        p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a suite key, e.g. train.lr=3e-5")
        p.add_argument("--json", action="store_true", help="print one JSON document on stdout")
        return p

    run = suite_command("run", "run a suite: categorise, build mixtures, fine-tune and evaluate each variant, analyse")
    run.add_argument("--fresh", action="store_true", help="rerun every stage and variant, reusing nothing")
    run.add_argument("--only", action="append", metavar="VARIANT", help="run only these variants (repeatable)")
    run.add_argument("--executor", choices=["local", "ray"], help="where variants run (default: the suite's "
                     "executor.kind); results are the same on every executor")
    run.add_argument("--workers", type=int, metavar="N", help="local executor: variants trained at once, one "
                     "thread each (default: the suite's executor.workers)")
    run.add_argument("--no-report", action="store_true", help="do not build the report at the end")
    run.add_argument("--model", metavar="NAME", help="the base model instead of the suite's: a component name, or "
                     "hf:<hub id or local folder> without a component file (family hf, float32, no remote code)")
    run.add_argument("--limit", type=int, metavar="N", help="at most N questions of each relation in each split "
                     "(slick.limit): a quick, smaller run of a real source; recorded in the suite key")
    run.set_defaults(func=cmd_run)
    validate = suite_command("validate", "check a suite against the schema (no model loaded) and print it resolved")
    validate.set_defaults(func=cmd_validate)
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

    ls = sub.add_parser("ls", help="list base models, knowledge sources and suites (--fields: every key a suite "
                        "and each component family takes)")
    ls.add_argument("--fields", action="store_true", help="every key of a suite and of each component family, with "
                    "its type, default and meaning, instead")
    ls.add_argument("--json", action="store_true")
    ls.set_defaults(func=cmd_ls)

    world = sub.add_parser("world", help="the embedded knowledge-controlled world")
    world_sub = world.add_subparsers(dest="world_command", required=True, metavar="WORLD_COMMAND")
    build = world_sub.add_parser("build", help="write the world: question files, corpus, exposures")
    build.add_argument("--seed", type=int, default=0)
    build.add_argument("--out", help="folder to write (default: the cache)")
    build.add_argument("--size", default="default", choices=["default", "test"])
    build.add_argument("--json", action="store_true")
    probe = world_sub.add_parser("probe", help="pretrain (or reuse) the world's model; 4-shot accuracy by exposure")
    probe.add_argument("--model", default="toy-gpt", help="a world model component (default toy-gpt)")
    probe.add_argument("--json", action="store_true")
    world.set_defaults(func=cmd_world)

    bench = sub.add_parser("bench", help="speed of the engine against its reference, in one process")
    bench_sub = bench.add_subparsers(dest="bench_command", required=True, metavar="BENCH")
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
    train = bench_sub.add_parser("train", help="Lightning training vs a plain PyTorch loop; eval vs train time")
    train.add_argument("--model", default="toy-gpt")
    train.add_argument("--json", action="store_true")
    numerics = bench_sub.add_parser("numerics", help="world-model pretraining, pinned numerics vs the CPU's own paths")
    numerics.add_argument("--model", default="toy-gpt-test", help="a world model (family world)")
    numerics.add_argument("--epochs", type=float, default=3.0, help="pretraining epochs per run")
    numerics.add_argument("--repeats", type=int, default=3, help="interleaved pinned/native pairs; the best counts")
    numerics.add_argument("--json", action="store_true")
    bench.set_defaults(func=cmd_bench)

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

    report_ = sub.add_parser("report", help="HTML report and Markdown summary of finished runs, models side by side, "
                             "from the MLflow store alone")
    report_.add_argument("--experiment", action="append", metavar="NAME", help="experiment (repeatable; default: "
                         "every experiment with suite runs)")
    report_.add_argument("--out", metavar="DIR", help="output folder (default reports/<experiments>)")
    report_.add_argument("--no-log", action="store_true", help="do not attach the report to the parent runs")
    report_.add_argument("--json", action="store_true")
    report_.set_defaults(func=cmd_report)
    compare_ = sub.add_parser("compare", help="models side by side: accuracy per category, fitting speed, betas, "
                              "verdicts (latest finished run per model)")
    compare_.add_argument("--experiment", action="append", metavar="NAME", help="experiment (repeatable; default: all)")
    compare_.add_argument("--json", action="store_true")
    compare_.set_defaults(func=cmd_compare)

    export_ = sub.add_parser("export", help="a variant's EARLY_STOP or CONVERGENCE model as a save_pretrained (or "
                             "LoRA adapter) folder")
    export_.add_argument("run", help="the variant's run directory, or its key (the MLflow tag slick.content_key)")
    export_.add_argument("--checkpoint", choices=["early_stop", "convergence"], default="early_stop")
    export_.add_argument("--out", required=True, help="folder to write")
    export_.add_argument("--json", action="store_true")
    export_.set_defaults(func=cmd_export)
    step = sub.add_parser("train-step", help="one training rank of a variant (started by `run` itself, or by srun "
                          "inside a SLURM allocation; not for direct use)")
    step.add_argument("run_dir", help="the variant's run directory (its job/ folder says what to train)")
    step.set_defaults(func=cmd_train_step)

    ui = sub.add_parser("ui", help="MLflow UI for the local store, bound to 127.0.0.1")
    ui.add_argument("--port", type=int, default=5000)
    ui.set_defaults(func=cmd_ui)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    if args.debug:
        os.environ["SLICK_BENCH_DEBUG"] = "1"  # model loading logs and warns too, in worker processes as well
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
