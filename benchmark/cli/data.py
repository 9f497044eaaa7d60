"""``data``: a dataset's public release: download it, and count what each preprocessing step keeps."""

from __future__ import annotations

from rich.markup import escape

from benchmark.cli.terminal import console, emit, table


def cmd_data(args) -> None:
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
