"""Question/answer files as a knowledge source (``family: qa``): SliCK on a team's own data.

One file holds every question: JSONL (one JSON object a line), CSV (a header line), Parquet, or a folder written
by Hugging Face ``datasets``' ``save_to_disk`` (format ``hf``, only where the optional ``datasets`` package is
installed). A component file (``components/datasets/<name>.yaml``, ``family: qa``) or the command line
(``python -m benchmark categorize --source FILE``, every key at its default) names it. Its columns:

    question   asked as it is, after SliCK's few-shot exemplars (docs/method.md §1)
    answers    one string, or a list (JSONL and Parquet: a list; CSV: a JSON array in the cell, ["Paris"])
    relation   optional; SliCK draws each relation's exemplars from its dev rows. Without it every row is one
               group, named ``group`` (default ``all``)
    split      optional: train, dev or test. Without it each relation is split at random, seeded (``split_sizes``:
               by default 10% dev and 10% test, each at least one row where its share is above 0; the rest train)

``answers_are: distinct`` (the default) drops a row with more than one answer, as ENTITYQUESTIONS does (its
count is in ``dropped``). ``aliases``: a row's answers are names of one answer, and any one is right. The question
table then has an ``aliases`` column (every answer, the first one first) beside ``answer`` (the first, which
fine-tuning trains on); SliCK's greedy and sampled verdicts, its answer-length limits and the evaluation of the
fine-tuned model all match against every alias (``benchmark.answers.golds``). SliCK's ``estimator: exact``
scores one answer's tokens, so it is refused for such a table; P(True) asks about the first alias.

Every problem is one ``BenchmarkError`` line naming the file, the row and the column: a missing column, an empty
question or answer (also one that normalises to nothing, e.g. "The"), a question asked twice in one relation
(``duplicates: keep`` allows it: ENTITYQUESTIONS has a few, the same question about two places with one name), a
split other than train/dev/test, text that is not UTF-8. Rows are numbered as errors and outputs name them: a
JSONL row by its line, a CSV, Parquet or ``hf`` row by its place after the header, from 1. Too few dev rows for
SliCK's exemplars is checked against the SliCK settings (``check_slick``), before any model loads.

The question table (``components.base.QUESTION_COLUMNS``): qid ``<split>/<relation>/<i>``, where i counts the
file's rows of that relation and split in file order, rows dropped for several answers included: the numbering
ENTITYQUESTIONS gives, one file per relation and split, so a release written as one file keeps its qids (SliCK's
sample noise is keyed by them) and its categories, question by question. No subject; ``ood`` is false.

Identity: a hash of that table, so the cache key changes whenever a question, answer, relation, split or row
order changes, whatever the file format: the same questions as JSONL, CSV or Parquet share one SliCK table.
"""

from __future__ import annotations

import io
import json
import math
import os
import random
from pathlib import Path
from typing import Literal

import polars as pl
from pydantic import BaseModel, ConfigDict, Field, field_validator

from benchmark.answers import ALIASES, normalize
from benchmark.errors import BenchmarkError
from benchmark.hashing import content_key
from components.base import QUESTION_COLUMNS, ComponentSpec, KnowledgeSource
from components.entityquestions import SPLITS, resolve_path

EXTENSIONS = {".jsonl": "jsonl", ".ndjson": "jsonl", ".csv": "csv", ".parquet": "parquet", ".pq": "parquet"}
HF_SPLITS = {"train": "train", "validation": "dev", "dev": "dev", "test": "test"}  # DatasetDict keys
SCHEMA = {"qid": pl.String, "split": pl.String, "relation": pl.String, "question": pl.String, "answer": pl.String,
          "subject": pl.String, "ood": pl.Boolean}
ROWS_SCHEMA = {"qid": pl.String, "row": pl.Int64}


class Columns(BaseModel):
    """Which column holds what (``columns:``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    question: str = Field("question", description="column of the questions")
    answers: str | None = Field(None, description="column of the answers, one string or a list per row; default "
                                "'answers', or 'answer' where the file has only that")
    relation: str | None = Field(None, description="column grouping the questions (SliCK's exemplars come from "
                                 "the same relation); default 'relation' where the file has one, else one group")
    split: str | None = Field(None, description="column saying train, dev or test; default 'split' where the file "
                              "has one, else a seeded split (split_sizes)")


class SplitSizes(BaseModel):
    """Per relation, when the file has no split column: a whole number is rows, a number below 1 a share (rounded,
    at least one row where it is above 0). The rest is train."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    dev: int | float = Field(0.1, ge=0, description="dev rows per relation (SliCK's exemplars come from these)")
    test: int | float = Field(0.1, ge=0, description="test rows per relation")

    @field_validator("dev", "test")
    @classmethod
    def _share_below_one(cls, value: int | float) -> int | float:
        if isinstance(value, float) and value >= 1:
            raise ValueError("a share must be below 1 (a whole number, e.g. 8, is a count of rows)")
        return value

    def count(self, split: str, rows: int) -> int:
        size = getattr(self, split)
        if isinstance(size, int):
            return size
        return max(1, math.floor(size * rows + 0.5)) if size > 0 else 0


class QASource(KnowledgeSource):
    """A question/answer file (module doc)."""

    class Spec(ComponentSpec):
        path: str = Field(description="the file (JSONL, CSV, Parquet) or a datasets save_to_disk folder; relative "
                          "to the repository root in a component file")
        format: Literal["auto", "jsonl", "csv", "parquet", "hf"] = Field(
            "auto", description="auto: from the extension (.jsonl/.ndjson, .csv, .parquet/.pq; a folder is hf)")
        columns: Columns = Field(default_factory=Columns, description="column names (question, answers, relation, "
                                 "split)")
        answers_are: Literal["distinct", "aliases"] = Field(
            "distinct", description="distinct: a row with several answers is dropped (ENTITYQUESTIONS' rule); "
            "aliases: they name one answer, and any one is right (fine-tuning trains on the first)")
        split_sizes: SplitSizes = Field(default_factory=SplitSizes, description="the seeded split, per relation, "
                                        "where the file has no split column")
        seed: int = Field(0, description="seed of that split")
        group: str = Field("all", min_length=1, description="the one relation's name when there is no relation "
                           "column")
        duplicates: Literal["error", "keep"] = Field(
            "error", description="a question asked twice in one relation: error, or keep both")

    path_may_be_file = True  # the registry's path check: a file (or a datasets folder), not a release folder
    _table: pl.DataFrame | None = None
    _rows: pl.DataFrame | None = None
    _identity: str | None = None
    _used: dict[str, str | None]  # the columns read: question, answers, relation and split (None: absent)
    dropped: dict[str, int]

    @classmethod
    def from_file(cls, path: str | Path, **keys) -> QASource:
        """A source for a file named on the command line (relative to the working directory), keys at their
        defaults unless given."""
        resolved = Path(path).expanduser().resolve()
        spec = cls.Spec(family="qa", description=f"question/answer file {path}", path=str(resolved), **keys)
        return cls(resolved.stem if resolved.is_file() else resolved.name, spec, resolved)

    # -- where and what ------------------------------------------------------------------------------------------
    @property
    def data_path(self) -> Path:
        return resolve_path(self.spec.path)

    @property
    def shown(self) -> str:
        """The file as messages name it: relative to the working directory where it is below it."""
        path = self.data_path
        return os.path.relpath(path) if path.is_relative_to(Path.cwd()) else str(path)

    @property
    def format(self) -> str:
        if self.spec.format != "auto":
            return self.spec.format
        path = self.data_path
        if path.is_dir():
            return "hf"
        if path.suffix.lower() in EXTENSIONS:
            return EXTENSIONS[path.suffix.lower()]
        raise BenchmarkError(f"{self.shown}: cannot tell the format from the extension '{path.suffix}' (expected "
                             f"{', '.join(EXTENSIONS)}, or a datasets folder); set format: jsonl, csv, parquet or hf")

    def identity(self) -> str:
        if self._identity is None:
            table = self.questions().select("qid", "split", "relation", "question", "answer",
                                            *([ALIASES] if ALIASES in self.questions().columns else []))
            self._identity = f"qa:{content_key('qa-questions', table.rows())}"
        return self._identity

    def questions(self) -> pl.DataFrame:
        if self._table is None:
            self._table, self._rows, self.dropped = self._load()
        return self._table

    def rows(self) -> pl.DataFrame:
        """qid → the input row it came from (``row``, numbered as the module doc says)."""
        self.questions()
        return self._rows

    # -- reading ---------------------------------------------------------------------------------------------------
    def _utf8(self, path: Path) -> bytes:
        try:
            data = path.read_bytes()
        except FileNotFoundError as exc:
            raise BenchmarkError(f"{self.shown}: file not found") from exc
        except OSError as exc:
            raise BenchmarkError(f"{self.shown}: cannot read: {exc.strerror or exc}") from exc
        try:
            data.decode("utf-8")
        except UnicodeDecodeError as exc:
            line = data[:exc.start].count(b"\n") + 1
            raise BenchmarkError(f"{self.shown}: line {line}: not UTF-8 text (byte 0x{data[exc.start]:02x} at "
                                 f"offset {exc.start}); save the file as UTF-8") from exc
        return data.removeprefix(b"\xef\xbb\xbf")  # a BOM would become part of the first column's name

    def _read(self) -> tuple[list[tuple[int, dict]], list[str]]:
        """(row number, record) per row, and the column names in file order."""
        fmt, path = self.format, self.data_path
        if fmt == "jsonl":
            records, columns = [], {}
            for number, line in enumerate(self._utf8(path).decode("utf-8").split("\n"), 1):
                if not line.strip():
                    continue
                try:
                    record = json.loads(line)
                except json.JSONDecodeError as exc:
                    raise BenchmarkError(f"{self.shown}: row {number}: not valid JSON ({exc.msg}, column "
                                         f"{exc.colno}); expected one JSON object a line") from exc
                if not isinstance(record, dict):
                    raise BenchmarkError(f"{self.shown}: row {number}: expected a JSON object "
                                         f'{{"question": ..., "answers": ...}}, found {type(record).__name__}')
                columns.update(dict.fromkeys(record))
                records.append((number, record))
            return records, list(columns)
        frame = self._frame()
        return list(enumerate(frame.to_dicts(), 1)), frame.columns

    def _frame(self) -> pl.DataFrame:
        """The whole file as a table (CSV: every cell as text), for the tabular formats."""
        fmt, path = self.format, self.data_path
        if fmt == "hf":
            return self._hf_frame()
        if not path.is_file():
            raise BenchmarkError(f"{self.shown}: file not found" if not path.exists() else
                                 f"{self.shown}: is a folder; expected a {fmt} file (format: hf reads a datasets "
                                 "folder)")
        try:
            if fmt == "csv":
                return pl.read_csv(io.BytesIO(self._utf8(path)), infer_schema=False)
            return pl.read_parquet(path)
        except (pl.exceptions.PolarsError, OSError) as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise BenchmarkError(f"{self.shown}: not a readable {fmt} file: {first}") from exc

    def _hf_dataset(self):
        try:
            import datasets
        except ImportError as exc:
            raise BenchmarkError(f"{self.shown}: reading a Hugging Face datasets folder needs the optional package "
                                 "'datasets' (pip install datasets), or save it as Parquet "
                                 "(Dataset.to_parquet) and name that file") from exc
        try:
            return datasets.load_from_disk(str(self.data_path))
        except (FileNotFoundError, ValueError, OSError) as exc:
            raise BenchmarkError(f"{self.shown}: not a datasets save_to_disk folder: {exc}") from exc

    def _hf_frame(self) -> pl.DataFrame:
        loaded = self._hf_dataset()
        if hasattr(loaded, "keys"):  # a DatasetDict: its keys are the splits, one after another
            unknown = [k for k in loaded if k not in HF_SPLITS]
            if unknown:
                raise BenchmarkError(f"{self.shown}: split '{unknown[0]}' is not one of {', '.join(HF_SPLITS)}")
            return pl.concat([pl.from_arrow(loaded[k].with_format("arrow")[:]).with_columns(split=pl.lit(HF_SPLITS[k]))
                              for k in loaded], how="diagonal_relaxed")
        return pl.from_arrow(loaded.with_format("arrow")[:])

    def _columns(self, present: list[str]) -> dict[str, str | None]:
        wanted = self.spec.columns

        def need(key: str, name: str) -> str:
            if name not in present:
                raise BenchmarkError(f"{self.shown}: column '{name}' is missing (columns.{key}; the file has: "
                                     f"{', '.join(present) or 'no columns'})")
            return name

        answers = wanted.answers or ("answer" if "answer" in present and "answers" not in present else "answers")
        return {"question": need("question", wanted.question), "answers": need("answers", answers),
                "relation": need("relation", wanted.relation) if wanted.relation else
                ("relation" if "relation" in present else None),
                "split": need("split", wanted.split) if wanted.split else ("split" if "split" in present else None)}

    def _load(self) -> tuple[pl.DataFrame, pl.DataFrame, dict[str, int]]:
        records, present = self._read()
        if not records:
            raise BenchmarkError(f"{self.shown}: no rows")
        cols = self._used = self._columns(present)
        kept: list[tuple[int, str, str, list[str], str | None]] = []  # (row, relation, question, answers, split)
        index: dict[tuple[str, str], int] = {}  # (split, relation) -> rows so far, dropped ones included
        numbered: dict[int, int] = {}  # row -> its index within (split, relation), where the file has splits
        seen: dict[tuple[str, str], int] = {}
        multi = 0
        for number, record in records:
            at = f"{self.shown}: row {number}, column"
            question = self._text(record.get(cols["question"]), f"{at} '{cols['question']}'", "question")
            relation = (self.spec.group if cols["relation"] is None else
                        self._text(record.get(cols["relation"]), f"{at} '{cols['relation']}'", "relation"))
            split = None
            if cols["split"] is not None:
                split = record.get(cols["split"])
                if split is None or split == "":
                    raise BenchmarkError(f"{at} '{cols['split']}': empty split (expected {', '.join(SPLITS)})")
                if split not in SPLITS:
                    raise BenchmarkError(f"{at} '{cols['split']}': {split!r} is not one of {', '.join(SPLITS)}")
                numbered[number] = index.get((split, relation), 0)
                index[split, relation] = numbered[number] + 1
            answers = self._answers(record.get(cols["answers"]), f"{at} '{cols['answers']}'")
            if len(answers) > 1 and self.spec.answers_are == "distinct":
                multi += 1
                continue
            for answer in answers:
                if not normalize(answer):
                    what = "empty answer" if not answer.strip() else (f"the answer {answer!r} is empty once "
                                                                       "normalised (only punctuation or articles), "
                                                                       "so no prediction could match it")
                    raise BenchmarkError(f"{at} '{cols['answers']}': {what}")
            key = (relation, question.strip())
            if key in seen and self.spec.duplicates == "error":
                group = f" in relation '{relation}'" if cols["relation"] is not None else ""
                raise BenchmarkError(f"{at} '{cols['question']}': {question!r} is a duplicate of row {seen[key]}"
                                     f"{group}; give each question once, or set duplicates: keep")
            seen.setdefault(key, number)
            kept.append((number, relation, question, answers, split))
        if not kept:
            raise BenchmarkError(f"{self.shown}: every row has more than one answer (column '{cols['answers']}'); "
                                 "answers_are: distinct drops those, so nothing is left")
        if cols["split"] is None:
            splits = self._seeded_split(kept)
            for number, relation, *_ in kept:  # numbered within each drawn split, in file order
                numbered[number] = index.get((splits[number], relation), 0)
                index[splits[number], relation] = numbered[number] + 1
        else:
            splits = {number: split for number, _, _, _, split in kept}
        aliases = self.spec.answers_are == "aliases"
        rows = [{"qid": f"{splits[n]}/{r}/{numbered[n]}", "split": splits[n], "relation": r, "question": q,
                 "answer": a[0], "subject": None, "ood": False, **({ALIASES: a} if aliases else {})}
                for n, r, q, a, _ in kept]
        table = pl.DataFrame(rows, schema=SCHEMA | ({ALIASES: pl.List(pl.String)} if aliases else {}))
        table = table.select(*QUESTION_COLUMNS, *([ALIASES] if aliases else []))
        mapping = pl.DataFrame({"qid": table["qid"], "row": [n for n, *_ in kept]}, schema=ROWS_SCHEMA)
        return table, mapping, {"multi_answer": multi}

    def _seeded_split(self, kept: list[tuple]) -> dict[int, str]:
        by_relation: dict[str, list[int]] = {}
        for number, relation, *_ in kept:
            by_relation.setdefault(relation, []).append(number)
        splits = {}
        for relation, numbers in by_relation.items():
            sizes = {s: self.spec.split_sizes.count(s, len(numbers)) for s in ("dev", "test")}
            if sizes["dev"] + sizes["test"] > len(numbers):
                raise BenchmarkError(f"{self.shown}: relation '{relation}' has {len(numbers)} row(s), fewer than "
                                     f"split_sizes asks for ({sizes['dev']} dev + {sizes['test']} test)")
            order = list(numbers)
            random.Random(content_key("qa-split", self.spec.seed, relation)).shuffle(order)
            for i, number in enumerate(order):
                splits[number] = "dev" if i < sizes["dev"] else "test" if i < sizes["dev"] + sizes["test"] else "train"
        return splits

    @staticmethod
    def _text(value: object, at: str, what: str) -> str:
        if isinstance(value, int) and not isinstance(value, bool) and what == "relation":
            value = str(value)  # relation ids stored as numbers
        if value is None or (isinstance(value, str) and not value.strip()):
            raise BenchmarkError(f"{at}: empty {what}")
        if not isinstance(value, str):
            raise BenchmarkError(f"{at}: expected text, found {type(value).__name__} {value!r}")
        return value

    def _answers(self, value: object, at: str) -> list[str]:
        if isinstance(value, str) and self.format == "csv" and value.strip().startswith("["):
            try:  # a CSV cell holds a list as a JSON array
                parsed = json.loads(value)
            except json.JSONDecodeError:
                parsed = value
            value = parsed
        if value is None:
            raise BenchmarkError(f"{at}: empty answer (no value)")
        if isinstance(value, str | int) and not isinstance(value, bool):
            value = [value]
        if not isinstance(value, list | tuple) or not all(isinstance(v, str | int) and not isinstance(v, bool)
                                                          for v in value):
            raise BenchmarkError(f"{at}: expected an answer, or a list of answers, found "
                                 f"{type(value).__name__} {value!r}"[:200])
        if not value:
            raise BenchmarkError(f"{at}: empty answer (an empty list)")
        return [str(v) for v in value]

    # -- SliCK's needs ------------------------------------------------------------------------------------------
    def check_slick(self, config) -> None:
        """What SliCK (``benchmark.slick.build_prompts``) would refuse, named by file, column and relation: each
        relation needs ``k_shot`` + 1 dev rows (its exemplars, and one to stand in when a question is itself one
        of them; the ``n_prompts`` prompts are drawn from them independently, so they may share exemplars) and
        rows in every split it categorises."""
        table = self.questions()
        column = self._used["split"]
        where = f"column '{column}'" if column else "split_sizes.dev"
        for relation in table["relation"].unique(maintain_order=True).to_list():
            counts = dict(table.filter(pl.col("relation") == relation).group_by("split").len().iter_rows())
            name = f"relation '{relation}'" if self._used["relation"] else "the file"
            needed = config.k_shot + 1
            if counts.get("dev", 0) < needed:
                more = (f"mark more rows dev in {where}" if column else
                        f"raise split_sizes.dev (a count of rows per relation, e.g. {needed + 1})")
                raise BenchmarkError(
                    f"{self.shown}: {where}: {name} has {counts.get('dev', 0)} dev row(s); SliCK needs at least "
                    f"k_shot + 1 = {needed} to draw its {config.n_prompts} prompts of {config.k_shot} exemplars "
                    f"from (one stands in when a question is itself an exemplar): {more}, or lower "
                    "slick.k_shot (--set slick.k_shot=N)")
            for split in config.splits:
                if not counts.get(split):
                    raise BenchmarkError(f"{self.shown}: {where}: {name} has no {split} rows; SliCK categorises "
                                         f"{', '.join(config.splits)} (--set slick.splits=[...] chooses)")

    # -- writing -----------------------------------------------------------------------------------------------
    def write_rows(self, rows: set[int], out: Path) -> Path:
        """The input's rows numbered ``rows``, in its own format and columns, as ``out/<name>.filtered<ext>``: a
        file this family reads again (the same columns, answers as they were written)."""
        fmt, path = self.format, self.data_path
        target = out / (f"{path.name}.filtered" if fmt == "hf" else f"{path.stem}.filtered{path.suffix}")
        if fmt == "jsonl":
            lines = self._utf8(path).decode("utf-8").split("\n")
            target.write_text("".join(f"{line.rstrip(chr(13))}\n" for n, line in enumerate(lines, 1) if n in rows),
                              encoding="utf-8")
        elif fmt == "hf":
            loaded, start = self._hf_dataset(), 0
            if hasattr(loaded, "keys"):
                picked = {}
                for key in loaded:
                    picked[key] = loaded[key].select([i for i in range(len(loaded[key])) if start + i + 1 in rows])
                    start += len(loaded[key])
                loaded = type(loaded)(picked)
            else:
                loaded = loaded.select([i for i in range(len(loaded)) if i + 1 in rows])
            loaded.save_to_disk(str(target))
        else:
            frame = self._frame().with_row_index("__row", offset=1)
            frame = frame.filter(pl.col("__row").is_in(sorted(rows))).drop("__row")
            frame.write_csv(target) if fmt == "csv" else frame.write_parquet(target)
        return target


def table_as_jsonl(table: pl.DataFrame, target: Path) -> Path:
    """Questions of any source (qid, relation, split, question, answer) as a JSONL file a ``qa`` source reads:
    the filtered output of a source that is not a file of its own (ENTITYQUESTIONS, the world)."""
    with open(target, "w", encoding="utf-8") as handle:
        for r in table.select("question", "answer", "relation", "split").iter_rows(named=True):
            handle.write(json.dumps({"question": r["question"], "answers": [r["answer"]], "relation": r["relation"],
                                     "split": r["split"]}, ensure_ascii=False) + "\n")
    return target
