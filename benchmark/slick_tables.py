"""What a SliCK categorisation reports (``benchmark.slick`` computes it): category counts per split, how the
categories track a source's ground-truth exposures (``summary``, ``confusion_table``), and per relation the counts
beside the most-common-answer baseline (``relation_table``, ``majority_baseline``).

These read the cached table and never change it, so they are not part of SliCK's cache key.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import polars as pl

from benchmark.categories import CATEGORIES

if TYPE_CHECKING:
    from benchmark.slick import CategorizeResult

EXPOSURE_BUCKETS = ((0, 0, "0"), (1, 2, "1-2"), (3, 4, "3-4"), (5, 8, "5-8"), (9, 16, "9-16"), (17, None, "17+"))


def exposure_bucket(exposure: pl.Expr) -> pl.Expr:
    expr = pl.when(exposure.is_null()).then(pl.lit(None, dtype=pl.String))
    for low, high, label in EXPOSURE_BUCKETS:
        cond = exposure >= low if high is None else exposure.is_between(low, high)
        expr = expr.when(cond).then(pl.lit(label))
    return expr.otherwise(pl.lit(None, dtype=pl.String))


def with_exposure(table: pl.DataFrame, source) -> pl.DataFrame | None:
    """The table joined with the source's ground-truth exposures (None when the source has none)."""
    exposures = source.exposures()
    if exposures is None:
        return None
    exposures = exposures.select("relation", "question", pl.col("exposure").cast(pl.Int64)).unique(["relation", "question"])
    return table.join(exposures, on=["relation", "question"], how="left")


def category_counts(table: pl.DataFrame) -> dict[str, int]:
    """Questions per category, every category present (0 where none)."""
    return dict.fromkeys(CATEGORIES, 0) | dict(table.group_by("category").len().iter_rows())


def counts_by_split(table: pl.DataFrame) -> dict[str, dict[str, int]]:
    """``{split: {category: n}}`` for every categorised split (train, dev, test order; test includes OOD)."""
    present = set(table["split"].unique().to_list())
    return {split: category_counts(table.filter(pl.col("split") == split))
            for split in ("train", "dev", "test") if split in present}


def summary(result: CategorizeResult, source) -> dict:
    """Category counts (``counts``: the train split; ``counts_by_split``: every categorised split; ``counts_ood``:
    the OOD test questions alone), cost, the back-end, and (when the source knows exposures) how SliCK tracks them.

    The exposure block is computed on the train split of relations *not* listed by
    ``source.guessable_relations()``: where the answer space is small, lucky samples make never-seen facts look
    WeaklyKnown (measured in the prototype), so those relations are reported apart (``confusion_table(..., guessable=True)``).
    """
    train = result.table.filter(pl.col("split") == "train")
    ood = result.table.filter(pl.col("ood"))
    out = {"counts": category_counts(train), "counts_by_split": counts_by_split(result.table),
           "counts_ood": category_counts(ood) if ood.height else {}, "seconds": result.seconds,
           "cache_hit": result.cache_hit, "generations": result.generations, "backend": result.backend_info}
    joined = with_exposure(train, source)
    if joined is not None:
        joined = joined.filter(~pl.col("relation").is_in(source.guessable_relations()) & pl.col("exposure").is_not_null())
        medians = dict(joined.group_by("category").agg(pl.col("exposure").median()).iter_rows())
        zero = joined.filter(pl.col("exposure") == 0)
        share = float((zero["category"] == "Unknown").mean()) if zero.height else None
        out["exposure"] = {"median": {c: medians.get(c) for c in CATEGORIES}, "zero_exposure_unknown_share": share}
    return out


def confusion_table(result: CategorizeResult, source, *, split: str = "train", guessable: bool = False) -> pl.DataFrame:
    """Category x exposure bucket counts (rows: categories; columns: 0, 1-2, 3-4, 5-8, 9-16, 17+).

    ``guessable=False`` covers the relations with a large answer space, ``True`` the guessable ones. Empty when the
    source has no exposures.
    """
    labels = [label for _, _, label in EXPOSURE_BUCKETS]
    joined = with_exposure(result.table.filter(pl.col("split") == split), source)
    if joined is None:
        return pl.DataFrame(schema={"category": pl.String, **dict.fromkeys(labels, pl.Int64)})
    chosen = pl.col("relation").is_in(source.guessable_relations())
    joined = joined.filter(chosen if guessable else ~chosen).with_columns(bucket=exposure_bucket(pl.col("exposure")))
    counts = {(c, b): n for c, b, n in joined.group_by("category", "bucket").len().iter_rows()}
    return pl.DataFrame([{"category": c, **{b: counts.get((c, b), 0) for b in labels}} for c in CATEGORIES],
                        schema={"category": pl.String, **dict.fromkeys(labels, pl.Int64)})


def relation_table(result: CategorizeResult) -> pl.DataFrame:
    """Per relation and split: category counts, and the most-common-answer baseline (measured in the prototype): the accuracy
    of always answering the relation's most frequent (normalised) train answer, which belongs beside every
    category table (all categorised splits stand in where a relation has no train questions, e.g. OOD)."""
    from benchmark.analyse.baselines import majority_accuracy, with_most_common

    per = (with_most_common(result.table)
           .group_by("relation", "split")
           .agg(ood=pl.col("ood").any(), questions=pl.len(), **{c: (pl.col("category") == c).sum() for c in CATEGORIES},
                most_common_answer=pl.col("most_common").first(),
                most_common_answer_accuracy=majority_accuracy()))
    return per.sort("relation", "split")


def majority_baseline(result: CategorizeResult) -> dict[str, float]:
    """The most-common-answer baseline as metrics (``relation_table``): ``baseline/majority/<part>/<relation>``
    and ``baseline/majority/<part>/all`` (pooled over questions), for the test questions the accuracy tables
    report: ``test`` (in-distribution) and ``ood``."""
    per = relation_table(result).filter(pl.col("split") == "test")
    metrics: dict[str, float] = {}
    for part, rows in (("test", per.filter(~pl.col("ood"))), ("ood", per.filter(pl.col("ood")))):
        if rows.is_empty():
            continue
        for relation, accuracy in rows.select("relation", "most_common_answer_accuracy").iter_rows():
            metrics[f"baseline/majority/{part}/{relation}"] = float(accuracy)
        hits = (rows["most_common_answer_accuracy"] * rows["questions"]).sum()
        metrics[f"baseline/majority/{part}/all"] = float(hits / rows["questions"].sum())
    return metrics
