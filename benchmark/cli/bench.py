"""``bench``: speed of the engine against its reference, in one process (``benchmark.perf``)."""

from __future__ import annotations

from benchmark.cli.terminal import console, emit, table


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

        document = bench_train(model=args.model, threads=args.threads, steps=args.steps, train_size=args.train_size,
                               dev_size=args.dev_size, test_size=args.test_size)
    emit(args, document, lambda doc: console.print(table(f"bench {args.bench_command}", ["figure", "value"],
                                                         [[k, v] for k, v in doc.items()])))
