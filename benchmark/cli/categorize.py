"""``categorize``: SliCK categories only (cached), of a suite or of one question file or knowledge source."""

from __future__ import annotations

from pathlib import Path

from rich.markup import escape

from benchmark.cli.run import refuse_launcher_ranks, shortcut_overrides
from benchmark.cli.terminal import console, emit, progress_bars, table
from benchmark.errors import BenchmarkError


def cmd_categorize(args) -> None:
    from benchmark.categorize import categorize_suite
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
    from benchmark.categorize import categorize_source, resolve_source, source_settings
    from benchmark.registry import Registry

    if args.suite is not None:
        raise BenchmarkError(f"categorize: a suite file ({args.suite}) or --source, not both")
    if args.source is None or args.model is None:
        raise BenchmarkError("categorize: --source FILE_OR_COMPONENT and --model NAME go together")
    keep = _kept_categories(args)
    source = resolve_source(args.source)
    model = Registry().model(args.model, check_paths=True)
    config, device = source_settings(shortcut_overrides(args, model=False), source)
    out = Path(args.out) if args.out else Path("reports") / "categorized" / f"{source.name}.{model.name}"
    with progress_bars(not args.json) as progress:
        document = categorize_source(source, model, config, out=out, keep=keep, device=device,
                                     experiment=args.experiment, progress=progress)
    emit(args, document, _print_source_counts)


def _kept_categories(args) -> tuple[str, ...] | None:
    """The categories ``--keep`` names, or all but those ``--drop`` names; None when neither is given."""
    from benchmark.categories import CATEGORIES
    from benchmark.registry import did_you_mean

    if args.keep is None and args.drop is None:
        return None
    named = [c.strip() for c in (args.keep if args.keep is not None else args.drop).split(",") if c.strip()]
    for name in named:
        if name not in CATEGORIES:
            raise BenchmarkError(f"--{'keep' if args.keep is not None else 'drop'} {name}: not a SliCK "
                                 f"category{did_you_mean(name, list(CATEGORIES))}")
    return tuple(c for c in CATEGORIES if (c in named) == (args.keep is not None))


def _print_source_counts(doc: dict) -> None:
    from benchmark.categories import CATEGORIES

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
