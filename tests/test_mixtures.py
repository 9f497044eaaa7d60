"""Mixture builders: sizes, exact compositions, per-relation proportions, category purity, determinism, D_Known,
D_Natural shares, the strict and fill relation-balance policies, cannot-fill."""

import math
import re
from decimal import Decimal

import polars as pl
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from benchmark.categories import CATEGORIES, KNOWN
from benchmark.errors import BenchmarkError
from benchmark.mixtures import (
    IdkConfig,
    MixtureConfig,
    build_mixtures,
    largest_remainder,
    relation_sizes,
    round_half_up,
    unknown_split,
)


def categorised(per_relation: dict[str, dict[str, int]]) -> pl.DataFrame:
    rows = []
    for relation, counts in per_relation.items():
        for category, n in counts.items():
            for i in range(n):
                rows.append({"qid": f"train/{relation}/{category}{i}", "relation": relation, "question": f"{category} {i}?",
                             "answer": f"a{i}", "category": category})
    return pl.DataFrame(rows)


TRAIN = categorised({
    "P19": {"HighlyKnown": 30, "MaybeKnown": 12, "WeaklyKnown": 20, "Unknown": 40},
    "P36": {"HighlyKnown": 25, "MaybeKnown": 8, "WeaklyKnown": 15, "Unknown": 30},
    "P69": {"HighlyKnown": 10, "MaybeKnown": 20, "WeaklyKnown": 20, "Unknown": 20},
})
FULL = MixtureConfig(single_category=list(CATEGORIES), natural=True, idk_relabel=IdkConfig(unknown_fraction=0.5))


def by_name(mixtures):
    return {m.name: m for m in mixtures}


def test_auto_size_is_sum_of_smallest_category_per_relation():
    assert relation_sizes(TRAIN, "auto") == {"P19": 12, "P36": 8, "P69": 10}
    sizes = relation_sizes(TRAIN, 15)
    assert sum(sizes.values()) == 15 and sizes["P19"] >= sizes["P36"]


def test_a_fixed_size_follows_the_relations_shares_of_the_pool():
    # 102 : 78 : 70 train examples; 25 · (0.408, 0.312, 0.28) = 10.2, 7.8, 7.0 → 10, 8, 7 by largest remainder.
    assert relation_sizes(TRAIN, 25) == {"P19": 10, "P36": 8, "P69": 7}
    # A relation with an empty category still gets its share of a fixed size (it would get 0 by smallest category).
    assert relation_sizes(EMPTY_MK, 20)["P19"] > 0


def test_every_variant_has_size_d_and_constant_relation_mix():
    mixtures = by_name(build_mixtures(TRAIN, FULL, seed=0))
    expected = {"P19": 12, "P36": 8, "P69": 10}
    for name in ("unknown_0", "unknown_25", "unknown_50", "unknown_75", "unknown_100", *CATEGORIES, "idk_unknown_50"):
        rows = mixtures[name].rows
        assert rows.height == 30, name
        assert dict(rows.group_by("relation").len().iter_rows()) == expected, name
        assert rows["qid"].n_unique() == rows.height, f"{name} repeats an example"
        assert mixtures[name].notes == [] and mixtures[name].params["n_moved"] == 0, name
    assert mixtures["natural"].rows.height == 30  # its relation mix is the pool's (see the D_Natural tests)


def test_unknown_share_is_per_relation():
    rows = by_name(build_mixtures(TRAIN, FULL, seed=0))["unknown_50"].rows
    for relation, n in {"P19": 12, "P36": 8, "P69": 10}.items():
        part = rows.filter(pl.col("relation") == relation)
        assert part.filter(pl.col("category") == "Unknown").height == n // 2


def test_category_purity():
    mixtures = by_name(build_mixtures(TRAIN, FULL, seed=0))
    for category in CATEGORIES:
        assert set(mixtures[category].rows["category"].unique()) == {category}
    assert "Unknown" not in mixtures["unknown_0"].rows["category"].to_list()
    assert set(mixtures["unknown_100"].rows["category"].unique()) == {"Unknown"}


def test_known_only_is_the_variant_minus_its_unknowns():
    mixtures = by_name(build_mixtures(TRAIN, FULL, seed=0))
    for x in ("25", "50", "75"):
        full, known = mixtures[f"unknown_{x}"].rows, mixtures[f"unknown_{x}_known_only"].rows
        assert set(known["qid"]) == set(full.filter(pl.col("category") != "Unknown")["qid"])
        assert known.height == full.height - full.filter(pl.col("category") == "Unknown").height
    assert "unknown_0_known_only" not in mixtures and "unknown_100_known_only" not in mixtures


def test_deterministic_by_seed():
    first = by_name(build_mixtures(TRAIN, FULL, seed=3))
    again = by_name(build_mixtures(TRAIN, FULL, seed=3))
    other = by_name(build_mixtures(TRAIN, FULL, seed=4))
    for name in first:
        assert first[name].rows.equals(again[name].rows), name
    assert not first["unknown_50"].rows.equals(other["unknown_50"].rows)


def test_shuffled_input_gives_same_sets():
    shuffled = TRAIN.sample(fraction=1.0, shuffle=True, seed=9)
    a = by_name(build_mixtures(TRAIN, FULL, seed=1))["natural"].rows.sort("qid")
    b = by_name(build_mixtures(shuffled, FULL, seed=1))["natural"].rows.sort("qid")
    assert a.equals(b)


def test_idk_relabels_only_unknown_answers():
    mixtures = by_name(build_mixtures(TRAIN, FULL, seed=0))
    idk, plain = mixtures["idk_unknown_50"].rows, mixtures["unknown_50"].rows
    assert set(idk.filter(pl.col("category") == "Unknown")["answer"]) == {"I don't know"}
    assert "I don't know" not in idk.filter(pl.col("category") != "Unknown")["answer"].to_list()
    assert set(idk["qid"]) == set(plain["qid"])


def test_cannot_fill_names_relation_and_category():
    # 120 split 102 : 78 : 70 → 49, 37, 34 Unknown needed; 90 Unknown exist in all: no policy can fill it.
    for policy in ("fill", "strict"):
        config = MixtureConfig(size=120, unknown_fraction=[1.0], known_only=False, relation_balance=policy)
        with pytest.raises(BenchmarkError, match=r"'unknown_100'.*relation P19 has 40 Unknown train examples, 49 needed"):
            build_mixtures(TRAIN, config, seed=0)
    with pytest.raises(BenchmarkError, match=r"shortfall of 30"):
        build_mixtures(TRAIN, MixtureConfig(size=120, unknown_fraction=[1.0], known_only=False), seed=0)


def test_auto_size_zero_is_an_error():
    lopsided = categorised({"P19": {"HighlyKnown": 5, "Unknown": 5}})
    with pytest.raises(BenchmarkError, match="mixtures.size"):
        build_mixtures(lopsided, MixtureConfig(), seed=0)


def test_excluded_relations_are_left_out():
    rows = by_name(build_mixtures(TRAIN, MixtureConfig(exclude_relations=["P69"]), seed=0))["unknown_50"].rows
    assert "P69" not in rows["relation"].to_list() and rows.height == 20


# --- exact compositions -------------------------------------------------------------------------------------------

def half_up(x: float, n: int) -> int:
    """The reference: X·|D| on the decimal X was written as, rounded half up."""
    return math.floor(Decimal(str(x)) * n + Decimal("0.5"))


def unknown_count(rows: pl.DataFrame) -> int:
    return rows.filter(pl.col("category") == "Unknown").height


def per_relation(rows: pl.DataFrame) -> dict[str, int]:
    return dict(rows.group_by("relation").len().iter_rows())


BIG = categorised({
    "P17": {"HighlyKnown": 60, "MaybeKnown": 40, "WeaklyKnown": 50, "Unknown": 80},
    "P19": {"HighlyKnown": 30, "MaybeKnown": 35, "WeaklyKnown": 25, "Unknown": 70},
    "P26": {"HighlyKnown": 45, "MaybeKnown": 20, "WeaklyKnown": 30, "Unknown": 55},
    "P36": {"HighlyKnown": 20, "MaybeKnown": 25, "WeaklyKnown": 20, "Unknown": 35},
})
GRID = [0.0, 0.1, 0.25, 0.5, 0.75, 0.9, 1.0]


def test_round_half_up_is_exact_and_not_bankers():
    assert [round_half_up(x, n) for x, n in ((0.25, 10), (0.5, 7), (0.29, 100), (0.15, 10), (0.35, 10), (0.5, 4))] \
        == [3, 4, 29, 2, 4, 2]
    assert round(0.25 * 10) == 2  # what Python's round gives, and the old code used
    assert largest_remainder(7, {"a": 1, "b": 1, "c": 1}) == {"a": 3, "b": 2, "c": 2}  # ties broken by name


@pytest.mark.parametrize("size", [7, 20, 53, 143])
def test_every_fraction_holds_exactly_half_up_unknowns(size):
    mixtures = by_name(build_mixtures(BIG, MixtureConfig(size=size, unknown_fraction=GRID), seed=0))
    relation_mix = None
    for x in GRID:
        mixture = mixtures[f"unknown_{round(x * 100)}"]
        rows, params = mixture.rows, mixture.params
        n_unknown = half_up(x, size)
        assert rows.height == size and unknown_count(rows) == n_unknown, (size, x)
        assert params["n_unknown"] == n_unknown and params["n_known"] == size - n_unknown
        assert params["unknown_fraction"] == x and params["realized_unknown_fraction"] == n_unknown / size
        assert params["n_moved"] == 0 and mixture.notes == []
        assert set(rows.filter(pl.col("category") != "Unknown")["category"]) <= set(KNOWN)
        # the relation mix is the same at every X, and is the n_r the sizes asked for
        mix = per_relation(rows)
        assert mix == {r: n for r, n in relation_sizes(BIG, size).items() if n}
        assert relation_mix in (None, mix)
        relation_mix = mix
        if 0 < x < 1:
            known = mixtures[f"unknown_{round(x * 100)}_known_only"]
            assert known.rows.height == size - n_unknown and unknown_count(known.rows) == 0
            assert known.params["n_unknown"] == 0 and known.params["n_known"] == size - n_unknown
            assert known.params["realized_unknown_fraction"] == 0 and known.params["unknown_fraction"] == x


def test_the_old_per_relation_rounding_drift_is_gone():
    # Six relations of 2 and one of 10 (|D| = 22): round() per relation (halves to even) gave 25% → 2/22 and
    # 75% → 20/22; the exact composition is floor(X·22 + 1/2) = 6 and 17.
    sizes = {f"P{10 + i}": 2 for i in range(6)} | {"P20": 10}
    world = categorised({r: dict.fromkeys(CATEGORIES, n) for r, n in sizes.items()})
    mixtures = by_name(build_mixtures(world, MixtureConfig(), seed=0))
    assert [sum(round(x * n) for n in sizes.values()) for x in (0.25, 0.5, 0.75)] == [2, 11, 20]  # the old drift
    assert [unknown_count(mixtures[f"unknown_{x}"].rows) for x in (25, 50, 75)] == [6, 11, 17]
    # every quota ends in .5 (0.5 and 2.5): the 4 extra examples go to the first relations by name
    assert unknown_split(sizes, 0.25) == {"P10": 1, "P11": 1, "P12": 1, "P13": 1, "P14": 0, "P15": 0, "P20": 2}


@st.composite
def pools(draw):
    relations = draw(st.lists(st.sampled_from(["P17", "P19", "P26", "P36", "P69"]), min_size=1, max_size=4, unique=True))
    counts = {r: {c: draw(st.integers(0, 12)) for c in CATEGORIES} for r in relations}
    for r in relations:  # a relation of the pool has at least one example
        counts[r]["Unknown"] = max(counts[r]["Unknown"], 1 - sum(counts[r][c] for c in KNOWN))
    return counts


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(counts=pools(), x=st.sampled_from(GRID + [0.05, 0.29, 0.33, 0.6, 0.67]), auto=st.booleans(),
       size=st.integers(1, 60), seed=st.integers(0, 3))
def test_fill_gives_the_exact_composition_or_a_clear_error(counts, x, auto, size, seed):
    train = categorised(counts)
    unknown_total = sum(c["Unknown"] for c in counts.values())
    known_total = sum(c[k] for c in counts.values() for k in KNOWN)
    if auto:
        size = sum(min(c.values()) for c in counts.values())
    config = MixtureConfig(size="auto" if auto else size, unknown_fraction=[x], natural=True)
    n_unknown = half_up(x, size)
    if size == 0:
        with pytest.raises(BenchmarkError, match="mixtures.size"):
            build_mixtures(train, config, seed=seed)
        return
    if n_unknown > unknown_total or size - n_unknown > known_total:
        with pytest.raises(BenchmarkError, match=r"cannot be filled: relation \w+ has \d+ (Unknown|Known) train"):
            build_mixtures(train, config, seed=seed)
        return
    mixtures = by_name(build_mixtures(train, config, seed=seed))
    rows = mixtures[f"unknown_{round(x * 100)}"].rows
    assert rows.height == size and unknown_count(rows) == n_unknown
    assert rows["qid"].n_unique() == rows.height
    natural = mixtures["natural"].rows
    assert natural.height == size and natural["qid"].n_unique() == size
    # every relation of the pool is either in the set or named in its notes
    for mixture in mixtures.values():
        for relation in counts:
            assert relation in set(mixture.rows["relation"]) or any(n.startswith(f"{relation}: ")
                                                                     for n in mixture.notes), (mixture.name, relation)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(counts=pools(), x=st.sampled_from(GRID), size=st.integers(1, 40))
def test_strict_either_keeps_every_relation_share_or_names_the_shortfall(counts, x, size):
    train = categorised(counts)
    config = MixtureConfig(size=size, unknown_fraction=[x], known_only=False, relation_balance="strict")
    try:
        rows = build_mixtures(train, config, seed=0)[0].rows
    except BenchmarkError as error:
        assert re.search(r"relation \w+ has \d+ (Unknown|Known) train examples, \d+ needed", str(error))
        return
    sizes = relation_sizes(train, size)
    assert per_relation(rows) == {r: n for r, n in sizes.items() if n}
    unknown = dict(rows.filter(pl.col("category") == "Unknown").group_by("relation").len().iter_rows())
    assert unknown == {r: n for r, n in unknown_split(sizes, x).items() if n}


# --- strict and fill when a relation is short of a category ---------------------------------------------------------

SHORT = categorised({
    "P17": {"HighlyKnown": 10, "MaybeKnown": 10, "WeaklyKnown": 10, "Unknown": 10},
    "P19": {"HighlyKnown": 10, "MaybeKnown": 10, "WeaklyKnown": 10},  # no Unknown at all
    "P26": {"HighlyKnown": 5, "MaybeKnown": 5, "WeaklyKnown": 5, "Unknown": 15},
})
# size 24 over 40 : 30 : 30 → n_r = 10, 7, 7; 50% → 12 Unknown: 5, 4 (tie 3.5/3.5 broken by name), 3.


def test_strict_names_the_mixture_relation_category_available_and_needed():
    config = MixtureConfig(size=24, unknown_fraction=[0.5], relation_balance="strict")
    with pytest.raises(BenchmarkError, match=r"mixture 'unknown_50'.*strict.*relation P19 has 0 Unknown train "
                                             r"examples, 4 needed"):
        build_mixtures(SHORT, config, seed=0)


def test_fill_keeps_the_total_exact_and_says_where_the_examples_came_from():
    config = MixtureConfig(size=24, unknown_fraction=[0.5, 1.0], single_category=["Unknown"])
    mixtures = by_name(build_mixtures(SHORT, config, seed=0))
    half = mixtures["unknown_50"]
    assert half.rows.height == 24 and unknown_count(half.rows) == 12 and half.params["n_moved"] == 4
    # P19's 4 go to the relations with spare Unknown in proportion to it: P17 has 5 spare, P26 has 12
    assert half.notes == ["P19: 0 Unknown available, 4 needed; 4 taken from P17 (1), P26 (3)"]
    table = {r["relation"]: r for r in half.relation_composition().iter_rows(named=True)}
    assert {r: table[r]["Unknown"] for r in table} == {"P17": 6, "P19": 0, "P26": 6}
    assert {r: table[r]["total"] for r in table} == {"P17": 11, "P19": 3, "P26": 10}
    assert mixtures["unknown_50_known_only"].notes == []  # its Known part needed no move
    for name in ("unknown_100", "Unknown"):
        full = mixtures[name]
        assert full.rows.height == 24 and unknown_count(full.rows) == 24
        assert full.notes[0] == "P19: 0 Unknown available, 7 needed; 7 taken from P26 (7)"
        assert any(n.startswith("P19: no examples in this set") for n in full.notes)  # absent, and said so
        assert full.relation_composition().filter(pl.col("relation") == "P19")["total"].item() == 0


EMPTY_MK = categorised({
    "P17": {"HighlyKnown": 6, "MaybeKnown": 4, "WeaklyKnown": 5, "Unknown": 7},
    "P19": {"HighlyKnown": 5, "WeaklyKnown": 5, "Unknown": 8},  # no MaybeKnown: its smallest category is empty
    "P26": {"HighlyKnown": 3, "MaybeKnown": 3, "WeaklyKnown": 4, "Unknown": 5},
})


def test_auto_size_with_an_empty_category_strict_names_the_relation():
    with pytest.raises(BenchmarkError, match=r"unknown_50.*relation P19 has 0 MaybeKnown train examples"):
        build_mixtures(EMPTY_MK, MixtureConfig(relation_balance="strict"), seed=0)


def test_auto_size_with_an_empty_category_fill_reports_the_relation_in_every_set():
    config = MixtureConfig(single_category=list(CATEGORIES), natural=True, idk_relabel=IdkConfig())
    mixtures = build_mixtures(EMPTY_MK, config, seed=0)
    for mixture in mixtures:
        assert mixture.rows.height == 7 or mixture.kind == "known_only"  # |D| = 4 + 0 + 3
        if mixture.kind == "natural":  # D_Natural follows the pool's shares, P19 included
            assert "P19" in set(mixture.rows["relation"])
            continue
        assert "P19" not in set(mixture.rows["relation"])
        assert any(n.startswith("P19: 0 MaybeKnown available") for n in mixture.notes), mixture.name
        assert "P19" in mixture.relation_composition()["relation"].to_list()


# --- D_Natural, seeds, IDK ---------------------------------------------------------------------------------------

@pytest.mark.parametrize(("train", "size"), [(TRAIN, "auto"), (TRAIN, 77), (BIG, 143), (SHORT, 24), (EMPTY_MK, "auto")])
def test_natural_reproduces_the_pool_cell_shares_within_one_example(train, size):
    natural = by_name(build_mixtures(train, MixtureConfig(size=size, unknown_fraction=[], natural=True), seed=0))["natural"]
    d = natural.rows.height
    pool = {(r, c): n for r, c, n in train.group_by("relation", "category").len().iter_rows()}
    got = {(r, c): n for r, c, n in natural.composition().iter_rows()}
    for cell, n in pool.items():
        assert abs(got.get(cell, 0) - d * n / train.height) < 1, cell
    assert natural.params["n_unknown"] == natural.rows.filter(pl.col("category") == "Unknown").height


def test_natural_is_no_longer_skewed_by_smallest_category_weights():
    # The pool is 36% Unknown; weights by smallest category used to give D_Natural another share.
    natural = by_name(build_mixtures(TRAIN, FULL, seed=0))["natural"]
    assert abs(natural.params["realized_unknown_fraction"] - 90 / 250) < 1 / 30


def test_different_seeds_give_different_rows_with_the_same_composition():
    config = MixtureConfig(size=40, unknown_fraction=GRID, single_category=list(CATEGORIES), natural=True)
    first, other = by_name(build_mixtures(BIG, config, seed=0)), by_name(build_mixtures(BIG, config, seed=1))
    for name, mixture in first.items():
        assert mixture.relation_composition().equals(other[name].relation_composition()), name
        assert set(mixture.rows["qid"]) != set(other[name].rows["qid"]), name


def test_idk_has_the_exact_composition_of_its_fraction_even_off_the_grid():
    config = MixtureConfig(size=53, unknown_fraction=[0.5], idk_relabel=IdkConfig(unknown_fraction=0.29))
    idk = by_name(build_mixtures(BIG, config, seed=0))["idk_unknown_29"]
    assert idk.rows.height == 53 and unknown_count(idk.rows) == half_up(0.29, 53) == idk.params["n_unknown"]
    assert idk.params["unknown_fraction"] == 0.29 and idk.params["idk_answer"] == "I don't know"


def test_relation_balance_is_validated():
    assert MixtureConfig().relation_balance == "fill"
    with pytest.raises(ValidationError):
        MixtureConfig(relation_balance="loose")
    with pytest.raises(ValidationError):
        MixtureConfig(size=0)


def test_d_known_is_planned_with_the_example_slots_of_its_d_unless_the_paper_s_schedule_is_asked_for():
    from benchmark.plan import plan_variants
    from benchmark.suite import Suite

    def planned(steps):
        suite = Suite(name="s", model="toy-gpt-test", knowledge_source="world-test", seeds=[0, 1],
                      mixtures={"unknown_fraction": [0.0, 0.25, 0.5], "known_only_steps": steps})
        return {v.name: v for v in plan_variants(suite, TRAIN, {"model": "m"})}

    matched, paper = planned("matched"), planned("paper")
    size = matched["unknown_0_seed0"].mixture.rows.height
    for seed in (0, 1):
        for x in ("25", "50"):
            variant = matched[f"unknown_{x}_known_only_seed{seed}"]
            assert variant.mixture.rows.height < size
            assert variant.train.examples_per_epoch == size and variant.params["examples_per_epoch"] == size
            assert paper[variant.name].train.examples_per_epoch is None
            assert paper[variant.name].key != variant.key  # the schedule is part of what identifies a result
        assert matched[f"unknown_50_seed{seed}"].train.examples_per_epoch is None
        assert matched[f"unknown_50_seed{seed}"].key == paper[f"unknown_50_seed{seed}"].key
    assert MixtureConfig().known_only_steps == "matched"


def test_mixture_notices_are_grouped_by_reason_and_other_notes_kept_whole():
    from benchmark.plan import grouped_notes

    notes = ["P131: no examples in this set (its Known share is 0)", "P19: no examples in this set (its Known share "
             "is 0)", "P136: 0 MaybeKnown available", "size auto: every relation: drawn in full", "a note alone"]
    assert grouped_notes(notes) == ["P131, P19: no examples in this set (its Known share is 0)",
                                    "P136: 0 MaybeKnown available", "size auto: every relation: drawn in full",
                                    "a note alone"]
