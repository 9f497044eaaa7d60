"""The four SliCK categories and the rule that assigns them (Gekhman et al. 2024, docs/method.md §1).

    HighlyKnown   P_Correct(T=0) = 1
    MaybeKnown    0 < P_Correct(T=0) < 1
    WeaklyKnown   P_Correct(T=0) = 0 and P_Correct(T>0) > 0
    Unknown       P_Correct(T=0) = 0 and P_Correct(T>0) = 0

"Known" is the first three pooled. Every stage that needs the categories (SliCK and its back-ends, mixtures,
evaluation, analysis, reports) imports them from here, so none has to import another stage for them.
"""

from __future__ import annotations

CATEGORIES = ("HighlyKnown", "MaybeKnown", "WeaklyKnown", "Unknown")
KNOWN = ("HighlyKnown", "MaybeKnown", "WeaklyKnown")


def category(p_correct_greedy: float, any_sample_correct: bool) -> str:
    """Samples matter only when every greedy answer is wrong, and then only whether any of them is right."""
    if p_correct_greedy == 1:
        return "HighlyKnown"
    if p_correct_greedy > 0:
        return "MaybeKnown"
    return "WeaklyKnown" if any_sample_correct else "Unknown"
