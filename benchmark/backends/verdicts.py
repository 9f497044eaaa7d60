"""The engine's early verdicts: which of the rows it decodes are still worth a token.

A sample only matters through one bit, does it equal the gold answer after normalisation, so a row stops as soon
as that bit is known: at its first newline (or EOS, or its length limit), or as soon as its text can no longer
exact-match the gold answer (``can_still_match``), or, with ``stop_at_hit``, once another sample of its job has
matched. ``Rows`` keeps that book for one engine call (``backends/engine.py``); ``can_still_match`` is the rule.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import torch

from benchmark.answers import PUNCTUATION, Gold, exact_match, normalize
from benchmark.prompts import answer_texts

_ARTICLES = ("a", "an", "the")
_TRAILING_WORD = re.compile(r"(\S*)$")


def can_still_match(partial: str, gold: Gold) -> bool:
    """Could some continuation of ``partial`` (an unfinished answer, no newline yet) exact-match ``gold``?

    Sound, not exact: it may say yes for a dead answer, never no for a live one. ``benchmark.answers.normalize``
    works word by word, so the words before the last whitespace are final and must be the gold's first words;
    the last word may still grow, so it must be the start of the gold's next word, or something normalisation can
    still drop (punctuation only, the start of an article). Text with a replacement character (a multi-byte
    character split between tokens) is never ruled out.
    """
    if not isinstance(gold, str):  # aliases: live while it may still become any one of them
        return any(can_still_match(partial, alias) for alias in gold)
    if "\n" in partial:
        return exact_match(partial, gold)
    if "\ufffd" in partial:
        return True
    last = _TRAILING_WORD.search(partial).group(1)
    done = normalize(partial[:len(partial) - len(last)]).split()
    target = normalize(gold).split()
    if done != target[:len(done)]:
        return False
    stem = normalize_word(last)
    if not stem or any(article.startswith(stem) for article in _ARTICLES):
        return True
    return len(done) < len(target) and target[len(done)].startswith(stem)


def normalize_word(word: str) -> str:
    """A word as ``normalize`` leaves it (lower case, no punctuation), articles kept."""
    return word.lower().translate(PUNCTUATION)


class Rows:
    """Book-keeping for the logical rows of one call: tokens so far, which rows still decode, verdicts.

    ``group[r]`` is row r's job; with ``golds`` (one per job) a row closes as soon as its verdict is known, and
    with ``stop_at_hit`` every open row of a job closes, verdict None, once one of its rows matches. ``limits``
    (one per job; default the engine's ``max_new_tokens``): a row closes after that many tokens. ``engine`` is
    the ``Engine`` decoding them (its tokenizer, stop tokens, padding and stats; not imported: it imports this).
    """

    def __init__(self, engine, group: torch.Tensor, *, golds: Sequence[str] | None,
                 stop_at_hit: bool = False, limits: torch.Tensor | None = None):
        self.engine, self.group, self.golds, self.stop_at_hit = engine, group, golds, stop_at_hit
        total = len(group)
        self.limit = (torch.full((total,), engine.max_new_tokens, dtype=torch.long) if limits is None
                      else limits[group])
        width = int(self.limit.max()) if total else engine.max_new_tokens
        self.tokens = torch.full((total, width), engine.pad_id, dtype=torch.long)
        self.lengths = torch.zeros(total, dtype=torch.long)
        self.open = torch.ones(total, dtype=torch.bool)
        self.verdict: list[bool | None] = [None] * total
        engine.stats.sequences += total

    def record(self, rows: torch.Tensor, chosen: torch.Tensor, step: int) -> None:
        """Append ``chosen`` (CPU) at ``step`` to open ``rows``; close rows that stopped or whose verdict is known."""
        engine = self.engine
        self.tokens[rows, step] = chosen
        self.lengths[rows] += 1
        engine.stats.tokens += len(rows)
        stopped = engine.stops_cpu[chosen] | (step >= self.limit[rows] - 1)
        if self.golds is None:
            self.open[rows[stopped]] = False
            return
        texts = engine.tokenizer.batch_decode([self.tokens[r, :self.lengths[r]].tolist() for r in rows.tolist()],
                                              skip_special_tokens=True)
        hits = []
        for row, text, stop in zip(rows.tolist(), texts, stopped.tolist(), strict=True):
            gold = self.golds[int(self.group[row])]
            if stop:
                self.verdict[row] = exact_match(text, gold)
            elif not can_still_match(text, gold):
                self.verdict[row] = False
            else:
                continue
            self.open[row] = False
            if self.verdict[row] and self.stop_at_hit:
                hits.append(int(self.group[row]))
        if hits:
            self.open &= ~torch.isin(self.group, torch.tensor(hits))

    def texts(self) -> list[str]:
        return answer_texts(self.engine.tokenizer, [self.tokens[r, :self.lengths[r]].tolist() for r in range(len(self.group))])
