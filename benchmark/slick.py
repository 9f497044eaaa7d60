"""Categorise stage: SliCK (Gekhman et al. 2024, DESIGN.md §1.1) for every question of a knowledge source, cached.

For each relation, ``n_prompts`` (10) fixed ``k_shot`` (4)-shot prompts are drawn once, seeded, from that
relation's dev split; every question of the relation is asked with the same prompts. Per prompt: one greedy answer
and ``n_samples`` (16) samples at T = 0.5, top-k 40; an answer is the generated text up to the first newline, and is
correct when it equals the gold answer after normalisation (``benchmark.answers``). Then

    HighlyKnown   P_Correct(T=0) = 1
    MaybeKnown    0 < P_Correct(T=0) < 1
    WeaklyKnown   P_Correct(T=0) = 0 and P_Correct(T>0) > 0
    Unknown       P_Correct(T=0) = 0 and P_Correct(T>0) = 0

Only work that can change a category is done (unless ``exhaustive``): samples are drawn only for questions whose
greedy answers are all wrong, prompt by prompt, and a question stops sampling after the prompt that gave its first
correct sample (its other samples in flight are abandoned). Each sample's randomness depends only on (seed,
question, prompt, sample, step) (``benchmark.sampling``), so the category is exactly what the exhaustive
computation gives; ``p_correct_sampled`` is then filled in only where every sample was drawn (Unknown questions,
or all questions with ``exhaustive: true``), and is null elsewhere. ``generations`` counts greedy answers plus
samples drawn; the engine stops decoding a sample once its verdict is known, so most cost far less than a full
generation (see ``benchmark.sampling``).

``estimator: exact`` replaces generation by one teacher-forced pass per prompt on prompt + " gold" + newline: the
greedy verdict, and the chance q that one sample equals the gold answer (DESIGN.md §4). P_Correct(T>0) is then the
mean q, and a question whose greedy answers are all wrong is WeaklyKnown when the chance that any of its 160
samples would hit is at least one half (the sampled procedure's likelier outcome). It is token-exact, so it
covers the gold answer's own tokenisation and casing only; it sits beside the paper's estimator, not in its place.

Exemplars and the questions they come from: a dev question is never asked with a prompt that contains it. For such
a (question, prompt) pair the offending exemplar is swapped, in place, for another dev question of the relation
drawn with a seed of (seed, relation, prompt, question); the other exemplars and their order stay. OOD relations
have no dev split: with ``ood_exemplars: test`` their exemplars come from their own test split under the same rule
(OOD test questions are never trained on, and exemplars only steer the base model's answer format); with ``skip``
OOD questions are not categorised.

P(True) (DESIGN.md §1.4) is computed for every categorised question with one forward pass on
``p_true_prompt(question, gold)``: the next-token probability of " True" normalised over " True" and " False"
(first token of each). Where the tokenizer cannot tell the two apart (a word-level vocabulary without them) the
column is null.

The result table is cached as Parquet under ``stage_dir("slick", key)``; the key hashes the model identity, the
knowledge source identity, this configuration (batch size excepted: it does not change results), the seed and
the source of the code that computes it.
"""

from __future__ import annotations

import json
import random
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Protocol

import polars as pl
from pydantic import BaseModel, ConfigDict, Field, model_validator

from benchmark.answers import exact_match, normalize
from benchmark.cache import atomic_dir, code_key, content_key, stage_dir
from benchmark.errors import BenchmarkError
from benchmark.prompts import exemplar_block, p_true_prompt, question_block

# The code whose edits can change the table: its source is hashed into the cache key, so no stale table is reused.
CODE_MODULES = ("benchmark.slick", "benchmark.sampling", "benchmark.slick_reference", "benchmark.generation",
                "benchmark.prompts", "benchmark.answers")
CATEGORIES = ("HighlyKnown", "MaybeKnown", "WeaklyKnown", "Unknown")
KNOWN = ("HighlyKnown", "MaybeKnown", "WeaklyKnown")
EXPOSURE_BUCKETS = ((0, 0, "0"), (1, 2, "1-2"), (3, 4, "3-4"), (5, 8, "5-8"), (9, 16, "9-16"), (17, None, "17+"))
TABLE_FILE = "categories.parquet"
META_FILE = "meta.json"

Progress = Callable[[str, int, int], None]


class SliCKConfig(BaseModel):
    """The suite's ``slick:`` section. Defaults are the paper's (DESIGN.md §1.1)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    n_prompts: int = Field(10, ge=1, description="different few-shot prompts per relation (N_ex)")
    k_shot: int = Field(4, ge=1, description="exemplars per prompt, drawn from the relation's dev split")
    n_samples: int = Field(16, ge=1, description="temperature samples per prompt")
    temperature: float = Field(0.5, gt=0, description="sampling temperature for P_Correct(T>0)")
    top_k: int = Field(40, ge=0, description="sample among the k most likely tokens (0 = all)")
    max_new_tokens: int = Field(16, ge=1, description="longest answer generated; answers end at the first newline")
    exhaustive: bool = Field(False, description="draw every sample even where it cannot change the category, "
                                                "so p_correct_sampled is known for every question")
    backend: Literal["engine", "naive"] = Field(
        "engine", description="engine: batched, cached, early-exit generation; naive: one generate() call per "
                              "question and prompt (slow; the reference the engine is checked against)")
    estimator: Literal["sampled", "exact"] = Field(
        "sampled", description="sampled: the paper's, from generated answers and drawn samples; exact: one "
                               "teacher-forced pass per prompt gives the greedy verdict and the chance q that one "
                               "sample equals the gold answer (token-exact, a lower bound; engine backend only)")
    batch_size: Literal["auto"] | int = Field(
        "auto", description="rows per forward pass ('auto' picks by device); does not change results")
    splits: list[Literal["train", "dev", "test"]] = Field(
        default_factory=lambda: ["train", "dev", "test"], min_length=1, description="splits to categorise")
    ood_exemplars: Literal["test", "skip"] = Field(
        "test", description="OOD relations have no dev split: draw their exemplars from their own test split "
                            "(a question is never its own exemplar), or skip OOD questions")
    p_true: bool = Field(True, description="also compute the P(True) baseline score for every question")

    @model_validator(mode="after")
    def _exact_needs_the_engine(self) -> SliCKConfig:
        if self.estimator == "exact" and self.backend == "naive":
            raise ValueError("estimator 'exact' runs on the engine only; the naive backend is the sampled reference")
        return self

    def cache_fields(self) -> dict:
        return self.model_dump(exclude={"batch_size"})


# ---------------------------------------------------------------------------------------------------------------
# The category rule
# ---------------------------------------------------------------------------------------------------------------
def category(p_correct_greedy: float, any_sample_correct: bool) -> str:
    """DESIGN.md §1.1. Samples matter only when every greedy answer is wrong, and then only whether any is right."""
    if p_correct_greedy == 1:
        return "HighlyKnown"
    if p_correct_greedy > 0:
        return "MaybeKnown"
    return "WeaklyKnown" if any_sample_correct else "Unknown"


# ---------------------------------------------------------------------------------------------------------------
# Prompts
# ---------------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Exemplar:
    qid: str
    question: str
    answer: str


@dataclass
class RelationPrompts:
    """The fixed prompts of one relation: ``prompts[p]`` are its k exemplars; ``pool`` is where they came from."""

    relation: str
    pool: list[Exemplar]
    prompts: list[list[Exemplar]]
    seed: int

    def exemplars(self, p: int, qid: str, question: str) -> list[Exemplar]:
        """Prompt p's exemplars for this question: any exemplar that *is* the question is swapped for another."""
        chosen = self.prompts[p]
        clash = [i for i, e in enumerate(chosen) if _same_question(e, qid, question)]
        if not clash:
            return chosen
        taken = {e.qid for e in chosen}
        candidates = [e for e in self.pool if e.qid not in taken and not _same_question(e, qid, question)]
        rng = random.Random(content_key("slick-replacement", self.seed, self.relation, p, qid))
        replacements = rng.sample(candidates, len(clash))
        swapped = list(chosen)
        for i, replacement in zip(clash, replacements, strict=True):
            swapped[i] = replacement
        return swapped

    def prefix(self, p: int, qid: str, question: str) -> str:
        return exemplar_block([(e.question, e.answer) for e in self.exemplars(p, qid, question)])


def _same_question(e: Exemplar, qid: str, question: str) -> bool:
    return e.qid == qid or e.question.strip() == question.strip()


Locate = Callable[[str, str], str]


def build_prompts(questions: pl.DataFrame, config: SliCKConfig, seed: int,
                  locate: Locate | None = None) -> dict[str, RelationPrompts]:
    """Seeded prompts for every relation that has questions to categorise. Raises BenchmarkError on thin data."""
    locate = locate or (lambda relation, split: f"the {split} split of {relation}")
    todo = _to_categorise(questions, config)
    if todo.is_empty():
        raise BenchmarkError(f"nothing to categorise: no questions in split(s) {', '.join(config.splits)}")
    prompts = {}
    needed = config.k_shot + 1
    for relation in todo["relation"].unique(maintain_order=True).to_list():
        rows = questions.filter(pl.col("relation") == relation)
        ood = bool(rows["ood"].any())
        pool_split = "test" if ood else "dev"
        if not ood:
            for split in config.splits:
                if rows.filter(pl.col("split") == split).is_empty():
                    raise BenchmarkError(f"{locate(relation, split)}: relation {relation} has no {split} questions "
                                         "(after preprocessing); SliCK has nothing to categorise there")
        pool_rows = rows.filter(pl.col("split") == pool_split)
        pool = [Exemplar(r["qid"], r["question"], r["answer"]) for r in pool_rows.iter_rows(named=True)]
        if len(pool) < needed:
            raise BenchmarkError(
                f"{locate(relation, pool_split)}: relation {relation} has {len(pool)} {pool_split} question(s); "
                f"SliCK needs at least k_shot + 1 = {needed} (k exemplars, plus one to stand in when a question "
                "is itself an exemplar)")
        rng = random.Random(content_key("slick-exemplars", seed, relation))
        drawn = [[pool[i] for i in rng.sample(range(len(pool)), config.k_shot)] for _ in range(config.n_prompts)]
        prompts[relation] = RelationPrompts(relation, pool, drawn, seed)
    return prompts


def _to_categorise(questions: pl.DataFrame, config: SliCKConfig) -> pl.DataFrame:
    todo = questions.filter(pl.col("split").is_in(config.splits))
    if config.ood_exemplars == "skip":
        todo = todo.filter(~pl.col("ood"))
    return todo


# ---------------------------------------------------------------------------------------------------------------
# The generation seam
# ---------------------------------------------------------------------------------------------------------------
class Backend(Protocol):
    """What SliCK needs from a generator (``benchmark.sampling.Engine``; tests inject scripted fakes)."""

    def greedy(self, jobs: Sequence) -> list[str]:
        """The greedy answer of every job (text up to the first newline)."""
        ...

    def sample(self, jobs: Sequence, n_samples: int, *, stop_at_hit: bool = False) -> list[list[bool | None]]:
        """Per job, whether each sample matches ``job.gold`` (None: abandoned once the job had a hit)."""
        ...


def make_engine(loaded, config: SliCKConfig, seed: int):
    from benchmark.sampling import Engine

    return Engine(loaded.model, loaded.tokenizer, max_new_tokens=config.max_new_tokens,
                  temperature=config.temperature, top_k=config.top_k, seed=seed, batch_size=config.batch_size)


# ---------------------------------------------------------------------------------------------------------------
# Orchestration
# ---------------------------------------------------------------------------------------------------------------
TABLE_SCHEMA = {
    "qid": pl.String, "relation": pl.String, "question": pl.String, "answer": pl.String, "split": pl.String,
    "ood": pl.Boolean, "p_correct_greedy": pl.Float64, "p_correct_sampled": pl.Float64, "generations": pl.Int64,
    "samples": pl.Int64, "category": pl.String, "p_true": pl.Float64, "greedy_answers": pl.List(pl.String),
}


def categorize_questions(loaded, questions: pl.DataFrame, config: SliCKConfig, *, seed: int = 0,
                         progress: Progress | None = None, backend: Backend | None = None,
                         locate: Locate | None = None) -> pl.DataFrame:
    """SliCK for an already loaded model (``LoadedModel``) on a question table; pure apart from compute.

    ``backend`` replaces the generation engine (tests); ``loaded`` may then be None (P(True) is skipped).
    Returns one row per categorised question, columns ``TABLE_SCHEMA``.
    """
    prompts = build_prompts(questions, config, seed, locate)
    todo = _to_categorise(questions, config)
    if config.backend == "naive" and backend is None:
        from benchmark.slick_reference import naive_outcomes

        outcomes = naive_outcomes(loaded, todo, prompts, config, seed=seed, progress=progress)
    else:
        backend = backend or make_engine(loaded, config, seed)
        run = _exact_outcomes if config.estimator == "exact" else _engine_outcomes
        outcomes = run(backend, todo, prompts, config, progress)
    p_true = p_true_scores(loaded, todo) if (config.p_true and loaded is not None) else [None] * todo.height
    return outcomes_table(todo, outcomes, p_true)


@dataclass
class Outcome:
    """Per question: greedy answers and verdicts per prompt; sample verdicts drawn (None = started, abandoned)."""

    greedy_answers: list[str]
    greedy_correct: list[bool]
    sample_correct: list[bool | None]
    full_samples: int  # n_prompts x n_samples: what a complete P_Correct(T>0) estimate needs

    @property
    def p_correct_greedy(self) -> float:
        return sum(self.greedy_correct) / len(self.greedy_correct)

    @property
    def category(self) -> str:
        return category(self.p_correct_greedy, any(s is True for s in self.sample_correct))

    @property
    def p_correct_sampled(self) -> float | None:
        """Fraction of correct samples; known only when every sample was drawn and judged."""
        judged = [s for s in self.sample_correct if s is not None]
        return sum(judged) / self.full_samples if len(judged) == self.full_samples else None

    @property
    def generations(self) -> int:
        """Greedy answers plus samples drawn (a sample stopped early, once its verdict was known, counts as one)."""
        return len(self.greedy_answers) + len(self.sample_correct)

    @property
    def samples(self) -> int:
        return len(self.sample_correct)


@dataclass
class ExactOutcome:
    """The ``exact`` estimator's view of a question: per prompt, the teacher-forced greedy verdict and the chance
    q that one sample equals the gold answer. WeaklyKnown when all greedy verdicts are wrong and the chance that
    any of the n_prompts x n_samples samples hits is at least one half: the sampled procedure's likelier outcome."""

    greedy_correct: list[bool]
    chances: list[float]
    n_samples: int
    greedy_answers: tuple = ()
    samples: int = 0

    @property
    def p_correct_greedy(self) -> float:
        return sum(self.greedy_correct) / len(self.greedy_correct)

    @property
    def p_correct_sampled(self) -> float:
        """The expected fraction of correct samples."""
        return sum(self.chances) / len(self.chances)

    @property
    def p_any_sample_correct(self) -> float:
        miss = 1.0
        for q in self.chances:
            miss *= (1.0 - q) ** self.n_samples
        return 1.0 - miss

    @property
    def category(self) -> str:
        return category(self.p_correct_greedy, self.p_any_sample_correct >= 0.5)

    @property
    def generations(self) -> int:
        """Teacher-forced passes (one per prompt); nothing is generated."""
        return len(self.chances)


def _exact_outcomes(backend, todo: pl.DataFrame, prompts: dict[str, RelationPrompts], config: SliCKConfig,
                    progress: Progress | None) -> dict[str, ExactOutcome]:
    from benchmark.sampling import PromptJob

    outcomes: dict[str, ExactOutcome] = {}
    tracker = _Tracker(todo, progress)
    for relation, rel_prompts in prompts.items():
        rows = todo.filter(pl.col("relation") == relation).to_dicts()
        jobs = [PromptJob(rel_prompts.prefix(p, r["qid"], r["question"]), question_block(r["question"]), r["qid"], p,
                          r["answer"]) for p in range(config.n_prompts) for r in rows]
        scores = backend.teacher_forced(jobs)
        n = len(rows)
        for i, r in enumerate(rows):
            mine = [scores[p * n + i] for p in range(config.n_prompts)]
            outcomes[r["qid"]] = ExactOutcome([g for g, _ in mine], [q for _, q in mine], config.n_samples)
        tracker.done(rows)
    return outcomes


def _engine_outcomes(backend: Backend, todo: pl.DataFrame, prompts: dict[str, RelationPrompts],
                     config: SliCKConfig, progress: Progress | None) -> dict[str, Outcome]:
    from benchmark.sampling import PromptJob

    outcomes: dict[str, Outcome] = {}
    tracker = _Tracker(todo, progress)
    for relation, rel_prompts in prompts.items():
        rows = todo.filter(pl.col("relation") == relation).to_dicts()
        jobs_by_prompt = [
            [PromptJob(rel_prompts.prefix(p, r["qid"], r["question"]), question_block(r["question"]), r["qid"], p, r["answer"])
             for r in rows]
            for p in range(config.n_prompts)
        ]
        flat = [job for jobs in jobs_by_prompt for job in jobs]
        answers = backend.greedy(flat)
        n = len(rows)
        for i, r in enumerate(rows):
            mine = [answers[p * n + i] for p in range(config.n_prompts)]
            outcomes[r["qid"]] = Outcome(mine, [exact_match(a, r["answer"]) for a in mine], [],
                                         config.n_prompts * config.n_samples)
        pending = [i for i, r in enumerate(rows) if config.exhaustive or outcomes[r["qid"]].p_correct_greedy == 0]
        waiting = set(pending)
        tracker.done([r for i, r in enumerate(rows) if i not in waiting])
        for p in range(config.n_prompts):
            if not pending:
                break
            drawn = backend.sample([jobs_by_prompt[p][i] for i in pending], config.n_samples,
                                   stop_at_hit=not config.exhaustive)
            still = []
            for i, samples in zip(pending, drawn, strict=True):
                outcome = outcomes[rows[i]["qid"]]
                outcome.sample_correct += samples
                if config.exhaustive or not any(s is True for s in outcome.sample_correct):
                    still.append(i)
            continuing = set(still)
            tracker.done([rows[i] for i in pending if i not in continuing])
            pending = still
        tracker.done([rows[i] for i in pending])
    return outcomes


class _Tracker:
    """Reports progress per split as questions are decided."""

    def __init__(self, todo: pl.DataFrame, progress: Progress | None):
        self.progress = progress
        self.total = dict(todo.group_by("split").len().iter_rows())
        self.completed = dict.fromkeys(self.total, 0)
        for split in self.total:
            self._emit(split)

    def _emit(self, split: str) -> None:
        if self.progress is not None:
            self.progress(f"SliCK {split}", self.completed[split], self.total[split])

    def done(self, rows: list[dict]) -> None:
        touched = set()
        for r in rows:
            self.completed[r["split"]] += 1
            touched.add(r["split"])
        for split in sorted(touched):
            self._emit(split)


def outcomes_table(todo: pl.DataFrame, outcomes: dict, p_true: Sequence[float | None]) -> pl.DataFrame:
    records = []
    for r, score in zip(todo.iter_rows(named=True), p_true, strict=True):
        o = outcomes[r["qid"]]
        records.append({
            "qid": r["qid"], "relation": r["relation"], "question": r["question"], "answer": r["answer"],
            "split": r["split"], "ood": r["ood"], "p_correct_greedy": o.p_correct_greedy,
            "p_correct_sampled": o.p_correct_sampled, "generations": o.generations, "samples": o.samples,
            "category": o.category, "p_true": score, "greedy_answers": list(o.greedy_answers),
        })
    return pl.DataFrame(records, schema=TABLE_SCHEMA)


def p_true_scores(loaded, todo: pl.DataFrame) -> list[float | None]:
    from benchmark.sampling import option_probability

    prompts = [p_true_prompt(q, a) for q, a in zip(todo["question"], todo["answer"], strict=True)]
    try:
        return option_probability(loaded.model, loaded.tokenizer, prompts)
    except ValueError as exc:
        warnings.warn(f"P(True) not computed for {loaded.name}: {exc}", stacklevel=2)
        return [None] * len(prompts)


# ---------------------------------------------------------------------------------------------------------------
# The cached stage
# ---------------------------------------------------------------------------------------------------------------
@dataclass
class CategorizeResult:
    """The categorisation table and what it cost. On a cache hit ``seconds`` is the load time and
    ``compute_seconds``/``questions_per_second``/``generations`` are those of the run that filled the cache."""

    table: pl.DataFrame
    seconds: float
    cache_hit: bool
    generations: int
    questions_per_second: float
    key: str
    path: Path
    compute_seconds: float = 0.0


def slick_key(source, model, config: SliCKConfig, seed: int, device: str = "cpu") -> str:
    """Everything the table depends on: weights and their dtype, the device (kernels differ), data,
    configuration, seed, and the source of the code that computes it (with the torch/transformers versions)."""
    dtype = getattr(getattr(model, "spec", None), "dtype", None)
    return content_key("slick", model.identity(), dtype, device, source.identity(), config.cache_fields(), seed,
                       code_key(*CODE_MODULES))


def locate_in(source) -> Locate:
    """Name the file a relation's split comes from, for error messages (release layout when the source has one)."""
    def locate(relation: str, split: str) -> str:
        try:
            root = getattr(source, "root", None)
        except BenchmarkError:
            root = None
        if isinstance(root, str | Path):
            return str(Path(root) / "dataset" / split / f"{relation}.{split}.json")
        return str(source.file)

    return locate


def categorize(source, model, config: SliCKConfig, *, seed: int = 0, device: str = "cpu",
               progress: Progress | None = None, force: bool = False) -> CategorizeResult:
    """SliCK for ``source``'s questions with ``model`` (a ModelComponent), from the cache when possible.

    The model is loaded only on a cache miss; ``force`` recomputes (and replaces) the cached table. Bad data (a
    relation with fewer than k_shot + 1 dev questions, an empty split) fails with a BenchmarkError before the model
    is loaded.
    """
    start = time.perf_counter()
    key = slick_key(source, model, config, seed, device)
    path = stage_dir("slick", key)
    if not force and (path / TABLE_FILE).exists():
        table = pl.read_parquet(path / TABLE_FILE)
        meta = json.loads((path / META_FILE).read_text())
        return CategorizeResult(table, time.perf_counter() - start, True, int(meta["generations"]),
                                float(meta["questions_per_second"]), key, path, float(meta["compute_seconds"]))
    questions = source.questions()
    build_prompts(questions, config, seed, locate_in(source))  # fail on bad data before loading the model
    loaded = model.load(device=device)
    compute_start = time.perf_counter()
    table = categorize_questions(loaded, questions, config, seed=seed, progress=progress, locate=locate_in(source))
    compute = time.perf_counter() - compute_start
    generations = int(table["generations"].sum())
    qps = table.height / compute if compute > 0 else float("inf")
    meta = {"key": key, "model": model.identity(), "source": source.identity(), "config": config.model_dump(),
            "seed": seed, "code_key": code_key(*CODE_MODULES), "questions": table.height, "generations": generations,
            "compute_seconds": compute, "questions_per_second": qps, "device": device}
    with atomic_dir(path) as tmp:
        table.write_parquet(tmp / TABLE_FILE)
        (tmp / META_FILE).write_text(json.dumps(meta, indent=2, default=str))
    return CategorizeResult(table, time.perf_counter() - start, False, generations, qps, key, path, compute)


# ---------------------------------------------------------------------------------------------------------------
# What a run reports
# ---------------------------------------------------------------------------------------------------------------
def exposure_bucket(exposure: pl.Expr) -> pl.Expr:
    expr = pl.when(exposure.is_null()).then(pl.lit(None, dtype=pl.String))
    for low, high, label in EXPOSURE_BUCKETS:
        cond = exposure >= low if high is None else exposure.is_between(low, high)
        expr = expr.when(cond).then(pl.lit(label))
    return expr.otherwise(pl.lit(None, dtype=pl.String))


def with_exposure(table: pl.DataFrame, source) -> pl.DataFrame | None:
    """The table joined with the source's ground-truth exposures (None when the source has none)."""
    exposures = source.exposures()
    if exposures is None:
        return None
    exposures = exposures.select("relation", "question", pl.col("exposure").cast(pl.Int64)).unique(["relation", "question"])
    return table.join(exposures, on=["relation", "question"], how="left")


def summary(result: CategorizeResult, source) -> dict:
    """Category counts of the train split, cost, and (when the source knows exposures) how SliCK tracks them.

    The exposure block is computed on the train split of relations *not* listed by
    ``source.guessable_relations()``: where the answer space is small, lucky samples make never-seen facts look
    WeaklyKnown (DESIGN.md §4), so those relations are reported apart (``confusion_table(..., guessable=True)``).
    """
    train = result.table.filter(pl.col("split") == "train")
    counts = dict.fromkeys(CATEGORIES, 0) | dict(train.group_by("category").len().iter_rows())
    out = {"counts": counts, "seconds": result.seconds, "cache_hit": result.cache_hit,
           "generations": result.generations}
    joined = with_exposure(train, source)
    if joined is not None:
        joined = joined.filter(~pl.col("relation").is_in(source.guessable_relations()) & pl.col("exposure").is_not_null())
        medians = dict(joined.group_by("category").agg(pl.col("exposure").median()).iter_rows())
        zero = joined.filter(pl.col("exposure") == 0)
        share = float((zero["category"] == "Unknown").mean()) if zero.height else None
        out["exposure"] = {"median": {c: medians.get(c) for c in CATEGORIES}, "zero_exposure_unknown_share": share}
    return out


def confusion_table(result: CategorizeResult, source, *, split: str = "train", guessable: bool = False) -> pl.DataFrame:
    """Category x exposure bucket counts (rows: categories; columns: 0, 1-2, 3-4, 5-8, 9-16, 17+).

    ``guessable=False`` covers the relations with a large answer space, ``True`` the guessable ones. Empty when the
    source has no exposures.
    """
    labels = [label for _, _, label in EXPOSURE_BUCKETS]
    joined = with_exposure(result.table.filter(pl.col("split") == split), source)
    if joined is None:
        return pl.DataFrame(schema={"category": pl.String, **dict.fromkeys(labels, pl.Int64)})
    chosen = pl.col("relation").is_in(source.guessable_relations())
    joined = joined.filter(chosen if guessable else ~chosen).with_columns(bucket=exposure_bucket(pl.col("exposure")))
    counts = {(c, b): n for c, b, n in joined.group_by("category", "bucket").len().iter_rows()}
    return pl.DataFrame([{"category": c, **{b: counts.get((c, b), 0) for b in labels}} for c in CATEGORIES],
                        schema={"category": pl.String, **dict.fromkeys(labels, pl.Int64)})


def relation_table(result: CategorizeResult) -> pl.DataFrame:
    """Per relation and split: category counts, and the most-common-answer baseline (DESIGN.md §4): the accuracy
    of always answering the relation's most frequent (normalised) train answer, which belongs beside every
    category table (all categorised splits stand in where a relation has no train questions, e.g. OOD)."""
    table = result.table.with_columns(gold=pl.col("answer").map_elements(normalize, return_dtype=pl.String))
    train = table.filter(pl.col("split") == "train")
    pool = pl.concat([train, table.filter(~pl.col("relation").is_in(train["relation"].unique().implode()))])
    common = (pool.group_by("relation", "gold").len().sort(["relation", "len", "gold"], descending=[False, True, False])
              .group_by("relation", maintain_order=True).first().select("relation", most_common=pl.col("gold")))
    per = (table.join(common, on="relation")
           .group_by("relation", "split")
           .agg(questions=pl.len(), **{c: (pl.col("category") == c).sum() for c in CATEGORIES},
                most_common_answer_accuracy=(pl.col("gold") == pl.col("most_common")).mean()))
    return per.sort("relation", "split")
