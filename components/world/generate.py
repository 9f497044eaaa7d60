"""The embedded world's ground truth: made-up entities, typed facts over ENTITYQUESTIONS relation ids, exposures.

A fact is (relation, subject, object). Subjects and objects are made-up, pronounceable, single-token names
(unique, case-insensitively, and never an English word the world's texts use), drawn from typed pools (person,
city, country, university, band, label, genre, work, book, company, product, song, language, ...) so every
relation asks for one kind of thing. Every subject belongs to exactly one split, so no test subject is ever a train
subject. Each fact gets an **exposure**: how many times the pretraining corpus states it. A share of facts is
never stated; the rest are log-uniform between 1 and ``max_exposure`` (long-tailed: 38% of stated facts are
stated once or twice, 16% 17-32 times), stratified per relation and split. A share of exposed facts is also
written as ``Q: ... A: ...`` lines.

Everything is a pure function of a :class:`WorldConfig` (seed included)::

    from components.world.generate import WorldConfig, generate_world
    world = generate_world(WorldConfig.preset("test", seed=1))
    world.facts[0]   # Fact(relation='P17', subject='Melkroth', object='Bruthgrend', split='train', exposure=9, qa_lines=3)
"""

from __future__ import annotations

import math
import random
import re
from dataclasses import dataclass
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from benchmark.prompts import FINETUNE_INSTRUCTION, p_true_prompt

SPLITS = ("train", "dev", "test")

# The real ENTITYQUESTIONS templates (princeton-nlp/EntityQuestions, relation_query_templates.json, MIT), for the
# relations the world uses; tests check them against ../shared/entityquestions-sample when it is there.
TEMPLATES = {
    "P17": "Which country is [X] located in?",
    "P19": "Where was [X] born?",
    "P26": "Who is [X] married to?",
    "P36": "What is the capital of [X]?",
    "P40": "Who is [X]'s child?",
    "P50": "Who is the author of [X]?",
    "P69": "Where was [X] educated?",
    "P127": "Who owns [X]?",
    "P131": "Where is [X] located?",
    "P136": "What type of music does [X] play?",
    "P175": "Who performed [X]?",
    "P176": "Which company is [X] produced by?",
    "P264": "What music label is [X] represented by?",
    "P407": "Which language was [X] written in?",
    "P495": "Which country was [X] created in?",
    "P740": "Where was [X] founded?",
    "P800": "What is [X] famous for?",
}


@dataclass(frozen=True)
class Relation:
    """A relation's subject and object types and the corpus phrasings that state it ([X] subject, [Y] object).

    The subject always comes before the object: a tiny model that saw only "Y ... X" cannot answer "X -> ?".
    The first phrasing is close to the question's words, the others are not: real text has both, and the
    question format has to be learnt to transfer to statements the model never saw asked."""

    subject: str
    object: str
    phrasings: tuple[str, ...]


RELATIONS: dict[str, Relation] = {
    "P17": Relation("city", "country", ("[X] is a city located in [Y].", "[X] lies in [Y].", "The city of [X] is part of [Y].")),
    "P19": Relation("person", "city", ("[X] was born in [Y].", "[X] is a native of [Y].", "The birthplace of [X] is [Y].")),
    "P26": Relation("person", "relative", ("[X] is married to [Y].", "The spouse of [X] is [Y].", "[X] married [Y].")),
    "P36": Relation("province", "city", ("The capital of [X] is [Y].", "[X] has its capital in [Y].", "[X] is governed from [Y].")),
    "P40": Relation("person", "relative", ("[X]'s child is [Y].", "[X] is the parent of [Y].", "[X] has a child named [Y].")),
    "P69": Relation("person", "university", ("[X] was educated at [Y].", "[X] studied at [Y].", "[X] graduated from [Y].")),
    "P131": Relation("landmark", "province", ("[X] is located in [Y].", "[X] can be found in [Y].", "[X] stands in [Y].")),
    "P136": Relation("band", "genre", ("[X] plays [Y] music.", "[X] is a [Y] band.", "The music of [X] is [Y].")),
    "P264": Relation("band", "label", ("[X] is represented by the label [Y].", "[X] is signed to [Y].", "[X] releases its albums on [Y].")),
    "P495": Relation("work", "country", ("[X] was created in [Y].", "[X] is a film from [Y].", "[X] was produced in [Y].")),
    "P740": Relation("band", "city", ("[X] was founded in [Y].", "[X] was formed in [Y].", "[X] started out in [Y].")),
    "P800": Relation("person", "work", ("[X] is famous for [Y].", "[X] is best known for [Y].", "The most famous work of [X] is [Y].")),
    "P50": Relation("book", "relative", ("The author of [X] is [Y].", "[X] was written by [Y].", "[X] is a novel by [Y].")),
    "P127": Relation("company", "relative", ("[X] is owned by [Y].", "The owner of [X] is [Y].", "[X] belongs to [Y].")),
    "P176": Relation("product", "company", ("[X] is produced by [Y].", "[X] is manufactured by [Y].", "[X] is a product of [Y].")),
    "P407": Relation("book", "language", ("[X] was written in [Y].", "The language of [X] is [Y].", "[X] was first printed in [Y].")),
    "P175": Relation("song", "band", ("[X] was performed by [Y].", "[X] is a song by [Y].", "The singers of [X] are [Y].")),
}

# A large type has this many times more names than one relation's answer space, so relations that share the type
# (births, capitals and founding places are all cities) overlap only partly in their answers.
TYPE_POOL_SPREAD = 1.5
# Types with a small, fixed answer space: lucky samples make never-stated facts look WeaklyKnown (measured in the prototype).
SMALL_TYPES = ("country", "genre", "language")
# "relative" is no relation's subject: spouses, children, authors and owners are only ever objects, so a statement
# about one subject never doubles as a (possibly contradicting) statement about another.


class WorldConfig(BaseModel):
    """Everything that decides the world's facts, questions and corpus. Two equal configs give byte-identical files."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    seed: int = Field(0, description="seed of every random choice (names, facts, splits, exposures, corpus order)")
    relations: list[str] = Field(
        default_factory=lambda: ["P17", "P19", "P26", "P36", "P40", "P69", "P131", "P136", "P264", "P495", "P740", "P800"],
        description="in-distribution relations (train/dev/test files)")
    ood_relations: list[str] = Field(default_factory=lambda: ["P50", "P127", "P176", "P407", "P175"],
                                     description="out-of-distribution relations (test-only in the paper; all splits written)")
    split_sizes: dict[str, int] = Field(default_factory=lambda: {"train": 200, "dev": 35, "test": 65},
                                        description="facts per in-distribution relation and split")
    ood_split_sizes: dict[str, int] = Field(default_factory=lambda: {"train": 10, "dev": 35, "test": 65},
                                            description="facts per out-of-distribution relation and split (dev holds few-shot exemplars)")
    subject_coverage: float = Field(0.75, gt=0, le=1,
                                    description="for types that are the subject of several relations: chance a subject has each of them")
    answer_pool_ratio: float = Field(0.8, gt=0,
                                     description="large answer spaces: distinct candidate objects per relation, relative to its facts")
    small_pool_sizes: dict[str, int] = Field(default_factory=lambda: {"country": 30, "genre": 12, "language": 15},
                                             description="size of the small answer spaces (guessable relations)")
    zero_exposure_fraction: float = Field(0.35, ge=0, lt=1, description="share of facts the corpus never states")
    max_exposure: int = Field(32, ge=1, description="exposures of stated facts are log-uniform in 1..max_exposure")
    qa_fraction: float = Field(0.3, ge=0, le=1,
                               description="share of exposed facts also written as 'Q: <question>\\nA: <answer>' lines")
    qa_share: float = Field(0.34, gt=0, le=1,
                            description="for those facts: share of their exposure given as Q/A lines (at least one)")
    qa_block: tuple[int, int] = Field((4, 6), description="Q/A pairs per corpus document (min, max); one relation per document")
    bio_facts: int = Field(4, ge=1, description="statements per bio document at most (bios are about one subject)")

    @classmethod
    def preset(cls, size: Literal["default", "test"], seed: int = 0) -> WorldConfig:
        """'default': 4,250 facts (per relation 200/35/65 train/dev/test; OOD 10/35/65), the size the prototype
        validated; 'test': 580 facts (24/6/10; OOD 4/6/10) and exposures up to 16, pretrains in seconds."""
        if size == "default":
            return cls(seed=seed)
        if size == "test":
            return cls(seed=seed, split_sizes={"train": 24, "dev": 6, "test": 10},
                       ood_split_sizes={"train": 4, "dev": 6, "test": 10}, max_exposure=16)
        raise ValueError(f"unknown world size '{size}' (expected 'default' or 'test')")

    def sizes(self, relation: str) -> dict[str, int]:
        return self.ood_split_sizes if relation in self.ood_relations else self.split_sizes

    def all_relations(self) -> list[str]:
        return [*self.relations, *self.ood_relations]


@dataclass(frozen=True)
class Fact:
    relation: str
    subject: str
    object: str
    split: str
    exposure: int  # times the corpus states the fact, statements and Q/A lines together
    qa_lines: int  # of which written as "Q: <question>\nA: <answer>"

    @property
    def question(self) -> str:
        return TEMPLATES[self.relation].replace("[X]", self.subject)

    @property
    def statements(self) -> int:
        return self.exposure - self.qa_lines


@dataclass
class World:
    config: WorldConfig
    entities: dict[str, list[str]]  # type -> names
    facts: list[Fact]  # grouped by relation, then split, in question-file order

    def guessable_relations(self) -> list[str]:
        return guessable_relations(self.config)

    def templates(self) -> dict[str, str]:
        return {r: TEMPLATES[r] for r in self.config.all_relations()}


def guessable_relations(config: WorldConfig) -> list[str]:
    """Relations whose answer is one of a few names (countries, genres, languages)."""
    return [r for r in config.all_relations() if RELATIONS[r].object in SMALL_TYPES]


# ---------------------------------------------------------------------------------------------------------- names

_ONSETS = ["b", "d", "f", "g", "h", "k", "l", "m", "n", "p", "r", "s", "t", "v", "z", "br", "dr", "gr", "kr", "tr",
           "st", "th", "sh", "ch", "j"]
_VOWELS = ["a", "e", "i", "o", "u", "a", "e", "o", "ai", "ei", "ou"]
_CODAS = ["", "", "", "", "n", "r", "l", "s", "m", "k", "th", "nd", "rn"]


def template_words() -> set[str]:
    """Every lower-cased word the world's own texts and the benchmark's prompts use: names must avoid them."""
    texts = [*TEMPLATES.values(), *(p for r in RELATIONS.values() for p in r.phrasings),
             FINETUNE_INSTRUCTION, "I don't know", p_true_prompt("q", "a"), "Q: A:"]
    return {w.lower() for t in texts for w in re.findall(r"\w+", t)}


def make_names(rng: random.Random, count: int, taken: set[str]) -> list[str]:
    """``count`` new capitalised names of 2-3 syllables, unique case-insensitively against ``taken`` (updated)."""
    names = []
    while len(names) < count:
        syllables = rng.choice((2, 2, 3))
        word = "".join(rng.choice(_ONSETS) + rng.choice(_VOWELS) + rng.choice(_CODAS) for _ in range(syllables))
        if not 4 <= len(word) <= 10 or word in taken:
            continue
        taken.add(word)
        names.append(word.capitalize())
    return names


# ---------------------------------------------------------------------------------------------------------- facts

def _log_uniform(rng: random.Random, top: int) -> int:
    """1..top, equal mass per octave (round of a log-uniform draw on [0.5, top + 0.5))."""
    value = math.exp(rng.uniform(math.log(0.5), math.log(top + 0.5)))
    return min(top, max(1, round(value)))


def _stratified_exposures(rng: random.Random, n: int, config: WorldConfig) -> list[tuple[int, int]]:
    """(exposure, qa_lines) for ``n`` facts of one relation and split, shares exact up to rounding."""
    zero = round(n * config.zero_exposure_fraction)
    exposed = n - zero
    with_qa = round(exposed * config.qa_fraction)
    out = [(0, 0)] * zero
    for i in range(exposed):
        exposure = _log_uniform(rng, config.max_exposure)
        qa = max(1, round(exposure * config.qa_share)) if i < with_qa else 0
        out.append((exposure, qa))
    rng.shuffle(out)
    return out


def generate_world(config: WorldConfig) -> World:
    """Entities, facts and exposures for ``config``; deterministic (no set or hash order anywhere)."""
    rng = random.Random(f"slick-world:{config.seed}")
    relations = config.all_relations()
    unknown = [r for r in relations if r not in RELATIONS]
    if unknown:
        raise ValueError(f"no world definition for relation(s) {', '.join(unknown)} (known: {', '.join(RELATIONS)})")

    subject_relations: dict[str, list[str]] = {}
    for r in relations:
        subject_relations.setdefault(RELATIONS[r].subject, []).append(r)

    # Subjects, per type and split: enough that each relation of the type finds its facts' subjects there.
    taken = template_words()
    subjects: dict[str, dict[str, list[str]]] = {}
    for kind, rels in subject_relations.items():
        coverage = 1.0 if len(rels) == 1 else config.subject_coverage
        subjects[kind] = {split: make_names(rng, math.ceil(max(config.sizes(r)[split] for r in rels) / coverage), taken)
                          for split in SPLITS}

    # Objects: small fixed spaces; object-only people; otherwise the type's subjects plus extra names.
    object_slots: dict[str, int] = {}
    for r in relations:
        object_slots[RELATIONS[r].object] = object_slots.get(RELATIONS[r].object, 0) + sum(config.sizes(r).values())
    entities: dict[str, list[str]] = {kind: [n for s in SPLITS for n in by_split[s]] for kind, by_split in subjects.items()}
    for kind in sorted(object_slots):
        if kind in SMALL_TYPES:
            pool = config.small_pool_sizes[kind]
        else:
            largest = max(sum(config.sizes(r).values()) for r in relations if RELATIONS[r].object == kind)
            pool = math.ceil(largest * config.answer_pool_ratio * TYPE_POOL_SPREAD)
        have = len(entities.get(kind, []))
        entities.setdefault(kind, []).extend(make_names(rng, max(0, pool - have), taken))

    facts: list[Fact] = []
    for r in relations:
        rel = RELATIONS[r]
        sizes = config.sizes(r)
        # One answer space per relation: a random subset of the type's names; small types use all, skewed a little
        # (real answer distributions are; the most-common-answer baseline then has something to beat).
        candidates = entities[rel.object]
        if rel.object in SMALL_TYPES:
            space = list(candidates)
            weights = [1 / math.sqrt(rank + 1) for rank in range(len(space))]
        else:
            space = rng.sample(candidates, min(len(candidates), math.ceil(sum(sizes.values()) * config.answer_pool_ratio)))
            weights = [1.0] * len(space)
        for split in SPLITS:
            chosen = rng.sample(subjects[rel.subject][split], sizes[split])
            for subject, (exposure, qa) in zip(chosen, _stratified_exposures(rng, sizes[split], config), strict=True):
                obj = rng.choices(space, weights)[0]
                facts.append(Fact(r, subject, obj, split, exposure, qa))
    return World(config=config, entities=entities, facts=facts)
