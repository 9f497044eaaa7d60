"""What a suite run writes to its MLflow runs, under the names ``benchmark.record`` declares: the parent's inputs
(the suite, SliCK's categories, the mixtures), each finished variant, and the analysis. The driver calls these;
``benchmark.tracking`` talks to the store."""

from __future__ import annotations

import json
from collections.abc import Callable

import polars as pl
import yaml

from benchmark.analyse import measures
from benchmark.cache import write_parquet
from benchmark.hashing import content_key
from benchmark.plan import Variant
from benchmark.record import (
    INTERVAL_SUFFIXES,
    SEED_METRICS,
    Analysis,
    Artifact,
    _finite,
    acc_metric,
    seed_metric,
    slick_count,
)
from benchmark.report import figures
from benchmark.slick_tables import confusion_table, majority_baseline, relation_table, summary
from benchmark.tracking import Tracker

FIT_WARNING = 0.99  # CONVERGENCE means the train set is fitted; below this share a variant is named in a warning


def record_inputs(tracker: Tracker, parent_id: str, suite, result, source, variants: list[Variant],
                  notes: list[str]) -> None:
    """The parent's inputs: the resolved suite, SliCK's categories with their counts and baselines, the mixtures."""
    table = result.table
    tracker.log_text(parent_id, yaml.safe_dump(suite.model_dump(mode="json"), sort_keys=False), Artifact.SUITE)
    tracker.log_parquet(parent_id, table, Artifact.CATEGORIES)
    facts = summary(result, source)
    tracker.log_metrics(parent_id, {slick_count(k): v for k, v in facts["counts"].items()}
                        | {"slick/seconds": facts["seconds"], "slick/generations": facts["generations"],
                           "slick/questions_per_s": result.questions_per_second}
                        # pooled only: the per-relation baselines are a table (slick/relations.json), not ~50 charts
                        | {k: v for k, v in majority_baseline(result).items() if k.endswith("/all")})
    per_relation = table.group_by("split", "relation", "category").len().sort("split", "relation", "category")
    tracker.log_table(parent_id, per_relation, Artifact.COUNTS_PER_RELATION)
    # The most-common-answer baseline per relation and split, beside the category counts.
    tracker.log_table(parent_id, relation_table(result), Artifact.RELATIONS)
    if source.exposures() is not None:
        tracker.log_table(parent_id, confusion_table(result, source), Artifact.CONFUSION)
    _figure(tracker, parent_id, figures.category_bars(table), Artifact.CATEGORY_FIGURE)
    compositions = pl.concat([v.mixture.relation_composition().with_columns(pl.lit(v.name).alias("variant"))
                              for v in variants]) if variants else pl.DataFrame()
    tracker.log_table(parent_id, compositions, Artifact.COMPOSITION)
    tracker.log_text(parent_id, "\n".join(notes) + "\n" if notes else "(every relation filled as planned)\n",
                     Artifact.NOTES)
    tracker.set_tags(parent_id, {"mixtures.notes": str(len(notes))})


def record_variant(tracker: Tracker, run_id: str, variant: Variant, value, log: Callable[[str], None]
                   ) -> dict[str, float]:
    """Everything a finished variant (``value``: its ``VariantResult``) reports, in a handful of calls (all
    epochs' metrics batched together). Returns its summary metrics."""
    tracker.log_dataset(run_id, variant.mixture.composition(), name=variant.mixture.name,
                        digest=content_key(variant.mixture.rows.select("qid", "answer").sort("qid").rows()))
    metrics = {**value.summary, **measures.accuracy_intervals(value.predictions)}
    tracker.log_metrics(run_id, metrics)
    write_parquet(value.predictions, value.run_dir / "predictions.parquet")
    tracker.log_table(run_id, value.predictions, Artifact.PREDICTIONS)
    # Its composition is the input dataset above (the parent has every variant's, wide, in mixtures/): one upload
    # less per variant. Its notes, a line or two, are a tag.
    if variant.mixture.notes:
        tracker.set_tags(run_id, {"mixture.notes": "; ".join(variant.mixture.notes)[:5000]})
    tracker.log_file(run_id, value.run_dir / Artifact.HISTORY)
    _figure(tracker, run_id, figures.fitting_curves(value.history, variant.name), Artifact.CURVES)
    fitted = metrics.get(acc_metric("train", stop="convergence"))
    if fitted is not None and fitted < FIT_WARNING:
        tracker.set_tags(run_id, {"warning": f"train fit {fitted:.3f} < {FIT_WARNING} at the last epoch"})
        log(f"warning: {variant.name} fitted {fitted:.1%} of its train examples by its last epoch "
            f"({variant.train.epochs}); CONVERGENCE assumes at least {FIT_WARNING:.0%}")
    return metrics


def record_analysis(tracker: Tracker, parent_id: str, analysis: Analysis) -> None:
    """Paper-level results on the parent run: the runs and mixtures tables, seed means with intervals, the
    significance tests, the linear fits with their points and figures, the verdicts and the sweep figure."""
    tracker.log_parquet(parent_id, analysis.runs_table, Artifact.RUNS)
    tracker.log_parquet(parent_id, analysis.mixtures, Artifact.MIXTURES)
    seeds = {seed_metric(row["mixture"], metric, suffix): row[metric + suffix]
             for row in analysis.mixtures.iter_rows(named=True) for metric in SEED_METRICS
             for suffix in INTERVAL_SUFFIXES}
    tracker.log_metrics(parent_id, _finite(seeds))
    if analysis.best:
        tracker.set_tags(parent_id, analysis.best)
    for stop, tests in analysis.significance.items():
        tracker.log_metrics(parent_id, _merged(test.metrics(stop, name) for name, test in tests.items()))
    for label, fits in analysis.fits.items():
        if not fits:
            continue
        tracker.log_metrics(parent_id, _merged(fit.metrics(split, label) for split, fit in fits.items()))
        plain = {split: fit.model_dump() for split, fit in fits.items() if not split.endswith("_steps")}
        _figure(tracker, parent_id, figures.linear_fit(analysis.points[label], plain), Artifact.linear_figure(label))
    if analysis.points:
        points = [p.with_columns(pl.lit(label).alias("config")) if label else p for label, p in analysis.points.items()]
        tracker.log_parquet(parent_id, pl.concat(points, how="diagonal_relaxed"), Artifact.POINTS)
    # Verdicts are tags (the runs table can show them); the numbers behind them are one JSON file, not ~40 metrics
    # that would crowd the MLflow charts with single-value bars.
    for finding in analysis.findings:
        tracker.set_tags(parent_id, finding.tags())
    if analysis.findings:
        tracker.log_text(parent_id, json.dumps([f.document() for f in analysis.findings], indent=2, default=str),
                         Artifact.FINDINGS)
    sweep = analysis.mixtures.filter(pl.col("kind").is_in(["unknown_fraction", "known_only"]))
    if not sweep.is_empty():
        _figure(tracker, parent_id, figures.unknown_sweep(sweep), Artifact.SWEEP_FIGURE)


def _merged(parts) -> dict[str, float]:
    return {k: v for part in parts for k, v in part.items()}


def _figure(tracker: Tracker, run_id: str, figure, artifact_file: str) -> None:
    tracker.log_figure(run_id, figure, artifact_file)
    figures.close(figure)
