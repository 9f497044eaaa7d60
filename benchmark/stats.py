"""Uncertainty for the benchmark's results: pure numpy/scipy functions, no torch, no MLflow, no printing.

- ``bootstrap_ci`` / ``bootstrap_ci_by_group``: percentile bootstrap over test questions of a mean accuracy
  (what one fine-tuned model's test score would do on another draw of test questions).
- ``mean_ci``: mean over seeds with a Student-t interval (what another training seed would do).
- ``paired_t_test``: the paper's significance test between two variants scored on the same test questions
  (questions shuffled with a fixed seed into 100 parts, ``scipy.stats.ttest_rel`` over the parts).
- ``precision_gap_ci``: accuracy on answered questions of an abstaining (IDK) variant against another
  variant's accuracy, paired bootstrap over questions.
- ``linear_model_ci``: the paper's linear model with intervals. The headline interval is a cluster bootstrap
  over variants; the classical OLS t-interval is reported beside it only to show how much too narrow it is.
- ``fmt_interval``: one number with its interval, for evidence lines.

Conventions: every interval is two-sided at ``confidence`` (0.95 by default); an interval that cannot be
computed is ``(nan, nan)``, never a zero-width interval, so a missing interval is never read as certainty.
A zero-width interval is returned only where the data really have no spread (e.g. every question correct).
Every random draw comes from ``numpy.random.default_rng(seed)``: the same inputs and seed give the same result.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Mapping, Sequence

import numpy as np
import polars as pl
from scipy import stats as sps

NAN = float("nan")
BETAS = ("beta0", "beta_kn", "beta_unk")

# Resampled means are drawn in blocks of at most this many elements, so memory stays bounded for large test sets.
_BLOCK_ELEMENTS = 1 << 22


def _as_float_array(values: Sequence[bool | float] | np.ndarray, what: str) -> np.ndarray:
    array = np.asarray(values, dtype=float).ravel()
    if np.isnan(array).any():
        raise ValueError(f"{what} contains NaN; drop unscored questions before computing an interval")
    return array


def _quantiles(samples: np.ndarray, confidence: float) -> tuple[float, float]:
    alpha = 1.0 - confidence
    low, high = np.quantile(samples, [alpha / 2, 1 - alpha / 2])
    return float(low), float(high)


def _check_confidence(confidence: float) -> None:
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must lie in (0, 1), got {confidence}")


def _bootstrap_means(values: np.ndarray, n_resamples: int, rng: np.random.Generator) -> np.ndarray:
    n = values.size
    if np.isin(values, (0.0, 1.0)).all():
        # Resampling n right/wrong verdicts with replacement gives a Binomial(n, p̂) number of correct ones: draw
        # that directly, the same distribution in O(n_resamples) instead of O(n_resamples · n).
        return rng.binomial(n, values.mean(), size=n_resamples) / n
    means = np.empty(n_resamples)
    rows = max(1, _BLOCK_ELEMENTS // n)
    for start in range(0, n_resamples, rows):
        stop = min(n_resamples, start + rows)
        means[start:stop] = values[rng.integers(0, n, size=(stop - start, n))].mean(axis=1)
    return means


def bootstrap_ci(correct: Sequence[bool | float] | np.ndarray, *, n_resamples: int = 1000,
                 confidence: float = 0.95, seed: int = 0) -> tuple[float, float]:
    """Percentile-bootstrap interval ``(low, high)`` of the mean of ``correct`` (one value per test question).

    Empty input has no mean: ``(nan, nan)``. Input without spread (all equal, or a single question) gives the
    degenerate interval ``(value, value)``: every resample has the same mean. NaN values are rejected.
    """
    _check_confidence(confidence)
    values = _as_float_array(correct, "correct")
    if values.size == 0:
        return NAN, NAN
    if np.all(values == values[0]):
        return float(values[0]), float(values[0])
    means = _bootstrap_means(values, n_resamples, np.random.default_rng(seed))
    return _quantiles(means, confidence)


def bootstrap_ci_by_group(correct: Sequence[bool | float] | np.ndarray, groups: Sequence[Hashable | None], *,
                          n_resamples: int = 1000, confidence: float = 0.95,
                          seed: int = 0) -> dict[Hashable, tuple[float, float, float]]:
    """``{group: (mean, low, high)}`` for every group label and for ``"all"`` (every question), in one call.

    Each group is resampled on its own questions with the same ``seed``, so a group's interval depends only on
    its own questions (adding a category elsewhere does not move it). Questions whose group is None count in
    ``"all"`` only. A group may not be called ``"all"``.
    """
    values = _as_float_array(correct, "correct")
    labels = list(groups)
    if len(labels) != values.size:
        raise ValueError(f"{values.size} correctness values but {len(labels)} group labels")
    if "all" in labels:
        raise ValueError("'all' is reserved for the interval over every question")

    def one(subset: np.ndarray) -> tuple[float, float, float]:
        mean = float(subset.mean()) if subset.size else NAN
        return (mean, *bootstrap_ci(subset, n_resamples=n_resamples, confidence=confidence, seed=seed))

    result: dict[Hashable, tuple[float, float, float]] = {"all": one(values)}
    members: dict[Hashable, list[int]] = {}
    for index, label in enumerate(labels):
        if label is not None:
            members.setdefault(label, []).append(index)
    for label, indices in members.items():
        result[label] = one(values[np.asarray(indices)])
    return result


def mean_ci(values: Sequence[float | None] | np.ndarray, confidence: float = 0.95) -> tuple[float, float, float]:
    """``(mean, low, high)`` over seeds (or any replicates), with a Student-t interval on n − 1 degrees of freedom.

    None and NaN values (a seed that did not produce the metric) are left out. With no value everything is NaN;
    with one value the mean is that value and the interval is ``(nan, nan)``: one seed says nothing about how
    another would do, and a zero-width interval would read as certainty. Values without spread give
    ``(v, v, v)``.
    """
    _check_confidence(confidence)
    array = np.asarray([NAN if v is None else v for v in values], dtype=float).ravel()
    array = array[~np.isnan(array)]
    if array.size == 0:
        return NAN, NAN, NAN
    mean = float(array.mean())
    if array.size == 1:
        return mean, NAN, NAN
    half = float(sps.t.ppf(0.5 + confidence / 2, array.size - 1) * array.std(ddof=1) / math.sqrt(array.size))
    return mean, mean - half, mean + half


def paired_t_test(correct_a: Sequence[bool | float] | np.ndarray, correct_b: Sequence[bool | float] | np.ndarray,
                  n_parts: int = 100, seed: int = 0, confidence: float = 0.95) -> dict[str, float]:
    """The paper's significance test of variant a against variant b on the same, aligned test questions.

    The questions are shuffled with ``seed`` and cut into ``n_parts`` parts of (nearly) equal size; the accuracy
    of a and of b on each part are compared by ``scipy.stats.ttest_rel``. With fewer questions than parts each
    question is its own part. Returns ``t``, two-sided ``p``, ``mean_diff`` (mean over parts of acc_a − acc_b),
    its Student-t interval ``ci_low``/``ci_high``, ``n_parts`` (parts used), ``mean_a`` and ``mean_b``.

    Zero spread of the per-part differences is decided here, not by scipy (which warns and returns NaN): all
    differences 0 → t = 0, p = 1 (no evidence of a difference); all equal to d ≠ 0 → t = ±inf, p = 0 and the
    interval (d, d). Fewer than two parts → t, p and the interval are NaN.
    """
    _check_confidence(confidence)
    a = _as_float_array(correct_a, "correct_a")
    b = _as_float_array(correct_b, "correct_b")
    if a.size != b.size:
        raise ValueError(f"paired test needs the same questions for both variants: {a.size} vs {b.size}")
    parts = min(int(n_parts), a.size)
    result = {"t": NAN, "p": NAN, "mean_diff": NAN, "ci_low": NAN, "ci_high": NAN, "n_parts": parts,
              "mean_a": float(a.mean()) if a.size else NAN, "mean_b": float(b.mean()) if b.size else NAN}
    if parts == 0:
        return result
    order = np.random.default_rng(seed).permutation(a.size)
    chunks = np.array_split(order, parts)
    acc_a = np.array([a[c].mean() for c in chunks])
    acc_b = np.array([b[c].mean() for c in chunks])
    diff = acc_a - acc_b
    mean = float(diff.mean())
    result["mean_diff"] = mean
    if parts < 2:
        return result
    # Per-part accuracies are sums of a few 0/1 values: exact ties are the case, not floating-point noise.
    if np.ptp(diff) <= 1e-12:
        if abs(mean) <= 1e-12:
            result.update(t=0.0, p=1.0, mean_diff=0.0, ci_low=0.0, ci_high=0.0)
        else:
            result.update(t=math.copysign(math.inf, mean), p=0.0, ci_low=mean, ci_high=mean)
        return result
    test = sps.ttest_rel(acc_a, acc_b)
    _, low, high = mean_ci(diff, confidence)
    result.update(t=float(test.statistic), p=float(test.pvalue), ci_low=low, ci_high=high)
    return result


def precision_gap_ci(correct_a: Sequence[bool | float] | np.ndarray, answered_a: Sequence[bool] | np.ndarray,
                     correct_b: Sequence[bool | float] | np.ndarray, *, n_resamples: int = 1000,
                     confidence: float = 0.95, seed: int = 0) -> tuple[float, float, float]:
    """``(gap, low, high)``: accuracy of a on the questions a answered minus the accuracy of b on all of them.

    The IDK comparison: a abstains on some questions, b answers all, both on the same aligned questions. The
    interval is a paired percentile bootstrap over questions (each resample draws questions once for both, so
    what the two share is not counted as noise). Resamples in which a answered nothing are left out; if a never
    answered, everything is NaN.
    """
    _check_confidence(confidence)
    a = _as_float_array(correct_a, "correct_a")
    answered = _as_float_array(answered_a, "answered_a")
    b = _as_float_array(correct_b, "correct_b")
    if not a.size == answered.size == b.size:
        raise ValueError(f"aligned questions needed: {a.size}, {answered.size}, {b.size}")
    if answered.sum() == 0:
        return NAN, NAN, NAN
    gap = float((a * answered).sum() / answered.sum() - b.mean())
    n = a.size
    rng = np.random.default_rng(seed)
    gaps = np.empty(n_resamples)
    rows = max(1, _BLOCK_ELEMENTS // n)
    for start in range(0, n_resamples, rows):
        stop = min(n_resamples, start + rows)
        index = rng.integers(0, n, size=(stop - start, n))
        n_answered = answered[index].sum(axis=1)
        with np.errstate(invalid="ignore", divide="ignore"):
            gaps[start:stop] = (a * answered)[index].sum(axis=1) / n_answered - b[index].mean(axis=1)
    gaps = gaps[np.isfinite(gaps)]
    if gaps.size < 2:
        return gap, NAN, NAN
    return (gap, *_quantiles(gaps, confidence))


# ---------------------------------------------------------------- the linear model


def _design(points: pl.DataFrame, target: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(X, y, cluster index) over the points whose target and shares are all present."""
    columns = ["known_fitted_share", "unknown_fitted_share", target]
    usable = points.select("variant", *columns).drop_nulls().filter(
        pl.all_horizontal(pl.col(c).cast(pl.Float64).is_finite() for c in columns))
    y = usable[target].cast(pl.Float64).to_numpy()
    x = np.column_stack([np.ones_like(y), usable["known_fitted_share"].cast(pl.Float64).to_numpy(),
                         usable["unknown_fitted_share"].cast(pl.Float64).to_numpy()])
    _, cluster = np.unique(usable["variant"].cast(pl.String).to_numpy(), return_inverse=True)
    return x, y, cluster.ravel()


def _well_posed(gram: np.ndarray) -> np.ndarray:
    """Which 3×3 normal matrices (stacked) can be solved: smallest/largest eigenvalue above round-off."""
    eig = np.linalg.eigvalsh(gram)
    largest = eig[..., -1]
    return (largest > 0) & (eig[..., 0] > largest * 1e-10)


def linear_model_ci(points: pl.DataFrame, target: str, *, n_resamples: int = 2000, confidence: float = 0.95,
                    seed: int = 0, min_clusters: int = 3) -> dict[str, float]:
    """The paper's ``accuracy = β0 + β_kn·known_fitted_share + β_unk·unknown_fitted_share`` with intervals.

    ``points``: one row per (variant, epoch) as built by ``pipeline.linear_points``: ``variant``,
    ``known_fitted_share`` (N_kn/|D|), ``unknown_fitted_share`` (N_unk/|D|) and the accuracy column ``target``.
    Rows with a missing value are left out.

    Returns the least-squares point estimates ``beta0``, ``beta_kn``, ``beta_unk`` (identical to
    ``analyse.fit_linear_model``), ``r2``, ``n`` (points), ``n_variants``, ``rank`` of the design, and:

    - ``<beta>_ci_low`` / ``<beta>_ci_high`` — the headline: a percentile **cluster bootstrap over variants**.
      The epochs of one variant are one training trajectory, strongly correlated, so the independent units are
      the variants: each resample draws the variants with replacement (all epochs of a drawn variant come
      along) and refits. Resamples whose design is singular (e.g. no drawn variant has Unknown examples) are
      left out; ``n_boot_valid`` says how many remained. Needs ``min_clusters`` variants and at least half of
      the resamples valid, else NaN.
    - ``<beta>_ols_ci_low`` / ``<beta>_ols_ci_high`` — the classical OLS t-interval, which treats every
      (variant, epoch) point as independent and is therefore too narrow; reported so the difference shows.
    - ``beta_kn_plus_unk`` (β_kn + β_unk) and ``unk_kn_ratio`` (−β_unk/β_kn, the paper's |β_unk| ≈ β_kn when
      near 1), each with its cluster-bootstrap ``_ci_low`` / ``_ci_high``.

    A rank-deficient design (fewer than three points, or shares that do not vary independently) keeps the
    minimum-norm least-squares estimates but every interval is NaN: the coefficients are not identified.
    """
    _check_confidence(confidence)
    x, y, cluster = _design(points, target)
    n = y.size
    result: dict[str, float] = {"n": n, "n_variants": int(cluster.max() + 1) if n else 0, "n_boot_valid": 0}
    interval_keys = [f"{b}_{kind}_{end}" for b in BETAS for kind in ("ci", "ols_ci") for end in ("low", "high")]
    interval_keys += [f"{k}_ci_{end}" for k in ("beta_kn_plus_unk", "unk_kn_ratio") for end in ("low", "high")]
    result.update(dict.fromkeys(interval_keys, NAN))
    if n == 0:
        result.update(beta0=NAN, beta_kn=NAN, beta_unk=NAN, r2=NAN, rank=0, beta_kn_plus_unk=NAN, unk_kn_ratio=NAN)
        return result
    beta, _, rank, _ = np.linalg.lstsq(x, y, rcond=None)
    residual = y - x @ beta
    total = float(((y - y.mean()) ** 2).sum())
    result.update({name: float(value) for name, value in zip(BETAS, beta, strict=True)})
    result.update(r2=1.0 - float((residual ** 2).sum()) / total if total > 0 else NAN, rank=int(rank),
                  beta_kn_plus_unk=float(beta[1] + beta[2]),
                  unk_kn_ratio=float(-beta[2] / beta[1]) if beta[1] != 0 else NAN)
    if rank < 3:
        return result

    dof = n - 3
    if dof > 0:
        sigma2 = float((residual ** 2).sum()) / dof
        se = np.sqrt(sigma2 * np.diag(np.linalg.inv(x.T @ x)))
        half = sps.t.ppf(0.5 + confidence / 2, dof) * se
        for name, b, h in zip(BETAS, beta, half, strict=True):
            result[f"{name}_ols_ci_low"], result[f"{name}_ols_ci_high"] = float(b - h), float(b + h)

    groups = result["n_variants"]
    if groups < min_clusters:
        return result
    # Refitting on a resample only needs Σ_g w_g·X_gᵀX_g and Σ_g w_g·X_gᵀy_g (w_g = times variant g was drawn),
    # so every resample is a 3×3 solve on per-variant sums computed once.
    gram = np.zeros((groups, 3, 3))
    moment = np.zeros((groups, 3))
    np.add.at(gram, cluster, x[:, :, None] * x[:, None, :])
    np.add.at(moment, cluster, x * y[:, None])
    weights = np.random.default_rng(seed).multinomial(groups, np.full(groups, 1.0 / groups), size=n_resamples)
    gram_b = np.einsum("bg,gij->bij", weights, gram)
    moment_b = np.einsum("bg,gi->bi", weights, moment)
    valid = _well_posed(gram_b)
    result["n_boot_valid"] = int(valid.sum())
    if valid.sum() < max(2, n_resamples / 2):
        return result
    boot = np.linalg.solve(gram_b[valid], moment_b[valid][:, :, None])[:, :, 0]
    for index, name in enumerate(BETAS):
        result[f"{name}_ci_low"], result[f"{name}_ci_high"] = _quantiles(boot[:, index], confidence)
    result["beta_kn_plus_unk_ci_low"], result["beta_kn_plus_unk_ci_high"] = _quantiles(boot[:, 1] + boot[:, 2],
                                                                                        confidence)
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = -boot[:, 2] / boot[:, 1]
    ratio = np.where(np.isnan(ratio), np.inf, ratio)
    # A β_kn near 0 in some resamples sends the ratio to ±inf; an order statistic copes with that, interpolation
    # between infinities would not.
    alpha = 1.0 - confidence
    low, high = np.quantile(ratio, [alpha / 2, 1 - alpha / 2], method="inverted_cdf")
    result["unk_kn_ratio_ci_low"], result["unk_kn_ratio_ci_high"] = float(low), float(high)
    return result


# ---------------------------------------------------------------- formatting


def fmt_interval(value: float, low: float, high: float, digits: int = 2) -> str:
    """``"0.31 [0.28, 0.34]"``; an interval that could not be computed reads ``"0.31 [no interval]"``."""
    def number(v: float) -> str:
        return "nan" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.{digits}f}"

    if low is None or high is None or math.isnan(low) or math.isnan(high):
        return f"{number(value)} [no interval]"
    return f"{number(value)} [{number(low)}, {number(high)}]"


def interval_dict(prefix: str, mean: float, low: float, high: float) -> Mapping[str, float]:
    """``{prefix: mean, prefix_ci_low: low, prefix_ci_high: high}``: one naming for intervals in metric dicts."""
    return {prefix: mean, f"{prefix}_ci_low": low, f"{prefix}_ci_high": high}
