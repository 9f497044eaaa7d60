"""Commands that look before or after a run and start none: ``ls``, ``validate``, ``report``, ``compare``, ``ui``."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from rich.markup import escape
from rich.text import Text

from benchmark.cli.terminal import VERDICT_COLOURS, console, emit, say, table
from benchmark.errors import BenchmarkError


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


def cmd_report(args) -> None:
    from benchmark.report.build import report_experiments

    document = report_experiments(args.experiment or None, Path(args.out) if args.out else None, log=not args.no_log)

    def human(doc):
        say(f"{len(doc['models'])} model(s): {', '.join(m['label'] for m in doc['models']) or 'none'}")
        say(f"report: {doc['index']}\nsummary: {doc['summary']}")
        if doc["logged_to"]:
            say(f"logged as report/ on parent run(s) {', '.join(doc['logged_to'])}")

    emit(args, document, human)


def cmd_compare(args) -> None:
    from benchmark.report.compare import compare
    from benchmark.results import load_models

    document = compare(load_models(args.experiment or None, details=False))

    emit(args, document, print_comparison)


def print_comparison(doc: dict) -> None:
    """The cross-model tables of ``benchmark.report.compare.compare``'s document."""
    from benchmark.analyse.stats import fmt_interval
    from benchmark.results import format_params

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
    console.print(table("The paper's findings (python -m benchmark report: each with its deciding interval)",
                        ["model", *doc["findings"]],
                        [[r["label"], *[Text(v, style=VERDICT_COLOURS.get(v, "white"))
                                        if (v := r["findings"].get(f)) else "-" for f in doc["findings"]]]
                         for r in rows]))


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
