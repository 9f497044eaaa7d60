"""Uncertainty for the benchmark's results: pure numpy/scipy functions, no torch, no MLflow, no printing.

- ``bootstrap_ci`` / ``bootstrap_ci_by_group``: percentile bootstrap over test questions of a mean accuracy
  (what one fine-tuned model's test score would do on another draw of test questions).
- ``mean_ci``: mean over seeds with a Student-t interval (what another training seed would do).
- ``paired_t_test``: the paper's significance test between two variants scored on the same test questions
  (questions shuffled with a fixed seed into 100 parts, ``scipy.stats.ttest_rel`` over the parts).
- ``precision_gap_ci``: accuracy on answered questions of an abstaining (IDK) variant against another
  variant's accuracy, paired bootstrap over questions; ``late_drop_gap_ci``: one variant's drop in accuracy
  between two checkpoints against an abstaining variant's drop on the questions it answered, likewise.
- ``linear_model_ci``: the paper's linear model with intervals, optionally with a covariate (optimizer steps).
  The headline interval is CR2 cluster-robust over variants with Bell-McCaffrey degrees of freedom (fit for
  few clusters, and always around its estimate); the classical OLS t-interval is reported beside it only to
  show how much too narrow it is.
- ``holm``: Holm's step-down adjustment of several p-values.
- ``fmt_interval``: one number with its interval, for evidence lines.

Conventions: every interval is two-sided at ``confidence`` (0.95 by default); an interval that cannot be
computed is ``(nan, nan)``, never a zero-width interval, so a missing interval is never read as certainty.
A zero-width interval is returned only where the data really have no spread (e.g. every question correct).
Every random draw comes from ``numpy.random.default_rng(seed)``: the same inputs and seed give the same result.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Iterator, Sequence

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


def _resample_blocks(n: int, n_resamples: int, rng: np.random.Generator) -> Iterator[tuple[slice, np.ndarray]]:
    """The bootstrap's resamples of ``n`` question indices, ``n_resamples`` rows in all, as ``(rows, index)``
    blocks: the same draws in the same order as one ``(n_resamples, n)`` draw."""
    rows = max(1, _BLOCK_ELEMENTS // n)
    for start in range(0, n_resamples, rows):
        stop = min(n_resamples, start + rows)
        yield slice(start, stop), rng.integers(0, n, size=(stop - start, n))


def _bootstrap_means(values: np.ndarray, n_resamples: int, rng: np.random.Generator) -> np.ndarray:
    n = values.size
    if np.isin(values, (0.0, 1.0)).all():
        # Resampling n right/wrong verdicts with replacement gives a Binomial(n, p̂) number of correct ones: draw
        # that directly, the same distribution in O(n_resamples) instead of O(n_resamples · n).
        return rng.binomial(n, values.mean(), size=n_resamples) / n
    means = np.empty(n_resamples)
    for rows, index in _resample_blocks(n, n_resamples, rng):
        means[rows] = values[index].mean(axis=1)
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


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm's step-down adjusted p-values, in the input's order: reject hypothesis i at level α when its
    adjusted p is at most α. Controls the chance of any false rejection at α for any dependence between the
    tests. A NaN p (no test) counts as 1 towards the others' adjustment and stays NaN."""
    values = np.asarray(p_values, dtype=float)
    m = values.size
    order = np.argsort(np.where(np.isnan(values), np.inf, values), kind="stable")
    adjusted = np.empty(m)
    running = 0.0
    for rank, index in enumerate(order):
        raw = 1.0 if np.isnan(values[index]) else values[index]
        running = max(running, min(1.0, (m - rank) * raw))
        adjusted[index] = running
    return [NAN if np.isnan(v) else float(a) for v, a in zip(values, adjusted, strict=True)]


def paired_t_test(correct_a: Sequence[bool | float] | np.ndarray, correct_b: Sequence[bool | float] | np.ndarray,
                  n_parts: int = 100, seed: int = 0, confidence: float = 0.95) -> dict[str, float]:
    """The paper's significance test of variant a against variant b on the same, aligned test questions.

    The questions are shuffled with ``seed`` and cut into ``n_parts`` parts of (nearly) equal size; the accuracy
    of a and of b on each part are compared by ``scipy.stats.ttest_rel``. With fewer questions than parts each
    question is its own part. Returns ``t``, two-sided ``p``, ``mean_diff`` (mean over parts of acc_a − acc_b),
    its standard error ``se`` and Student-t interval ``ci_low``/``ci_high`` (on ``n_parts`` − 1 degrees of
    freedom), ``n_parts`` (parts used), ``mean_a`` and ``mean_b``.

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
    result = {"t": NAN, "p": NAN, "mean_diff": NAN, "ci_low": NAN, "ci_high": NAN, "se": NAN, "n_parts": parts,
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
            result.update(t=0.0, p=1.0, mean_diff=0.0, ci_low=0.0, ci_high=0.0, se=0.0)
        else:
            result.update(t=math.copysign(math.inf, mean), p=0.0, ci_low=mean, ci_high=mean, se=0.0)
        return result
    test = sps.ttest_rel(acc_a, acc_b)
    _, low, high = mean_ci(diff, confidence)
    result.update(t=float(test.statistic), p=float(test.pvalue), ci_low=low, ci_high=high,
                  se=float(diff.std(ddof=1) / math.sqrt(parts)))
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
    for rows, index in _resample_blocks(n, n_resamples, rng):
        n_answered = answered[index].sum(axis=1)
        with np.errstate(invalid="ignore", divide="ignore"):
            gaps[rows] = (a * answered)[index].sum(axis=1) / n_answered - b[index].mean(axis=1)
    gaps = gaps[np.isfinite(gaps)]
    if gaps.size < 2:
        return gap, NAN, NAN
    return (gap, *_quantiles(gaps, confidence))


def late_drop_gap_ci(early_a: Sequence[bool | float] | np.ndarray, late_a: Sequence[bool | float] | np.ndarray,
                     early_b: Sequence[bool | float] | np.ndarray, early_answered_b: Sequence[bool] | np.ndarray,
                     late_b: Sequence[bool | float] | np.ndarray, late_answered_b: Sequence[bool] | np.ndarray, *,
                     n_resamples: int = 1000, confidence: float = 0.95,
                     seed: int = 0) -> tuple[float, float, float]:
    """``(gap, low, high)``: a's drop in accuracy from one checkpoint to a later one minus b's drop in accuracy
    on the questions b answered (b abstains on some), all on the same aligned questions.

    The IDK comparison with one seed: a is the plain variant, b the IDK one. Paired percentile bootstrap over
    questions (each resample draws the questions once for both checkpoints of both variants). Resamples in
    which b answered nothing at a checkpoint are left out; if b never answered at one, everything is NaN.
    """
    _check_confidence(confidence)
    arrays = [_as_float_array(v, name) for v, name in ((early_a, "early_a"), (late_a, "late_a"),
                                                       (early_b, "early_b"), (early_answered_b, "early_answered_b"),
                                                       (late_b, "late_b"), (late_answered_b, "late_answered_b"))]
    if len({a.size for a in arrays}) != 1:
        raise ValueError(f"aligned questions needed: {[a.size for a in arrays]}")
    ea, la, eb, eab, lb, lab = arrays
    if eab.sum() == 0 or lab.sum() == 0:
        return NAN, NAN, NAN
    gap = float(ea.mean() - la.mean() - ((eb * eab).sum() / eab.sum() - (lb * lab).sum() / lab.sum()))
    n = ea.size
    rng = np.random.default_rng(seed)
    gaps = np.empty(n_resamples)
    for rows, index in _resample_blocks(n, n_resamples, rng):
        with np.errstate(invalid="ignore", divide="ignore"):
            precision_early = (eb * eab)[index].sum(axis=1) / eab[index].sum(axis=1)
            precision_late = (lb * lab)[index].sum(axis=1) / lab[index].sum(axis=1)
        gaps[rows] = ea[index].mean(axis=1) - la[index].mean(axis=1) - (precision_early - precision_late)
    gaps = gaps[np.isfinite(gaps)]
    if gaps.size < 2:
        return gap, NAN, NAN
    return (gap, *_quantiles(gaps, confidence))


# ---------------------------------------------------------------- the linear model


def _design(points: pl.DataFrame, target: str, covariate: str | None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(X, y, cluster index) over the points whose target, shares and covariate are all present."""
    columns = ["known_fitted_share", "unknown_fitted_share", *([covariate] if covariate else []), target]
    if covariate and covariate not in points.columns:
        points = points.with_columns(pl.lit(None, pl.Float64).alias(covariate))
    usable = points.select("variant", *columns).drop_nulls().filter(
        pl.all_horizontal(pl.col(c).cast(pl.Float64).is_finite() for c in columns))
    y = usable[target].cast(pl.Float64).to_numpy()
    regressors = [np.ones_like(y)] + [usable[c].cast(pl.Float64).to_numpy() for c in columns[:-1]]
    if covariate:
        regressors[-1] = regressors[-1] / COVARIATE_UNIT
    _, cluster = np.unique(usable["variant"].cast(pl.String).to_numpy(), return_inverse=True)
    return np.column_stack(regressors), y, cluster.ravel()


COVARIATE_UNIT = 100.0  # the covariate's coefficient is per 100 of it (per 100 optimizer steps)


def _cr2(x: np.ndarray, residual: np.ndarray, cluster: np.ndarray, bread: np.ndarray):
    """The CR2 cluster-robust covariance (Bell and McCaffrey 2002) and, for any contrast, its Satterthwaite
    degrees of freedom under a working model of independent, equal errors (Imbens and Kolesár 2016).

    Each cluster's residuals are scaled by (I − H_gg)^(−1/2), which undoes the shrinkage least squares puts on
    the residuals of a cluster with high leverage: with few clusters the plain sandwich (CR0/CR1) is too small.
    Returns (covariance, df(contrast)). A cluster whose (I − H_gg) is singular (it alone determines a
    direction) gets the pseudo-inverse square root.
    """
    # Clusters of one size are handled as one stack (every variant usually has one point per epoch).
    order = np.argsort(cluster, kind="stable")
    sizes = np.bincount(cluster)
    starts = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    stacks = []  # (cluster ids, X_g stacked (G_s, s, k), A_g stacked (G_s, s, s))
    meat = np.zeros((x.shape[1], x.shape[1]))
    for size in np.unique(sizes):
        ids = np.flatnonzero(sizes == size)
        rows = order[starts[ids][:, None] + np.arange(size)]
        xg = x[rows]
        values, vectors = np.linalg.eigh(np.eye(size) - xg @ bread @ np.transpose(xg, (0, 2, 1)))
        scale = np.where(values > 1e-10, 1.0 / np.sqrt(np.clip(values, 1e-10, None)), 0.0)
        a = (vectors * scale[:, None, :]) @ np.transpose(vectors, (0, 2, 1))
        u = np.einsum("gsk,gst,gt->gk", xg, a, residual[rows])
        meat += u.T @ u
        stacks.append((ids, xg, a))
    covariance = bread @ meat @ bread

    def df(contrasts: np.ndarray) -> np.ndarray:
        # For contrast c and cluster g, p_g = (I − H)_{g,·}ᵀ A_g X_g M c, so that the variance estimate is
        # Σ_g (p_gᵀ y)²; under Ω = I its Satterthwaite df is (tr PᵀP)² / tr((PᵀP)²). With v_g = A_g X_g M c and
        # z_g = X_gᵀ v_g, PᵀP = diag(‖v_g‖²) − Zᵀ M Z, so P (n × G) is never built. All contrasts at once.
        m_c = bread @ contrasts
        groups = len(sizes)
        norms = np.empty((contrasts.shape[1], groups))
        z = np.empty((contrasts.shape[1], groups, x.shape[1]))
        for ids, xg, a in stacks:
            v = a @ (xg @ m_c)  # (G_s, s, m)
            norms[:, ids] = (v * v).sum(axis=1).T
            z[:, ids, :] = np.transpose(np.transpose(xg, (0, 2, 1)) @ v, (2, 0, 1))
        gram = -z @ bread @ np.transpose(z, (0, 2, 1))
        gram[:, np.arange(groups), np.arange(groups)] += norms
        denominator = (gram * gram).sum(axis=(1, 2))
        trace = np.trace(gram, axis1=1, axis2=2)
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.where(denominator > 0, trace ** 2 / denominator, NAN)

    return covariance, df


def _fieller(a: float, b: float, var_a: float, var_b: float, cov_ab: float, t: float) -> tuple[float, float]:
    """Interval for ρ = −a/b: every ρ with (a + ρ·b)² ≤ t²·Var(a + ρ·b). Bounded only when b is significantly
    non-zero (b² > t²·Var b); otherwise the set is unbounded and ``(nan, nan)`` is returned. A bounded Fieller
    interval always contains −a/b, where the left side is 0."""
    quad = b * b - t * t * var_b
    if not quad > 0:
        return NAN, NAN
    lin = a * b - t * t * cov_ab
    const = a * a - t * t * var_a
    root = math.sqrt(max(lin * lin - quad * const, 0.0))
    return float((-lin - root) / quad), float((-lin + root) / quad)


def linear_model_ci(points: pl.DataFrame, target: str, *, covariate: str | None = None,
                    confidence: float = 0.95, min_clusters: int = 3) -> dict[str, float]:
    """The paper's ``accuracy = β0 + β_kn·known_fitted_share + β_unk·unknown_fitted_share`` with intervals.

    ``points``: one row per (variant, epoch) as built by ``analyse.suite.linear_points``: ``variant``,
    ``known_fitted_share`` (N_kn/|D|), ``unknown_fitted_share`` (N_unk/|D|) and the accuracy column ``target``.
    ``covariate`` (e.g. ``"steps"``, the optimizer steps taken so far) adds a term ``β_steps·covariate/100``:
    N_unk grows with training time, and so does forgetting, so without it β_unk also carries whatever time
    does. Rows with a missing value are left out.

    Returns the least-squares estimates ``beta0``, ``beta_kn``, ``beta_unk`` (and ``beta_steps`` with a
    covariate; without one they equal ``analyse.fit_linear_model``), ``r2``, ``n`` (points), ``n_variants``,
    ``rank`` of the design, and:

    - ``<beta>_ci_low`` / ``<beta>_ci_high``: the headline, a **CR2 cluster-robust** interval (clusters are the
      variants: one variant's epochs are one training trajectory, strongly correlated) with a Student-t
      quantile on the Bell-McCaffrey (Satterthwaite) degrees of freedom ``<beta>_df`` (at most G − 1 for G
      variants), the small-sample correction for few clusters. The interval is symmetric around the estimate,
      so it always contains it. Needs ``min_clusters`` variants, else NaN;
    - ``<beta>_ols_ci_low`` / ``<beta>_ols_ci_high``: the classical OLS t-interval, which treats every
      (variant, epoch) point as independent and is therefore too narrow; reported so the difference shows;
    - ``beta_kn_plus_unk`` (β_kn + β_unk) with its CR2 interval, and ``unk_kn_ratio`` (−β_unk/β_kn, the
      paper's |β_unk| ≈ β_kn when near 1) with a Fieller interval on the CR2 covariance (NaN when β_kn is not
      distinguishable from 0: the ratio's interval is then unbounded).

    A rank-deficient design (fewer points than terms, or shares that do not vary independently) keeps the
    minimum-norm least-squares estimates but every interval is NaN: the coefficients are not identified.
    """
    _check_confidence(confidence)
    x, y, cluster = _design(points, target, covariate)
    names = BETAS + (("beta_steps",) if covariate else ())
    n, k = y.size, len(names)
    result: dict[str, float] = {"n": n, "n_variants": int(cluster.max() + 1) if n else 0}
    interval_keys = [f"{b}_{kind}_{end}" for b in names for kind in ("ci", "ols_ci") for end in ("low", "high")]
    interval_keys += [f"{b}_df" for b in names]
    interval_keys += [f"{key}_ci_{end}" for key in ("beta_kn_plus_unk", "unk_kn_ratio") for end in ("low", "high")]
    result.update(dict.fromkeys(interval_keys, NAN))
    if n == 0:
        result.update(dict.fromkeys(names, NAN), r2=NAN, rank=0, beta_kn_plus_unk=NAN, unk_kn_ratio=NAN)
        return result
    beta, _, rank, _ = np.linalg.lstsq(x, y, rcond=None)
    residual = y - x @ beta
    total = float(((y - y.mean()) ** 2).sum())
    result.update({name: float(value) for name, value in zip(names, beta, strict=True)})
    result.update(r2=1.0 - float((residual ** 2).sum()) / total if total > 0 else NAN, rank=int(rank),
                  beta_kn_plus_unk=float(beta[1] + beta[2]),
                  unk_kn_ratio=float(-beta[2] / beta[1]) if beta[1] != 0 else NAN)
    if rank < k:
        return result
    bread = np.linalg.inv(x.T @ x)
    quantile = 0.5 + confidence / 2
    if n > k:
        result |= _ols_intervals(names, beta, residual, bread, quantile)
    if result["n_variants"] >= min_clusters:
        result |= _cr2_intervals(names, x, beta, residual, cluster, bread, quantile)
    return result


def _ols_intervals(names: tuple[str, ...], beta, residual, bread, quantile: float) -> dict[str, float]:
    """The classical OLS t-interval of every β (every point independent: too narrow, reported for contrast)."""
    n, k = residual.size, len(names)
    se = np.sqrt(float((residual ** 2).sum()) / (n - k) * np.diag(bread))
    half = sps.t.ppf(quantile, n - k) * se
    out = {}
    for name, b, h in zip(names, beta, half, strict=True):
        out[f"{name}_ols_ci_low"], out[f"{name}_ols_ci_high"] = float(b - h), float(b + h)
    return out


def _cr2_intervals(names: tuple[str, ...], x, beta, residual, cluster, bread, quantile: float) -> dict[str, float]:
    """The CR2 cluster-robust interval and Bell-McCaffrey degrees of freedom of every β and of β_kn + β_unk, and
    the Fieller interval of −β_unk/β_kn on the same covariance."""
    k = len(names)
    covariance, df = _cr2(x, residual, cluster, bread)
    contrasts = np.column_stack([*np.eye(k), np.eye(k)[1] + np.eye(k)[2]])  # every β, then β_kn + β_unk
    estimates = contrasts.T @ beta
    dofs = df(contrasts)
    halves = sps.t.ppf(quantile, dofs) * np.sqrt(np.clip(np.einsum("ic,ij,jc->c", contrasts, covariance,
                                                                   contrasts), 0, None))
    out = {}
    for name, estimate, half, dof in zip([*names, "beta_kn_plus_unk"], estimates, halves, dofs, strict=True):
        out[f"{name}_ci_low"], out[f"{name}_ci_high"] = float(estimate - half), float(estimate + half)
        if name != "beta_kn_plus_unk":
            out[f"{name}_df"] = float(dof)
    ratio_df = min(out["beta_kn_df"], out["beta_unk_df"])
    out["unk_kn_ratio_ci_low"], out["unk_kn_ratio_ci_high"] = _fieller(
        beta[2], beta[1], covariance[2, 2], covariance[1, 1], covariance[1, 2], sps.t.ppf(quantile, ratio_df))
    return out


# ---------------------------------------------------------------- formatting


def fmt_interval(value: float, low: float, high: float, digits: int = 2) -> str:
    """``"0.31 [0.28, 0.34]"``; an interval that could not be computed reads ``"0.31 (no interval)"``.

    Parentheses, not brackets, for the missing interval: a rich console reads ``[no interval]`` as markup and
    prints nothing in its place."""
    text = fmt_bounds(low, high, digits)
    return f"{_number(value, digits)} {text}" if text else f"{_number(value, digits)} (no interval)"


def fmt_bounds(low: float, high: float, digits: int = 2) -> str:
    """``"[0.28, 0.34]"``, or ``""`` when the interval could not be computed."""
    if _missing(low) or _missing(high):
        return ""
    return f"[{_number(low, digits)}, {_number(high, digits)}]"


def _missing(value: float | None) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def _number(value: float | None, digits: int) -> str:
    return "nan" if _missing(value) else f"{value:.{digits}f}"
