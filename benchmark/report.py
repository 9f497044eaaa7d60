"""Figures and tables a person reads: SliCK's category distribution, fitting curves, the Unknown sweep, the linear model.

Each function takes plain tables and returns a matplotlib Figure (the tracking module logs it as PNG).
"""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import polars as pl  # noqa: E402

from benchmark.slick import CATEGORIES  # noqa: E402

COLOURS = {"HighlyKnown": "#1b7837", "MaybeKnown": "#7fbf7b", "WeaklyKnown": "#f1a340", "Unknown": "#b2182b",
           "Known": "#2166ac", "all": "#333333"}


def category_bars(categorised: pl.DataFrame):
    """Share of each SliCK category per split (bars) — the first thing to check about a base model."""
    figure, axis = plt.subplots(figsize=(7, 3.5))
    splits = [s for s in ("train", "dev", "test") if s in categorised["split"].unique().to_list()]
    width = 0.8 / max(len(splits), 1)
    for i, split in enumerate(splits):
        part = categorised.filter(pl.col("split") == split)
        shares = [part.filter(pl.col("category") == c).height / max(part.height, 1) for c in CATEGORIES]
        axis.bar([j + i * width for j in range(4)], shares, width=width, label=f"{split} (n={part.height})")
    axis.set_xticks([j + width * (len(splits) - 1) / 2 for j in range(4)], CATEGORIES)
    axis.set_ylabel("share of questions")
    axis.set_title("SliCK categories of the base model")
    axis.legend()
    figure.tight_layout()
    return figure


def fitting_curves(history: pl.DataFrame, title: str):
    """Train fitting per category and dev/test accuracy per epoch for one variant."""
    figure, (left, right) = plt.subplots(1, 2, figsize=(10, 3.5))
    for category in (*CATEGORIES, "Known"):
        column = f"train/acc/{category}"
        if column in history.columns and history[column].drop_nulls().len():
            left.plot(history["epoch"], history[column], label=category, color=COLOURS[category])
    left.set(xlabel="epoch", ylabel="fraction of train examples fitted", title=f"{title}: train fitting", ylim=(0, 1.02))
    left.legend(fontsize=8)
    for column, style in (("dev/acc/all", ":"), ("test/acc/all", "-"), ("ood/acc/all", "--")):
        if column in history.columns:
            right.plot(history["epoch"], history[column], style, label=column, color="#333333")
    right.set(xlabel="epoch", ylabel="accuracy", title=f"{title}: held-out accuracy")
    right.legend(fontsize=8)
    figure.tight_layout()
    return figure


def unknown_sweep(mixtures: pl.DataFrame, split: str = "test"):
    """Test accuracy against the realised Unknown share, at EARLY_STOP and CONVERGENCE, for D and D_Known, with
    95% intervals across seeds (paper Fig. 3). ``mixtures`` has one row per mixture: ``kind``,
    ``unknown_fraction`` (nominal X; for D_Known the X of the D it was cut from), ``realised_unknown_fraction``,
    and ``<stop>/<split>/acc/all`` with ``/ci_low`` and ``/ci_high``. D_Known is drawn at its D's realised share
    (it is that set minus its Unknown examples)."""
    figure, axis = plt.subplots(figsize=(6.5, 4.2))
    d_sets = mixtures.filter(pl.col("kind") == "unknown_fraction")
    realised_of = dict(zip(d_sets["unknown_fraction"].to_list(), d_sets["realised_unknown_fraction"].to_list(),
                           strict=True))
    for checkpoint, colour in (("early_stop", "#2166ac"), ("convergence", "#b2182b")):
        for kind, style in (("unknown_fraction", "-o"), ("known_only", "--s")):
            part = mixtures.filter(pl.col("kind") == kind).sort("unknown_fraction")
            column = f"{checkpoint}/{split}/acc/all"
            if part.is_empty() or column not in part.columns:
                continue
            x = [100 * (realised_of.get(nominal, nominal) if kind == "known_only" else realised)
                 for nominal, realised in zip(part["unknown_fraction"], part["realised_unknown_fraction"], strict=True)]
            y = part[column].to_numpy()
            low, high = part[f"{column}/ci_low"].to_numpy(), part[f"{column}/ci_high"].to_numpy()
            label = f"{'D' if kind == 'unknown_fraction' else 'D_Known'} {checkpoint.upper()}"
            axis.plot(x, y, style, color=colour, label=label, alpha=1.0 if kind == "unknown_fraction" else 0.7)
            if not all(v != v for v in low):  # intervals exist (several seeds)
                axis.fill_between(x, low, high, color=colour, alpha=0.12 if kind == "unknown_fraction" else 0.06)
    axis.set(xlabel="% Unknown in the fine-tuning set (realised)", ylabel=f"{split} accuracy",
             title="Fine-tuning on Unknown examples (mean over seeds, 95% CI)")
    axis.legend(fontsize=8)
    figure.tight_layout()
    return figure


def linear_fit(points: pl.DataFrame, fits: dict):
    """Observed vs predicted accuracy of the linear model, one point per (variant, epoch)."""
    figure, axes = plt.subplots(1, len(fits), figsize=(5 * len(fits), 4), squeeze=False)
    for axis, (split, fit) in zip(axes[0], fits.items(), strict=False):
        observed = points[fit["target"]].to_numpy()
        predicted = (fit["beta0"] + fit["beta_kn"] * points["known_fitted_share"].to_numpy()
                     + fit["beta_unk"] * points["unknown_fitted_share"].to_numpy())
        axis.scatter(predicted, observed, s=10, c=points["unknown_fitted_share"].to_numpy(), cmap="coolwarm")
        low, high = float(min(observed.min(), predicted.min())), float(max(observed.max(), predicted.max()))
        axis.plot([low, high], [low, high], ":", color="grey")
        axis.set(xlabel="predicted accuracy", ylabel="observed accuracy",
                 title=f"{split}: β_kn={fit['beta_kn']:.2f} β_unk={fit['beta_unk']:.2f} R²={fit['r2']:.2f}")
    figure.tight_layout()
    return figure


def close(figure) -> None:
    plt.close(figure)
