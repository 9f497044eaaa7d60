"""ENTITYQUESTIONS in its release layout, preprocessed as in Gekhman et al. 2024 (docs/method.md §2).

Layout: ``<root>/dataset/{train,dev,test}/P<id>.<split>.json`` (JSON arrays of ``{"question", "answers"}``)
and ``<root>/relation_query_templates.json``. The relation is known only from the file name; the subject is
recovered by matching the question against its template.

Preprocessing, in this order (``release_stats`` reports the count after each step, per relation and split):

1. drop every example with more than one answer, in every split;
2. drop every **train** example whose subject is the subject of a **test** question of **any** of the 24
   relations of the release (the 12 in-distribution, the 7 out-of-distribution and the 5 excluded ones, whose
   test files are read for their subjects only), multi-answer test questions included;
3. drop every question that does not match its relation's template. The paper does not say what to do with
   these (the release has none: every question of every file matches). Its subject cannot be recovered, so
   step 2 cannot check it and SliCK/analysis could not group it by subject; keeping it would let a test
   subject leak into train unseen. So it is dropped, counted (``template_mismatch``) and named in a warning
   (file and question), because in practice it means a wrong or edited file, which a researcher wants to see.
4. drop every question whose answer normalises to the empty string (``benchmark.answers.normalize``: an answer
   that is only punctuation or an article, e.g. "The"): it could never be matched (``exact_match`` counts no
   prediction correct against it) and an empty prediction would otherwise look right. Counted (``empty_answer``)
   and named in a warning. The release has none.

Dev and test keep their split. The OOD relations' dev files, where present (the release and the embedded world
have them), are read too, as rows with ``split`` dev and ``ood`` true: SliCK's few-shot exemplars for those relations
come from there (``slick.ood_exemplars``), never from their test questions. ``fetch_release`` downloads the public zip (only when asked, never implicitly).
The embedded world writes the same layout, so this loader reads it too.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import polars as pl
from pydantic import Field

from benchmark.answers import normalize
from benchmark.cache import atomic_dir, cache_root
from benchmark.download import CONNECT_TIMEOUT_S, download, extract, no_space
from benchmark.errors import BenchmarkError, BenchmarkWarning
from benchmark.hashing import files_digest, sha256_file
from benchmark.registry import REPO_ROOT
from components.base import QUESTION_COLUMNS, ComponentSpec, KnowledgeSource

IN_DISTRIBUTION = ["P17", "P19", "P26", "P36", "P40", "P69", "P131", "P136", "P264", "P495", "P740", "P800"]
OUT_OF_DISTRIBUTION = ["P127", "P50", "P407", "P176", "P170", "P175", "P112"]
EXCLUDED = ["P276", "P20", "P106", "P413", "P159"]  # too close to training relations; test subjects only
RELEASE_RELATIONS = IN_DISTRIBUTION + OUT_OF_DISTRIBUTION + EXCLUDED
SPLITS = ("train", "dev", "test")

# Records per file in the full release (all 24 relations have train/dev/test files). Most have 8000/1000/1000.
# Counted on the files of princeton-nlp/EntityQuestions at commit bac842b (../shared/entityquestions-sample/
# SOURCE.md); used only to tell whether a folder "looks like the full release" before comparing with the paper.
RELEASE_SIZES = {r: (8000, 1000, 1000) for r in RELEASE_RELATIONS} | {
    "P36": (7084, 885, 886), "P112": (4072, 509, 510), "P170": (6952, 869, 870), "P407": (5162, 645, 646),
    "P740": (7527, 940, 942), "P800": (1763, 220, 221)}
# Sizes after preprocessing in Gekhman et al. 2024 (arXiv 2405.05904, appendix, Tables 3-5: train, test, OOD
# test). The paper gives no dev total. Its per-relation counts are not copied here; only the totals are checked.
PAPER_TOTALS = {"train": 81_700, "test": 10_481, "ood_test": 5_848}

# The public zip linked from the princeton-nlp/EntityQuestions README.
DATASET_URL = "https://nlp.cs.princeton.edu/projects/entity-questions/dataset.zip"
# Its sha256. Unknown: this code was written without network access, and the zip's blob is missing from the
# stored repository history (SOURCE.md), so no hash could be computed. Until someone records one, `data fetch`
# prints the hash it computed and says plainly that it did not verify it. To record it: download the zip once
# from a trusted network, check the unpacked files against the release (e.g. `data stats` reports
# "matches_paper": true), then set this to the output of `sha256sum dataset.zip`.
DATASET_SHA256: str | None = None
# relation_query_templates.json of princeton-nlp/EntityQuestions (HEAD e55d221, MIT). The zip may hold only
# dataset/; `data fetch` writes this copy beside it when the zip has none.
RELEASE_TEMPLATES = {
    "P17": "Which country is [X] located in?", "P19": "Where was [X] born?", "P20": "Where did [X] die?",
    "P26": "Who is [X] married to?", "P30": "Which continent is [X] located?", "P36": "What is the capital of [X]?",
    "P40": "Who is [X]'s child?", "P50": "Who is the author of [X]?", "P69": "Where was [X] educated?",
    "P106": "What kind of work does [X] do?", "P112": "Who founded [X]?", "P127": "Who owns [X]?",
    "P131": "Where is [X] located?", "P136": "What type of music does [X] play?",
    "P159": "Where is the headquarter of [X]?", "P170": "Who was [X] created by?", "P175": "Who performed [X]?",
    "P176": "Which company is [X] produced by?", "P264": "What music label is [X] represented by?",
    "P276": "Where is [X] located?", "P407": "Which language was [X] written in?",
    "P413": "What position does [X] play?", "P495": "Which country was [X] created in?",
    "P740": "Where was [X] founded?", "P800": "What is [X] famous for?",
    "P19_similar": "What is the birthplace of [X]?", "P159_similar": "Where is [X] headquartered?",
    "P170_similar": "Who is the creator of [X]?",
}


def resolve_path(path: str | Path) -> Path:
    """Relative paths in component files are relative to the repository root, so they work from any cwd."""
    path = Path(path).expanduser()
    return path if path.is_absolute() else (REPO_ROOT / path).resolve()


def find_release_root(path: str | Path) -> Path:
    """The folder holding ``dataset/``: ``path`` itself, or its parent when ``path`` is the ``dataset/`` folder."""
    path = Path(path)
    if not (path / "dataset").is_dir() and path.name == "dataset" and (path / "train").is_dir():
        return path.parent
    return path


def template_pattern(template: str) -> re.Pattern:
    head, _, tail = template.partition("[X]")
    return re.compile(f"^{re.escape(head)}(.+?){re.escape(tail)}$")


def _read_json(path: Path):
    """A JSON file's value; a missing, unreadable, non-UTF-8 or invalid file is one line naming it."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise BenchmarkError(f"{path}: file not found (expected the ENTITYQUESTIONS release layout)") from exc
    except UnicodeDecodeError as exc:
        raise BenchmarkError(f"{path}: byte {exc.start}: not UTF-8 text (the release is UTF-8 JSON)") from exc
    except json.JSONDecodeError as exc:
        raise BenchmarkError(f"{path}: not valid JSON: {exc}") from exc
    except (OSError, RecursionError) as exc:
        raise BenchmarkError(f"{path}: cannot read: {getattr(exc, 'strerror', None) or exc}") from exc


def read_split_file(path: Path) -> list[dict]:
    """The records of one split file; every record is checked: a question that is a non-empty string, answers a
    non-empty list of non-empty strings (a null, a number or "" would become a gold answer no model can give)."""
    records = _read_json(path)
    expected = 'expected a JSON array of {"question": str, "answers": [str, ...]}'
    if not isinstance(records, list):
        raise BenchmarkError(f"{path}: {expected}, found {type(records).__name__}")
    for index, record in enumerate(records):
        where = f"{path}: record {index}"
        if not isinstance(record, dict):
            raise BenchmarkError(f"{where}: {expected}, found {type(record).__name__}")
        question, answers = record.get("question"), record.get("answers")
        if not isinstance(question, str) or not question.strip():
            raise BenchmarkError(f"{where}: question: expected a non-empty string, found {_shown(question)}")
        if not isinstance(answers, list) or not answers:
            raise BenchmarkError(f"{where}: answers: expected a non-empty list of strings, found {_shown(answers)}")
        for at, answer in enumerate(answers):
            if not isinstance(answer, str) or not answer.strip():
                raise BenchmarkError(f"{where}: answers[{at}]: expected a non-empty string, found {_shown(answer)}")
    return records


def _shown(value) -> str:
    text = json.dumps(value, ensure_ascii=False)
    return text if len(text) <= 40 else text[:37] + "..."


def read_templates(root: Path) -> dict[str, str]:
    templates_file = root / "relation_query_templates.json"
    templates = _read_json(templates_file)
    if not isinstance(templates, dict):
        raise BenchmarkError(f'{templates_file}: expected a JSON object {{"P19": "Where was [X] born?", ...}}')
    return templates


@dataclass
class ReleaseFile:
    """One file of the release after preprocessing: its kept rows and the count after each step."""

    relation: str
    split: str
    ood: bool
    path: Path
    subject_only: bool = False  # a test file read only for the subject check (step 2)
    raw: int = 0
    after_multi_answer: int = 0
    after_overlap: int = 0
    after_template: int = 0
    final: int = 0
    mismatched: list[str] = field(default_factory=list)  # every question of the file that misses its template
    empty_answers: list[str] = field(default_factory=list)  # questions dropped because their answer normalises to ""
    rows: list[dict] = field(default_factory=list)


def _parse(path: Path, relation: str, templates: dict[str, str], templates_file: Path) -> list[tuple[dict, str | None]]:
    if relation not in templates:
        raise BenchmarkError(f"{templates_file}: no template for relation '{relation}'")
    template = templates[relation]
    if not isinstance(template, str) or template.count("[X]") != 1:
        raise BenchmarkError(f"{templates_file}: {relation}: expected a question with one [X] where the subject "
                             f"goes, e.g. \"Where was [X] born?\", found {_shown(template)}")
    pattern = template_pattern(template)
    parsed = []
    for record in read_split_file(path):
        match = pattern.match(record["question"])
        parsed.append((record, match.group(1) if match else None))
    return parsed


def ood_dev_file(root: Path, relation: str) -> Path:
    """An OOD relation's dev file: the release ships one for every relation (the embedded world too). Its questions
    are only few-shot exemplars; they are never categorised, trained on or scored."""
    return root / "dataset" / "dev" / f"{relation}.dev.json"


def preprocess_release(
    root: Path, relations: list[str], ood_relations: list[str], drop_test_subjects_from_train: bool = True
) -> tuple[list[ReleaseFile], list[str]]:
    """Read ``relations`` (train/dev/test) and ``ood_relations`` (test, and dev where the folder has it: the pool
    SliCK draws their few-shot exemplars from) and apply the three steps (module doc).

    Returns one ``ReleaseFile`` per file read for questions, and the relations whose test files were read for
    the subject check (the ones above plus whichever of the 24 release relations have a test file here)."""
    templates_file = root / "relation_query_templates.json"
    templates = read_templates(root)
    plan = [(rel, split, False) for rel in relations for split in SPLITS] + [(rel, "test", True) for rel in ood_relations]
    plan += [(rel, "dev", True) for rel in ood_relations if ood_dev_file(root, rel).exists()]
    files: list[ReleaseFile] = []
    parsed: dict[tuple[str, str], list[tuple[dict, str | None]]] = {}
    for relation, split, ood in plan:
        path = root / "dataset" / split / f"{relation}.{split}.json"
        parsed[relation, split] = _parse(path, relation, templates, templates_file)
        if not parsed[relation, split]:
            raise BenchmarkError(f"{path}: the {split} split of {relation} is empty")
        files.append(ReleaseFile(relation, split, ood, path))
    # Test subjects of every relation of the release that is here, evaluated or not (only read for subjects).
    subject_only = [r for r in RELEASE_RELATIONS if (r, "test") not in parsed
                    and (root / "dataset" / "test" / f"{r}.test.json").exists()]
    for relation in subject_only:
        path = root / "dataset" / "test" / f"{relation}.test.json"
        parsed[relation, "test"] = _parse(path, relation, templates, templates_file)
        files.append(ReleaseFile(relation, "test", False, path, subject_only=True))
    test_subjects = {subject for (_, split), items in parsed.items() if split == "test"
                     for _, subject in items if subject is not None}
    for file in files:
        items = parsed[file.relation, file.split]
        file.raw = len(items)
        file.mismatched = [record["question"] for record, subject in items if subject is None]
        if file.subject_only:
            continue
        for index, (record, subject) in enumerate(items):
            if len(record["answers"]) != 1:
                continue
            file.after_multi_answer += 1
            if drop_test_subjects_from_train and file.split == "train" and subject in test_subjects:
                continue
            file.after_overlap += 1
            if subject is None:
                continue
            file.after_template += 1
            if not normalize(str(record["answers"][0])):
                file.empty_answers.append(record["question"])
                continue
            file.final += 1
            file.rows.append({"qid": f"{file.split}/{file.relation}/{index}", "split": file.split,
                              "relation": file.relation, "question": record["question"],
                              "answer": str(record["answers"][0]), "subject": subject, "ood": file.ood})
    checked = list(dict.fromkeys([*relations, *ood_relations, *subject_only]))
    return files, checked


def warn_mismatches(files: list[ReleaseFile], templates: dict[str, str], stacklevel: int = 3) -> None:
    """One warning per file that has questions not matching its template, naming the file and the questions."""
    for file in files:
        for dropped, why in ((file.mismatched, f"do not match the template '{templates.get(file.relation)}' of "
                                               f"{file.relation}, so their subject cannot be recovered"),
                             (file.empty_answers, "have an answer that normalises to nothing (only punctuation "
                                                  "or an article), so no answer could match it")):
            if dropped:
                shown = ", ".join(repr(q) for q in dropped[:5])
                more = f" and {len(dropped) - 5} more" if len(dropped) > 5 else ""
                warnings.warn(f"{file.path}: {len(dropped)} question(s) {why}; dropped: {shown}{more}",
                              BenchmarkWarning, stacklevel=stacklevel)


def load_release(
    root: Path, relations: list[str], ood_relations: list[str], drop_test_subjects_from_train: bool = True
) -> tuple[pl.DataFrame, dict[str, int]]:
    """Read and preprocess a release-layout folder. Returns the question table and counts of what was dropped."""
    files, _ = preprocess_release(root, relations, ood_relations, drop_test_subjects_from_train)
    warn_mismatches(files, read_templates(root))
    read = [f for f in files if not f.subject_only]
    dropped = {"multi_answer": sum(f.raw - f.after_multi_answer for f in read),
               "test_subject_in_train": sum(f.after_multi_answer - f.after_overlap for f in read),
               "template_mismatch": sum(f.after_overlap - f.after_template for f in read),
               "empty_answer": sum(f.after_template - f.final for f in read)}
    table = pl.DataFrame([row for f in read for row in f.rows],
                         schema={"qid": pl.String, "split": pl.String, "relation": pl.String,
                                 "question": pl.String, "answer": pl.String, "subject": pl.String,
                                 "ood": pl.Boolean})
    return table.select(QUESTION_COLUMNS), dropped


def _full_release_problem(root: Path, files: list[ReleaseFile]) -> str | None:
    """Why this folder is not the full release (a missing file, a size that differs), or None when it is."""
    sizes = {(f.relation, f.split): f.raw for f in files}
    expected = [(r, s) for r in IN_DISTRIBUTION for s in SPLITS] + [(r, "test") for r in OUT_OF_DISTRIBUTION + EXCLUDED]
    for relation, split in expected:
        if (relation, split) not in sizes:
            return f"{root / 'dataset' / split / f'{relation}.{split}.json'} is missing"
        size = RELEASE_SIZES[relation][SPLITS.index(split)]
        if sizes[relation, split] != size:
            return f"{relation}.{split}.json has {sizes[relation, split]} records; the release has {size}"
    return None


def release_stats(path: str | Path, relations: list[str] | None = None,
                  ood_relations: list[str] | None = None) -> dict:
    """Counts after each preprocessing step, per split and relation, for a release-layout folder.

    ``{"train": {"total": n, "relations": {"P17": {"raw", "after_multi_answer", "after_overlap",
    "template_mismatch", "empty_answer", "final"}, ...}}, "dev": ..., "test": ..., "ood_test": ..., "ood_dev": ...}`` (``ood_dev``, the
    OOD relations' exemplar pools, only where the folder has their dev files) where ``total`` sums
    ``final``; ``after_overlap`` only for train (the only split that filter touches). Also ``full_release``
    and, only when the folder is the full release (every file there, every size as released),
    ``matches_paper``: whether the train/test/OOD-test totals equal the paper's (``PAPER_TOTALS``)."""
    root = find_release_root(Path(path))
    if not (root / "dataset").is_dir():
        raise BenchmarkError(f"{root}: no dataset/ folder here (expected the ENTITYQUESTIONS release layout: "
                             "dataset/{train,dev,test}/P<id>.<split>.json and relation_query_templates.json)")
    relations = IN_DISTRIBUTION if relations is None else relations
    ood_relations = OUT_OF_DISTRIBUTION if ood_relations is None else ood_relations
    files, checked = preprocess_release(root, relations, ood_relations)
    warn_mismatches(files, read_templates(root))
    document: dict = {"path": str(root)}
    has_ood_dev = any(f.ood and f.split == "dev" for f in files)
    sections = ("train", "dev", "test", "ood_test") + (("ood_dev",) if has_ood_dev else ())
    for section in sections:
        chosen = [f for f in files if not f.subject_only
                  and ((f.ood and f.split == section.removeprefix("ood_")) if section.startswith("ood_")
                       else f.split == section and not f.ood)]
        per_relation = {}
        for f in chosen:
            counts = {"raw": f.raw, "after_multi_answer": f.after_multi_answer}
            if section == "train":
                counts["after_overlap"] = f.after_overlap
            counts["template_mismatch"] = ((f.after_overlap if section == "train" else f.after_multi_answer)
                                           - f.after_template)
            counts["empty_answer"] = f.after_template - f.final
            counts["final"] = f.final
            per_relation[f.relation] = counts
        document[section] = {"total": sum(c["final"] for c in per_relation.values()), "relations": per_relation}
    document["subject_check_relations"] = checked
    document["template_mismatches"] = [{"file": str(f.path.relative_to(root)), "question": q}
                                       for f in files for q in f.mismatched]
    problem = _full_release_problem(root, files)
    document["full_release"] = problem is None
    if problem is None:
        document["paper_totals"] = dict(PAPER_TOTALS)
        document["matches_paper"] = all(document[k]["total"] == v for k, v in PAPER_TOTALS.items())
    else:
        document["full_release_note"] = f"not the full release ({problem}), so not compared with the paper"
    return document


# -- download (only ever on an explicit `python -m benchmark data fetch entityquestions`) ------------------------
def default_fetch_dest() -> Path:
    return cache_root() / "data" / "entityquestions"


def _display(path: Path) -> str:
    """How to write ``path`` in a component file (relative to the repository root when it is inside it)."""
    path = path.resolve()
    return str(path.relative_to(REPO_ROOT)) if path.is_relative_to(REPO_ROOT) else str(path)


def _by_hand(dest: Path) -> str:
    return (f"put the release there by hand: {dest}/dataset/{{train,dev,test}}/P<id>.<split>.json and "
            f"{dest}/relation_query_templates.json (unzip dataset.zip from the princeton-nlp/EntityQuestions "
            "README; the templates file is in that repository)")


def _is_release_folder(folder: Path) -> bool:
    """A folder ``data fetch`` may replace: it holds the release layout and nothing else."""
    names = {p.name for p in folder.iterdir()}
    return "dataset" in names and names <= {"dataset", "relation_query_templates.json"}


def unpack_release(zip_path: Path, dest: Path, expected_sha256: str | None = DATASET_SHA256) -> dict:
    """Check ``zip_path``'s sha256 and unpack it into ``dest`` in the release layout, atomically (temp + rename).

    Returns ``{"path", "sha256", "verified", "templates"}``; raises on a hash mismatch or a zip that does not
    hold the layout, leaving ``dest`` as it was."""
    sha256 = sha256_file(zip_path)
    if expected_sha256 is not None and sha256 != expected_sha256.lower():
        raise BenchmarkError(f"{zip_path}: sha256 {sha256} differs from the expected {expected_sha256}; "
                             "not unpacked (a changed or truncated download)")
    try:
        templates = _unpack(zip_path, dest)
    except OSError as exc:
        if not no_space(exc):
            raise
        raise BenchmarkError(f"{dest.parent}: no space left on the device while unpacking {zip_path} (the release "
                             f"takes about 0.2 GB); nothing was written to {dest}: free some space and run it again") \
            from exc
    return {"path": _display(dest), "sha256": sha256, "verified": expected_sha256 is not None, "templates": templates}


def _unpack(zip_path: Path, dest: Path) -> str:
    # Exactly the release layout (the zip's sha256 was checked). It replaces a folder that holds a release and
    # nothing else (--force); any other folder is refused, never emptied (atomic_dir).
    with atomic_dir(dest, checksums=False, replaces=_is_release_folder) as tmp:
        unzipped = tmp / "_unzipped"
        extract(zip_path, unzipped)
        anchors = sorted(p for p in unzipped.rglob(f"{IN_DISTRIBUTION[0]}.train.json") if p.parent.name == "train")
        if not anchors:
            raise BenchmarkError(f"{zip_path}: no train/{IN_DISTRIBUTION[0]}.train.json inside; "
                                 "not the ENTITYQUESTIONS release layout")
        os.replace(anchors[0].parent.parent, tmp / "dataset")
        found = sorted(unzipped.rglob("relation_query_templates.json"))
        if found:
            os.replace(found[0], tmp / "relation_query_templates.json")
            templates = "from the zip"
        else:
            (tmp / "relation_query_templates.json").write_text(json.dumps(RELEASE_TEMPLATES, indent=4))
            templates = "the zip has none: wrote the release's copy kept in components/entityquestions.py"
        shutil.rmtree(unzipped)
        wanted = [tmp / "dataset" / s / f"{r}.{s}.json" for r in IN_DISTRIBUTION for s in SPLITS]
        wanted += [tmp / "dataset" / "test" / f"{r}.test.json" for r in OUT_OF_DISTRIBUTION]
        missing = [p.relative_to(tmp) for p in wanted if not p.exists()]
        if missing:
            raise BenchmarkError(f"{zip_path}: {missing[0]} is not in the zip ({len(missing)} release files missing)")
    return templates


def fetch_release(dest: str | Path | None = None, url: str = DATASET_URL, expected_sha256: str | None = DATASET_SHA256,
                  timeout: float = CONNECT_TIMEOUT_S, force: bool = False) -> dict:
    """Download the release zip from ``url`` and unpack it under ``dest`` (default ``$SLICK_BENCH_CACHE/data/
    entityquestions``). Returns what to write as ``path:`` in a component file, and the zip's sha256."""
    dest = Path(dest).expanduser().resolve() if dest is not None else default_fetch_dest()
    document = {"url": url, "dest": str(dest), "expected_sha256": expected_sha256}
    if not force and (dest / "dataset" / "train").is_dir():
        return {**document, "path": _display(dest), "downloaded": False,
                "note": "already there; nothing downloaded (--force downloads again)"}
    if dest.is_dir() and any(dest.iterdir()) and not _is_release_folder(dest):  # refused before any download
        shown = sorted(p.name for p in dest.iterdir())[0]
        raise BenchmarkError(f"--dest {dest}: the folder holds files that are not the release (e.g. '{shown}'); "
                             "data fetch never replaces them: choose an empty or new folder")
    handle, part = tempfile.mkstemp(prefix=f"{dest.name}-", suffix=".zip.part")  # nothing under dest until unpacked
    try:
        with os.fdopen(handle, "wb") as out:
            download(url, out, part, timeout, _by_hand(dest))
        document |= unpack_release(Path(part), dest, expected_sha256)
    finally:
        Path(part).unlink(missing_ok=True)
    if document["verified"]:
        document["note"] = "sha256 verified"
    else:
        document["note"] = (f"sha256 {document['sha256']} NOT verified: no expected hash is recorded "
                            "(DATASET_SHA256 in components/entityquestions.py); compare it with one you trust")
    return {**document, "downloaded": True}


class EntityQuestions(KnowledgeSource):
    """ENTITYQUESTIONS (or any folder in its release layout)."""

    class Spec(ComponentSpec):
        path: str = Field(description="folder holding dataset/ and relation_query_templates.json; relative to the repo root")
        relations: list[str] = Field(default_factory=lambda: list(IN_DISTRIBUTION), description="train/dev/test relations")
        ood_relations: list[str] = Field(default_factory=lambda: list(OUT_OF_DISTRIBUTION), description="test-only relations")
        guessable_relations: list[str] = Field(default_factory=list, description="relations with a small answer space")

    @property
    def root(self) -> Path:
        root = find_release_root(resolve_path(self.spec.path))
        if not root.is_dir():
            raise BenchmarkError(f"{self.file}: path: '{self.spec.path}' is not a folder ({root}); "
                                 "`python -m benchmark data fetch entityquestions` downloads the release")
        return root

    def files(self) -> list[Path]:
        """Every file the questions depend on, including the test files read only for the subject check."""
        root = self.root
        files = [root / "relation_query_templates.json"]
        files += [root / "dataset" / s / f"{r}.{s}.json" for r in self.spec.relations for s in SPLITS]
        files += [root / "dataset" / "test" / f"{r}.test.json" for r in self.spec.ood_relations]
        missing = [f for f in files if not f.exists()]
        files += [f for r in self.spec.ood_relations if (f := ood_dev_file(root, r)).exists()]  # exemplar pools
        if missing:
            raise BenchmarkError(f"{missing[0]}: file not found ({len(missing)} missing in {root})")
        subject_only = [root / "dataset" / "test" / f"{r}.test.json" for r in RELEASE_RELATIONS]
        return files + [f for f in subject_only if f not in files and f.exists()]

    def identity(self) -> str:
        return f"{self.spec.family}:{files_digest(self.files())}"

    def questions(self) -> pl.DataFrame:
        table, self.dropped = load_release(self.root, self.spec.relations, self.spec.ood_relations)
        return table

    def guessable_relations(self) -> list[str]:
        return list(self.spec.guessable_relations)
