"""Categorise stage: SliCK (Gekhman et al. 2024, docs/method.md §1) for every question of a knowledge source, cached.

For each relation, ``n_prompts`` (10) fixed ``k_shot`` (4)-shot prompts are drawn once, seeded, from that
relation's dev split; every question of the relation is asked with the same prompts. Per prompt: one greedy answer
and ``n_samples`` (16) samples at T = 0.5, top-k 40; an answer is the generated text up to the first newline (at most
its relation's longest gold answer plus 2 tokens: ``answer_limits``, the rule evaluation cuts by too), and is
correct when it equals the gold answer after normalisation (``benchmark.answers``). Then

    HighlyKnown   P_Correct(T=0) = 1
    MaybeKnown    0 < P_Correct(T=0) < 1
    WeaklyKnown   P_Correct(T=0) = 0 and P_Correct(T>0) > 0
    Unknown       P_Correct(T=0) = 0 and P_Correct(T>0) = 0

What generates is a back-end (``benchmark/backends``, chosen by ``backend``: ``engine``, ``naive`` or ``vllm``).
Only work that can change a category is done (unless ``exhaustive``): samples are drawn only for questions whose
greedy answers are all wrong, prompt by prompt, and a question stops sampling after the prompt that gave its first
correct sample (its other samples in flight are abandoned). Each engine sample's randomness depends only on (seed,
question, prompt, sample, step) (``backends/noise.py``), so the category is exactly what the exhaustive
computation gives; ``p_correct_sampled`` is then filled in only where every sample was drawn (Unknown questions,
or all questions with ``exhaustive: true``), and is null elsewhere. ``generations`` counts greedy answers plus
samples drawn; the engine stops decoding a sample once its verdict is known, so most cost far less than a full
generation (see ``backends/engine.py``).

``estimator: exact`` replaces generation by one teacher-forced pass per prompt on prompt + " gold" + newline: the
greedy verdict, and the chance q that one sample equals the gold answer (measured in the prototype). P_Correct(T>0) is then the
mean q, and a question whose greedy answers are all wrong is WeaklyKnown when the chance that any of its 160
samples would hit is at least one half (the sampled procedure's likelier outcome). It is token-exact, so it
covers the gold answer's own tokenisation and casing only; it sits beside the paper's estimator, not in its place.

Exemplars and the questions they come from: a dev question is never asked with a prompt that contains it. For such
a (question, prompt) pair the offending exemplar is swapped, in place, for another dev question of the relation
drawn with a seed of (seed, relation, prompt, question); the other exemplars and their order stay. OOD relations
are categorised on their test questions only; their exemplars come from their own dev split (``ood_exemplars: dev``,
the default: the release and the embedded world ship one, and a relation without it is an error naming the file,
never a silent switch to test), from their test split under the same rule if a suite says ``ood_exemplars: test``,
or they are not categorised (``skip``).

P(True) (docs/method.md §4) is computed for every categorised question with one forward pass on
``p_true_prompt(question, gold)``: the next-token probability of " True" normalised over " True" and " False"
(first token of each). Where the tokenizer cannot tell the two apart (a word-level vocabulary without them) the
column is null.

The result table is cached as Parquet under ``stage_dir("slick", key)``; the key hashes the model identity, the
knowledge source identity, this configuration (batch size excepted: it does not change results), the seed, the
source of the code that computes it (this stage's and the chosen back-end's) and, for vLLM, its version and
batch-invariance settings. ``meta.json`` beside it records what the back-end said it was (``Backend.info``).

The categories and their rule live in ``benchmark.categories`` and the ``slick:`` schema in
``benchmark.slick_config``; both are re-exported here. What a run reports from the table (counts, exposure and
per-relation tables, the most-common-answer baseline) is ``benchmark.slick_tables``.
"""

from __future__ import annotations

import json
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import polars as pl

from benchmark.answers import ALIASES, golds
from benchmark.backends import BACKENDS, check_available, key_facts, needs_loaded_model, open_backend
from benchmark.backends.base import ExactOutcome, GeneratorBackend, Outcome, Progress
from benchmark.cache import atomic_dir, cache_hit, stage_dir
from benchmark.categories import CATEGORIES, KNOWN, category
from benchmark.errors import BenchmarkError
from benchmark.executors import is_remote
from benchmark.hashing import code_key, content_key
from benchmark.locks import stage_lock
from benchmark.prompts import exemplar_block
from benchmark.slick_config import SliCKConfig

__all__ = ["CATEGORIES", "KNOWN", "CategorizeResult", "ExactOutcome", "Outcome", "SliCKConfig", "categorize",
           "categorize_questions", "category"]

# The stage's own code whose edits can change the table; the chosen back-end's modules (its ``BACKENDS`` entry's) are
# hashed with it into the cache key, so no stale table is reused. benchmark.hashing: content_key seeds the
# exemplar draws. Not benchmark.slick_tables: it only reads the table.
CODE_MODULES = ("benchmark.slick", "benchmark.slick_config", "benchmark.categories", "benchmark.prompts",
                "benchmark.answers", "benchmark.hashing")
TABLE_FILE = "categories.parquet"
META_FILE = "meta.json"


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
    """The fixed prompts of one relation: ``prompts[p]`` are its k exemplars; ``pool`` is where they came from;
    ``max_new_tokens`` how long its answers may run (None: the back-end's own limit)."""

    relation: str
    pool: list[Exemplar]
    prompts: list[list[Exemplar]]
    seed: int
    max_new_tokens: int | None = None

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
        pool_split = config.ood_exemplars if ood else "dev"
        if ood and pool_split == "dev" and rows.filter(pl.col("split") == "dev").is_empty():
            raise BenchmarkError(f"{locate(relation, 'dev')}: out-of-distribution relation {relation} has no dev "
                                 "questions to draw SliCK's few-shot exemplars from; add its dev file, or set "
                                 "slick.ood_exemplars to 'test' (exemplars from the questions being categorised) "
                                 "or 'skip'")
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
    # An OOD relation's dev questions are its exemplar pool only: OOD relations are scored on their test split.
    todo = questions.filter(pl.col("split").is_in(config.splits) & (~pl.col("ood") | (pl.col("split") == "test")))
    if config.ood_exemplars == "skip":
        todo = todo.filter(~pl.col("ood"))
    if config.limit is not None:  # per relation, so a shard (whole relations) keeps exactly its questions
        todo = todo.filter(pl.int_range(pl.len()).over("split", "relation") < config.limit)
    return todo


# ---------------------------------------------------------------------------------------------------------------
# Orchestration
# ---------------------------------------------------------------------------------------------------------------
TABLE_SCHEMA = {
    "qid": pl.String, "relation": pl.String, "question": pl.String, "answer": pl.String, "split": pl.String,
    "ood": pl.Boolean, "p_correct_greedy": pl.Float64, "p_correct_sampled": pl.Float64, "generations": pl.Int64,
    "samples": pl.Int64, "category": pl.String, "p_true": pl.Float64, "greedy_answers": pl.List(pl.String),
}


def categorize_questions(loaded, questions: pl.DataFrame, config: SliCKConfig, *, seed: int = 0,
                         progress: Progress | None = None, backend=None, locate: Locate | None = None,
                         component=None, device: str = "cpu") -> pl.DataFrame:
    """SliCK for an already loaded model (``LoadedModel``) on a question table; pure apart from compute.

    ``backend`` replaces the one the config names: a ``Backend``, or a bare ``Generator`` (greedy/sample, e.g. a
    scripted fake in tests) driven by the staged procedure; ``loaded`` may then be None (P(True) is skipped).
    The vLLM back-end loads the model itself from ``component``. Returns one row per categorised question,
    columns ``TABLE_SCHEMA``.
    """
    return run_backend(loaded, questions, config, seed=seed, progress=progress, backend=backend, locate=locate,
                       component=component, device=device)[0]


def run_backend(loaded, questions: pl.DataFrame, config: SliCKConfig, *, seed: int = 0,
                progress: Progress | None = None, backend=None, locate: Locate | None = None, component=None,
                device: str = "cpu") -> tuple[pl.DataFrame, dict[str, str]]:
    """``categorize_questions``, and what the back-end said it was (``Backend.info``)."""
    prompts = build_prompts(questions, config, seed, locate)
    todo = _to_categorise(questions, config)
    if config.estimator == "exact" and ALIASES in todo.columns and (todo[ALIASES].list.len() > 1).any():
        raise BenchmarkError("slick.estimator: exact scores one gold answer's tokens, and these questions have "
                             "aliases (answers_are: aliases); use estimator: sampled, which matches any alias")
    for relation, limit in answer_limits(todo, config, loaded, component).items():
        prompts[relation].max_new_tokens = limit
    check_context(loaded, todo, prompts, config, locate)
    if backend is None:
        backend = open_backend(config, seed, loaded=loaded, component=component, device=device)
    elif not hasattr(backend, "outcomes"):
        from benchmark.backends.decoding import p_true_scores

        scorer = (lambda q, a: p_true_scores(loaded, q, a)) if loaded is not None else None
        backend = GeneratorBackend(type(backend).__name__, backend, scorer=scorer)
    try:
        outcomes = backend.outcomes(todo, prompts, config, progress)
        p_true: list[float | None] = [None] * todo.height
        if config.p_true:  # batched within a relation, as generation is: shards by relation give the same numbers
            for _, rows in todo.with_row_index("row").group_by("relation", maintain_order=True):
                scores = backend.p_true(rows["question"].to_list(), rows["answer"].to_list())
                for row, score in zip(rows["row"], scores, strict=True):
                    p_true[row] = score
    finally:
        if hasattr(backend, "close"):  # vLLM's process ends here: training may use the GPU next
            backend.close()
    return outcomes_table(todo, outcomes, p_true), backend.info()


def context_length(model) -> int | None:
    """The longest sequence ``model`` takes (its position table), or None when its config does not say."""
    config = getattr(model, "config", None)
    for name in ("max_position_embeddings", "n_positions", "max_sequence_length"):
        value = getattr(config, name, None)
        if isinstance(value, int) and value > 0:
            return value
    return None


def check_context(loaded, todo: pl.DataFrame, prompts: dict[str, RelationPrompts], config: SliCKConfig,
                  locate: Locate | None = None) -> None:
    """One clear error, before anything is generated, when a relation's longest few-shot prompt (its longest
    exemplar block, its longest question) plus the answer's room is longer than the model's context: the model
    would index past its position table (an IndexError deep in the forward pass). Exemplars are never cut: a
    prompt with fewer exemplars is another experiment, so the suite or the data must change."""
    context = context_length(getattr(loaded, "model", None))
    tokenizer = getattr(loaded, "tokenizer", None)
    if context is None or tokenizer is None or todo.is_empty():
        return
    from benchmark.prompts import encode_batch, question_block

    locate = locate or (lambda relation, split: f"the {split} split of {relation}")
    for (relation,), rows in todo.group_by("relation", maintain_order=True):
        relation_prompts = prompts[relation]
        blocks = [exemplar_block([(e.question, e.answer) for e in chosen]) for chosen in relation_prompts.prompts]
        block = max(len(ids) for ids in encode_batch(tokenizer, blocks))  # with the start token, if any
        asked = tokenizer([question_block(q) for q in rows["question"]], add_special_tokens=False)["input_ids"]
        longest = max(range(len(asked)), key=lambda i: len(asked[i]))
        room = relation_prompts.max_new_tokens or config.max_new_tokens or 16
        need = block + len(asked[longest]) + room
        if need > context:
            row = rows.row(longest, named=True)
            raise BenchmarkError(
                f"{locate(relation, row['split'])}: question {row['qid']} needs a {need}-token SliCK prompt "
                f"({config.k_shot} exemplars up to {block} tokens, the question {len(asked[longest])}, the answer "
                f"{room}), longer than {getattr(loaded, 'name', 'the model')}'s context of {context} tokens; "
                "shorten or drop the longest questions and exemplars, or lower slick.k_shot")


def answer_limits(todo: pl.DataFrame, config: SliCKConfig, loaded=None, component=None) -> dict[str, int]:
    """How many tokens each relation's answers may run to: ``config.max_new_tokens`` where a suite sets it, else
    the relation's longest gold answer among the questions categorised plus 2 tokens
    (``decoding.answer_token_limits``, the rule evaluation cuts by). Empty where no tokenizer is at hand (a
    scripted back-end in tests): the back-end's own limit then holds."""
    relations = todo["relation"].unique(maintain_order=True).to_list()
    if config.max_new_tokens is not None:
        return dict.fromkeys(relations, config.max_new_tokens)
    tokenizer = getattr(loaded, "tokenizer", None)
    if tokenizer is None and component is not None and hasattr(component, "tokenizer"):
        tokenizer = component.tokenizer()  # vLLM loads the model itself; its tokenizer is the component's
    if tokenizer is None:
        return {}
    from benchmark.backends.decoding import answer_token_limits

    return answer_token_limits(tokenizer, todo["relation"].to_list(), golds(todo))


def outcomes_table(todo: pl.DataFrame, outcomes: dict, p_true: Sequence[float | None]) -> pl.DataFrame:
    records = []
    for r, score in zip(todo.iter_rows(named=True), p_true, strict=True):
        o = outcomes[r["qid"]]
        records.append({
            "qid": r["qid"], "relation": r["relation"], "question": r["question"], "answer": r["answer"],
            "split": r["split"], "ood": r["ood"], "p_correct_greedy": o.p_correct_greedy,
            "p_correct_sampled": o.p_correct_sampled, "generations": o.generations, "samples": o.samples,
            "category": o.category, "p_true": score, "greedy_answers": list(o.greedy_answers),
            **({ALIASES: r[ALIASES]} if ALIASES in todo.columns else {}),
        })
    # A source whose answers have aliases keeps them beside the answer, for evaluation to match any of them.
    schema = TABLE_SCHEMA | ({ALIASES: pl.List(pl.String)} if ALIASES in todo.columns else {})
    return pl.DataFrame(records, schema=schema)


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
    backend_info: dict[str, str] = field(default_factory=dict)


def stage_code(config: SliCKConfig) -> tuple[str, ...]:
    """The modules whose source the table depends on: this stage's and the chosen back-end's."""
    return (*CODE_MODULES, *BACKENDS[config.backend].code)


def slick_key(source, model, config: SliCKConfig, seed: int, device: str = "cpu") -> str:
    """Everything the table depends on: weights and their dtype, the device (kernels differ), data,
    configuration, seed, the source of the code that computes it (with the torch/transformers versions), and
    what the back-end depends on beyond that (vLLM's version and batch-invariance settings)."""
    dtype = getattr(getattr(model, "spec", None), "dtype", None)
    facts = key_facts(config)
    return content_key("slick", model.identity(), dtype, device, source.identity(), config.cache_fields(), seed,
                       code_key(*stage_code(config)), *([facts] if facts else []))


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


@dataclass(frozen=True)
class Shard:
    """Some relations' questions, categorised in a worker that loads the model itself: components cross
    processes as their descriptions (name, spec, file), never with weights or data (``components.base``)."""

    source: object
    model: object
    relations: tuple[str, ...]
    config: SliCKConfig
    seed: int
    device: str


def categorize_shard(shard: Shard) -> tuple[pl.DataFrame, dict[str, str]]:
    questions = shard.source.questions()
    mine = questions.filter(pl.col("relation").is_in(list(shard.relations)))
    loaded = shard.model.load(device=shard.device) if needs_loaded_model(shard.config) else None
    return run_backend(loaded, mine, shard.config, seed=shard.seed, locate=locate_in(shard.source),
                       component=shard.model, device=shard.device)


def shard_relations(todo: pl.DataFrame, n: int) -> list[tuple[str, ...]]:
    """Relations dealt into at most ``n`` shards of about equal question counts (largest first, each to the
    lightest shard). Relations are independent in SliCK: each has its own prompts, a sample's noise depends only on
    (seed, question, prompt, sample, step, token), and every batch holds one relation's rows; so any split gives
    the same rows."""
    sizes = todo.group_by("relation", maintain_order=True).len().sort("len", descending=True, maintain_order=True)
    shards: list[list[str]] = [[] for _ in range(max(1, min(n, sizes.height)))]
    loads = [0] * len(shards)
    for relation, size in sizes.iter_rows():
        lightest = loads.index(min(loads))
        shards[lightest].append(relation)
        loads[lightest] += size
    return [tuple(s) for s in shards]


def _run_sharded(source, model, questions: pl.DataFrame, config: SliCKConfig, seed: int, device: str, executor,
                 progress: Progress | None) -> tuple[pl.DataFrame, dict[str, str]]:
    """What ``run_backend`` gives, computed in shards by relation on ``executor`` and merged back into the
    one-process row order."""
    todo = _to_categorise(questions, config)
    shards = [Shard(source, model, relations, config, seed, device)
              for relations in shard_relations(todo, executor.slots)]
    total = dict(todo.group_by("split").len().iter_rows())
    done = dict.fromkeys(total, 0)
    tables, info = [], {}
    for outcome in executor.run(categorize_shard, shards):
        if outcome.error is not None:
            raise outcome.error
        table, info = outcome.value
        tables.append(table)
        for split, count in table.group_by("split").len().iter_rows():
            done[split] += count
            if progress is not None:
                progress(f"SliCK {split}", done[split], total[split])
    order = todo.select("qid").with_row_index("order")
    return pl.concat(tables).join(order, on="qid").sort("order").drop("order"), info


def categorize(source, model, config: SliCKConfig, *, seed: int = 0, device: str = "cpu",
               progress: Progress | None = None, force: bool = False, executor=None) -> CategorizeResult:
    """SliCK for ``source``'s questions with ``model`` (a ModelComponent), from the cache when possible.

    The model is loaded only on a cache miss; ``force`` recomputes (and replaces) the cached table. Bad data (a
    relation with fewer than k_shot + 1 dev questions, an empty split) and a back-end that cannot run here (vLLM
    without a GPU) fail with a BenchmarkError before the model is loaded. With an ``executor``
    (``benchmark.executors``) the questions are cut by relation into as many shards as it runs at once, each
    worker loading the model itself: the same table, row for row, under the same key.
    """
    start = time.perf_counter()
    key = slick_key(source, model, config, seed, device)
    path = stage_dir("slick", key)
    if not force and (hit := _cached(path, key, config, start)) is not None:
        return hit
    # One process computes a table at a time, across machines sharing the cache; the others then reuse it.
    with stage_lock(path):
        # Checked again: another process may have built it meanwhile (a damage was reported above already).
        if not force and (hit := _cached(path, key, config, start, report=False)) is not None:
            return hit
        return _compute(source, model, config, seed, device, progress, executor, key, path, start)


def _cached(path: Path, key: str, config: SliCKConfig, start: float, *,
            report: bool = True) -> CategorizeResult | None:
    if not cache_hit(path, TABLE_FILE, report=report):  # verified against its checksums; a damaged table is rebuilt
        return None
    table = pl.read_parquet(path / TABLE_FILE)
    meta = json.loads((path / META_FILE).read_text())
    return CategorizeResult(table, time.perf_counter() - start, True, int(meta["generations"]),
                            float(meta["questions_per_second"]), key, path, float(meta["compute_seconds"]),
                            dict(meta.get("backend") or {"backend": config.backend}))


def _compute(source, model, config: SliCKConfig, seed: int, device: str, progress, executor, key: str, path: Path,
             start: float) -> CategorizeResult:
    questions = source.questions()
    build_prompts(questions, config, seed, locate_in(source))  # fail on bad data before loading the model
    if executor is None or not is_remote(executor):  # a remote task checks, on the node that has the GPUs
        check_available(config, device)
    if executor is None:
        loaded = model.load(device=device) if needs_loaded_model(config) else None
        compute_start = time.perf_counter()
        table, info = run_backend(loaded, questions, config, seed=seed, progress=progress, locate=locate_in(source),
                                  component=model, device=device)
    else:  # the compute time then includes the workers' model loading
        model.prepare()  # here, with every thread, not in the first worker while the others wait
        compute_start = time.perf_counter()
        table, info = _run_sharded(source, model, questions, config, seed, device, executor, progress)
    compute = time.perf_counter() - compute_start
    generations = int(table["generations"].sum())
    qps = table.height / compute if compute > 0 else float("inf")
    meta = {"key": key, "model": model.identity(), "source": source.identity(), "config": config.model_dump(),
            "seed": seed, "code_key": code_key(*stage_code(config)), "questions": table.height,
            "generations": generations, "compute_seconds": compute, "questions_per_second": qps, "device": device,
            "backend": info}
    with atomic_dir(path) as tmp:
        table.write_parquet(tmp / TABLE_FILE)
        (tmp / META_FILE).write_text(json.dumps(meta, indent=2, default=str))
    return CategorizeResult(table, time.perf_counter() - start, False, generations, qps, key, path, compute, info)
