"""Figures and tables a person reads: SliCK's category distribution, fitting curves, the Unknown sweep, the linear model.

Each function takes plain tables and returns a matplotlib Figure (the tracking module logs it as PNG).
"""

from __future__ import annotations

import textwrap

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import polars as pl  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

from benchmark.categories import CATEGORIES  # noqa: E402
from benchmark.record import acc_metric  # noqa: E402

COLOURS = {"HighlyKnown": "#1b7837", "MaybeKnown": "#7fbf7b", "WeaklyKnown": "#f1a340", "Unknown": "#b2182b",
           "Known": "#2166ac", "all": "#333333"}
STOP_COLOURS = {"early_stop": "#2166ac", "convergence": "#b2182b"}


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
        column = acc_metric("train", category)
        if column in history.columns and history[column].drop_nulls().len():
            left.plot(history["epoch"], history[column], label=category, color=COLOURS[category])
    left.set(xlabel="epoch", ylabel="fraction of train examples fitted", title=f"{title}: train fitting", ylim=(0, 1.02))
    left.legend(fontsize=8)
    for column, style in ((acc_metric("dev"), ":"), (acc_metric("test"), "-"), (acc_metric("ood"), "--")):
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
    draw_unknown_sweep(axis, mixtures, split)
    axis.set_title("Fine-tuning on Unknown examples (mean over seeds, 95% CI)")
    figure.tight_layout()
    return figure


def draw_unknown_sweep(axis, mixtures: pl.DataFrame, split: str = "test") -> None:
    """``unknown_sweep`` on a given axis (one panel of a side-by-side figure)."""
    d_sets = mixtures.filter(pl.col("kind") == "unknown_fraction")
    realised_of = dict(zip(d_sets["unknown_fraction"].to_list(), d_sets["realised_unknown_fraction"].to_list(),
                           strict=True))
    for checkpoint, colour in STOP_COLOURS.items():
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
    axis.set(xlabel="% Unknown in the fine-tuning set (realised)", ylabel=f"{split} accuracy")
    axis.legend(fontsize=8)


def linear_fit(all_points: pl.DataFrame, fits: dict):
    """Observed vs predicted accuracy of the linear model, one point per (variant, epoch)."""
    figure, axes = plt.subplots(1, len(fits), figsize=(5 * len(fits), 4), squeeze=False)
    for axis, (split, fit) in zip(axes[0], fits.items(), strict=False):
        # Per split: a suite that does not score OOD questions every epoch has no OOD accuracy at any point.
        points = all_points.drop_nulls(fit["target"])
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


# ---------------------------------------------------------------------------------------------------------------
# Several models side by side (``benchmark.report.sections``): each takes ``{model label: data}`` in display order
# ---------------------------------------------------------------------------------------------------------------
STOP_NAMES = {"early_stop": "EARLY_STOP", "convergence": "CONVERGENCE"}


def _suptitle(figure, text: str) -> None:
    """A figure title wrapped to the figure's width: a one-panel figure is narrower than most titles, and a
    centred title wider than its figure is cut off at both ends."""
    figure.suptitle(textwrap.fill(text, max(30, int(figure.get_figwidth() * 10))))


def _panels(count: int, width: float = 4.6, height: float = 3.6, columns: int = 4, sharey: bool = True):
    """A grid of ``count`` panels (at most ``columns`` per row); panels past ``count`` are hidden."""
    count = max(count, 1)
    cols = min(count, columns)
    rows = -(-count // cols)
    figure, axes = plt.subplots(rows, cols, figsize=(width * cols, height * rows), squeeze=False, sharey=sharey)
    flat = list(axes.ravel())
    for axis in flat[count:]:
        axis.set_visible(False)
    return figure, flat[:count]


def model_colours(labels) -> dict[str, str]:
    cycle = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    return {label: cycle[i % len(cycle)] for i, label in enumerate(labels)}


def fitting_by_category(curves: dict[str, pl.DataFrame], mixture_of: dict[str, str] | None = None):
    """Paper Fig. 1, one panel per model: the share of each SliCK category's train examples the model fits, per
    epoch (mean over seeds), with dev accuracy. ``curves``: per model, rows per epoch with ``epoch``,
    ``train/acc/<Category>`` and optionally ``dev/acc/all``."""
    figure, axes = _panels(len(curves))
    for axis, (label, history) in zip(axes, curves.items(), strict=False):
        for category in CATEGORIES:
            column = acc_metric("train", category)
            if column in history.columns and history[column].drop_nulls().len():
                axis.plot(history["epoch"], history[column], "-o", ms=3, label=f"train {category}",
                          color=COLOURS[category])
        if "dev/acc/all" in history.columns:
            axis.plot(history["epoch"], history["dev/acc/all"], ":", color="#333333", label="dev accuracy")
        where = f" ({mixture_of[label]})" if mixture_of and label in mixture_of else ""
        axis.set(xlabel="epoch", title=f"{label}{where}", ylim=(-0.02, 1.02))
        axis.xaxis.set_major_locator(MaxNLocator(integer=True))
        axis.legend(fontsize=7, loc="best")
    axes[0].set_ylabel("fraction fitted / accuracy")
    _suptitle(figure, "Fitting speed per SliCK category (train examples fitted, mean over seeds)")
    figure.tight_layout()
    return figure


def unknown_sweep_models(mixtures: dict[str, pl.DataFrame], split: str = "test"):
    """Paper Fig. 3a, one panel per model: accuracy against the realised Unknown share (``unknown_sweep``)."""
    figure, axes = _panels(len(mixtures))
    for axis, (label, table) in zip(axes, mixtures.items(), strict=False):
        draw_unknown_sweep(axis, table, split)
        axis.set_title(label)
    _suptitle(figure, f"{split} accuracy against the realised % Unknown (mean over seeds, 95% CI across seeds)")
    figure.tight_layout()
    return figure


def d_vs_d_known(mixtures: dict[str, pl.DataFrame], split: str = "test"):
    """Paper Fig. 3b, one panel per model: D against D_Known (the same set minus its Unknown examples) at each
    nominal X, EARLY_STOP and CONVERGENCE, with 95% intervals across seeds."""
    import numpy as np

    figure, axes = _panels(len(mixtures))
    for axis, (label, table) in zip(axes, mixtures.items(), strict=False):
        known = table.filter(pl.col("kind") == "known_only")
        fractions = sorted(known["unknown_fraction"].drop_nulls().unique().to_list())
        d_sets = table.filter(pl.col("kind") == "unknown_fraction")
        bars = [(stop, kind) for stop in ("early_stop", "convergence") for kind in ("unknown_fraction", "known_only")]
        width = 0.8 / len(bars)
        for j, (stop, kind) in enumerate(bars):
            column = f"{stop}/{split}/acc/all"
            source = d_sets if kind == "unknown_fraction" else known
            values, errors = [], [[], []]
            for fraction in fractions:
                row = source.filter((pl.col("unknown_fraction") - fraction).abs() < 1e-9)
                mean = row[column][0] if row.height and column in row.columns else float("nan")
                low = row[f"{column}/ci_low"][0] if row.height and f"{column}/ci_low" in row.columns else float("nan")
                high = row[f"{column}/ci_high"][0] if row.height and f"{column}/ci_high" in row.columns else float("nan")
                values.append(mean)
                errors[0].append(0 if low != low else mean - low)
                errors[1].append(0 if high != high else high - mean)
            x = np.arange(len(fractions)) + (j - (len(bars) - 1) / 2) * width
            axis.bar(x, values, width, yerr=errors, capsize=2, color=STOP_COLOURS[stop],
                     alpha=1.0 if kind == "unknown_fraction" else 0.45, hatch=None if kind == "unknown_fraction" else "//",
                     label=f"{'D' if kind == 'unknown_fraction' else 'D_Known'} {STOP_NAMES[stop]}")
        axis.set_xticks(range(len(fractions)), [f"{round(f * 100)}%" for f in fractions])
        axis.set(xlabel="nominal % Unknown of D", title=label)
        if not fractions:
            axis.text(0.5, 0.5, "no D_Known in this run", ha="center", va="center", transform=axis.transAxes)
        axis.legend(fontsize=7)
    axes[0].set_ylabel(f"{split} accuracy")
    _suptitle(figure, "D against D_Known (mean over seeds, 95% CI across seeds)")
    figure.tight_layout()
    return figure


def linear_coefficients(fits: dict[str, dict], paper: dict[str, float]):
    """Paper Table 1 as a figure: β0, β_kn, β_unk of each model in accuracy points, with 95% cluster-robust (CR2)
    intervals, beside the paper's values (dashed). ``fits``: per model, ``linear/...`` values as fractions."""
    names = (("beta0", "β0"), ("beta_kn", "β_kn"), ("beta_unk", "β_unk"))
    figure, axes = plt.subplots(1, 3, figsize=(13, 3.6))
    colours = model_colours(fits)
    for axis, (name, symbol) in zip(axes, names, strict=True):
        for i, (label, fit) in enumerate(fits.items()):
            value = 100 * fit.get(name, float("nan"))
            low, high = 100 * fit.get(f"{name}_ci_low", float("nan")), 100 * fit.get(f"{name}_ci_high", float("nan"))
            # Clipped at 0: an interval from an older run (a percentile bootstrap) could leave out its estimate.
            error = [[max(0.0, value - low) if low == low else 0], [max(0.0, high - value) if high == high else 0]]
            axis.errorbar([value], [i], xerr=error, fmt="o", color=colours[label], capsize=3)
        axis.axvline(paper[name], color="#555555", ls="--", label=f"paper {paper[name]:g}")
        axis.axvline(0, color="#bbbbbb", lw=0.8)
        axis.set_yticks(range(len(fits)), list(fits) if axis is axes[0] else [""] * len(fits))
        axis.set(xlabel="accuracy points", title=symbol, ylim=(len(fits) - 0.4, -0.9))
        axis.legend(fontsize=7, loc="upper right")
    _suptitle(figure, "Linear model acc = β0 + β_kn·N_kn/|D| + β_unk·N_unk/|D| (in-distribution, 95% CI)")
    figure.tight_layout()
    return figure


def heatmap(values, rows: list[str], columns: list[str], annotations, title: str, *, cmap: str = "viridis",
            colorbar: str = "", vmin: float | None = None, vmax: float | None = None, axis=None):
    """A labelled heat-map with a text annotation per cell (NaN cells left blank). Returns the figure (or None
    when drawn on a given ``axis``)."""
    import numpy as np

    figure = None
    if axis is None:
        figure, axis = plt.subplots(figsize=(max(4.5, 0.9 * len(columns) + 2.5), max(2.5, 0.45 * len(rows) + 1.6)))
    array = np.asarray(values, dtype=float)
    image = axis.imshow(np.ma.masked_invalid(array), cmap=cmap, aspect="auto", vmin=vmin, vmax=vmax)
    axis.set_xticks(range(len(columns)), columns, rotation=30, ha="right", fontsize=8)
    axis.set_yticks(range(len(rows)), rows, fontsize=8)
    low, high = np.nanmin(array) if np.isfinite(array).any() else 0, np.nanmax(array) if np.isfinite(array).any() else 1
    middle = (vmin if vmin is not None else low) + 0.5 * ((vmax if vmax is not None else high) - (vmin if vmin is not None else low))
    for i in range(len(rows)):
        for j in range(len(columns)):
            text = annotations[i][j]
            if text:
                axis.text(j, i, text, ha="center", va="center", fontsize=7,
                          color="white" if np.isfinite(array[i, j]) and array[i, j] < middle else "black")
    axis.set_title(title, fontsize=10)
    if figure is not None:
        figure.colorbar(image, ax=axis, label=colorbar, shrink=0.8)
        figure.tight_layout()
    return figure


def p_true_vs_slick(results: dict[str, dict]):
    """Paper Fig. 5: post-fine-tuning accuracy on the questions a method calls Unknown, against the share of test
    questions it calls Unknown. P(True): a curve (its lowest-ranked questions at each coverage); SliCK: its
    Unknown set (one point, 95% bootstrap interval), with P(True) at the same coverage beside it. Lower = the
    method found facts the model really does not know. ``results``: per model, ``p_true.p_true_vs_slick``."""
    figure, axis = plt.subplots(figsize=(7, 4.4))
    colours = model_colours(results)
    for label, result in results.items():
        colour = colours[label]
        curve = result.get("curve") or []
        if curve:
            axis.plot([100 * c["coverage"] for c in curve], [c["accuracy"] for c in curve], "-", color=colour,
                      label=f"{label}: P(True), lowest first")
        if result.get("n_unknown"):
            x = 100 * result["coverage"]
            for key, marker, name in (("slick", "*", "SliCK Unknown"), ("p_true", "o", "P(True), same coverage")):
                point = result[key]
                error = [[point["accuracy"] - point["ci_low"]], [point["ci_high"] - point["accuracy"]]]
                axis.errorbar([x], [point["accuracy"]], yerr=error, fmt=marker, ms=11 if marker == "*" else 6,
                              color=colour, mfc=colour if marker == "*" else "white", capsize=3,
                              label=f"{label}: {name}")
    axis.set(xlabel="% of test questions called Unknown", ylabel="post-fine-tuning test accuracy on them",
             title="Which method finds the facts a model does not know? (lower is better)")
    axis.legend(fontsize=7)
    figure.tight_layout()
    return figure


def exposure_heatmaps(tables: dict[str, pl.DataFrame]):
    """SliCK category against pretraining exposure (embedded world), one panel per model: per exposure bucket,
    the share of train questions in each category (columns sum to 1; counts annotated). ``tables``: per model,
    ``slick.confusion_table`` (rows: categories; columns: exposure buckets)."""
    import numpy as np

    figure, axes = _panels(len(tables), width=4.4, height=2.9, sharey=False)
    for axis, (label, table) in zip(axes, tables.items(), strict=False):
        buckets = [c for c in table.columns if c != "category" and table[c].sum() > 0]  # exposures the world has
        counts = np.asarray([[row[b] for b in buckets] for row in table.iter_rows(named=True)], dtype=float)
        totals = counts.sum(axis=0, keepdims=True)
        shares = np.divide(counts, totals, out=np.full_like(counts, np.nan), where=totals > 0)
        annotations = [[f"{int(c)}" for c in row] for row in counts]
        heatmap(shares, table["category"].to_list(), buckets, annotations, label, cmap="Blues", vmin=0, vmax=1,
                axis=axis)
        axis.set_xlabel("times the fact was stated in pretraining")
    _suptitle(figure, "SliCK category by pretraining exposure (share of each exposure bucket; counts in cells)")
    figure.tight_layout()
    return figure


def categories_per_relation(tables: dict[str, pl.DataFrame], split: str = "train"):
    """Category distribution per relation, one panel per model: stacked shares of the ``split`` questions.
    ``tables``: per model, rows (``split``, ``relation``, ``category``, ``len``) as in ``counts_per_relation``."""
    figure, axes = _panels(len(tables), width=4.4, height=3.8)
    for axis, (label, table) in zip(axes, tables.items(), strict=False):
        part = table.filter(pl.col("split") == split)
        relations = sorted(part["relation"].unique().to_list(), key=lambda r: (len(r), r))
        totals = {r: part.filter(pl.col("relation") == r)["len"].sum() for r in relations}
        left = [0.0] * len(relations)
        for category in CATEGORIES:
            counts = {r: n for r, c, n in part.select("relation", "category", "len").iter_rows() if c == category}
            shares = [counts.get(r, 0) / max(totals[r], 1) for r in relations]
            axis.barh(relations, shares, left=left, color=COLOURS[category], label=category)
            left = [a + b for a, b in zip(left, shares, strict=True)]
        axis.set(xlabel=f"share of {split} questions", title=label, xlim=(0, 1))
    axes[0].invert_yaxis()  # shared: once for every panel
    handles, names = axes[0].get_legend_handles_labels()
    figure.legend(handles, names, loc="lower center", ncol=len(CATEGORIES), fontsize=8, frameon=False)
    _suptitle(figure, f"SliCK categories per relation ({split} split)")
    figure.tight_layout(rect=(0, 0.06, 1, 1))
    return figure


def close(figure) -> None:
    plt.close(figure)
