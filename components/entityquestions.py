"""ENTITYQUESTIONS in its release layout, preprocessed as in Gekhman et al. 2024 (DESIGN.md §1.2).

Layout: ``<root>/dataset/{train,dev,test}/P<id>.<split>.json`` (JSON arrays of ``{"question", "answers"}``)
and ``<root>/relation_query_templates.json``. The relation is known only from the file name; the subject is
recovered by matching the question against its template. Preprocessing: (1) drop every example with more than
one answer, in every split; (2) drop every train example whose subject is the subject of any test question of
any relation (multi-answer test questions included in that check).

The embedded world writes the same layout, so this loader reads it too.
"""

from __future__ import annotations

import json
import re
import warnings
from pathlib import Path

import polars as pl
from pydantic import Field

from benchmark.cache import files_digest
from benchmark.errors import BenchmarkError
from components.base import QUESTION_COLUMNS, ComponentSpec, KnowledgeSource

REPO_ROOT = Path(__file__).resolve().parent.parent
IN_DISTRIBUTION = ["P17", "P19", "P26", "P36", "P40", "P69", "P131", "P136", "P264", "P495", "P740", "P800"]
OUT_OF_DISTRIBUTION = ["P127", "P50", "P407", "P176", "P170", "P175", "P112"]
SPLITS = ("train", "dev", "test")


def resolve_path(path: str | Path) -> Path:
    """Relative paths in component files are relative to the repository root, so they work from any cwd."""
    path = Path(path).expanduser()
    return path if path.is_absolute() else (REPO_ROOT / path).resolve()


def template_pattern(template: str) -> re.Pattern:
    head, _, tail = template.partition("[X]")
    return re.compile(f"^{re.escape(head)}(.+?){re.escape(tail)}$")


def read_split_file(path: Path) -> list[dict]:
    try:
        records = json.loads(path.read_text())
    except FileNotFoundError as exc:
        raise BenchmarkError(f"{path}: file not found (expected the ENTITYQUESTIONS release layout)") from exc
    except json.JSONDecodeError as exc:
        raise BenchmarkError(f"{path}: not valid JSON: {exc}") from exc
    if not isinstance(records, list) or not all(
        isinstance(r, dict) and isinstance(r.get("question"), str) and isinstance(r.get("answers"), list)
        for r in records
    ):
        raise BenchmarkError(f'{path}: expected a JSON array of {{"question": str, "answers": [str, ...]}}')
    return records


def load_release(
    root: Path, relations: list[str], ood_relations: list[str], drop_test_subjects_from_train: bool = True
) -> tuple[pl.DataFrame, dict[str, int]]:
    """Read and preprocess a release-layout folder. Returns the question table and counts of what was dropped."""
    templates_file = root / "relation_query_templates.json"
    try:
        templates = json.loads(templates_file.read_text())
    except FileNotFoundError as exc:
        raise BenchmarkError(f"{templates_file}: file not found (expected the ENTITYQUESTIONS release layout)") from exc
    dropped = {"multi_answer": 0, "test_subject_in_train": 0, "template_mismatch": 0}
    raw: list[dict] = []
    plan = [(rel, split, False) for rel in relations for split in SPLITS] + [(rel, "test", True) for rel in ood_relations]
    for relation, split, ood in plan:
        if relation not in templates:
            raise BenchmarkError(f"{templates_file}: no template for relation '{relation}'")
        pattern = template_pattern(templates[relation])
        path = root / "dataset" / split / f"{relation}.{split}.json"
        records = read_split_file(path)
        if not records:
            raise BenchmarkError(f"{path}: the {split} split of {relation} is empty")
        mismatched = 0
        for index, record in enumerate(records):
            match = pattern.match(record["question"])
            if match is None:
                mismatched += 1
                continue
            raw.append(
                {
                    "qid": f"{split}/{relation}/{index}",
                    "split": split,
                    "relation": relation,
                    "question": record["question"],
                    "answers": [str(a) for a in record["answers"]],
                    "subject": match.group(1),
                    "ood": ood,
                }
            )
        if mismatched:
            dropped["template_mismatch"] += mismatched
            warnings.warn(f"{path}: skipped {mismatched} question(s) that do not match the template "
                          f"'{templates[relation]}'", stacklevel=2)
    test_subjects = {r["subject"] for r in raw if r["split"] == "test"}
    rows = []
    for r in raw:
        if len(r["answers"]) != 1:
            dropped["multi_answer"] += 1
            continue
        if drop_test_subjects_from_train and r["split"] == "train" and r["subject"] in test_subjects:
            dropped["test_subject_in_train"] += 1
            continue
        rows.append({**{k: r[k] for k in QUESTION_COLUMNS if k != "answer"}, "answer": r["answers"][0]})
    table = pl.DataFrame(rows, schema={"qid": pl.String, "split": pl.String, "relation": pl.String,
                                       "question": pl.String, "answer": pl.String, "subject": pl.String,
                                       "ood": pl.Boolean})
    return table.select(QUESTION_COLUMNS), dropped


class EntityQuestions(KnowledgeSource):
    """ENTITYQUESTIONS (or any folder in its release layout)."""

    class Spec(ComponentSpec):
        path: str = Field(description="folder holding dataset/ and relation_query_templates.json; relative to the repo root")
        relations: list[str] = Field(default_factory=lambda: list(IN_DISTRIBUTION), description="train/dev/test relations")
        ood_relations: list[str] = Field(default_factory=lambda: list(OUT_OF_DISTRIBUTION), description="test-only relations")
        guessable_relations: list[str] = Field(default_factory=list, description="relations with a small answer space")

    @property
    def root(self) -> Path:
        root = resolve_path(self.spec.path)
        if not root.is_dir():
            raise BenchmarkError(f"{self.file}: path: '{self.spec.path}' is not a folder ({root})")
        return root

    def files(self) -> list[Path]:
        root = self.root
        files = [root / "relation_query_templates.json"]
        files += [root / "dataset" / s / f"{r}.{s}.json" for r in self.spec.relations for s in SPLITS]
        files += [root / "dataset" / "test" / f"{r}.test.json" for r in self.spec.ood_relations]
        missing = [f for f in files if not f.exists()]
        if missing:
            raise BenchmarkError(f"{missing[0]}: file not found ({len(missing)} missing in {root})")
        return files

    def identity(self) -> str:
        return f"{self.spec.family}:{files_digest(self.files())}"

    def questions(self) -> pl.DataFrame:
        table, self.dropped = load_release(self.root, self.spec.relations, self.spec.ood_relations)
        return table

    def guessable_relations(self) -> list[str]:
        return list(self.spec.guessable_relations)
