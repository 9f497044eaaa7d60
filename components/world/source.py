"""The embedded world as a knowledge source: question files in the ENTITYQUESTIONS release layout, plus its
pretraining corpus and the ground-truth exposure of every fact.

Component files ``components/datasets/world.yaml`` (default size) and ``world-test.yaml`` (test size) name it.
The files are generated into the cache on first use (``$SLICK_BENCH_CACHE/world/<key>/``, written atomically)::

    <root>/relation_query_templates.json
    <root>/dataset/{train,dev,test}/P<id>.<split>.json    # read by components.entityquestions.load_release
    <root>/corpus.jsonl                                    # one JSON string (a document) per line
    <root>/exposures.csv                                   # split, relation, subject, question, answer, exposure, ...
    <root>/entities.json  <root>/world.json                # names by type; resolved config and summary

Write a world somewhere else::

    .venv/bin/python -m benchmark world build --size test --seed 0 --out /tmp/world
"""

from __future__ import annotations

import fcntl
import json
from collections import Counter
from contextlib import contextmanager
from pathlib import Path
from typing import Literal

import polars as pl
from pydantic import Field

from benchmark.cache import atomic_dir, cache_hit, stage_dir
from benchmark.errors import BenchmarkError
from benchmark.hashing import code_key, content_key, files_digest
from components.base import ComponentSpec, KnowledgeSource
from components.entityquestions import SPLITS, load_release
from components.world.corpus import build_documents, vocabulary_texts
from components.world.generate import World, WorldConfig, generate_world, guessable_relations
from components.world.tokenizer import build_tokenizer

# The code that writes a world; its source is hashed into the world folder's key, so an edit rebuilds it. (The
# world's identity is the digest of the files it wrote, so a rebuild that writes the same files keys the same.)
WORLD_CODE = ("components.world.generate", "components.world.corpus", "components.world.source")
EXPOSURE_BUCKETS = ((0, 0), (1, 2), (3, 4), (5, 8), (9, 16), (17, 32), (33, 64), (65, 128))
EXPOSURE_SCHEMA = {"split": pl.String, "relation": pl.String, "subject": pl.String, "question": pl.String,
                   "answer": pl.String, "exposure": pl.Int64, "statements": pl.Int64, "qa_lines": pl.Int64}
# Files that make up a finished world; their digest is the source's identity.
WORLD_FILES = ("relation_query_templates.json", "corpus.jsonl", "exposures.csv")


def exposure_buckets(max_exposure: int) -> list[tuple[int, int]]:
    """0, 1-2, 3-4, 5-8, ... up to the bucket holding ``max_exposure``."""
    return [(lo, hi) for lo, hi in EXPOSURE_BUCKETS if lo <= max_exposure]


@contextmanager
def build_lock(final: Path):
    """Serialise concurrent builders of one cache entry (parallel runs on one machine); readers need no lock."""
    final.parent.mkdir(parents=True, exist_ok=True)
    with open(final.parent / f".{final.name}.lock", "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _dump(records: list[dict]) -> str:
    return json.dumps(records, indent=4)  # the release's own format (4-space indent, ASCII, no trailing newline)


def write_world(world: World, out: Path) -> dict:
    """Write every file of ``world`` into the folder ``out`` (created); returns the summary."""
    config = world.config
    (out / "relation_query_templates.json").write_text(json.dumps(world.templates(), indent=4))
    for split in SPLITS:
        (out / "dataset" / split).mkdir(parents=True, exist_ok=True)
        for relation in config.all_relations():
            records = [{"question": f.question, "answers": [f.object]}
                       for f in world.facts if f.relation == relation and f.split == split]
            (out / "dataset" / split / f"{relation}.{split}.json").write_text(_dump(records))
    documents = build_documents(world)
    with open(out / "corpus.jsonl", "w") as handle:
        for document in documents:
            handle.write(json.dumps(document) + "\n")
    table = pl.DataFrame([{"split": f.split, "relation": f.relation, "subject": f.subject, "question": f.question,
                           "answer": f.object, "exposure": f.exposure, "statements": f.statements,
                           "qa_lines": f.qa_lines} for f in world.facts], schema=EXPOSURE_SCHEMA)
    table.write_csv(out / "exposures.csv")
    (out / "entities.json").write_text(json.dumps(world.entities, indent=1))
    summary = summarize(world, documents)
    (out / "world.json").write_text(json.dumps({"config": config.model_dump(), "summary": summary}, indent=2))
    return summary


def summarize(world: World, documents: list[str]) -> dict:
    facts = world.facts
    histogram = {}
    for lo, hi in exposure_buckets(world.config.max_exposure):
        histogram[str(lo) if lo == hi else f"{lo}-{hi}"] = sum(lo <= f.exposure <= hi for f in facts)
    tokenizer = build_tokenizer(vocabulary_texts(world, documents))
    tokens = sum(len(ids) + 1 for ids in tokenizer(documents, add_special_tokens=False)["input_ids"])  # + EOS each
    return {
        "facts": len(facts),
        "questions": dict(Counter(f.split for f in facts)),
        "relations": world.config.relations,
        "ood_relations": world.config.ood_relations,
        "guessable_relations": world.guessable_relations(),
        "entities": sum(len(v) for v in world.entities.values()),
        "documents": len(documents),
        "corpus_tokens": tokens,  # word-level tokens, one EOS per document included: one epoch of pretraining
        "vocabulary": len(tokenizer),
        "occurrences": sum(f.exposure for f in facts),  # statements and Q/A pairs: the sum of exposures
        "qa_fraction_of_exposed": round(sum(f.qa_lines > 0 for f in facts) / max(1, sum(f.exposure > 0 for f in facts)), 3),
        "exposure_histogram": histogram,
    }


def world_dir(config: WorldConfig) -> Path:
    return stage_dir("world", content_key(config.model_dump(), code_key(*WORLD_CODE)))


def ensure_world(config: WorldConfig) -> Path:
    """The cached world folder for ``config``, generated on first use."""
    final = world_dir(config)
    if cache_hit(final, "world.json", report=False):
        return final
    with build_lock(final):
        if not cache_hit(final, "world.json"):  # missing, or damaged (reported): generate it again
            with atomic_dir(final) as tmp:
                write_world(generate_world(config), tmp)
    return final


def build_world_files(seed: int, out: Path | None, size: str = "default") -> dict:
    """Write the world of ``size`` and ``seed`` to ``out`` (or the cache when None); returns a small summary."""
    try:
        config = WorldConfig.preset(size, seed=seed)  # type: ignore[arg-type]
    except ValueError as exc:
        raise BenchmarkError(str(exc)) from exc
    if out is None:
        path = ensure_world(config)
        summary = json.loads((path / "world.json").read_text())["summary"]
    else:
        path = Path(out).resolve()
        if path.exists() and any(path.iterdir()) and not (path / "world.json").exists():
            raise BenchmarkError(f"{path}: exists and is not a world folder; choose an empty or new folder")
        # The user's folder: the release layout only; it replaces a world written there before, nothing else.
        with atomic_dir(path, checksums=False, replaces=lambda folder: (folder / "world.json").is_file()) as tmp:
            summary = write_world(generate_world(config), tmp)
    return {"path": str(path), "size": size, "seed": seed, **summary}


def read_documents(root: Path) -> list[str]:
    with open(root / "corpus.jsonl") as handle:
        return [json.loads(line) for line in handle]


class WorldSource(KnowledgeSource):
    """The generated world of made-up entities (docs/method.md §2)."""

    class Spec(ComponentSpec):
        size: Literal["default", "test"] = Field("default", description="'default' (~4k facts) or 'test' (~600 facts, for tests)")
        seed: int = Field(0, description="world seed: names, facts, splits, exposures and corpus all follow from it")

    _exposures: pl.DataFrame | None = None

    def config(self) -> WorldConfig:
        return WorldConfig.preset(self.spec.size, seed=self.spec.seed)

    @property
    def root(self) -> Path:
        """The release-layout folder (generated into the cache on first use)."""
        return ensure_world(self.config())

    _identity: str | None = None

    def identity(self) -> str:
        """Hash of the world's files, computed once per source object."""
        if self._identity is None:
            root = self.root
            files = [root / name for name in WORLD_FILES] + sorted((root / "dataset").rglob("*.json"))
            self._identity = f"world:{files_digest(files)}"
        return self._identity

    def questions(self) -> pl.DataFrame:
        config = self.config()
        table, self.dropped = load_release(self.root, config.relations, config.ood_relations)
        return table

    def exposures(self) -> pl.DataFrame:
        """One row per fact: split, relation, subject, question, answer, exposure (= statements + qa_lines).

        Read once per source: summaries, the confusion table and the pipeline all ask for it."""
        if self._exposures is None:
            self._exposures = pl.read_csv(self.root / "exposures.csv", schema=EXPOSURE_SCHEMA)
        return self._exposures

    def guessable_relations(self) -> list[str]:
        return guessable_relations(self.config())

    def documents(self) -> list[str]:
        """The pretraining corpus, one string per document."""
        return read_documents(self.root)

    def summary(self) -> dict:
        return json.loads((self.root / "world.json").read_text())["summary"]
