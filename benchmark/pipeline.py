"""The whole run, stage by stage: suite → components → categorise (cached) → mixtures → fine-tune and evaluate each
variant → analyse → log. Each stage is a function of its inputs; only ``benchmark.tracking`` talks to MLflow.

    python -m benchmark run suites/unknown_sweep.yaml

Resume: a variant is keyed by the content hash of everything that determines it (model and data identity, SliCK
settings, the mixture's rows, training and evaluation settings, seed, code version). A finished variant with the
same key is reused, never trained twice; a failed, killed or interrupted one is reopened and continues from its
last checkpoint. ``--fresh`` reruns everything.
"""

from __future__ import annotations

import difflib
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import polars as pl
import yaml

from benchmark import __version__, analyse, report
from benchmark.cache import cache_root, code_key, content_key, ensure_writable, stage_dir
from benchmark.errors import BenchmarkError
from benchmark.mixtures import Mixture, build_mixtures
from benchmark.registry import Registry
from benchmark.slick import KNOWN, categorize, confusion_table, summary
from benchmark.suite import Suite, check_components, expand_sweep
from benchmark.tracking import Tracker, tracking_uri
from benchmark.train_config import TrainConfig

# The code a variant's results come from; its source (and the torch/transformers versions) is in every variant key.
VARIANT_CODE = ("benchmark.train", "benchmark.train_config", "benchmark.evaluate", "benchmark.generation",
                "benchmark.prompts", "benchmark.answers", "benchmark.analyse", "benchmark.layernorm")
Progress = Callable[[str, int, int], None]


def resolve_device(preference: str) -> str:
    if preference != "auto":
        return preference
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def code_version() -> str:
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, timeout=5,
                                cwd=Path(__file__).parent).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        commit = ""
    return f"{__version__}+{commit}" if commit else __version__


def resolve_components(suite: Suite, registry: Registry | None = None):
    """(knowledge source, base model), not loaded; names and local folders are checked here, before any compute,
    with the same one-line errors as ``validate``."""
    return check_components(suite, registry=registry, check_paths=True)


def categorize_suite(suite: Suite, progress: Progress | None = None, force: bool = False):
    """SliCK only: (the summary document, the category × exposure confusion table or None)."""
    ensure_writable(cache_root())
    source, model = resolve_components(suite)
    result = categorize(source, model, suite.slick, device=resolve_device(suite.device), progress=progress, force=force)
    confusion = confusion_table(result, source) if source.exposures() is not None else None
    return summary(result, source), confusion


@dataclass
class Variant:
    name: str
    mixture: Mixture
    seed: int
    swept: dict
    train: TrainConfig
    key: str
    params: dict = field(default_factory=dict)


def _limit(table: pl.DataFrame, limit: int | None, seed: int = 0) -> pl.DataFrame:
    if limit is None or table.height <= limit:
        return table
    return table.sort("qid").sample(n=limit, seed=seed).sort("qid")


def plan_variants(suite: Suite, train: pl.DataFrame, identity: dict) -> list[Variant]:
    variants = []
    sweeps = expand_sweep(suite)
    for seed in suite.seeds:
        for mixture in build_mixtures(train, suite.mixtures, seed):
            for swept, train_config in sweeps:
                name = mixture.name
                if len(suite.seeds) > 1:
                    name += f"_seed{seed}"
                for k, v in swept.items():
                    name += f"_{k.partition('.')[2]}{v}"
                config = train_config.model_copy(update={"seed": seed})
                rows = mixture.rows.select("qid", "answer", "category").sort("qid").rows()
                key = content_key(code_key(*VARIANT_CODE), identity, rows, config.model_dump(mode="json"),
                                  suite.evaluation.model_dump(mode="json"), seed)
                params = {"variant": name, "mixture": mixture.kind, "size": mixture.rows.height, "seed": seed,
                          **{k: v for k, v in mixture.params.items()}, **swept}
                variants.append(Variant(name, mixture, seed, swept, config, key, params))
    return variants


def history_from_tracking(tracker: Tracker, run_id: str) -> pl.DataFrame:
    """Per-epoch metrics of a finished variant whose local cache is gone, rebuilt from MLflow's metric history."""
    metrics = tracker.latest_metrics(run_id)
    by_epoch: dict[int, dict] = {}
    for key in metrics:
        for step, value in tracker.metric_history(run_id, key):
            by_epoch.setdefault(step, {"epoch": step})[key] = value
    return pl.DataFrame(sorted(by_epoch.values(), key=lambda r: r["epoch"]))


def linear_points(histories: dict[str, pl.DataFrame], variants: dict[str, Variant], size: int) -> pl.DataFrame:
    """One row per (variant, epoch): N_kn/|D|, N_unk/|D| fitted at that point, and the accuracies."""
    rows = []
    for name, history in histories.items():
        variant = variants[name]
        if variant.mixture.kind == "idk_relabel":
            continue  # its Unknown answers are not facts; the paper's linear model leaves it out
        counts = dict(variant.mixture.rows.group_by("category").len().iter_rows())
        for record in history.iter_rows(named=True):
            known = sum((record.get(f"train/acc/{c}") or 0.0) * counts.get(c, 0) for c in KNOWN)
            unknown = (record.get("train/acc/Unknown") or 0.0) * counts.get("Unknown", 0)
            rows.append({"variant": name, "epoch": record["epoch"], "known_fitted_share": known / size,
                         "unknown_fitted_share": unknown / size, "test/acc/all": record.get("test/acc/all"),
                         "ood/acc/all": record.get("ood/acc/all")})
    return pl.DataFrame(rows)


def run_suite(suite: Suite, suite_file: Path | None = None, *, fresh: bool = False, only: list[str] | None = None,
              progress: Progress | None = None, log: Callable[[str], None] = print) -> dict:
    started = time.time()
    ensure_writable(cache_root(), tracking_uri())
    source, model_component = resolve_components(suite)
    device = resolve_device(suite.device)
    # Everything that can reject the suite (bad data, mixtures that cannot be filled, unknown --only names) runs
    # before any MLflow run is opened: an invalid suite starts no run.
    log(f"SliCK with {suite.model} on {suite.knowledge_source} (cached after the first run; a world model "
        "is pretrained on first use, a few minutes on a CPU)")
    result = categorize(source, model_component, suite.slick, device=device, progress=progress, force=fresh)
    table = result.table
    train = table.filter((pl.col("split") == "train") & ~pl.col("ood"))
    # EARLY_STOP is chosen on in-distribution dev questions only, as in the paper.
    dev = _limit(table.filter((pl.col("split") == "dev") & ~pl.col("ood")), suite.evaluation.dev_limit)
    test = table.filter(pl.col("split") == "test")
    test = pl.concat([_limit(test.filter(~pl.col("ood")), suite.evaluation.test_limit),
                      test.filter(pl.col("ood")) if suite.evaluation.ood else test.head(0)])
    identity = {"model": model_component.identity(), "data": source.identity(), "slick": result.key}
    variants = plan_variants(suite, train, identity)
    if only:
        names = [v.name for v in variants]
        for wanted in only:
            if wanted not in names:
                close = difflib.get_close_matches(wanted, names, 1)
                hint = f"; did you mean '{close[0]}'?" if close else ""
                raise BenchmarkError(f"--only {wanted}: no such variant{hint} (variants: {', '.join(names)})")
        variants = [v for v in variants if v.name in only]

    tracker = Tracker(suite.experiment)
    tags = {"base_model": suite.model, "knowledge_source": suite.knowledge_source, "suite_key": suite.key(),
            "code_version": code_version(), "suite_file": str(suite_file or "")}
    parent_id, reopened = tracker.open_parent(suite.key(), f"{suite.name}:{suite.model}", tags, fresh=fresh)
    log(f"{'resuming' if reopened else 'started'} parent run {parent_id} in experiment '{suite.experiment}'")
    current: str | None = None
    try:
        if not reopened:
            tracker.log_text(parent_id, yaml.safe_dump(suite.model_dump(mode="json"), sort_keys=False), "suite.resolved.yaml")
            tracker.log_parquet(parent_id, table, "slick/categories.parquet")
            facts = summary(result, source)
            tracker.log_metrics(parent_id, {f"slick/count/{k}": v for k, v in facts["counts"].items()}
                                | {"slick/seconds": facts["seconds"], "slick/generations": facts["generations"],
                                   "slick/questions_per_s": result.questions_per_second})
            per_relation = table.group_by("split", "relation", "category").len().sort("split", "relation", "category")
            tracker.log_table(parent_id, per_relation, "slick/counts_per_relation.json")
            if source.exposures() is not None:
                tracker.log_table(parent_id, confusion_table(result, source), "slick/confusion_exposure.json")
            figure = report.category_bars(table)
            tracker.log_figure(parent_id, figure, "slick/categories.png")
            report.close(figure)

        outcomes, histories, failures = [], {}, []
        for number, variant in enumerate(variants, 1):
            run_dir = stage_dir("variants", variant.key)
            existing = None if fresh else tracker.finished_variant(parent_id, variant.key)
            if existing is not None:
                history_file = run_dir / "history.parquet"
                histories[variant.name] = (pl.read_parquet(history_file) if history_file.exists()
                                           else history_from_tracking(tracker, existing))
                metrics = tracker.latest_metrics(existing)
                outcomes.append(_outcome(variant, existing, "FINISHED", True, metrics))
                log(f"[{number}/{len(variants)}] {variant.name}: reused finished run {existing}")
                continue
            log(f"[{number}/{len(variants)}] {variant.name}: fine-tuning on {variant.mixture.rows.height} examples")
            run_id = tracker.open_variant(parent_id, variant.name, variant.key, variant.params,
                                          {"base_model": suite.model, "knowledge_source": suite.knowledge_source})
            current = run_id
            try:
                metrics, history = _run_variant(tracker, run_id, variant, model_component, dev, test, run_dir,
                                                device, progress)
            except Exception as exc:  # a failed variant is marked failed; the others still run
                tracker.set_tags(run_id, {"slick.error": str(exc)[:5000]})
                tracker.close(run_id, "FAILED")
                current = None
                failures.append(variant.name)
                outcomes.append(_outcome(variant, run_id, "FAILED", False, {}))
                log(f"[{number}/{len(variants)}] {variant.name}: FAILED: {exc}")
                continue
            tracker.close(run_id, "FINISHED")
            current = None
            histories[variant.name] = history
            outcomes.append(_outcome(variant, run_id, "FINISHED", False, metrics))

        linear = _analyse(tracker, parent_id, variants, histories, outcomes)
        tracker.close(parent_id, "FAILED" if failures else "FINISHED")
    except KeyboardInterrupt:
        if current is not None:
            tracker.close(current, "KILLED")
        tracker.close(parent_id, "KILLED")
        raise
    except BaseException:
        if current is not None:
            tracker.close(current, "FAILED")
        tracker.close(parent_id, "FAILED")
        raise
    document = {"experiment": suite.experiment, "parent_run_id": parent_id, "seconds": time.time() - started,
                "variants": [{k: v for k, v in o.items() if k != "metrics"} for o in outcomes], "linear": linear}
    if failures:
        raise BenchmarkError(f"{len(failures)} variant(s) failed: {', '.join(failures)} (marked FAILED in MLflow; "
                             "rerun the suite to retry them)")
    return document


def _outcome(variant: Variant, run_id: str, status: str, reused: bool, metrics: dict) -> dict:
    return {"name": variant.name, "run_id": run_id, "status": status, "reused": reused,
            "early_stop_test_acc": metrics.get("early_stop/test/acc/all"),
            "convergence_test_acc": metrics.get("convergence/test/acc/all"), "metrics": metrics}


def _run_variant(tracker: Tracker, run_id: str, variant: Variant, model_component, dev: pl.DataFrame,
                 test: pl.DataFrame, run_dir: Path, device: str, progress: Progress | None):
    from benchmark.train import fine_tune  # Lightning is imported only when something is trained

    tracker.log_dataset(run_id, variant.mixture.composition(), name=variant.name)
    loaded = model_component.load(device=device)
    epochs = variant.train.epochs
    logged = {step for step, _ in tracker.metric_history(run_id, "train/loss")}

    def on_epoch(metrics: dict[str, float], epoch: int) -> None:
        tracker.log_metrics(run_id, metrics, step=epoch)
        logged.add(epoch)
        if progress:
            progress(f"{variant.name}", epoch, epochs)

    result = fine_tune(loaded, variant.mixture.rows, dev, test, variant.train, run_dir / "train", on_epoch=on_epoch,
                       in_place=True)  # the base model was loaded for this variant alone
    # Epochs trained by an earlier invocation whose metrics never reached this run (e.g. a new tracking store
    # over a finished training cache) are logged from the saved history, so every run has its full curves.
    for record in result.history.iter_rows(named=True):
        if record["epoch"] not in logged:
            tracker.log_metrics(run_id, {k: v for k, v in record.items() if k != "epoch" and v is not None},
                                step=record["epoch"])
    summary_metrics = dict(result.summary)
    tracker.log_metrics(run_id, summary_metrics)
    tracker.log_table(run_id, result.predictions, "predictions.json")
    result.history.write_parquet(run_dir / "history.parquet")
    tracker.log_file(run_id, run_dir / "history.parquet")
    figure = report.fitting_curves(result.history, variant.name)
    tracker.log_figure(run_id, figure, "fitting_curves.png")
    report.close(figure)
    return summary_metrics, result.history


def _analyse(tracker: Tracker, parent_id: str, variants: list[Variant], histories: dict[str, pl.DataFrame],
             outcomes: list[dict]) -> dict:
    """Paper-level results on the parent run: the Unknown sweep figure and the linear model."""
    by_name = {v.name: v for v in variants}
    sweep_rows = []
    for outcome in outcomes:
        variant = by_name[outcome["name"]]
        if outcome["status"] != "FINISHED" or variant.mixture.kind not in ("unknown_fraction", "known_only"):
            continue
        metrics = outcome["metrics"]
        sweep_rows.append({"kind": variant.mixture.kind, "unknown_fraction": variant.params.get("unknown_fraction"),
                           "early_stop/test/acc/all": metrics.get("early_stop/test/acc/all"),
                           "convergence/test/acc/all": metrics.get("convergence/test/acc/all")})
    if sweep_rows:
        figure = report.unknown_sweep(pl.DataFrame(sweep_rows))
        tracker.log_figure(parent_id, figure, "unknown_sweep.png")
        report.close(figure)
    sizes = [v.mixture.rows.height for v in variants if v.mixture.kind in ("unknown_fraction", "single_category", "natural")]
    if not histories or not sizes:
        return {}
    points = linear_points(histories, by_name, max(sizes))
    fits = {}
    for split, target in (("in_distribution", "test/acc/all"), ("ood", "ood/acc/all")):
        usable = points.drop_nulls(target) if target in points.columns else points.head(0)
        if usable.height >= 4:
            fits[split] = {**analyse.fit_linear_model(usable, target), "target": target}
    if fits:
        prefix = {"in_distribution": "linear", "ood": "linear/ood"}
        tracker.log_metrics(parent_id, {f"{prefix[s]}/{k}": v for s, f in fits.items() for k, v in f.items()
                                        if k in ("beta0", "beta_kn", "beta_unk", "r2", "n")})
        tracker.log_parquet(parent_id, points, "linear/points.parquet")
        figure = report.linear_fit(points.drop_nulls(), fits)
        tracker.log_figure(parent_id, figure, "linear_model.png")
        report.close(figure)
    return {s: {k: v for k, v in f.items() if k != "target"} for s, f in fits.items()}
