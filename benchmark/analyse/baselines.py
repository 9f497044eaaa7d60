"""The most-common-answer baseline: how far always giving a relation's most frequent answer gets.

One definition for the category tables (``slick.relation_table``) and the report (``report``), so the two can
never drift apart.
"""

from __future__ import annotations

import polars as pl

from benchmark.answers import normalize


def with_most_common(table: pl.DataFrame) -> pl.DataFrame:
    """``table`` with ``gold`` (the normalised answer) and ``most_common``: its relation's most frequent normalised
    train answer. A relation without train questions (an OOD one) takes it from all its categorised splits. Ties
    go to the alphabetically first answer, so the baseline is deterministic."""
    table = table.with_columns(gold=pl.col("answer").map_elements(normalize, return_dtype=pl.String))
    train = table.filter(pl.col("split") == "train")
    pool = pl.concat([train, table.filter(~pl.col("relation").is_in(train["relation"].unique().implode()))])
    common = (pool.group_by("relation", "gold").len().sort(["relation", "len", "gold"], descending=[False, True, False])
              .group_by("relation", maintain_order=True).first().select("relation", most_common=pl.col("gold")))
    return table.join(common, on="relation")


def majority_accuracy() -> pl.Expr:
    """Per group: the accuracy of always answering ``most_common``."""
    return (pl.col("gold") == pl.col("most_common")).mean()
