"""Preconditions (gates): each returns '' when it passes, else the reason a verdict is ``not shown``.

- **CONVERGENCE means fitted.** A verdict at CONVERGENCE needs every compared run to have fitted at least 99%
  of its train examples by its last epoch (``final_train_fit``); otherwise ``not shown: not fitted:
  unknown_75_seed1 66%``. The paper's runs were all fitted; here a "last epoch" that is not fitted is not its
  CONVERGENCE.
- **The control barely forgets.** The harm at CONVERGENCE is judged only when the controls (the 0% set and
  every D_Known) lose at most ``LATE_DROP_MARGIN`` (2 points) from EARLY_STOP to CONVERGENCE, as the paper's
  Known-only fine-tuning does; otherwise ``not shown: control forgets 5.4 points (unknown_0)``. A model that
  forgets whatever it is trained on leaves no late drop to attribute to Unknown examples.
- **The control on equal footing.** D − D_Known is compared only when D_Known took the same optimizer steps as
  its D (``optimizer_steps``: the suite's ``mixtures.known_only_steps: matched`` draws as many batches an epoch
  as D has). A D_Known trained one pass over its smaller set takes fewer steps (|D| = 174 at batch 16 is 11 an
  epoch; D_Known at 75% Unknown, 43 examples, 3), and a small model forgets with steps: at equal epochs the gap
  D − D_Known then measures training length, not Unknown examples. In a simulated world where Unknown
  examples do nothing, that design said ``holds`` in 88-100% of runs.
- **Enough clusters.** The linear model's verdicts need at least ``MIN_CLUSTERS`` (10) variants (``linear``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from benchmark.analyse.findings.gaps import Pair, finite_mean
from benchmark.analyse.findings.inputs import RunSummary
from benchmark.analyse.findings.verdicts import missing

FIT_GATE = 0.99  # CONVERGENCE means at least this share of a run's train examples fitted
LATE_DROP_MARGIN = 0.02  # 2 points: the most a control (or IDK) may lose from EARLY_STOP to CONVERGENCE


def fit_gate(runs: Sequence[RunSummary], threshold: float = FIT_GATE) -> str:
    """'' when every run fitted ``threshold`` of its train examples, else the reason naming those that did not."""
    short = [r for r in runs if not r.value("final_train_fit") >= threshold]
    if not short:
        return ""
    parts = [f"{r.name} {'fit not recorded' if missing(r.value('final_train_fit')) else _pct(r)}" for r in short]
    return f"not fitted: {', '.join(parts)} (CONVERGENCE needs ≥ {threshold:.0%})"


def _pct(run: RunSummary) -> str:
    return f"{100 * run.value('final_train_fit'):.1f}%"


def late_drop(runs: Sequence[RunSummary], early: str = "early_stop_acc", late: str = "convergence_acc") -> float:
    return finite_mean([r.value(early) - r.value(late) for r in runs])


def control_gate(controls: Mapping[str, Sequence[RunSummary]], margin: float = LATE_DROP_MARGIN) -> tuple[str, dict]:
    """'' when every control's mean EARLY_STOP → CONVERGENCE drop is within ``margin``, else the reason; and
    the drops (points lost, as fractions) per control mixture."""
    drops = {mixture: late_drop(runs) for mixture, runs in controls.items() if runs}
    over = [f"{100 * drop:.1f} points ({mixture})" for mixture, drop in drops.items()
            if missing(drop) or drop > margin]
    reason = f"control forgets {', '.join(over)}, more than {100 * margin:g}" if over else ""
    return reason, drops


def step_gate(pairs: Sequence[Pair]) -> str:
    """'' when every D_Known took its D's optimizer steps, else the reason."""
    unknown = [k.name for d, k in pairs if missing(d.value("optimizer_steps"), k.value("optimizer_steps"))]
    if unknown:
        return f"optimizer steps not recorded ({', '.join(unknown[:3])}{', ...' if len(unknown) > 3 else ''})"
    unequal = [(d, k) for d, k in pairs if d.value("optimizer_steps") != k.value("optimizer_steps")]
    if not unequal:
        return ""
    d, k = unequal[0]
    return (f"D_Known not step-matched ({k.name}: {_steps_text(k)} vs {_steps_text(d)} for {d.name}; "
            "mixtures.known_only_steps: matched trains it with its D's steps)")


def _steps_text(run: RunSummary) -> str:
    per_epoch = run.value("steps_per_epoch")
    total = f"{run.value('optimizer_steps'):.0f} steps"
    return total if missing(per_epoch) else f"{total}, {per_epoch:.0f} an epoch"
