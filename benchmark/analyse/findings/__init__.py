"""The paper's findings as verdicts on one suite run: pure functions, no MLflow, no printing.

Each finding is a function ``(FindingsInput, FindingOptions) -> Finding | None``, None when the suite has none
of its inputs (no single-category sets, no IDK variant, ...), so the caller logs only the findings that apply.
``FINDINGS`` lists them in the paper's order (docs/method.md §5); ``evaluate_findings(summary)`` runs every one.
A new finding is its function and its entry there. The engine is tested against simulated runs
(``benchmark.simulate``, ``tests/test_findings_null.py``): in worlds without an effect no finding says
``holds`` in more than 5% of simulated runs, and in a world with the paper's effect the findings it implies
say ``holds`` in at least 80%.

Where each part lives: ``inputs`` (what is judged: ``FindingsInput``, ``RunSummary``), ``verdicts`` (how an interval
becomes a verdict; the ``Finding`` it is, ``benchmark.record``'s), ``gaps`` (paired differences, per-fraction tests with Holm or TOST),
``gates`` (the preconditions a verdict needs), and the findings by what they judge: ``sweep`` (the Unknown
fraction), ``linear`` (the linear model, and ``linear_fits``), ``categories`` (single-category sets, IDK).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from benchmark.analyse.findings.verdicts import DEFAULT_OPTIONS, FindingOptions
from benchmark.record import Finding

if TYPE_CHECKING:
    from benchmark.analyse.findings.inputs import FindingsInput

# Every finding in the paper's order: its name (the function's, and the tag ``finding/<name>``) and the module of
# this package that defines it. Modules, not functions, so that reading the names (``benchmark.results``) imports
# no numpy or scipy.
FINDINGS: dict[str, str] = {
    "unknown_fitted_slower": "sweep",
    "unknown_harms_at_convergence": "sweep",
    "early_stop_neutral": "sweep",
    "beta_unk_negative": "linear",
    "beta_kn_comparable": "linear",
    "maybe_known_best": "categories",
    "idk_removes_late_drop": "categories",
}
# The other names this package gives, each imported from its module when first asked for.
_ELSEWHERE = {"FindingsInput": "inputs", "RunSummary": "inputs",
              "linear_fits": "linear", "HOLDS": "verdicts", "NOT_SHOWN": "verdicts", "CONTRADICTED": "verdicts",
              "Verdict": "verdicts", "direction_verdict": "verdicts", "equivalence_verdict": "verdicts"}

__all__ = ["DEFAULT_OPTIONS", "FINDINGS", "Finding", "FindingOptions", "evaluate_findings", *FINDINGS, *_ELSEWHERE]


def __getattr__(name: str) -> Any:
    module = FINDINGS.get(name) or _ELSEWHERE.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{module}"), name)


def evaluate_findings(summary: FindingsInput | Mapping, options: FindingOptions = DEFAULT_OPTIONS) -> list[Finding]:
    """Every finding whose inputs the suite has, in the paper's order. ``summary``: a ``FindingsInput``, or a
    mapping of its fields (validated into one here)."""
    from benchmark.analyse.findings.inputs import FindingsInput

    summary = FindingsInput.model_validate(summary)
    judge: list[Callable[[FindingsInput, FindingOptions], Finding | None]] = [__getattr__(n) for n in FINDINGS]
    return [f for f in (finding(summary, options) for finding in judge) if f is not None]
