"""Mixture builders: sizes, per-relation proportions, category purity, determinism, D_Known, cannot-fill."""

import polars as pl
import pytest

from benchmark.errors import BenchmarkError
from benchmark.mixtures import IdkConfig, MixtureConfig, build_mixtures, relation_sizes
from benchmark.slick import CATEGORIES


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


def test_every_variant_has_size_d_and_constant_relation_mix():
    mixtures = by_name(build_mixtures(TRAIN, FULL, seed=0))
    expected = {"P19": 12, "P36": 8, "P69": 10}
    for name in ("unknown_0", "unknown_25", "unknown_50", "unknown_75", "unknown_100", *CATEGORIES, "natural",
                 "idk_unknown_50"):
        rows = mixtures[name].rows
        assert rows.height == 30, name
        assert dict(rows.group_by("relation").len().iter_rows()) == expected, name
        assert rows["qid"].n_unique() == rows.height, f"{name} repeats an example"


def test_unknown_share_is_per_relation():
    rows = by_name(build_mixtures(TRAIN, FULL, seed=0))["unknown_50"].rows
    for relation, n in {"P19": 12, "P36": 8, "P69": 10}.items():
        part = rows.filter(pl.col("relation") == relation)
        assert part.filter(pl.col("category") == "Unknown").height == round(0.5 * n)


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
    with pytest.raises(BenchmarkError, match=r"relation P19 has 40 Unknown train examples, 48 needed"):
        build_mixtures(TRAIN, MixtureConfig(size=120, unknown_fraction=[1.0], known_only=False), seed=0)


def test_auto_size_zero_is_an_error():
    lopsided = categorised({"P19": {"HighlyKnown": 5, "Unknown": 5}})
    with pytest.raises(BenchmarkError, match="mixtures.size"):
        build_mixtures(lopsided, MixtureConfig(), seed=0)


def test_excluded_relations_are_left_out():
    rows = by_name(build_mixtures(TRAIN, MixtureConfig(exclude_relations=["P69"]), seed=0))["unknown_50"].rows
    assert "P69" not in rows["relation"].to_list() and rows.height == 20
