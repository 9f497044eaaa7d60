"""Fine-tuning sets with a controlled share of Unknown examples (DESIGN.md §1.3).

Every builder is a pure function of the categorised train table, the mixture settings and a seed:

- ``|D|`` is fixed across variants: ``size: auto`` = Σ over relations of that relation's smallest SliCK
  category (so every single-category variant can be filled), or a number split over relations in proportion
  to the auto sizes;
- ``unknown_<X>``: X% Unknown and (100-X)% Known, sampled **per relation** so the relation mix is constant;
- ``unknown_<X>_known_only``: the same set with its Unknown examples removed (D_Known; size (1-X)·|D|);
- ``<Category>`` single-category sets and ``natural`` (the natural category distribution), each of size |D|;
- ``idk_unknown_<X>``: the X% set with every Unknown answer replaced by "I don't know".

A request that cannot be filled fails with the relation, the category and the shortfall.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass, field
from typing import Literal

import polars as pl
from pydantic import BaseModel, ConfigDict, Field, field_validator

from benchmark.errors import BenchmarkError
from benchmark.slick import CATEGORIES, KNOWN

Category = Literal["HighlyKnown", "MaybeKnown", "WeaklyKnown", "Unknown"]


class IdkConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    unknown_fraction: float = Field(0.5, ge=0, le=1, description="share of Unknown examples whose answer is relabelled")
    answer: str = Field("I don't know", description="the answer that replaces every Unknown answer")


class MixtureConfig(BaseModel):
    """Which fine-tuning sets to build. Every set has the same size |D| (except the D_Known ablations)."""

    model_config = ConfigDict(extra="forbid")

    size: int | Literal["auto"] = Field("auto", description="|D|: 'auto' = Σ per relation of its smallest category, or a number")
    unknown_fraction: list[float] = Field(default_factory=lambda: [0.0, 0.25, 0.5, 0.75, 1.0],
                                          description="the X% Unknown grid (fractions in [0, 1])")
    known_only: bool = Field(True, description="also build D_Known (the variant minus its Unknown examples) for 0 < X < 1")
    single_category: list[Category] = Field(default_factory=list, description="single-category sets of size |D|")
    natural: bool = Field(False, description="D_Natural: |D| examples with the natural category distribution")
    idk_relabel: IdkConfig | None = Field(None, description="the X% variant with Unknown answers relabelled")
    exclude_relations: list[str] = Field(default_factory=list,
                                         description="train relations left out of every set (e.g. guessable ones)")

    @field_validator("unknown_fraction")
    @classmethod
    def _fractions(cls, values: list[float]) -> list[float]:
        for v in values:
            if not 0 <= v <= 1:
                raise ValueError(f"fractions must lie in [0, 1], got {v}")
        if len(set(values)) != len(values):
            raise ValueError("fractions must be distinct")
        return values


@dataclass
class Mixture:
    """One fine-tuning set: its rows (qid, relation, question, answer, category, ...) and how it was made."""

    name: str
    kind: str  # unknown_fraction | known_only | single_category | natural | idk_relabel
    rows: pl.DataFrame
    params: dict = field(default_factory=dict)

    def composition(self) -> pl.DataFrame:
        return self.rows.group_by("relation", "category").len().sort("relation", "category")


def fraction_name(x: float) -> str:
    return f"{round(x * 100):d}"


def _rng_seed(seed: int, *parts: str) -> int:
    return zlib.crc32("/".join((str(seed), *parts)).encode())


def _sample(pool: pl.DataFrame, n: int, seed: int, *parts: str) -> pl.DataFrame:
    if n == 0:
        return pool.head(0)
    return pool.sort("qid").sample(n=n, seed=_rng_seed(seed, *parts), shuffle=True)


def relation_sizes(train: pl.DataFrame, size: int | Literal["auto"]) -> dict[str, int]:
    """Examples per relation: the smallest category per relation ('auto'), or ``size`` split in that proportion."""
    counts = {
        (r["relation"], r["category"]): r["len"] for r in train.group_by("relation", "category").len().iter_rows(named=True)
    }
    relations = sorted(train["relation"].unique().to_list())
    auto = {rel: min(counts.get((rel, c), 0) for c in CATEGORIES) for rel in relations}
    if size == "auto":
        if sum(auto.values()) == 0:
            raise BenchmarkError("mixtures.size: 'auto' gives |D| = 0: some category is empty in every relation "
                                 f"(counts: {dict(sorted(counts.items()))}); set mixtures.size to a number")
        return auto
    weights = auto if sum(auto.values()) else {rel: train.filter(pl.col("relation") == rel).height for rel in relations}
    total = sum(weights.values())
    exact = {rel: size * w / total for rel, w in weights.items()}
    sizes = {rel: int(v) for rel, v in exact.items()}
    # Largest remainder keeps Σ sizes == size exactly.
    for rel in sorted(exact, key=lambda r: (sizes[r] - exact[r], r))[: size - sum(sizes.values())]:
        sizes[rel] += 1
    return sizes


def _take(train: pl.DataFrame, relation: str, categories: tuple[str, ...], n: int, seed: int, tag: str) -> pl.DataFrame:
    pool = train.filter((pl.col("relation") == relation) & pl.col("category").is_in(categories))
    if pool.height < n:
        label = "/".join(categories) if len(categories) < 4 else "any category"
        raise BenchmarkError(f"mixture '{tag}' cannot be filled: relation {relation} has {pool.height} {label} "
                             f"train examples, {n} needed (lower mixtures.size)")
    return _sample(pool, n, seed, tag, relation)


def unknown_fraction_set(train: pl.DataFrame, sizes: dict[str, int], x: float, seed: int) -> pl.DataFrame:
    """X% Unknown per relation (rounded per relation), the rest drawn from the relation's Known examples."""
    tag = f"unknown_{fraction_name(x)}"
    parts = []
    for rel, n in sorted(sizes.items()):
        n_unknown = round(x * n)
        parts.append(_take(train, rel, ("Unknown",), n_unknown, seed, f"{tag}/unknown"))
        parts.append(_take(train, rel, KNOWN, n - n_unknown, seed, f"{tag}/known"))
    return pl.concat(parts)


def build_mixtures(train: pl.DataFrame, config: MixtureConfig, seed: int) -> list[Mixture]:
    """Every set the mixture settings ask for, from the categorised train split (needs column ``category``)."""
    train = train.filter(~pl.col("relation").is_in(config.exclude_relations))
    if train.is_empty():
        raise BenchmarkError("mixtures: no train examples left (is every relation in mixtures.exclude_relations?)")
    sizes = relation_sizes(train, config.size)
    mixtures: list[Mixture] = []
    for x in config.unknown_fraction:
        rows = unknown_fraction_set(train, sizes, x, seed)
        name = f"unknown_{fraction_name(x)}"
        mixtures.append(Mixture(name, "unknown_fraction", rows, {"unknown_fraction": x}))
        if config.known_only and 0 < x < 1:
            known = rows.filter(pl.col("category") != "Unknown")
            mixtures.append(Mixture(f"{name}_known_only", "known_only", known, {"unknown_fraction": x, "known_only": True}))
    for category in config.single_category:
        rows = pl.concat([_take(train, rel, (category,), n, seed, category) for rel, n in sorted(sizes.items())])
        mixtures.append(Mixture(category, "single_category", rows, {"category": category}))
    if config.natural:
        rows = pl.concat([_take(train, rel, CATEGORIES, n, seed, "natural") for rel, n in sorted(sizes.items())])
        mixtures.append(Mixture("natural", "natural", rows, {"natural": True}))
    if config.idk_relabel is not None:
        x = config.idk_relabel.unknown_fraction
        rows = unknown_fraction_set(train, sizes, x, seed).with_columns(
            pl.when(pl.col("category") == "Unknown").then(pl.lit(config.idk_relabel.answer))
            .otherwise(pl.col("answer")).alias("answer")
        )
        mixtures.append(Mixture(f"idk_unknown_{fraction_name(x)}", "idk_relabel", rows,
                                {"unknown_fraction": x, "idk_answer": config.idk_relabel.answer}))
    return mixtures
