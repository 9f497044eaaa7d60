"""What the findings judge, as typed models: every finished run of ONE training configuration (a suite that
sweeps training settings judges each configuration apart) and the linear model's fits (``record.LinearFit``, the
type the recorder logs and the readers read back).

Accuracies are fractions in [0, 1] (0.02 = 2 points), as everywhere in the benchmark. A field left out reads
as None (a number: NaN); keys a row carries beyond these (``config``, ``early_stop_epoch``, the seed metrics)
are ignored. Runs of other kinds are ignored by the findings that do not use them.
"""

from __future__ import annotations

import math
from typing import Any

import polars as pl
from pydantic import BaseModel, ConfigDict, Field, field_validator

from benchmark.record import LinearFit


class _Record(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore")

    def value(self, key: str) -> float:
        """The number under ``key`` as a float; a missing one (None) reads NaN."""
        value = getattr(self, key)
        return math.nan if value is None else float(value)


class RunSummary(_Record):
    """One finished (mixture, seed) as the pipeline passes it (``analyse.suite.finished_runs``)."""

    variant: str | None = Field(None, description='the run\'s name ("unknown_75_seed1"), for the gates\' reasons')
    mixture: str = Field(description='the seed-independent set name (Mixture.name): "unknown_50", '
                                     '"unknown_50_known_only", "MaybeKnown", "natural", "idk_unknown_50"')
    kind: str = Field(description="Mixture.kind: unknown_fraction | known_only | single_category | natural | "
                                  "idk_relabel")
    seed: int = Field(description="the training seed")
    unknown_fraction: float | None = Field(None, description="nominal X: the X of D (unknown_fraction, "
                                           "idk_relabel) or of the D that a D_Known was cut from (known_only); "
                                           "None for the other kinds")
    realised_unknown_fraction: float | None = Field(None, description="Unknown examples / examples in the set "
                                                    "actually trained on (0 for known_only; the relabelled share "
                                                    "for idk_relabel)")
    category: str | None = Field(None, description="single_category only: HighlyKnown | MaybeKnown | WeaklyKnown "
                                                   "| Unknown")
    n_train_known: int | None = Field(None, description="Known (HighlyKnown+MaybeKnown+WeaklyKnown) examples in "
                                                        "the set")
    n_train_unknown: int | None = Field(None, description="Unknown examples in the set")
    epochs_trained: int | None = Field(None, description="the CONVERGENCE epoch (convergence/epoch)")
    final_train_fit: float | None = Field(None, description="convergence/train/acc/all: share of its train "
                                                            "examples fitted at the end")
    steps_per_epoch: int | None = Field(None, description="optimizer steps an epoch")
    optimizer_steps: int | None = Field(None, description="optimizer steps of the whole run (to CONVERGENCE)")
    fit_epochs_known: float | None = Field(None, description="fit/epochs_to_50pct/Known; None or NaN = never "
                                                             "reached 50%")
    fit_epochs_unknown: float | None = Field(None, description="fit/epochs_to_50pct/Unknown; likewise")
    early_stop_acc: float | None = Field(None, description="early_stop/test/acc/all (in-distribution test "
                                                           "accuracy)")
    convergence_acc: float | None = Field(None, description="convergence/test/acc/all")
    # The IDK variant only (from test/acc_answered and test/answered_fraction).
    early_stop_acc_answered: float | None = None
    convergence_acc_answered: float | None = None
    early_stop_answered_fraction: float | None = None
    convergence_answered_fraction: float | None = None
    # Optional, for the paper's per-question test when a comparison has a single pair of runs: right/wrong per
    # in-distribution test question, in ONE fixed question order shared by every run (the test table's order,
    # OOD questions left out).
    early_stop_correct: list[bool] | None = None
    convergence_correct: list[bool] | None = None
    early_stop_answered: list[bool] | None = Field(None, description="IDK only: the prediction is not the IDK "
                                                                     "answer")
    convergence_answered: list[bool] | None = Field(None, description="likewise, at CONVERGENCE")

    @property
    def name(self) -> str:
        return self.variant or f"{self.mixture}_seed{self.seed}"

    @property
    def percent(self) -> float:
        # Nominal fractions come from YAML and from arithmetic: compare them rounded, as percentages.
        return round(self.value("unknown_fraction") * 100, 6)


class FindingsInput(BaseModel):
    """What ``evaluate_findings`` judges."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    runs: list[RunSummary] = Field(default_factory=list, description="one per finished (mixture, seed); a "
                                   "polars DataFrame with these columns is read row by row")
    linear: dict[str, LinearFit] | None = Field(None, description="``linear_fits(points)``: per split "
                                                       "(``in_distribution``, ``ood``, and each ``<split>_steps``)"
                                                       "; the findings read the in-distribution ones")

    @field_validator("runs", mode="before")
    @classmethod
    def _rows(cls, runs: Any) -> Any:
        if runs is None:
            return []
        return runs.to_dicts() if isinstance(runs, pl.DataFrame) else runs
