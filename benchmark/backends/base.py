"""What every SliCK back-end offers, and what it hands back per question.

A **back-end** (``Backend``) turns the questions to categorise, with their relation's fixed prompts, into one
``Outcome`` per question, scores P(True), and says what it is (``info``: library versions and settings that can
change results, tagged on the run). Three exist, chosen by the suite's ``slick.backend``:

- ``engine`` (``backends/engine.py``): batched, prefix-cached, early-exit generation on any torch device;
- ``naive`` (``backends/naive.py``): one ``generate`` call per question and prompt, the reference;
- ``vllm`` (``backends/vllm.py``): vLLM on a GPU.

The engine and vLLM are **generators** (``Generator``: greedy answers and sample verdicts for ``PromptJob``s) driven
by the same staged procedure (``staged_outcomes``): greedy answers for every prompt first; then samples, prompt by
prompt, only for questions whose greedy answers are all wrong, until a question has a correct sample. So their
result tables have the same columns and meaning, and tests drive the procedure with scripted generators.

Back-ends sit below the SliCK stage: they never import it. What both need (the category rule) lives in
``benchmark.categories``; the prompts of a relation arrive as objects with a ``prefix(p, qid, question)`` method.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

from benchmark.answers import Gold, exact_match, row_gold
from benchmark.categories import category
from benchmark.prompts import question_block

if TYPE_CHECKING:
    import polars as pl

    from benchmark.slick_config import SliCKConfig

Progress = Callable[[str, int, int], None]


# ---------------------------------------------------------------------------------------------------------------
# What is asked
# ---------------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class PromptJob:
    """One prompt: ``prefix + question`` is the full text; ``prefix`` is the part shared with other jobs."""

    prefix: str
    question: str
    qid: str
    prompt_index: int
    gold: Gold = ""  # one answer, or the aliases of one (any is right)
    max_new_tokens: int | None = None  # how long its answers may run (None: the generator's own limit)

    @property
    def text(self) -> str:
        return self.prefix + self.question


class RelationPrompts(Protocol):
    """A relation's fixed few-shot prompts (``benchmark.slick.RelationPrompts``)."""

    max_new_tokens: int | None  # how long the relation's answers may run (None: the generator's own limit)

    def prefix(self, p: int, qid: str, question: str) -> str:
        """Prompt p's exemplar block for this question (never containing the question itself)."""
        ...


def prompt_jobs(rows: Sequence[dict], prompts: RelationPrompts, n_prompts: int) -> list[list[PromptJob]]:
    """``jobs[p][i]``: question ``rows[i]`` asked with prompt p, its answers cut at the relation's limit."""
    limit = getattr(prompts, "max_new_tokens", None)
    return [[PromptJob(prompts.prefix(p, r["qid"], r["question"]), question_block(r["question"]), r["qid"], p,
                       row_gold(r), limit) for r in rows] for p in range(n_prompts)]


# ---------------------------------------------------------------------------------------------------------------
# What comes back, per question
# ---------------------------------------------------------------------------------------------------------------
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


# ---------------------------------------------------------------------------------------------------------------
# The interfaces
# ---------------------------------------------------------------------------------------------------------------
class Generator(Protocol):
    """Greedy answers and sample verdicts for prompts (the engine, vLLM; tests inject scripted fakes)."""

    def greedy(self, jobs: Sequence[PromptJob]) -> list[str]:
        """The greedy answer of every job (text up to the first newline)."""
        ...

    def sample(self, jobs: Sequence[PromptJob], n_samples: int, *,
               stop_at_hit: bool = False) -> list[list[bool | None]]:
        """Per job, whether each sample matches ``job.gold`` (None: abandoned once the job had a hit)."""
        ...


class Backend(Protocol):
    """A SliCK back-end: outcomes per question, P(True) scores, and what it is."""

    name: str

    def outcomes(self, todo: pl.DataFrame, prompts: dict[str, RelationPrompts], config: SliCKConfig,
                 progress: Progress | None = None) -> dict[str, Outcome | ExactOutcome]:
        """One outcome per row of ``todo`` (columns qid, relation, question, answer, split), by qid."""
        ...

    def p_true(self, questions: Sequence[str], answers: Sequence[str]) -> list[float | None]:
        """P(True) per (question, proposed answer) (docs/method.md §4); None where it cannot be computed."""
        ...

    def info(self) -> dict[str, str]:
        """What produced the results: back-end name, library versions, settings that change numerics."""
        ...


@dataclass
class GeneratorBackend:
    """A ``Backend`` from a ``Generator``: outcomes by ``staged_outcomes`` (or ``exact_outcomes`` when the config
    asks for the exact estimator and the generator can teacher-force); P(True) from ``scorer`` (None: no scores)."""

    name: str
    generator: Generator
    scorer: Callable[[Sequence[str], Sequence[str]], list[float | None]] | None = None
    details: dict[str, str] = field(default_factory=dict)

    def outcomes(self, todo, prompts, config, progress=None):
        if config.estimator == "exact":
            return exact_outcomes(self.generator, todo, prompts, config, progress)
        return staged_outcomes(self.generator, todo, prompts, config, progress)

    def p_true(self, questions, answers):
        if self.scorer is None:
            return [None] * len(questions)
        return self.scorer(questions, answers)

    def info(self) -> dict[str, str]:
        return {"backend": self.name, **self.details}

    def close(self) -> None:
        """Release what the generator holds (vLLM: its process, and with it the GPU memory)."""
        close = getattr(self.generator, "close", None)
        if close is not None:
            close()


# ---------------------------------------------------------------------------------------------------------------
# The staged procedure (engine and vLLM)
# ---------------------------------------------------------------------------------------------------------------
def staged_outcomes(generator: Generator, todo: pl.DataFrame, prompts: dict[str, RelationPrompts],
                    config: SliCKConfig, progress: Progress | None = None) -> dict[str, Outcome]:
    """Greedy answers for every (question, prompt); then, prompt by prompt, samples for the questions whose greedy
    answers are all wrong, until a question has a correct sample. Only work that can change a category is done
    (unless ``config.exhaustive``); the category is what the exhaustive computation gives."""
    import polars as pl

    outcomes: dict[str, Outcome] = {}
    tracker = ProgressTracker(todo, progress)
    for relation, rel_prompts in prompts.items():
        rows = todo.filter(pl.col("relation") == relation).to_dicts()
        jobs_by_prompt = prompt_jobs(rows, rel_prompts, config.n_prompts)
        answers = generator.greedy([job for jobs in jobs_by_prompt for job in jobs])
        n = len(rows)
        for i, r in enumerate(rows):
            mine = [answers[p * n + i] for p in range(config.n_prompts)]
            outcomes[r["qid"]] = Outcome(mine, [exact_match(a, row_gold(r)) for a in mine], [],
                                         config.n_prompts * config.n_samples)
        pending = [i for i, r in enumerate(rows) if config.exhaustive or outcomes[r["qid"]].p_correct_greedy == 0]
        waiting = set(pending)
        tracker.done([r for i, r in enumerate(rows) if i not in waiting])
        for p in range(config.n_prompts):
            if not pending:
                break
            drawn = generator.sample([jobs_by_prompt[p][i] for i in pending], config.n_samples,
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


def exact_outcomes(scorer, todo: pl.DataFrame, prompts: dict[str, RelationPrompts], config: SliCKConfig,
                   progress: Progress | None = None) -> dict[str, ExactOutcome]:
    """The exact estimator: one teacher-forced pass per (question, prompt) (``scorer.teacher_forced``)."""
    import polars as pl

    from benchmark.errors import BenchmarkError

    if not hasattr(scorer, "teacher_forced"):
        raise BenchmarkError(f"estimator 'exact' needs teacher forcing, which {type(scorer).__name__} does not do")
    outcomes: dict[str, ExactOutcome] = {}
    tracker = ProgressTracker(todo, progress)
    for relation, rel_prompts in prompts.items():
        rows = todo.filter(pl.col("relation") == relation).to_dicts()
        scores = scorer.teacher_forced([job for jobs in prompt_jobs(rows, rel_prompts, config.n_prompts)
                                        for job in jobs])
        n = len(rows)
        for i, r in enumerate(rows):
            mine = [scores[p * n + i] for p in range(config.n_prompts)]
            outcomes[r["qid"]] = ExactOutcome([g for g, _ in mine], [q for _, q in mine], config.n_samples)
        tracker.done(rows)
    return outcomes


class ProgressTracker:
    """Reports progress per split as questions are decided (``label`` names the back-end where it is not the
    engine)."""

    def __init__(self, todo: pl.DataFrame, progress: Progress | None, label: str = ""):
        self.progress, self.label = progress, label
        self.total = dict(todo.group_by("split").len().iter_rows())
        self.completed = dict.fromkeys(self.total, 0)
        for split in self.total:
            self._emit(split)

    def _emit(self, split: str) -> None:
        if self.progress is not None:
            self.progress(f"SliCK {split}{self.label}", self.completed[split], self.total[split])

    def done(self, rows: Sequence[dict]) -> None:
        touched = set()
        for r in rows:
            self.completed[r["split"]] += 1
            touched.add(r["split"])
        for split in sorted(touched):
            self._emit(split)
