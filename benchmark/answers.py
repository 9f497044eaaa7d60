"""Answer normalisation and exact match.

The paper (Gekhman et al. 2024) scores by exact match but does not state its normalisation; we use the usual
SQuAD-style one: lower-case, drop punctuation and the articles a/an/the, collapse white space.
"""

import re
import string
from collections.abc import Sequence

_ARTICLES = re.compile(r"\b(a|an|the)\b")
PUNCTUATION = str.maketrans("", "", string.punctuation)


def normalize(text: str) -> str:
    text = text.lower().translate(PUNCTUATION)
    text = _ARTICLES.sub(" ", text)
    return " ".join(text.split())


def first_line(text: str) -> str:
    """A generated answer is the text up to the first newline (docs/method.md §1)."""
    return text.split("\n", 1)[0].strip()


# A question's gold answer: one string, or the aliases of one answer (a ``qa`` source with ``answers_are:
# aliases``; any one of them is right). The first alias is the one fine-tuning trains on.
Gold = str | tuple[str, ...]
ALIASES = "aliases"  # the question-table column that holds them, where a source has them


def exact_match(prediction: str, gold: Gold) -> bool:
    """Equal after normalisation (to any alias, for aliases). A gold answer that normalises to nothing ("The",
    "...") matches no prediction: an empty answer is not a right one (the ENTITYQUESTIONS loader drops such
    questions and says so)."""
    if not isinstance(gold, str):
        return any(exact_match(prediction, alias) for alias in gold)
    expected = normalize(gold)
    return bool(expected) and normalize(first_line(prediction)) == expected


def golds(rows) -> list[Gold]:
    """Each row's gold (``Gold``) from a question table (a polars frame): its aliases where the table has them,
    else its answer."""
    answers = rows["answer"].to_list()
    if ALIASES not in rows.columns:
        return answers
    return [_gold(aliases, answer) for aliases, answer in zip(rows[ALIASES].to_list(), answers, strict=True)]


def row_gold(row: dict) -> Gold:
    """``golds`` for one row as a dict."""
    return _gold(row.get(ALIASES), row["answer"])


def _gold(aliases, answer: str) -> Gold:
    return tuple(aliases) if aliases else answer


def all_answers(gold_list: Sequence[Gold]) -> list[str]:
    """Every answer string of every gold, in order (what answer-length limits are taken over)."""
    return [a for gold in gold_list for a in ((gold,) if isinstance(gold, str) else gold)]
