"""Answer normalisation and exact match.

The paper (Gekhman et al. 2024) scores by exact match but does not state its normalisation; we use the usual
SQuAD-style one: lower-case, drop punctuation and the articles a/an/the, collapse white space.
"""

import re
import string

_ARTICLES = re.compile(r"\b(a|an|the)\b")
PUNCTUATION = str.maketrans("", "", string.punctuation)


def normalize(text: str) -> str:
    text = text.lower().translate(PUNCTUATION)
    text = _ARTICLES.sub(" ", text)
    return " ".join(text.split())


def first_line(text: str) -> str:
    """A generated answer is the text up to the first newline (docs/method.md §1)."""
    return text.split("\n", 1)[0].strip()


def exact_match(prediction: str, gold: str) -> bool:
    """Equal after normalisation. A gold answer that normalises to nothing ("The", "...") matches no prediction:
    an empty answer is not a right one (the ENTITYQUESTIONS loader drops such questions and says so)."""
    expected = normalize(gold)
    return bool(expected) and normalize(first_line(prediction)) == expected
