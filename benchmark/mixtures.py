"""Fine-tuning sets with an exact, reported share of Unknown examples (docs/method.md §3).

Every builder is a pure function of the categorised train table, the mixture settings and a seed; the seed picks
*which* examples, never *how many*: two seeds give different rows with the same composition.

**|D| and the relation mix.** ``|D|`` is the same for every set (except the D_Known ablations), and so are the
per-relation sizes n_r (Σ n_r = |D|) of the X% Unknown, single-category and IDK sets:

- ``size: auto``: n_r = the size of relation r's smallest SliCK category (docs/method.md §3). These are the largest
  sizes every set can draw from the relation itself, so with ``auto`` no set ever needs a move between relations
  and the relation mix is identical in every set and at every X.
- ``size: <number>``: split over relations by largest remainder in proportion to each relation's number of
  (non-excluded) train examples, so D's relation mix matches the pool's. (Weighting by the smallest category, as
  ``auto`` does implicitly, would give a relation with one empty category a weight of 0 and drop it; on a model
  that knows little, e.g. SmolLM2 with 69% Unknown, that is most relations.) A relation may then lack some of its
  share of a category; ``relation_balance`` says what happens (below).

**Exact X.** ``unknown_<X>`` holds exactly n_unknown = floor(X·|D| + ½) Unknown examples (half up, on the decimal X
was written as, so 0.29·100 is 29) and |D| − n_unknown Known ones. The Unknown count of relation r is X·n_r
rounded by largest remainder (ties by relation name) so the counts add up to n_unknown exactly; its Known count is
n_r minus that, split over HighlyKnown, MaybeKnown and WeaklyKnown by largest remainder of their counts in the
relation (the relation's own Known mix, made exact, so seeds change the rows and never the composition).

**A relation short of a category** (``relation_balance``):

- ``strict``: the build fails, naming the mixture, the relation, the category, what is available and what is
  needed. Under ``size: auto`` a relation with an empty category (n_r = 0, so it would be in no set) fails too.
- ``fill`` (default): the shortfall is taken from relations with spare examples of that category, by largest
  remainder in proportion to their spare (short relations in name order), and each move is a line of
  ``Mixture.notes``: ``P19: 0 Unknown available, 3 needed; 3 taken from P17 (2), P26 (1)``. Under ``size: auto`` a
  relation with an empty category keeps n_r = 0 (giving it a made-up share would push every other relation below
  its smallest category and force moves into every single-category set); it contributes to no set except
  D_Natural, and every set's notes say so. If a category is short overall, the build fails with the relations,
  the category and the shortfall.

In every set, a relation of the pool that ends up with no examples gets a note; none is ever dropped silently.

**The sets.**

- ``unknown_<X>``: as above; ``unknown_<X>_known_only``: the same rows minus the Unknown ones (D_Known; with
  ``known_only_steps: matched``, the default, the pipeline trains it for as many optimizer steps per epoch as its D);
- ``<Category>``: n_r examples of that category from each relation;
- ``natural`` (D_Natural): |D| allocated over every (relation, category) cell of the train pool by largest
  remainder in proportion to the cell counts, so each cell holds |D|·share within one example; its relation mix is
  the pool's, not n_r;
- ``idk_unknown_<X>``: the very rows of the X% set, every Unknown answer replaced by "I don't know".

``Mixture.params`` carries what was realised (``n_known``, ``n_unknown``, ``realized_unknown_fraction``, ``n_moved``)
next to the nominal ``unknown_fraction``; ``Mixture.relation_composition()`` is the relation × category table.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Hashable, Mapping
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Literal, TypeVar

import polars as pl
from pydantic import BaseModel, ConfigDict, Field, field_validator

from benchmark.categories import CATEGORIES, KNOWN
from benchmark.errors import BenchmarkError

Category = Literal["HighlyKnown", "MaybeKnown", "WeaklyKnown", "Unknown"]
RelationBalance = Literal["strict", "fill"]
K = TypeVar("K", bound=Hashable)


class IdkConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    unknown_fraction: float = Field(0.5, ge=0, le=1, description="share of Unknown examples whose answer is relabelled")
    answer: str = Field("I don't know", description="the answer that replaces every Unknown answer")


class MixtureConfig(BaseModel):
    """Which fine-tuning sets to build. Every set has the same size |D| (except the D_Known ablations)."""

    model_config = ConfigDict(extra="forbid")

    size: int | Literal["auto"] = Field(
        "auto", description="|D|: 'auto' = Σ per relation of its smallest category, or a number (split over relations "
        "in proportion to their train examples)")
    unknown_fraction: list[float] = Field(default_factory=lambda: [0.0, 0.25, 0.5, 0.75, 1.0],
                                          description="the X% Unknown grid (fractions in [0, 1]); each set holds "
                                          "exactly floor(X·|D| + 1/2) Unknown examples")
    known_only: bool = Field(True, description="also build D_Known (the variant minus its Unknown examples) for 0 < X < 1")
    known_only_steps: Literal["matched", "paper"] = Field(
        "matched", description="how long D_Known trains. matched (default): each epoch draws |D| examples from its "
        "(1-X)·|D| (every example at least once per epoch, all equally often over the run), so it takes the same "
        "optimizer steps and learning-rate schedule as its D: at equal epochs a smaller set takes fewer steps, and a "
        "model forgets with steps, so an unmatched D - D_Known gap mixes the Unknown examples' effect with the "
        "step count. paper: one pass over its own examples per epoch, as the paper trained it (fewer steps)")
    single_category: list[Category] = Field(default_factory=list, description="single-category sets of size |D|")
    natural: bool = Field(False, description="D_Natural: |D| examples with the train split's (relation, category) shares")
    idk_relabel: IdkConfig | None = Field(None, description="the X% variant with Unknown answers relabelled")
    exclude_relations: list[str] = Field(default_factory=list,
                                         description="train relations left out of every set (e.g. guessable ones)")
    relation_balance: RelationBalance = Field(
        "fill", description="when a relation has fewer examples of a category than its share of a set: 'strict' "
        "fails naming the set, relation, category, available and needed (and, with size auto, any relation whose "
        "smallest category is empty); 'fill' takes the shortfall from relations with spare examples of that "
        "category and records every move in the set's notes")

    @field_validator("size")
    @classmethod
    def _size(cls, value: int | str) -> int | str:
        if isinstance(value, int) and value < 1:
            raise ValueError(f"size must be 'auto' or a positive number, got {value}")
        return value

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
    """One fine-tuning set: its rows (qid, relation, question, answer, category, ...) and how it was made.

    ``params``: scalars for the run's parameters (the nominal ``unknown_fraction`` where there is one, and what was
    realised: ``n_known``, ``n_unknown``, ``realized_unknown_fraction``, ``n_moved``). ``notes``: one line per
    departure from the plan (examples taken from another relation, a relation with no examples in the set).
    ``relations``: every relation of the pool the set was drawn from, present in it or not.
    """

    name: str
    kind: str  # unknown_fraction | known_only | single_category | natural | idk_relabel
    rows: pl.DataFrame
    params: dict = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    relations: list[str] = field(default_factory=list)

    def composition(self) -> pl.DataFrame:
        """Long form: one row per (relation, category) present, with its count ``len``."""
        return self.rows.group_by("relation", "category").len().sort("relation", "category")

    def relation_composition(self) -> pl.DataFrame:
        """Wide form: one row per relation of the pool (absent ones as zeros), a count per category, and ``total``."""
        counts = {(r, c): n for r, c, n in self.composition().iter_rows()}
        relations = sorted(set(self.relations) | {r for r, _ in counts})
        table = [{"relation": r, **{c: counts.get((r, c), 0) for c in CATEGORIES},
                  "total": sum(counts.get((r, c), 0) for c in CATEGORIES)} for r in relations]
        schema = {"relation": pl.String, **dict.fromkeys(CATEGORIES, pl.Int64), "total": pl.Int64}
        return pl.DataFrame(table, schema=schema)


def fraction_name(x: float) -> str:
    return f"{round(x * 100):d}"


def _exact(x: float) -> Fraction:
    """x as the decimal it was written as (0.29 → 29/100), not its binary approximation."""
    return Fraction(repr(float(x)))


def round_half_up(x: float, n: int) -> int:
    """floor(x·n + 1/2), exactly: 0.29·100 → 29, 0.5·7 → 4, 0.25·10 → 3 (Python's round gives 2)."""
    return math.floor(_exact(x) * n + Fraction(1, 2))


def _apportion(quotas: Mapping[K, Fraction], total: int) -> dict[K, int]:
    """Integers near ``quotas`` adding up to ``total``: floors, then +1 by largest remainder (ties by key)."""
    out = {k: math.floor(q) for k, q in quotas.items()}
    extra = total - sum(out.values())
    order = sorted(quotas, key=lambda k: (out[k] - quotas[k], k))  # largest remainder first, then by key
    if not 0 <= extra <= len(order):
        raise ValueError(f"cannot apportion {total} over quotas {dict(quotas)}")
    for k in order[:extra]:
        out[k] += 1
    return out


def largest_remainder(total: int, weights: Mapping[K, int]) -> dict[K, int]:
    """``total`` split in proportion to ``weights`` (Σ == total; each part within one of its exact share)."""
    weight = sum(weights.values())
    if weight == 0:
        if total:
            raise ValueError(f"cannot split {total} over zero weights")
        return dict.fromkeys(weights, 0)
    return _apportion({k: Fraction(total * w, weight) for k, w in weights.items()}, total)


def _rng_seed(seed: int, *parts: str) -> int:
    return zlib.crc32("/".join((str(seed), *parts)).encode())


def _sample(pool: pl.DataFrame, n: int, seed: int, *parts: str) -> pl.DataFrame:
    if n == 0:
        return pool.head(0)
    return pool.sort("qid").sample(n=n, seed=_rng_seed(seed, *parts), shuffle=True)


def _cells(train: pl.DataFrame) -> dict[tuple[str, str], int]:
    return {(r, c): n for r, c, n in train.group_by("relation", "category").len().iter_rows()}


def _count(cells: Mapping[tuple[str, str], int], relation: str, categories: tuple[str, ...]) -> int:
    return sum(cells.get((relation, c), 0) for c in categories)


def relation_sizes(train: pl.DataFrame, size: int | Literal["auto"]) -> dict[str, int]:
    """n_r per relation: its smallest category ('auto'), or ``size`` split in proportion to its train examples."""
    cells = _cells(train)
    relations = sorted(train["relation"].unique().to_list())
    if size == "auto":
        auto = {rel: min(cells.get((rel, c), 0) for c in CATEGORIES) for rel in relations}
        if sum(auto.values()) == 0:
            raise BenchmarkError("mixtures.size: 'auto' gives |D| = 0: some category is empty in every relation "
                                 f"(counts: {dict(sorted(cells.items()))}); set mixtures.size to a number")
        return auto
    return largest_remainder(size, {rel: _count(cells, rel, CATEGORIES) for rel in relations})


def unknown_split(sizes: Mapping[str, int], x: float) -> dict[str, int]:
    """Unknown examples per relation: X·n_r by largest remainder, adding up to floor(X·|D| + 1/2) exactly."""
    return _apportion({rel: _exact(x) * n for rel, n in sizes.items()}, round_half_up(x, sum(sizes.values())))


def _label(categories: tuple[str, ...]) -> str:
    return "Known" if categories == KNOWN else "/".join(categories)


@dataclass
class _Drawn:
    """What one draw gave: rows, notes per category label, examples moved per label."""

    rows: pl.DataFrame
    notes: dict[str, list[str]] = field(default_factory=dict)
    moved: dict[str, int] = field(default_factory=dict)


def _balance(name: str, categories: tuple[str, ...], need: Mapping[str, int], cells: Mapping[tuple[str, str], int],
             relations: list[str], policy: RelationBalance) -> tuple[dict[str, int], list[str], int]:
    """How many examples of ``categories`` to take from each relation so that Σ == Σ need, and the notes."""
    label = _label(categories)
    avail = {rel: _count(cells, rel, categories) for rel in relations}
    short = {rel: n - avail[rel] for rel, n in sorted(need.items()) if n > avail[rel]}
    take = {rel: min(need.get(rel, 0), avail[rel]) for rel in relations}
    if not short:
        return take, [], 0
    lacking = "; ".join(f"relation {rel} has {avail[rel]} {label} train examples, {need[rel]} needed" for rel in short)
    spare = {rel: avail[rel] - take[rel] for rel in relations if avail[rel] > need.get(rel, 0)}
    if sum(short.values()) > sum(spare.values()):
        raise BenchmarkError(f"mixture '{name}' cannot be filled: {lacking}; the other relations have only "
                             f"{sum(spare.values())} spare {label} examples for a shortfall of {sum(short.values())} "
                             "(lower mixtures.size)")
    if policy == "strict":
        raise BenchmarkError(f"mixture '{name}' cannot be filled with relation_balance 'strict': {lacking} (lower "
                             "mixtures.size, exclude the relation, or set mixtures.relation_balance to 'fill')")
    notes = []
    for rel, missing in short.items():
        got = largest_remainder(missing, spare)
        for donor, n in got.items():
            take[donor] += n
            spare[donor] -= n
        spare = {donor: n for donor, n in spare.items() if n > 0}
        sources = ", ".join(f"{donor} ({n})" for donor, n in sorted(got.items()) if n)
        notes.append(f"{rel}: {avail[rel]} {label} available, {need[rel]} needed; {missing} taken from {sources}")
    return take, notes, sum(short.values())


def _draw(train: pl.DataFrame, name: str, tag: str, demands: list[tuple[tuple[str, ...], dict[str, int]]],
          seed: int, policy: RelationBalance) -> _Drawn:
    """Per relation, per demanded category group, the balanced number of examples, sampled deterministically."""
    cells = _cells(train)
    relations = sorted(train["relation"].unique().to_list())
    plans = []
    drawn = _Drawn(train.head(0))
    for categories, need in demands:
        take, notes, moved = _balance(name, categories, need, cells, relations, policy)
        plans.append((categories, take))
        drawn.notes[_label(categories)] = notes
        drawn.moved[_label(categories)] = moved
    parts = []
    for rel in relations:
        for categories, take in plans:
            if not take[rel]:
                continue
            group = "unknown" if categories == ("Unknown",) else "known" if categories == KNOWN else ""
            # A pooled group (Known) is stratified: its categories by largest remainder of their counts in the
            # relation, so only the seed, never the composition, varies.
            split = largest_remainder(take[rel], {c: cells.get((rel, c), 0) for c in categories})
            for category in categories:
                if split[category]:
                    pool = train.filter((pl.col("relation") == rel) & (pl.col("category") == category))
                    parts.append(_sample(pool, split[category], seed, f"{tag}/{group}" if group else tag, rel,
                                         category))
    drawn.rows = pl.concat(parts) if parts else train.head(0)
    return drawn


def _mixture(name: str, kind: str, rows: pl.DataFrame, params: dict, notes: list[str], moved: int,
             relations: list[str], absent_reason: Mapping[str, str], explained: frozenset[str] = frozenset()) -> Mixture:
    """The set with its realised counts in params and a note for every relation of the pool it lacks.

    ``explained``: relations a size note already reports as absent (size 'auto', an empty category)."""
    n_unknown = rows.filter(pl.col("category") == "Unknown").height
    present = set(rows["relation"].to_list())
    notes = list(notes)
    for rel in relations:
        if rel not in present and rel not in explained:
            notes.append(f"{rel}: no examples in this set ({absent_reason.get(rel, 'none drawn')})")
    params = {**params, "n_known": rows.height - n_unknown, "n_unknown": n_unknown,
              "realized_unknown_fraction": n_unknown / rows.height if rows.height else 0.0, "n_moved": moved}
    return Mixture(name, kind, rows, params, notes, relations)


@dataclass
class _SizeNotes:
    """Size-level notes shared by every set but D_Natural, and the relations they report as absent."""

    lines: list[str] = field(default_factory=list)
    absent: frozenset[str] = frozenset()


def _auto_notes(train: pl.DataFrame, sizes: Mapping[str, int], config: MixtureConfig) -> _SizeNotes:
    """Size auto: a relation with an empty category gets n_r = 0. Strict refuses it; fill reports it in every set."""
    if config.size != "auto":
        return _SizeNotes()
    cells = _cells(train)
    empty = {rel: [c for c in CATEGORIES if not cells.get((rel, c))] for rel, n in sorted(sizes.items()) if n == 0}
    if not empty:
        return _SizeNotes()
    if config.relation_balance == "strict":
        lines = "; ".join(f"relation {rel} has 0 {'/'.join(cats)} train examples, at least 1 needed"
                          for rel, cats in empty.items())
        raise BenchmarkError(f"mixtures {', '.join(planned_mixtures(config))} cannot be filled with relation_balance 'strict' "
                             f"and size 'auto': {lines} (each relation's share of |D| is its smallest category, so it "
                             "would be in no set); exclude it (mixtures.exclude_relations), set mixtures.size to a "
                             "number, or set mixtures.relation_balance to 'fill'")
    lines = [f"{rel}: 0 {'/'.join(cats)} available, so size 'auto' gives it 0 examples (|D| counts each relation's "
             "smallest category): it is in no set except natural; set mixtures.size to a number to include it"
             for rel, cats in empty.items()]
    return _SizeNotes(lines, frozenset(empty))


def planned_mixtures(config: MixtureConfig) -> list[str]:
    """The names of the mixtures ``config`` asks for, in the order they are built."""
    names = []
    for x in config.unknown_fraction:
        names.append(f"unknown_{fraction_name(x)}")
        if config.known_only and 0 < x < 1:
            names.append(f"unknown_{fraction_name(x)}_known_only")
    names += list(config.single_category) + (["natural"] if config.natural else [])
    if config.idk_relabel is not None:
        names.append(f"idk_unknown_{fraction_name(config.idk_relabel.unknown_fraction)}")
    return names


def _share_reasons(sizes: Mapping[str, int], what: str) -> dict[str, str]:
    return {rel: (f"its share of |D| = {sum(sizes.values())} is 0" if n == 0
                  else f"its whole share of {n} {what} was taken from other relations") for rel, n in sizes.items()}


def _unknown_draw(train: pl.DataFrame, sizes: Mapping[str, int], x: float, seed: int,
                  relation_balance: RelationBalance) -> _Drawn:
    name = f"unknown_{fraction_name(x)}"
    unknown = unknown_split(sizes, x)
    known = {rel: n - unknown[rel] for rel, n in sizes.items()}
    return _draw(train, name, name, [(("Unknown",), unknown), (KNOWN, known)], seed, relation_balance)


def _unknown_mixture(drawn: _Drawn, sizes: Mapping[str, int], x: float, size_notes: _SizeNotes) -> Mixture:
    return _mixture(f"unknown_{fraction_name(x)}", "unknown_fraction", drawn.rows, {"unknown_fraction": x},
                    [*size_notes.lines, *drawn.notes["Unknown"], *drawn.notes["Known"]], sum(drawn.moved.values()),
                    sorted(sizes), _share_reasons(sizes, "examples"), size_notes.absent)


def _known_only(drawn: _Drawn, sizes: Mapping[str, int], x: float, size_notes: _SizeNotes) -> Mixture:
    """D_Known: the X% set's rows minus its Unknown ones (its Known moves, if any, stay noted)."""
    rows = drawn.rows.filter(pl.col("category") != "Unknown")
    return _mixture(f"unknown_{fraction_name(x)}_known_only", "known_only", rows,
                    {"unknown_fraction": x, "known_only": True}, [*size_notes.lines, *drawn.notes["Known"]],
                    drawn.moved["Known"], sorted(sizes), dict.fromkeys(sizes, "its Known share is 0"), size_notes.absent)


def natural_cells(train: pl.DataFrame, size: int) -> dict[tuple[str, str], int]:
    """D_Natural's count per (relation, category): |D| by largest remainder in proportion to the train pool's cells."""
    cells = _cells(train)
    if size > sum(cells.values()):
        raise BenchmarkError(f"mixture 'natural' cannot be filled: |D| = {size} but the train pool holds only "
                             f"{sum(cells.values())} examples (lower mixtures.size)")
    return largest_remainder(size, cells)


def natural_set(train: pl.DataFrame, size: int, seed: int) -> Mixture:
    """D_Natural: every (relation, category) cell of the train pool at its share of ``size``, within one example."""
    alloc = natural_cells(train, size)
    parts = []
    for (rel, category), n in sorted(alloc.items()):
        pool = train.filter((pl.col("relation") == rel) & (pl.col("category") == category))
        parts.append(_sample(pool, n, seed, "natural", rel, category))
    relations = sorted({rel for rel, _ in alloc})
    reasons = dict.fromkeys(relations, f"its share of the train pool rounds to 0 of |D| = {size}")
    return _mixture("natural", "natural", pl.concat(parts), {"natural": True}, [], 0, relations, reasons)


def build_mixtures(train: pl.DataFrame, config: MixtureConfig, seed: int) -> list[Mixture]:
    """Every set the mixture settings ask for, from the categorised train split (needs column ``category``)."""
    train = train.filter(~pl.col("relation").is_in(config.exclude_relations))
    if train.is_empty():
        raise BenchmarkError("mixtures: no train examples left (is every relation in mixtures.exclude_relations?)")
    sizes = relation_sizes(train, config.size)
    size_notes = _auto_notes(train, sizes, config)
    policy = config.relation_balance
    relations = sorted(sizes)
    mixtures: list[Mixture] = []
    for x in config.unknown_fraction:
        drawn = _unknown_draw(train, sizes, x, seed, policy)
        mixtures.append(_unknown_mixture(drawn, sizes, x, size_notes))
        if config.known_only and 0 < x < 1:
            mixtures.append(_known_only(drawn, sizes, x, size_notes))
    for category in config.single_category:
        drawn = _draw(train, category, category, [((category,), dict(sizes))], seed, policy)
        mixtures.append(_mixture(category, "single_category", drawn.rows, {"category": category},
                                 [*size_notes.lines, *drawn.notes[category]], drawn.moved[category], relations,
                                 _share_reasons(sizes, category), size_notes.absent))
    if config.natural:
        mixtures.append(natural_set(train, sum(sizes.values()), seed))
    if config.idk_relabel is not None:
        x = config.idk_relabel.unknown_fraction
        plain = _unknown_mixture(_unknown_draw(train, sizes, x, seed, policy), sizes, x, size_notes)
        rows = plain.rows.with_columns(
            pl.when(pl.col("category") == "Unknown").then(pl.lit(config.idk_relabel.answer))
            .otherwise(pl.col("answer")).alias("answer")
        )
        mixtures.append(Mixture(f"idk_unknown_{fraction_name(x)}", "idk_relabel", rows,
                                {**plain.params, "idk_answer": config.idk_relabel.answer}, plain.notes, relations))
    return mixtures
