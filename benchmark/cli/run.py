"""``run``: a suite (or each model of a ladder) through the whole pipeline, then its report and its tables."""

from __future__ import annotations

import json
from pathlib import Path

from rich.markup import escape

from benchmark.cli.terminal import VERDICT_COLOURS, console, emit, progress_bars, say, table
from benchmark.errors import BenchmarkError


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
    from benchmark.suite import load_suite

    refuse_launcher_ranks("run")
    suite = load_suite(args.suite, shortcut_overrides(args))
    log = (lambda msg: None) if args.json else say
    documents, failures = _run_models(args, suite, log)
    built = None if args.no_report or not documents else _report_after_run(suite.experiment, documents, log)
    document = documents[0] if len(documents) == 1 and not suite.models else {"experiment": suite.experiment,
                                                                              "runs": documents}
    document["report"] = built
    emit(args, document, _print_runs)
    if failures:
        raise BenchmarkError(f"{len(failures)} model(s) of the ladder failed: " + "; ".join(failures))


def _run_models(args, suite, log) -> tuple[list[dict], list[str]]:
    """Each model's run document, and a line per model of a ladder that failed (a single model's error is raised)."""
    from benchmark.pipeline import run_suite

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
    return documents, failures


def _report_after_run(experiment: str, documents: list[dict], log) -> dict | None:
    """The experiment's report (every model in it side by side), logged on the parent runs just made. A report
    that cannot be built is a warning: the run itself succeeded."""
    from benchmark.report.build import report_experiments

    try:
        return report_experiments([experiment], log_to=[d["parent_run_id"] for d in documents])
    except Exception as exc:  # noqa: BLE001 - the run's results are safe in MLflow; `report` can rebuild it
        log(f"warning: report not built ({type(exc).__name__}: {exc}); "
            f"retry with: python -m benchmark report --experiment {experiment}")
        return None


# -- what a person sees -----------------------------------------------------------------------------------------
def _print_runs(doc: dict) -> None:
    for one in doc.get("runs", [doc]):
        _print_run(one)
    if len(doc.get("runs", [])) > 1:  # a ladder: its models side by side, as `compare` shows them
        from benchmark.cli.inspect import print_comparison
        from benchmark.report.compare import compare
        from benchmark.results import load_models

        print_comparison(compare(load_models([doc["experiment"]], details=False)))
    if doc.get("report"):
        say(f"report: {doc['report']['index']}  (also logged on the parent run(s) as report/index.html)")


def _print_run(doc: dict) -> None:
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
        _print_mixtures(doc["mixtures"])
    if doc.get("linear"):
        _print_linear(doc["linear"])
    if doc.get("findings"):
        _print_findings(doc["findings"], doc.get("seeds"))


def _whole(value):
    """A count logged as a float (MLflow metrics are floats) shown as the whole number it is: "3", not "3.000"."""
    return int(value) if isinstance(value, float) and value.is_integer() else value


def _print_mixtures(mixtures: list[dict]) -> None:
    from benchmark.analyse.stats import fmt_interval
    from benchmark.record import STOPS, acc_metric

    def interval(row: dict, metric: str) -> str:
        value = row.get(metric)
        if value is None:
            return "-"
        return fmt_interval(value, row.get(f"{metric}/ci_low", float("nan")), row.get(f"{metric}/ci_high", float("nan")), 3)

    seeds = max(m["seeds"] for m in mixtures)
    title = ("One seed, so no interval across seeds (in-distribution test)" if seeds == 1 else
             f"Mean over {seeds} seeds, 95% interval across seeds (in-distribution test)")
    console.print(table(title,
                        ["mixture", "% Unknown (realised)", "EARLY_STOP", "CONVERGENCE"],
                        [[m["mixture"], f"{m['realised_unknown_fraction']:.3f}",
                          *[interval(m, acc_metric("test", stop=stop)) for stop in STOPS]]
                         for m in mixtures]))


def _print_linear(linear: dict) -> None:
    from benchmark.analyse.stats import fmt_interval

    console.print(table("Linear model: acc = b0 + b_kn*N_kn/|D| + b_unk*N_unk/|D| (95% CR2 cluster-robust)",
                        ["split", "beta0", "beta_kn", "beta_unk", "R2"],
                        [[k, *(fmt_interval(v[b], v[f"{b}_ci_low"], v[f"{b}_ci_high"], 3)
                               for b in ("beta0", "beta_kn", "beta_unk")), v["r2"]]
                         for k, v in linear.items()]))


def _print_findings(findings: list[dict], seeds: int | None) -> None:
    from benchmark.analyse.stats import fmt_bounds

    for finding in findings:
        colour = VERDICT_COLOURS[finding["verdict"]]
        # Evidence is data, not markup: an interval's brackets would otherwise vanish as rich tags.
        console.print(f"[{colour}]{finding['verdict']:>12}[/{colour}]  {escape(finding['statement'])} "
                      f"{escape(finding['evidence'])}", highlight=False)
        for row in finding.get("rows") or []:  # a per-fraction verdict: one line per fraction
            bounds = fmt_bounds(row["ci_low"], row["ci_high"], 3) or "(no interval)"
            holm = f", Holm p {row['p_holm']:.3g}" if row.get("p_holm") is not None else ""
            console.print(f"{'':14}{row['label']:>6}  {row['estimate']:+.3f} {bounds} "
                          f"({row['confidence']:.1%}{holm}): {row['verdict']}", highlight=False)
    if seeds == 1:
        console.print("[yellow]note:[/yellow] one seed: these verdicts check that the analysis runs; they are "
                      "not evidence either way (the paper's design, suites/unknown_sweep.yaml, runs 3 seeds "
                      "of every variant)", highlight=False)
