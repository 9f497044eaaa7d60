"""The plan of a suite run: its variants (mixture × seed × swept settings), each named and keyed before anything
trains, and the evaluation questions every variant shares."""

from __future__ import annotations

from dataclasses import dataclass, field

import polars as pl

from benchmark.errors import BenchmarkError
from benchmark.hashing import code_key, content_key
from benchmark.mixtures import Mixture, build_mixtures, planned_mixtures
from benchmark.record import VariantRecord
from benchmark.registry import did_you_mean
from benchmark.suite import Suite, expand_sweep
from benchmark.train.config import TrainConfig, result_settings

# The code a variant's results come from; its source (and the torch/transformers versions) is in every variant key.
# Not benchmark.analyse: a variant's history and predictions do not depend on it (its summary metrics are recomputed
# from the history), so an edit of the analysis re-analyses, it does not retrain. Not the launch and checkpoint
# code either (benchmark.launch, checkpoints, progress): where and how a run is stored is not what it computes.
VARIANT_CODE = ("benchmark.train", "benchmark.evaluate", "benchmark.backends.decoding", "benchmark.prompts",
                "benchmark.answers", "benchmark.thread_invariant", "benchmark.parallel")


@dataclass
class Variant:
    name: str
    mixture: Mixture
    seed: int
    swept: dict
    train: TrainConfig
    key: str
    params: dict = field(default_factory=dict)

    def record(self, base_model: str, knowledge_source: str) -> VariantRecord:
        """What its run says of itself (its tags)."""
        return VariantRecord(name=self.name, mixture=self.mixture.name, kind=self.mixture.kind, seed=self.seed,
                             unknown_fraction=self.mixture.params.get("unknown_fraction"), base_model=base_model,
                             knowledge_source=knowledge_source)


def _limit(table: pl.DataFrame, limit: int | None, seed: int = 0) -> pl.DataFrame:
    if limit is None or table.height <= limit:
        return table
    return table.sort("qid").sample(n=limit, seed=seed).sort("qid")


def question_sets(table: pl.DataFrame, suite: Suite) -> tuple[pl.DataFrame, pl.DataFrame, pl.DataFrame]:
    """(train, dev, test) of a categorised table: the in-distribution train questions the mixtures draw from, and
    the dev and test questions every variant is scored on (the same for all: equal footing)."""
    train = table.filter((pl.col("split") == "train") & ~pl.col("ood"))
    # EARLY_STOP is chosen on in-distribution dev questions only, as in the paper.
    dev = _limit(table.filter((pl.col("split") == "dev") & ~pl.col("ood")), suite.evaluation.dev_limit)
    test = table.filter(pl.col("split") == "test")
    test = pl.concat([_limit(test.filter(~pl.col("ood")), suite.evaluation.test_limit),
                      test.filter(pl.col("ood")) if suite.evaluation.ood else test.head(0)])
    return train, dev, test


def variant_name(mixture: str, seed: int, swept: dict, suite: Suite) -> str:
    """A variant's run name: its mixture, its seed where the suite has several, and the swept values."""
    name = mixture + (f"_seed{seed}" if len(suite.seeds) > 1 else "")
    return name + "".join(f"_{k.partition('.')[2]}{v}" for k, v in swept.items())


def check_only(only: list[str] | None, names: list[str]) -> None:
    for wanted in only or []:
        if wanted not in names:
            raise BenchmarkError(f"--only {wanted}: no such variant{did_you_mean(wanted, names, listed=True)}")


def planned_variant_names(suite: Suite) -> list[str]:
    """The variants' names from the suite alone, before SliCK has run (``--only`` is checked against them first)."""
    return [variant_name(m, seed, swept, suite) for seed in suite.seeds for m in planned_mixtures(suite.mixtures)
            for swept, _ in expand_sweep(suite)]


def plan_variants(suite: Suite, train: pl.DataFrame, identity: dict) -> list[Variant]:
    variants = []
    sweeps = expand_sweep(suite)
    for seed in suite.seeds:
        mixtures = build_mixtures(train, suite.mixtures, seed)
        # D_Known trains on as many example slots per epoch as its D (mixtures.known_only_steps: matched), so both
        # take the same optimizer steps and learning-rate schedule; the setting is in the config, so in the key.
        d_size = {m.params["unknown_fraction"]: m.rows.height for m in mixtures if m.kind == "unknown_fraction"}
        for mixture in mixtures:
            for swept, train_config in sweeps:
                name = variant_name(mixture.name, seed, swept, suite)
                update = {"seed": seed}
                if mixture.kind == "known_only" and suite.mixtures.known_only_steps == "matched":
                    update["examples_per_epoch"] = d_size[mixture.params["unknown_fraction"]]
                config = train_config.model_copy(update=update)
                rows = mixture.rows.select("qid", "answer", "category").sort("qid").rows()
                # The settings the results depend on: layout and speed settings only where they change them.
                key = content_key(code_key(*VARIANT_CODE), identity, rows, result_settings(config, mixture.rows.height),
                                  suite.evaluation.model_dump(mode="json"), seed)
                params = {"variant": name, "mixture": mixture.name, "kind": mixture.kind, "size": mixture.rows.height,
                          "seed": seed, "epochs": config.epochs, **mixture.params, **swept}
                if config.examples_per_epoch is not None:
                    params["examples_per_epoch"] = config.examples_per_epoch
                variants.append(Variant(name, mixture, seed, swept, config, key, params))
    # A name is a variant's run and its results' key in every table: two alike would log into one run. The suite's
    # validators refuse the known ways to get there; this is the last line, still before any run is opened.
    named: dict[str, Variant] = {}
    for variant in variants:
        other = named.setdefault(variant.name, variant)
        if other is not variant:
            raise BenchmarkError(f"{suite.file or suite.name}: two variants are both named '{variant.name}' "
                                 f"({other.params} and {variant.params}); make the mixtures or sweep values that "
                                 "name them distinct")
    return variants


def sweep_label(swept: dict) -> str:
    """The swept settings of a configuration as a name suffix ("" for a suite without ``sweep:``): the same
    words its variants' names end with (``lr0.0001``)."""
    return "_".join(f"{k.partition('.')[2]}{v}" for k, v in swept.items())


def grouped_notes(notes: list[str]) -> list[str]:
    """Notes of the form ``<relation>: <why>`` that give one reason, as one line naming every relation (five
    relations without MaybeKnown facts are one line, not five); others as they are. MLflow keeps them one by one
    (``mixtures/notes.txt``)."""
    by_reason: dict[str, list[str]] = {}
    for note in notes:
        relation, sep, reason = note.partition(": ")
        if sep and " " not in relation:
            by_reason.setdefault(reason, []).append(relation)
        else:  # not about one relation: kept whole
            by_reason.setdefault(note, []).append("")
    return [f"{', '.join(relations)}: {reason}" if all(relations) else reason
            for reason, relations in by_reason.items()]


def notes_line(notes: list[str]) -> str:
    """The mixtures' notes as the one line a run prints (each reason once, with the relations it concerns)."""
    return (f"mixtures ({len(notes)} note{'s' * (len(notes) > 1)}, all in mixtures/notes.txt): "
            + " | ".join(grouped_notes(notes)))
