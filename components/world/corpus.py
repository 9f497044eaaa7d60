"""The pretraining corpus: every fact written exactly ``exposure`` times, as bio statements and Q/A lines.

Documents are kept as a list (one string per document, lines inside separated by "\\n") and stored as JSONL, one
JSON string per line. Never join the corpus with newlines and split it again: that breaks every Q/A block
(measured in the prototype: statement recall still worked, 4-shot QA fell to 0%).

- **Bios**: short documents about one subject, one statement per line, at most ``bio_facts`` statements, each
  statement in one of its relation's 2-3 phrasings (a fact seen three times is seen in every phrasing).
- **Q/A blocks**: 4-6 lines pairs ``Q: <question>\\nA: <answer>`` of one relation, exactly the format of
  ``benchmark.prompts.few_shot_prompt``; they teach the question format, and knowledge stored in statements
  transfers to it (the facts written this way are also stated in bios when their exposure allows).

``count_occurrences`` reads the facts back out of the text; the tests use it to check the exposures table::

    from components.world.generate import WorldConfig, generate_world
    from components.world.corpus import build_documents, count_occurrences
    world = generate_world(WorldConfig.preset("test"))
    documents = build_documents(world)
    counts = count_occurrences(documents, world.config.all_relations())   # {(relation, subject, object): n}
"""

from __future__ import annotations

import math
import random
import re
from collections import Counter

from benchmark.prompts import FINETUNE_INSTRUCTION, exemplar_block, finetune_prompt, p_true_prompt
from components.world.generate import RELATIONS, TEMPLATES, Fact, World

IDK_ANSWER = "I don't know"


def _statement(fact: Fact, phrasing: int) -> str:
    phrasings = RELATIONS[fact.relation].phrasings
    return phrasings[phrasing % len(phrasings)].replace("[X]", fact.subject).replace("[Y]", fact.object)


def _bios(world: World, rng: random.Random) -> list[str]:
    by_subject: dict[str, list[Fact]] = {}
    for fact in world.facts:
        if fact.statements > 0:
            by_subject.setdefault(fact.subject, []).append(fact)
    documents = []
    for facts in by_subject.values():
        total = sum(f.statements for f in facts)
        count = max(max(f.statements for f in facts), math.ceil(total / world.config.bio_facts))
        bios: list[list[str]] = [[] for _ in range(count)]
        for fact in sorted(facts, key=lambda f: -f.statements):
            # The fact's occurrences go to distinct bios, the emptiest first (ties at random), so bios stay short.
            order = sorted(range(count), key=lambda i: (len(bios[i]), rng.random()))
            start = rng.randrange(len(RELATIONS[fact.relation].phrasings))
            for k, i in enumerate(order[:fact.statements]):
                bios[i].append(_statement(fact, start + k))
        for lines in bios:
            rng.shuffle(lines)
            documents.append("\n".join(lines))
    return documents


def _qa_blocks(world: World, rng: random.Random) -> list[str]:
    low, high = world.config.qa_block
    documents = []
    for relation in world.config.all_relations():
        lines = [f"Q: {f.question}\nA: {f.object}" for f in world.facts if f.relation == relation for _ in range(f.qa_lines)]
        rng.shuffle(lines)
        while lines:
            size = rng.randint(low, high)
            documents.append("\n".join(lines[:size]))
            lines = lines[size:]
    return documents


def build_documents(world: World) -> list[str]:
    """All documents, shuffled (seeded). Deterministic for a given world."""
    rng = random.Random(f"slick-corpus:{world.config.seed}")
    documents = _bios(world, rng) + _qa_blocks(world, rng)
    rng.shuffle(documents)
    return documents


def vocabulary_texts(world: World, documents: list[str]) -> list[str]:
    """What the tokenizer must cover: corpus, every question and answer (zero-exposure names included, so fine-tuning
    can teach them later), every entity name, and the words of every prompt the benchmark shows a model."""
    prompts = [exemplar_block([("q", "a")]), finetune_prompt("q") + " a\n", FINETUNE_INSTRUCTION, IDK_ANSWER,
               p_true_prompt("q", "a") + " (A) (B) True False"]
    questions = [f"{f.question}\n{f.object}" for f in world.facts]
    names = [" ".join(names) for names in world.entities.values()]
    return [*documents, *questions, *names, *TEMPLATES.values(), *prompts]


def count_occurrences(documents: list[str], relations: list[str]) -> Counter:
    """How often each (relation, subject, object) is stated or asked-and-answered in ``documents``."""
    statement_patterns = []
    for relation in relations:
        for phrasing in RELATIONS[relation].phrasings:
            regex = re.escape(phrasing).replace(re.escape("[X]"), r"(\w+)").replace(re.escape("[Y]"), r"(\w+)")
            statement_patterns.append((relation, re.compile(f"^{regex}$")))
    question_patterns = []
    for relation in relations:
        head, _, tail = TEMPLATES[relation].partition("[X]")
        question_patterns.append((relation, re.compile(f"^Q: {re.escape(head)}(\\w+){re.escape(tail)}$")))
    counts: Counter = Counter()
    for document in documents:
        lines = document.split("\n")
        for i, line in enumerate(lines):
            if line.startswith("A: "):
                continue
            if line.startswith("Q: "):
                answer = lines[i + 1].removeprefix("A: ") if i + 1 < len(lines) else ""
                hits = [(r, m.group(1)) for r, p in question_patterns if (m := p.match(line))]
                for relation, subject in hits:
                    counts[(relation, subject, answer)] += 1
                continue
            for relation, pattern in statement_patterns:
                if m := pattern.match(line):
                    counts[(relation, m.group(1), m.group(2))] += 1
    return counts
