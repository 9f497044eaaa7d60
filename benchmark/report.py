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


def unknown_sweep(results: pl.DataFrame):
    """Test accuracy against the Unknown share, at EARLY_STOP and CONVERGENCE, for D and D_Known (paper Fig. 3)."""
    figure, axis = plt.subplots(figsize=(6, 4))
    for checkpoint, colour in (("early_stop", "#2166ac"), ("convergence", "#b2182b")):
        for kind, style in (("unknown_fraction", "-o"), ("known_only", "--s")):
            part = results.filter(pl.col("kind") == kind).sort("unknown_fraction")
            column = f"{checkpoint}/test/acc/all"
            if part.is_empty() or column not in part.columns:
                continue
            label = f"{'D' if kind == 'unknown_fraction' else 'D_Known'} {checkpoint.upper()}"
            axis.plot(part["unknown_fraction"] * 100, part[column], style, color=colour, label=label)
    axis.set(xlabel="% Unknown in the fine-tuning set", ylabel="test accuracy (in-distribution)",
             title="Fine-tuning on Unknown examples")
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
