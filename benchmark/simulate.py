"""Simulated suite runs, to test the verdict engine (``benchmark.analyse.findings``) against worlds whose truth
is known. A developer's tool, not a command of ``python -m benchmark``: the tests use it
(``tests/test_findings_null.py``), and so does whoever changes a finding and wants its error rates:

    python -m benchmark.simulate --world null --replicates 200             # how often each finding "holds"
    python -m benchmark.simulate --world planted --control unmatched --json

A replicate is what the pipeline hands to ``benchmark.analyse.findings.evaluate_findings`` after a run of the
default sweep (``suites/unknown_sweep.yaml``): one row per finished variant (the same fields as
``analyse.suite.finished_runs``), each variant's per-epoch history (train fit per category, dev and test
accuracy) and the linear model's points per (variant, epoch) (the columns of ``analyse.suite.linear_points``).
Pure numpy and polars, seeded: the same arguments give the same tables.

The design (``Design``) is the default suite's: |D| = 174, batch 16, 20 epochs, seeds 0-2, Unknown fractions
0/25/50/75/100% and D_Known for each 0 < X < 1, 500 test questions. Its ``step_matched`` flag is the control's
design: True trains each D_Known with as many batches an epoch as its D (the same optimizer steps and schedule),
False with one pass over its own, smaller set (fewer steps an epoch, the design before step matching).

The world (``World``) says what accuracy is made of, per variant and epoch:

    test accuracy = β0 + β_kn·N_kn/|D| + β_unk·N_unk/|D| − forgetting·(optimizer steps so far)/(steps of a D run)
                    + noise

N_kn and N_unk are the Known and Unknown train examples fitted at that epoch (fitting grows with the passes over
the set, Unknown examples later than Known ones). Noise: a per-run offset (part of it shared by D_X and its
D_Known, which share their Known examples), a per-run drift over the epochs, and per-epoch noise; dev accuracy
(which picks EARLY_STOP) has its own per-epoch noise. Together they give a run's test accuracy at a stopping
point an SD of about 0.004 across seeds, the low end of what the default run shows (its 95% intervals across 3
seeds imply SDs of 0.002-0.018, median about 0.008: ``--noise 2``). The power of 3 seeds depends on it.

- ``NULL``: the world that audited the engine (Unknown examples inert, β_unk = 0; the model forgets with optimizer
  steps, 5.4 points over a D's run; Unknown-heavy sets are not fitted by the last epoch, as in the default run).
- ``NULL_FITTED``: Unknown examples still inert, every set fitted by its last epoch and the control forgetting
  little: the null in which the engine's gates pass, so the verdicts themselves are tested.
- ``NULL_SPEED``: as ``NULL_FITTED``, with Unknown examples fitted as fast as Known ones: the null of the
  fitting-speed finding (in the other worlds Unknown examples are fitted later, so that finding is true there).
- ``PLANTED``: a real effect of the paper's size (β_unk = −β_kn = −0.08: Unknown examples harmful once fitted,
  neutral early because they are fitted late), every set fitted, little forgetting.
- ``IDK_NULL``: with ``Design(idk_fraction=0.5)``, an IDK variant whose accuracy on the questions it answers
  falls about 15 points from EARLY_STOP to CONVERGENCE while D's falls about 4 (``World.idk_late_drop``).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace

import numpy as np
import polars as pl

from benchmark.analyse.findings import FindingsInput, evaluate_findings, linear_fits
from benchmark.analyse.measures import epochs_to_fit

CATEGORY_SHARES = {"HighlyKnown": 0.55, "MaybeKnown": 0.13, "WeaklyKnown": 0.32}  # the world's Known mix (SliCK)
# Passes over a set at which 1 − 1/e of a Known category is fitted: HighlyKnown first, WeaklyKnown last.
KNOWN_FIT_PASSES = {"HighlyKnown": 0.5, "MaybeKnown": 0.8, "WeaklyKnown": 2.5}


@dataclass(frozen=True)
class Design:
    """What the suite trains: the default sweep's design."""

    size: int = 174  # |D|
    batch_size: int = 16
    epochs: int = 20
    seeds: tuple[int, ...] = (0, 1, 2)
    unknown_fractions: tuple[float, ...] = (0.0, 0.25, 0.5, 0.75, 1.0)
    known_only: bool = True
    step_matched: bool = True  # D_Known draws as many batches an epoch as its D
    idk_fraction: float | None = None  # an IDK variant at this X (suites/idk_relabel.yaml: 0.5)

    def n_unknown(self, x: float) -> int:
        return math.floor(x * self.size + 0.5)  # benchmark.mixtures: half up

    def steps_per_epoch(self, examples: int) -> int:
        return math.ceil(examples / self.batch_size)


@dataclass(frozen=True)
class World:
    """What accuracy is made of (module docstring). Accuracies are fractions (0.01 = 1 point)."""

    beta0: float = 0.25
    beta_kn: float = 0.08
    beta_unk: float = 0.0
    forgetting: float = 0.054  # accuracy lost over a D's whole run, linear in optimizer steps
    # Unknown fitting: a logistic in passes over the set, midpoint unknown_midpoint + unknown_slowdown·X.
    unknown_midpoint: float = 11.0
    unknown_slowdown: float = 10.0
    unknown_scale: float = 3.0
    unknown_like_known: bool = False  # Unknown examples fitted as fast as Known ones (the null of fitting speed)
    speed_sd: float = 0.15  # each run's fitting speed per category: passes times exp(N(0, speed_sd))
    pair_sd: float = 0.002  # run offset shared by D_X and its D_Known (the same Known examples and seed)
    run_sd: float = 0.002  # each run's own offset
    drift_sd: float = 0.002  # each run's own drift, reached at the last epoch
    epoch_sd: float = 0.002  # test accuracy, per epoch
    dev_sd: float = 0.01  # dev accuracy, per epoch (200 questions)
    ood_scale: float = 0.8  # OOD accuracy: every term above times this, its own noise
    idk_precision: float = 0.45  # IDK: accuracy on the questions answered, before its late drop
    idk_late_drop: float = 0.0  # IDK: the fall of that accuracy over the run (linear in steps)
    idk_abstain: float = 0.45  # IDK: share of questions it abstains on once its IDK answers are fitted


NULL = World()
NULL_FITTED = replace(NULL, forgetting=0.015, unknown_midpoint=5.0, unknown_slowdown=2.0, unknown_scale=1.0)
PLANTED = replace(NULL_FITTED, beta_unk=-0.08)
# Unknown examples fitted as fast as Known ones (and inert): the null of "Unknown examples are fitted slower".
NULL_SPEED = replace(NULL_FITTED, unknown_like_known=True)
# IDK's accuracy on answered questions falls ~15 points from EARLY_STOP to CONVERGENCE, D's (50%) ~4.
IDK_NULL = replace(NULL_FITTED, forgetting=0.058, idk_late_drop=0.115)
WORLDS = {"null": NULL, "null_fitted": NULL_FITTED, "null_speed": NULL_SPEED, "planted": PLANTED,
          "idk_null": IDK_NULL}


@dataclass
class Simulation:
    """One simulated suite run: the inputs of ``findings.evaluate_findings`` and what they are built from."""

    runs: list[dict]  # analyse.suite.finished_runs rows
    history_columns: dict[str, dict[str, np.ndarray]]  # per variant: its per-epoch metrics, column by column
    points: pl.DataFrame  # analyse.suite.linear_points rows (variant, epoch, fitted shares, accuracies, steps)
    mixtures: dict[str, dict[str, int]] = field(default_factory=dict)  # per variant: examples per category

    @property
    def histories(self) -> dict[str, pl.DataFrame]:
        """Per variant: one row per epoch, the columns of a fine-tuned variant's ``history.parquet``."""
        return {name: pl.DataFrame(columns) for name, columns in self.history_columns.items()}


def _plan(design: Design) -> list[dict]:
    """The mixtures of one seed: name, kind, nominal X, examples per category, examples drawn per epoch."""
    plans = []
    for x in design.unknown_fractions:
        n_unknown = design.n_unknown(x)
        n_known = design.size - n_unknown
        known = _split_known(n_known)
        name = f"unknown_{round(x * 100):d}"
        plans.append({"mixture": name, "kind": "unknown_fraction", "x": x, "counts": {**known, "Unknown": n_unknown},
                      "drawn": design.size})
        if design.known_only and 0 < x < 1:
            plans.append({"mixture": f"{name}_known_only", "kind": "known_only", "x": x, "counts": dict(known),
                          "drawn": design.size if design.step_matched else n_known})
    if design.idk_fraction is not None:
        n_unknown = design.n_unknown(design.idk_fraction)
        plans.append({"mixture": f"idk_unknown_{round(design.idk_fraction * 100):d}", "kind": "idk_relabel",
                      "x": design.idk_fraction,
                      "counts": {**_split_known(design.size - n_unknown), "Unknown": n_unknown}, "drawn": design.size})
    return plans


def _split_known(n_known: int) -> dict[str, int]:
    """n_known over the Known categories by largest remainder (as benchmark.mixtures splits a relation's)."""
    exact = {c: n_known * s for c, s in CATEGORY_SHARES.items()}
    counts = {c: math.floor(v) for c, v in exact.items()}
    for c in sorted(exact, key=lambda c: counts[c] - exact[c])[:n_known - sum(counts.values())]:
        counts[c] += 1
    return counts


def _fitted(category: str, passes: np.ndarray, x: float, world: World) -> np.ndarray:
    if category == "Unknown" and world.unknown_like_known:
        return sum(share * _fitted(c, passes, x, world) for c, share in CATEGORY_SHARES.items())
    if category == "Unknown":
        midpoint = world.unknown_midpoint + world.unknown_slowdown * x
        return 1.0 / (1.0 + np.exp(-(passes - midpoint) / world.unknown_scale))
    return 1.0 - np.exp(-passes / KNOWN_FIT_PASSES[category])


def simulate(world: World = NULL, design: Design = Design(), seed: int = 0) -> Simulation:
    """One suite run of ``design`` in ``world``, drawn with ``seed``."""
    rng = np.random.default_rng(seed)
    runs, histories, points, mixtures = [], {}, [], {}
    for run_seed in design.seeds:
        shared = {x: rng.normal(0, world.pair_sd, 2) for x in design.unknown_fractions}
        for plan in _plan(design):
            name = plan["mixture"] + (f"_seed{run_seed}" if len(design.seeds) > 1 else "")
            sweep = plan["kind"] in ("unknown_fraction", "known_only")
            pair = shared.get(plan["x"], np.zeros(2)) if sweep else np.zeros(2)
            history, (kn_share, unk_share) = _history(plan, pair, world, design, rng)
            histories[name], mixtures[name] = history, plan["counts"]
            runs.append(_row(name, plan, run_seed, history, design))
            if plan["kind"] != "idk_relabel":  # the paper's linear model leaves the IDK variant out (linear_points)
                points.append({"variant": [name] * design.epochs, "epoch": history["epoch"],
                               "known_fitted_share": kn_share, "unknown_fitted_share": unk_share,
                               "test/acc/all": history["test/acc/all"], "ood/acc/all": history["ood/acc/all"],
                               "steps": history["train/optimizer_steps"]})
    columns = {key: np.concatenate([np.asarray(p[key]) for p in points]) for key in points[0]}
    return Simulation(runs, histories, pl.DataFrame(columns), mixtures)


def _history(plan: dict, pair: np.ndarray, world: World, design: Design,
             rng: np.random.Generator) -> tuple[dict[str, np.ndarray], tuple[np.ndarray, np.ndarray]]:
    """One run's per-epoch metrics, and its fitted Known and Unknown examples per epoch as shares of |D|."""
    epochs = np.arange(1, design.epochs + 1)
    steps = design.steps_per_epoch(plan["drawn"]) * epochs
    history: dict[str, np.ndarray] = {"epoch": epochs, "train/optimizer_steps": steps.astype(float)}
    passes = steps * design.batch_size / sum(plan["counts"].values())  # how often each example has been drawn
    fit, known_fitted, unknown_fitted = _fit(plan, passes, world, rng)
    history |= fit
    shares = known_fitted / design.size, unknown_fitted / design.size
    progress = steps / (design.steps_per_epoch(design.size) * design.epochs)
    history |= _accuracies(plan["kind"], history, shares, progress, pair, world, rng)
    return history, shares


def _fit(plan: dict, passes: np.ndarray, world: World,
         rng: np.random.Generator) -> tuple[dict[str, np.ndarray], np.ndarray, np.ndarray]:
    """The train fit columns per category, Known and overall; and the Known and Unknown examples fitted."""
    counts, size = plan["counts"], passes.size
    columns, fitted_counts = {}, {}
    for category, count in counts.items():
        speed = math.exp(rng.normal(0, world.speed_sd))
        share = _fitted(category, passes * speed, plan["x"], world)
        # Noise on the fitted share that vanishes where nothing or everything is fitted.
        share = np.clip(share + rng.normal(0, 0.04, size) * share * (1 - share), 0, 1)
        share = share if count else np.zeros(size)
        fitted_counts[category] = np.round(share * count)
        if count:
            columns[f"train/acc/{category}"] = fitted_counts[category] / count
    n_known = sum(counts[c] for c in CATEGORY_SHARES)
    known_fitted = sum(fitted_counts[c] for c in CATEGORY_SHARES)
    unknown_fitted = fitted_counts.get("Unknown", np.zeros(size))
    if n_known:
        columns["train/acc/Known"] = known_fitted / n_known
    columns["train/acc/all"] = (known_fitted + unknown_fitted) / sum(counts.values())
    return columns, known_fitted, unknown_fitted


def _accuracies(kind: str, history: dict[str, np.ndarray], shares: tuple[np.ndarray, np.ndarray],
                progress: np.ndarray, pair: np.ndarray, world: World,
                rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Test, OOD and dev accuracy per epoch (and the IDK variant's accuracy on answered questions)."""
    epochs = history["epoch"]
    kn_share, unk_share = shares
    beta_unk = 0.0 if kind == "idk_relabel" else world.beta_unk  # IDK answers are not facts
    columns, model_state = {}, {}  # model_state: the model's own offset and drift per epoch, shared by dev and test
    for split, scale in (("test", 1.0), ("ood", world.ood_scale)):
        truth = scale * (world.beta0 + world.beta_kn * kn_share + beta_unk * unk_share
                         - world.forgetting * progress)
        offset = pair[0 if split == "test" else 1] + rng.normal(0, world.run_sd)
        drift = rng.normal(0, world.drift_sd) * epochs / epochs.size
        model_state[split] = truth + offset + drift
        columns[f"{split}/acc/all"] = model_state[split] + rng.normal(0, world.epoch_sd, epochs.size)
    dev = model_state["test"]
    if kind == "idk_relabel":
        abstains = world.idk_abstain * history["train/acc/Unknown"]
        precision = world.idk_precision - world.beta0 - world.idk_late_drop * progress
        columns["test/acc_answered"] = columns["test/acc/all"] + precision
        columns["test/answered_fraction"] = 1.0 - abstains
        columns["test/acc/all"] = columns["test/acc_answered"] * (1.0 - abstains)
        dev = (dev + precision) * (1.0 - abstains)
    columns["dev/acc/all"] = dev + rng.normal(0, world.dev_sd, epochs.size)
    return columns


def _row(name: str, plan: dict, run_seed: int, history: dict[str, np.ndarray], design: Design) -> dict:
    """The run's row as ``analyse.suite.finished_runs`` gives it (its summary metrics under the findings' names)."""
    counts, kind, epochs = plan["counts"], plan["kind"], history["epoch"]
    n = sum(counts.values())
    early = int(epochs[np.argmax(history["dev/acc/all"])])  # benchmark.train: ties go to the earliest
    # analyse.fitting_speed's rule, on the columns (what the pipeline reads as fit/epochs_to_50pct/...)
    speed = {c: epochs_to_fit(epochs, history[f"train/acc/{c}"], 0.5) if f"train/acc/{c}" in history
             else None for c in ("Known", "Unknown")}
    row = {"variant": name, "mixture": plan["mixture"], "kind": kind, "seed": run_seed,
           "unknown_fraction": plan["x"],
           "realised_unknown_fraction": counts.get("Unknown", 0) / n if kind != "known_only" else 0.0,
           "category": None, "n_train_known": sum(counts[c] for c in CATEGORY_SHARES),
           "n_train_unknown": counts.get("Unknown", 0), "epochs_trained": design.epochs, "early_stop_epoch": early,
           "fit_epochs_known": _none_to_nan(speed["Known"]), "fit_epochs_unknown": _none_to_nan(speed["Unknown"]),
           "early_stop_acc": float(history["test/acc/all"][early - 1]),
           "convergence_acc": float(history["test/acc/all"][-1]),
           "final_train_fit": float(history["train/acc/all"][-1]),
           "steps_per_epoch": design.steps_per_epoch(plan["drawn"]),
           "optimizer_steps": int(history["train/optimizer_steps"][-1])}
    if kind == "idk_relabel":
        for stop, index in (("early_stop", early - 1), ("convergence", -1)):
            row[f"{stop}_acc_answered"] = float(history["test/acc_answered"][index])
            row[f"{stop}_answered_fraction"] = float(history["test/answered_fraction"][index])
    return row


def scaled_noise(world: World, factor: float) -> World:
    """``world`` with every noise SD multiplied by ``factor``."""
    return replace(world, **{name: getattr(world, name) * factor
                             for name in ("pair_sd", "run_sd", "drift_sd", "epoch_sd", "dev_sd")})


def _none_to_nan(value: float | None) -> float:
    return math.nan if value is None else float(value)


def summary(simulation: Simulation, splits: Sequence[str] = ("in_distribution", "ood")) -> FindingsInput:
    """What ``analyse.suite.analyse`` passes to ``findings.evaluate_findings`` (``splits``: the linear model's; the
    findings read only the in-distribution fits, so ``verdict_rates`` leaves the OOD ones out)."""
    return FindingsInput(runs=simulation.runs, linear=linear_fits(simulation.points, splits) or None)


def verdict_rates(world: World, design: Design = Design(), replicates: int = 200, seed: int = 0,
                  evaluate: Callable[[FindingsInput], Sequence] = evaluate_findings) -> dict[str, dict[str, int]]:
    """Per finding, how many of ``replicates`` simulated runs gave each verdict (replicate r is drawn with seed
    ``seed + r``)."""
    counts: dict[str, dict[str, int]] = {}
    for replicate in range(replicates):
        for finding in evaluate(summary(simulate(world, design, seed + replicate), ("in_distribution",))):
            tally = counts.setdefault(finding.name, {"holds": 0, "not shown": 0, "contradicted": 0})
            tally[finding.verdict] += 1
    return counts


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmark.simulate", description=__doc__.split("\n\n")[0])
    parser.add_argument("--world", choices=sorted(WORLDS), default="null")
    parser.add_argument("--control", choices=("matched", "unmatched"), default="matched",
                        help="D_Known trained with its D's optimizer steps (matched) or one pass over its own set")
    parser.add_argument("--idk", action="store_true", help="add the IDK variant at 50%% Unknown")
    parser.add_argument("--idk-late-drop", type=float, default=None, help="the IDK precision's fall over the run")
    parser.add_argument("--forgetting", type=float, default=None, help="accuracy lost over a D's run")
    parser.add_argument("--noise", type=float, default=1.0, help="every noise SD of the world times this")
    parser.add_argument("--seeds", type=int, default=3, help="training seeds per mixture")
    parser.add_argument("--replicates", type=int, default=200)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    world = WORLDS[args.world]
    if args.idk_late_drop is not None:
        world = replace(world, idk_late_drop=args.idk_late_drop)
    if args.forgetting is not None:
        world = replace(world, forgetting=args.forgetting)
    world = scaled_noise(world, args.noise)
    design = Design(seeds=tuple(range(args.seeds)), step_matched=args.control == "matched",
                    idk_fraction=0.5 if args.idk else None)
    rates = verdict_rates(world, design, args.replicates, args.seed)
    if args.json:
        json.dump({"world": asdict(world), "design": asdict(design), "replicates": args.replicates,
                   "verdicts": rates}, sys.stdout, indent=1)
        print()
        return 0
    print(f"world {args.world}, D_Known {args.control}, {args.seeds} seeds, noise x{args.noise:g}, "
          f"{args.replicates} replicates")
    for name, tally in rates.items():
        print(f"{name:32s} " + "  ".join(f"{v} {100 * k / args.replicates:5.1f}%" for v, k in tally.items()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
