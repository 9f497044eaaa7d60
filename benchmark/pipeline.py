"""The whole run, stage by stage: suite → components → categorise (cached) → mixtures → fine-tune and evaluate each
variant (on an executor) → analyse → log. Each stage is a function of its inputs; only ``benchmark.tracking``
talks to MLflow, and only here, in the driver.

    python -m benchmark run suites/unknown_sweep.yaml [--workers 2] [--executor ray]

Resume: a variant is keyed by the content hash of everything that determines it (model and data identity, SliCK
settings, the mixture's rows, training and evaluation settings, seed, and the source of the code that computes
it). A finished variant with the same key is reused, never trained twice; a failed, killed or interrupted one is
reopened and continues from its last checkpoint. ``--fresh`` reruns everything.

Equal footing: every variant of a suite trains the same number of epochs (CONVERGENCE is the last one) and is
scored on the same dev and test questions; a variant that has not fitted 99% of its train examples by then is
named in a warning. Results are reported as realised (the actual Unknown share, the actual epochs), each with a
95% interval: over test questions for one run, across seeds for a mixture, over variants for the linear model.
"""

from __future__ import annotations

import difflib
import io
import json
import math
import shutil
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import polars as pl
import yaml
from pydantic import ValidationError

from benchmark import __version__, analyse, report
from benchmark.cache import (
    atomic_write_bytes,
    cache_root,
    code_key,
    content_key,
    ensure_writable,
    read_parquet,
    stage_dir,
    write_parquet,
)
from benchmark.categories import KNOWN
from benchmark.errors import BenchmarkError
from benchmark.executors import make_executor
from benchmark.mixtures import Mixture, build_mixtures, planned_mixtures
from benchmark.numerics import environment_tags, set_threads
from benchmark.registry import COMPONENTS_DIR, INLINE_MODEL, Registry
from benchmark.runtime import compute_threads
from benchmark.slick import (
    SliCKConfig,
    categorize,
    category_counts,
    confusion_table,
    counts_by_split,
    majority_baseline,
    relation_table,
    summary,
)
from benchmark.suite import Suite, check_components, expand_sweep
from benchmark.tracking import Tracker, tracking_uri
from benchmark.train_config import TrainConfig, result_settings

# The code a variant's results come from; its source (and the torch/transformers versions) is in every variant key.
# Not benchmark.analyse: a variant's history and predictions do not depend on it (its summary metrics are recomputed
# from the history), so an edit of the analysis re-analyses, it does not retrain. Not the launch and checkpoint
# code either (benchmark.launch, checkpoints, progress): where and how a run is stored is not what it computes.
VARIANT_CODE = ("benchmark.train", "benchmark.train_config", "benchmark.evaluate", "benchmark.backends.decoding",
                "benchmark.prompts", "benchmark.answers", "benchmark.thread_invariant", "benchmark.parallel")
FIT_WARNING = 0.99  # CONVERGENCE means the train set is fitted; below this share a variant is named in a warning
# Summary metrics aggregated over seeds on the parent run.
SEED_METRICS = tuple(f"{stop}/{split}/acc/{group}" for stop in analyse.STOPS for split in ("test", "ood")
                     for group in ("all", "Known", "Unknown")) + ("convergence/train/acc/all",)
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


def make_runner(suite: Suite, kind: str | None = None, workers: int | None = None, *, stage: str = "variants"):
    """(settings, executor): the suite's ``executor:`` section with ``--executor``/``--workers`` over it, each job
    shaped for ``stage`` (variants, or slick shards: ``stage_resources``)."""
    settings = suite.executor.model_copy(update={k: v for k, v in (("kind", kind), ("workers", workers))
                                                 if v is not None})
    cpus, gpus = stage_resources(suite, settings, stage)
    runner = make_executor(settings.kind, workers=settings.workers, cpus_per_variant=cpus, gpus_per_variant=gpus,
                           address=settings.address)
    return settings, runner


def stage_resources(suite: Suite, settings, stage: str) -> tuple[float, float]:
    """(CPUs, GPUs) of one job: a variant trains on ``train.devices`` GPUs when it trains on GPUs; a SliCK shard
    holds one inference copy (vLLM: ``slick.vllm.tensor_parallel_size`` GPUs), unless the suite says otherwise."""
    if stage == "slick":
        on_gpu = suite.device == "cuda" or suite.slick.backend == "vllm"
        width = suite.slick.vllm.tensor_parallel_size if suite.slick.backend == "vllm" else 1
        gpus = settings.gpus_per_slick_shard if settings.gpus_per_slick_shard is not None else (width if on_gpu else 0)
        return settings.cpus_per_slick_shard, gpus
    train = suite.train
    on_gpu = train.accelerator == "gpu" or (train.accelerator == "auto" and suite.device == "cuda")
    gpus = settings.gpus_per_variant if settings.gpus_per_variant is not None else (train.devices if on_gpu else 0)
    return settings.cpus_per_variant, gpus


def slick_executor(settings, runner):
    """Where SliCK's shards run: on several local workers, or on Ray (whose workers may hold the accelerators the
    driver lacks); else in this process."""
    return runner if runner.name == "ray" or settings.workers > 1 else None


def categorize_suite(suite: Suite, progress: Progress | None = None, force: bool = False):
    """SliCK only: (the summary document, the category × exposure confusion table or None)."""
    ensure_writable(cache_root())
    source, model = resolve_components(suite)
    set_threads(compute_threads())  # MKL pinned to one thread for whatever runs in this process (numerics)
    result = categorize(source, model, suite.slick, device=resolve_device(suite.device), progress=progress, force=force,
                        executor=slick_executor(*make_runner(suite, stage="slick")))
    confusion = confusion_table(result, source) if source.exposures() is not None else None
    return summary(result, source), confusion


# -- SliCK on one knowledge source, outside a suite (`categorize --source FILE_OR_COMPONENT --model NAME`) --------
def resolve_source(value: str, registry: Registry | None = None):
    """A question file (any path that exists: ``components.qa`` with every key at its default) or a knowledge
    source component by name, not read yet."""
    from benchmark.registry import did_you_mean
    from components.qa import EXTENSIONS, QASource

    path = Path(value).expanduser()
    if path.exists():
        return QASource.from_file(path)
    registry = registry or Registry()
    names = registry.names("datasets")
    if value in names:
        return registry.dataset(value, check_paths=True)
    if path.suffix.lower() in EXTENSIONS or "/" in value:
        raise BenchmarkError(f"--source {value}: no such file")
    raise BenchmarkError(f"--source {value}: neither a file nor a knowledge source component{did_you_mean(value, names)}")


def source_settings(overrides: list[str], source) -> tuple[SliCKConfig, str]:
    """(SliCK settings, device) from ``--set slick.KEY=VALUE`` / ``--set device=...`` over the defaults. Unless
    set, ``slick.splits`` is the splits the source has: a file of train and dev rows is categorised whole."""
    from benchmark.registry import format_validation_error
    from benchmark.suite import apply_overrides

    data = apply_overrides({}, overrides)
    for key in data:
        if key not in ("slick", "device"):
            raise BenchmarkError(f"--set {key}: with --source only slick.* keys and device can be set "
                                 "(e.g. --set slick.k_shot=2)")
    slick = data.get("slick", {})
    if not isinstance(slick, dict):
        raise BenchmarkError("--set slick: expected slick.KEY=VALUE, e.g. slick.k_shot=2")
    if "splits" not in slick:
        present = set(source.questions()["split"].unique().to_list())
        slick["splits"] = [s for s in ("train", "dev", "test") if s in present]
    try:
        config = SliCKConfig.model_validate(slick)
    except ValidationError as exc:
        raise BenchmarkError(format_validation_error("--set", exc, prefix="slick")) from exc
    device = data.get("device", "auto")
    if device not in ("auto", "cpu", "cuda", "mps"):
        raise BenchmarkError(f"--set device: expected auto, cpu, cuda or mps (found {device!r})")
    return config, device


def categorize_source(source, model, config: SliCKConfig, *, out: Path, keep: tuple[str, ...] | None = None,
                      device: str = "auto", experiment: str = "categorize", progress: Progress | None = None,
                      force: bool = False) -> dict:
    """SliCK on ``source`` with ``model``: every categorised example with its P_Correct values and category in
    ``out/categories.parquet`` and ``.jsonl`` (a question file's rows keep their row number, ``row``); with
    ``keep`` (categories) also those examples as a fine-tuning file in the input's own format and columns
    (``QASource.write_rows``; a source that is no file of its own gets a JSONL file a ``qa`` source reads). The
    table is the cached SliCK stage; the files and one MLflow run of ``experiment`` (counts per category and
    relation, the share dropped, the tables) are written every time. Returns the summary document."""
    from components.qa import QASource, table_as_jsonl

    ensure_writable(cache_root(), tracking_uri(), out)
    if isinstance(source, QASource):
        source.check_slick(config)  # names the file, column and relation, before any model loads
    set_threads(compute_threads())
    result = categorize(source, model, config, device=resolve_device(device), progress=progress, force=force)
    table = result.table
    if isinstance(source, QASource):
        table = table.join(source.rows(), on="qid", how="left").select("row", *table.columns)
    # Whole or not at all (the project's atomic write), so an interrupted call leaves no half-written table.
    parquet = io.BytesIO()
    table.write_parquet(parquet)
    atomic_write_bytes(out / "categories.parquet", parquet.getvalue())
    atomic_write_bytes(out / "categories.jsonl", table.write_ndjson().encode())
    per_relation = {relation: category_counts(rows)
                    for (relation,), rows in table.group_by("relation", maintain_order=True)}
    document = {"source": source.name, "model": model.name, "questions": table.height,
                "counts": category_counts(table), "counts_by_relation": per_relation,
                "counts_by_split": counts_by_split(table), "not_categorised": dict(getattr(source, "dropped", {})),
                "files": [str(out / "categories.parquet"), str(out / "categories.jsonl")], "slick_key": result.key,
                "generations": result.generations, "seconds": result.seconds, "cache_hit": result.cache_hit}
    if keep is not None:
        kept = table.filter(pl.col("category").is_in(list(keep)))
        target = (source.write_rows(set(kept["row"].to_list()), out) if isinstance(source, QASource)
                  else table_as_jsonl(kept, out / f"{source.name}.filtered.jsonl"))
        document |= {"keep": list(keep), "kept": kept.height, "dropped": table.height - kept.height,
                     "dropped_share": (table.height - kept.height) / table.height, "filtered": str(target)}
    tracker = Tracker(experiment)
    tags = {"base_model": model.name, "model_params": _parameters(model), "knowledge_source": source.name,
            "slick.key": result.key, **{f"slick.{k}": str(v) for k, v in result.backend_info.items()},
            **config.limit_tags()}
    run_id, _ = tracker.open_parent(content_key("categorize", result.key, keep), f"categorize:{source.name}:{model.name}",
                                    tags, fresh=True)
    try:
        tracker.set_tags(run_id, {"slick.role": "categorize"})  # not a suite's parent: report and compare skip it
        tracker.log_params(run_id, {"source": source.identity(), "model": model.identity(), "out": str(out),
                                    "keep": ",".join(keep or ()),
                                    **{f"slick.{k}": v for k, v in config.cache_fields().items()}})
        metrics = {f"slick/count/{c}": n for c, n in document["counts"].items()}
        metrics |= {f"slick/count/{r}/{c}": n for r, counts in per_relation.items() for c, n in counts.items()}
        metrics |= {"slick/questions": table.height, "slick/seconds": result.seconds,
                    "slick/generations": result.generations}
        if keep is not None:
            metrics |= {f"filter/{k}": document[k] for k in ("kept", "dropped", "dropped_share")}
        tracker.log_metrics(run_id, metrics)
        tracker.log_parquet(run_id, table, "slick/categories.parquet")
        tracker.log_table(run_id, table.group_by("relation", "split", "category").len().sort("relation", "split",
                                                                                          "category"),
                          "slick/counts_per_relation.json")
        if keep is not None and Path(document["filtered"]).is_file():
            tracker.log_file(run_id, Path(document["filtered"]), "filtered")
    except BaseException:
        tracker.close(run_id, "FAILED")
        raise
    tracker.close(run_id, "FINISHED")
    return document | {"experiment": experiment, "run_id": run_id}


@dataclass
class Variant:
    name: str
    mixture: Mixture
    seed: int
    swept: dict
    train: TrainConfig
    key: str
    params: dict = field(default_factory=dict)

    @property
    def tags(self) -> dict[str, str]:
        """For "Group by" in the MLflow chart view: seeds of one mixture aggregate."""
        fraction = self.mixture.params.get("unknown_fraction")
        return {"variant_kind": self.mixture.kind, "mixture": self.mixture.name, "seed": str(self.seed),
                "unknown_fraction": "" if fraction is None else f"{fraction:g}"}


def _limit(table: pl.DataFrame, limit: int | None, seed: int = 0) -> pl.DataFrame:
    if limit is None or table.height <= limit:
        return table
    return table.sort("qid").sample(n=limit, seed=seed).sort("qid")


def variant_name(mixture: str, seed: int, swept: dict, suite: Suite) -> str:
    """A variant's run name: its mixture, its seed where the suite has several, and the swept values."""
    name = mixture + (f"_seed{seed}" if len(suite.seeds) > 1 else "")
    return name + "".join(f"_{k.partition('.')[2]}{v}" for k, v in swept.items())


def check_only(only: list[str] | None, names: list[str]) -> None:
    for wanted in only or []:
        if wanted not in names:
            close = difflib.get_close_matches(wanted, names, 1)
            hint = f"; did you mean '{close[0]}'?" if close else ""
            raise BenchmarkError(f"--only {wanted}: no such variant{hint} (variants: {', '.join(names)})")


def planned_variant_names(suite: Suite) -> list[str]:
    """The variants' names from the suite alone, before SliCK has run (``--only`` is checked against them first)."""
    return [variant_name(m, seed, swept, suite) for seed in suite.seeds for m in planned_mixtures(suite.mixtures)
            for swept, _ in expand_sweep(suite)]


def plan_variants(suite: Suite, train: pl.DataFrame, identity: dict) -> list[Variant]:
    variants = []
    sweeps = expand_sweep(suite)
    for seed in suite.seeds:
        mixtures = build_mixtures(train, suite.mixtures, seed)
        # D_Known trains on as many example slots per epoch as its D (mixtures.known_only_steps: matched), so both
        # take the same optimizer steps and learning-rate schedule; the setting is in the config, so in the key.
        d_size = {m.params["unknown_fraction"]: m.rows.height for m in mixtures if m.kind == "unknown_fraction"}
        for mixture in mixtures:
            for swept, train_config in sweeps:
                name = variant_name(mixture.name, seed, swept, suite)
                update = {"seed": seed}
                if mixture.kind == "known_only" and suite.mixtures.known_only_steps == "matched":
                    update["examples_per_epoch"] = d_size[mixture.params["unknown_fraction"]]
                config = train_config.model_copy(update=update)
                rows = mixture.rows.select("qid", "answer", "category").sort("qid").rows()
                # The settings the results depend on: layout and speed settings only where they change them.
                key = content_key(code_key(*VARIANT_CODE), identity, rows, result_settings(config, mixture.rows.height),
                                  suite.evaluation.model_dump(mode="json"), seed)
                params = {"variant": name, "mixture": mixture.name, "kind": mixture.kind, "size": mixture.rows.height,
                          "seed": seed, "epochs": config.epochs, **mixture.params, **swept}
                if config.examples_per_epoch is not None:
                    params["examples_per_epoch"] = config.examples_per_epoch
                variants.append(Variant(name, mixture, seed, swept, config, key, params))
    # A name is a variant's run and its results' key in every table: two alike would log into one run. The suite's
    # validators refuse the known ways to get there; this is the last line, still before any run is opened.
    named: dict[str, Variant] = {}
    for variant in variants:
        other = named.setdefault(variant.name, variant)
        if other is not variant:
            raise BenchmarkError(f"{suite.file or suite.name}: two variants are both named '{variant.name}' "
                                 f"({other.params} and {variant.params}); make the mixtures or sweep values that "
                                 "name them distinct")
    return variants


def history_from_tracking(tracker: Tracker, run_id: str) -> pl.DataFrame:
    """Per-epoch metrics of a finished variant whose local cache is gone, rebuilt from MLflow's metric history."""
    metrics = tracker.latest_metrics(run_id)
    by_epoch: dict[int, dict] = {}
    for key in metrics:
        for step, value in tracker.metric_history(run_id, key):
            if step > 0:
                by_epoch.setdefault(step, {"epoch": step})[key] = value
    return pl.DataFrame(sorted(by_epoch.values(), key=lambda r: r["epoch"]))


def linear_points(histories: dict[str, pl.DataFrame], variants: dict[str, Variant], size: int) -> pl.DataFrame:
    """One row per (variant, epoch): N_kn/|D|, N_unk/|D| fitted at that point, the accuracies, and ``steps``, the
    optimizer steps taken so far (``train/optimizer_steps``; None for runs that did not record it), the
    covariate of the linear model's second fit (``benchmark.findings.linear_fits``)."""
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
                         "ood/acc/all": record.get("ood/acc/all"), "steps": record.get("train/optimizer_steps")})
    return pl.DataFrame(rows, schema_overrides={"steps": pl.Float64, "ood/acc/all": pl.Float64}) if rows else \
        pl.DataFrame()


# ---------------------------------------------------------------------------------------------------------------
# One variant, wherever it runs: a function of its job alone (no MLflow, nothing printed)
# ---------------------------------------------------------------------------------------------------------------
@dataclass
class VariantJob:
    name: str
    model: str
    model_overrides: dict
    registry_root: str
    rows: pl.DataFrame
    dev: pl.DataFrame
    test: pl.DataFrame
    train: TrainConfig
    run_dir: Path
    device: str


@dataclass
class VariantResult:
    history: pl.DataFrame
    summary: dict[str, float]
    predictions: pl.DataFrame
    run_dir: Path


def run_variant_job(job: VariantJob) -> VariantResult:
    """Fine-tune and evaluate one variant (resuming from its checkpoint when one is there). The model goes by
    name: it is loaded where it trains (here, or in each of the variant's rank processes), never twice."""
    from benchmark.launch import ModelRef
    from benchmark.train import fine_tune  # Lightning is imported only where something is trained

    model = ModelRef(job.model, job.model_overrides, job.registry_root)
    result = fine_tune(model, job.rows, job.dev, job.test, job.train, job.run_dir / "train", in_place=True)
    write_parquet(result.history, job.run_dir / "history.parquet")  # with its checksum (benchmark.cache)
    return VariantResult(result.history, dict(result.summary), result.predictions, job.run_dir)


# ---------------------------------------------------------------------------------------------------------------
# The driver
# ---------------------------------------------------------------------------------------------------------------
def grouped_notes(notes: list[str]) -> list[str]:
    """Notes of the form ``<relation>: <why>`` that give one reason, as one line naming every relation (five
    relations without MaybeKnown facts are one line, not five); others as they are. MLflow keeps them one by one
    (``mixtures/notes.txt``)."""
    by_reason: dict[str, list[str]] = {}
    for note in notes:
        relation, sep, reason = note.partition(": ")
        if sep and " " not in relation:
            by_reason.setdefault(reason, []).append(relation)
        else:  # not about one relation: kept whole
            by_reason.setdefault(note, []).append("")
    return [f"{', '.join(relations)}: {reason}" if all(relations) else reason
            for reason, relations in by_reason.items()]


def run_suite(suite: Suite, suite_file: Path | None = None, *, fresh: bool = False, only: list[str] | None = None,
              progress: Progress | None = None, log: Callable[[str], None] = print,
              executor: str | None = None, workers: int | None = None) -> dict:
    started = time.time()
    ensure_writable(cache_root(), tracking_uri())
    source, model_component = resolve_components(suite)
    device = resolve_device(suite.device)
    set_threads(compute_threads())  # MKL pinned to one thread for whatever runs in this process (numerics)
    # Everything that can reject the suite (bad data, mixtures that cannot be filled, unknown --only names) runs
    # before any MLflow run is opened: an invalid suite starts no run.
    check_only(only, planned_variant_names(suite))  # a misspelt name costs nothing, not a SliCK run
    model_component.prepare(log)  # a world model's pretraining is said as such, not counted as SliCK's time
    first_use = f"; {model_component.first_use}" if model_component.first_use else ""
    log(f"SliCK with {suite.model} on {suite.knowledge_source} (cached after the first run{first_use})")
    settings, runner = make_runner(suite, executor, workers)
    shard_runner = make_runner(suite, executor, workers, stage="slick")[1]
    try:
        return _run_suite(suite, suite_file, fresh, only, progress, log, started, source, model_component, device,
                          settings, runner, shard_runner)
    finally:  # a local Ray instance the run started stops with it (each executor stops only what it started)
        runner.close()
        shard_runner.close()


def _run_suite(suite: Suite, suite_file: Path | None, fresh: bool, only: list[str] | None, progress: Progress | None,
               log: Callable[[str], None], started: float, source, model_component, device: str, settings, runner,
               shard_runner) -> dict:
    """``run_suite`` once its components are resolved and its executors made: SliCK, the variants, the analysis."""
    result = categorize(source, model_component, suite.slick, device=device, progress=progress, force=fresh,
                        executor=slick_executor(settings, shard_runner))
    table = result.table
    train = table.filter((pl.col("split") == "train") & ~pl.col("ood"))
    # EARLY_STOP is chosen on in-distribution dev questions only, as in the paper.
    dev = _limit(table.filter((pl.col("split") == "dev") & ~pl.col("ood")), suite.evaluation.dev_limit)
    test = table.filter(pl.col("split") == "test")
    test = pl.concat([_limit(test.filter(~pl.col("ood")), suite.evaluation.test_limit),
                      test.filter(pl.col("ood")) if suite.evaluation.ood else test.head(0)])
    identity = {"model": model_component.identity(), "data": source.identity(), "slick": result.key}
    variants = plan_variants(suite, train, identity)
    if only:  # checked against the planned names above; plan_variants names them with the same function
        variants = [v for v in variants if v.name in only]
    notes = sorted({note for v in variants for note in v.mixture.notes})
    if notes:  # one line, each reason once with the relations it concerns; every note is on the parent run
        log(f"mixtures ({len(notes)} note{'s' * (len(notes) > 1)}, all in mixtures/notes.txt): "
            + " | ".join(grouped_notes(notes)))

    tracker = Tracker(suite.experiment, suite.description or "")
    tags = {"base_model": suite.model, "model_params": _parameters(model_component),
            "knowledge_source": suite.knowledge_source, "suite_key": suite.key(),
            "settings_key": suite.settings_key(), "code_version": code_version(),
            "suite_file": str(suite_file or ""), "seeds": ",".join(map(str, suite.seeds)),
            "epochs": str(suite.train.epochs), **{f"slick.{k}": str(v) for k, v in result.backend_info.items()},
            **suite.slick.limit_tags(),
            **environment_tags(_dtypes(model_component, suite), device)}
    # The suite's settings in the name: a suite run with other settings (--set, a sweep edited) is another parent,
    # and reads as another in the UI's run list.
    parent_id, reopened = tracker.open_parent(suite.key(), parent_run_name(suite), tags, fresh=fresh)
    log(f"{'resuming' if reopened else 'started'} parent run {parent_id} in experiment '{suite.experiment}'")
    open_children: dict[str, str] = {}
    try:
        if not reopened:
            _log_parent_inputs(tracker, parent_id, suite, result, source, table, variants, notes)

        outcomes: dict[str, dict] = {}
        histories: dict[str, pl.DataFrame] = {}
        predictions: dict[str, pl.DataFrame] = {}
        pending: list[Variant] = []
        for variant in variants:
            existing = None if fresh else tracker.finished_variant(parent_id, variant.key)
            if existing is None:
                pending.append(variant)
                continue
            run_dir = stage_dir("variants", variant.key)
            history_file, predictions_file = run_dir / "history.parquet", run_dir / "predictions.parquet"
            # A finished variant's results are never dropped from the analysis: a file the cache lacks or that is
            # damaged (reported) is read back from its run in the store, and put back into the cache; a variant
            # whose run lacks them too is trained again (its checkpoint, if the cache has one, is reused).
            history = read_parquet(history_file)
            if history is None:
                history = history_from_tracking(tracker, existing)
            table = read_parquet(predictions_file)
            if table is None:
                table = tracker.read_table(existing, "predictions.json")
                if table is not None:
                    predictions_file.parent.mkdir(parents=True, exist_ok=True)
                    write_parquet(table, predictions_file)
                    log(f"{variant.name}: predictions read back from its finished run {existing} (not in the cache)")
            if table is None or history.is_empty():
                log(f"{variant.name}: its finished run {existing} lacks its "
                    f"{'predictions' if table is None else 'history'}, and so does the cache: running it again")
                pending.append(variant)
                continue
            histories[variant.name], predictions[variant.name] = history, table
            # The summary the analysis derives from the history, recomputed: benchmark.analyse may have changed
            # since the run was logged, and it is not part of the variant's key.
            metrics = {**tracker.latest_metrics(existing), **_fitting(histories[variant.name])}
            outcomes[variant.name] = _outcome(variant, existing, "FINISHED", True, metrics)
            log(f"{variant.name}: reused finished run {existing}")

        jobs = []
        for variant in pending:
            if fresh:  # --fresh recomputes: a finished checkpoint in the cache would otherwise be returned as is
                shutil.rmtree(stage_dir("variants", variant.key), ignore_errors=True)
            run_id = tracker.open_variant(parent_id, variant.name, variant.key, variant.params,
                                          {"base_model": suite.model, "knowledge_source": suite.knowledge_source,
                                           **variant.tags})
            open_children[variant.name] = run_id
            jobs.append(VariantJob(variant.name, suite.model, suite.model_overrides,
                                   _registry_root(model_component), variant.mixture.rows, dev, test,
                                   variant.train, stage_dir("variants", variant.key), device))
        if pending:  # a parent that had finished runs again; one with nothing to train keeps its status and times
            tracker.resume(parent_id)
        tracker.flush(parent_id)  # the parent's inputs are in the store before any training (a kill loses none)
        live = LiveEpochs(tracker, progress=progress)  # each epoch in MLflow as it ends, while its variant trains
        for variant, job in zip(pending, jobs, strict=True):
            run_id = open_children[variant.name]
            live.watch(run_id, job.run_dir / "train", after=tracker.logged_epochs(run_id), epochs=variant.train.epochs)
        if pending:
            log(f"fine-tuning {len(pending)} variant(s), {suite.train.epochs} epochs each, on the {runner.name} "
                f"executor" + (f" ({settings.workers} workers)" if runner.name == "local" and settings.workers > 1 else ""))
        failures = []
        training_started = time.time()
        live.start()
        try:
            outcomes_in_order = runner.run(run_variant_job, jobs)
            for done, outcome in enumerate(outcomes_in_order, 1):
                variant = pending[outcome.index]
                run_id = open_children[variant.name]
                if outcome.error is not None:  # a failed variant is marked failed; the others still run
                    with live.lock:
                        live.finish(run_id)
                        tracker.set_tags(run_id, {"slick.error": str(outcome.error)[:5000]})
                        tracker.close(run_id, "FAILED")
                    open_children.pop(variant.name)
                    failures.append(variant.name)
                    outcomes[variant.name] = _outcome(variant, run_id, "FAILED", False, {})
                    log(f"{variant.name}: FAILED: {outcome.error}")
                    continue
                value = outcome.value
                with live.lock:  # the epochs not yet sent, then the rest, then the run ends
                    live.finish(run_id, value.history)
                    metrics = _log_variant(tracker, run_id, variant, value, log)
                    tracker.close(run_id, "FINISHED")
                open_children.pop(variant.name)
                histories[variant.name], predictions[variant.name] = value.history, value.predictions
                outcomes[variant.name] = _outcome(variant, run_id, "FINISHED", False, metrics)
                # A line per variant, with the time left at the epochs' pace (the bar, or a line every 30 s off a
                # terminal, counts the epochs of every variant).
                log(f"{variant.name}: finished ({done}/{len(jobs)}, {time.time() - started:.0f} s into the run"
                    f"{live.left(time.time() - training_started)})")
        finally:
            live.stop()

        ordered = [outcomes[v.name] for v in variants if v.name in outcomes]
        analysis = _analyse(tracker, parent_id, variants, histories, predictions, ordered, test)
        tracker.close(parent_id, "FAILED" if failures else "FINISHED")
    except KeyboardInterrupt:
        for run_id in open_children.values():
            tracker.close(run_id, "KILLED")
        tracker.close(parent_id, "KILLED")
        raise
    except BaseException:
        for run_id in open_children.values():
            tracker.close(run_id, "FAILED")
        tracker.close(parent_id, "FAILED")
        raise
    document = {"experiment": suite.experiment, "model": suite.model, "seeds": len(suite.seeds),
                "parent_run_id": parent_id, "seconds": time.time() - started,
                "executor": runner.name, "workers": settings.workers,
                "variants": [{k: v for k, v in o.items() if k != "metrics"} for o in ordered],
                "majority_baseline": majority_baseline(result), **analysis}
    if failures:
        raise BenchmarkError(f"{len(failures)} variant(s) failed: {', '.join(failures)} (marked FAILED in MLflow; "
                             "rerun the suite to retry them)")
    return document


def _registry_root(component) -> str:
    """The component folder the training processes resolve the model's name in (a model named ``hf:...`` on the
    command line has no file, and resolves in any)."""
    if component.name.startswith(INLINE_MODEL):
        return str(COMPONENTS_DIR)
    return str(component.file.resolve().parent.parent)


def parent_run_name(suite: Suite) -> str:
    """``<suite>:<model>:<6 hex of the suite's settings>``: the same for every run of the same resolved suite
    (which reopens one parent), another for the same suite and model run with other settings."""
    return f"{suite.name}:{suite.model}:{suite.settings_key()[:6]}"


def _dtypes(component, suite: Suite) -> list[str]:
    """Every precision a result of this run was computed in: pretraining (world models), the weights as loaded
    for SliCK and evaluation, and fine-tuning."""
    spec = component.spec
    return [d for d in (getattr(spec, "precision", None), getattr(spec, "dtype", None) or "float32",
                        suite.train.precision) if d]


def _parameters(component) -> str:
    """Parameter count for the ``model_params`` tag, when it is known without loading the model."""
    try:
        count = component.parameters()
    except (KeyError, OSError, BenchmarkError):
        return ""
    return "" if count is None else str(count)


def _log_parent_inputs(tracker: Tracker, parent_id: str, suite: Suite, result, source, table: pl.DataFrame,
                       variants: list[Variant], notes: list[str]) -> None:
    tracker.log_text(parent_id, yaml.safe_dump(suite.model_dump(mode="json"), sort_keys=False), "suite.resolved.yaml")
    tracker.log_parquet(parent_id, table, "slick/categories.parquet")
    facts = summary(result, source)
    tracker.log_metrics(parent_id, {f"slick/count/{k}": v for k, v in facts["counts"].items()}
                        | {"slick/seconds": facts["seconds"], "slick/generations": facts["generations"],
                           "slick/questions_per_s": result.questions_per_second}
                        # pooled only: the per-relation baselines are a table (slick/relations.json), not ~50 charts
                        | {k: v for k, v in majority_baseline(result).items() if k.endswith("/all")})
    per_relation = table.group_by("split", "relation", "category").len().sort("split", "relation", "category")
    tracker.log_table(parent_id, per_relation, "slick/counts_per_relation.json")
    # The most-common-answer baseline per relation and split, beside the category counts.
    tracker.log_table(parent_id, relation_table(result), "slick/relations.json")
    if source.exposures() is not None:
        tracker.log_table(parent_id, confusion_table(result, source), "slick/confusion_exposure.json")
    figure = report.category_bars(table)
    tracker.log_figure(parent_id, figure, "slick/categories.png")
    report.close(figure)
    compositions = pl.concat([v.mixture.relation_composition().with_columns(pl.lit(v.name).alias("variant"))
                              for v in variants]) if variants else pl.DataFrame()
    tracker.log_table(parent_id, compositions, "mixtures/relation_composition.json")
    tracker.log_text(parent_id, "\n".join(notes) + "\n" if notes else "(every relation filled as planned)\n",
                     "mixtures/notes.txt")
    tracker.set_tags(parent_id, {"mixtures.notes": str(len(notes))})


def _log_variant(tracker: Tracker, run_id: str, variant: Variant, value: VariantResult,
                 log: Callable[[str], None]) -> dict[str, float]:
    """Everything a finished variant reports, in a handful of calls (all epochs' metrics batched together)."""
    tracker.log_dataset(run_id, variant.mixture.composition(), name=variant.mixture.name,
                        digest=content_key(variant.mixture.rows.select("qid", "answer").sort("qid").rows()))
    metrics = {**value.summary, **analyse.accuracy_intervals(value.predictions)}
    tracker.log_metrics(run_id, metrics)
    write_parquet(value.predictions, value.run_dir / "predictions.parquet")
    tracker.log_table(run_id, value.predictions, "predictions.json")
    # Its composition is the input dataset above (the parent has every variant's, wide, in mixtures/): one upload
    # less per variant. Its notes, a line or two, are a tag.
    if variant.mixture.notes:
        tracker.set_tags(run_id, {"mixture.notes": "; ".join(variant.mixture.notes)[:5000]})
    tracker.log_file(run_id, value.run_dir / "history.parquet")
    figure = report.fitting_curves(value.history, variant.name)
    tracker.log_figure(run_id, figure, "fitting_curves.png")
    report.close(figure)
    fitted = metrics.get("convergence/train/acc/all")
    if fitted is not None and fitted < FIT_WARNING:
        tracker.set_tags(run_id, {"warning": f"train fit {fitted:.3f} < {FIT_WARNING} at the last epoch"})
        log(f"warning: {variant.name} fitted {fitted:.1%} of its train examples by its last epoch "
            f"({variant.train.epochs}); CONVERGENCE assumes at least {FIT_WARNING:.0%}")
    return metrics


class LiveEpochs:
    """Each running variant's per-epoch metrics to MLflow while it trains, one call per epoch: a thread of the
    driver (the only process that talks to MLflow) reads the ``progress.jsonl`` that rank 0 of every variant
    appends to in its run directory, wherever it trains (here, a worker, a Ray node: the cache is shared). The
    driver's own tracker calls for a variant happen under ``lock``, so the two never talk to the store at once.
    A failure of the store stops the thread; the driver's next call reports it."""

    def __init__(self, tracker: Tracker, poll: float = 2.0, progress: Progress | None = None):
        import threading

        self.tracker, self.poll, self.progress = tracker, poll, progress
        self.lock = threading.RLock()
        self._tails: dict = {}
        self.epochs_done, self.epochs_total = 0, 0  # over every variant watched: the progress bar's, and its ETA
        self._total: dict[str, int] = {}  # run id -> its epochs still to train when it was watched
        self._seen: dict[str, int] = {}  # run id -> of those, how many have been reported
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="live-epochs", daemon=True)

    def watch(self, run_id: str, run_dir: Path, after: int, epochs: int) -> None:
        from benchmark.progress import PROGRESS, Tail

        self._tails[run_id] = Tail(run_dir / PROGRESS, after=after)
        self._total[run_id] = epochs - after
        self.epochs_total += epochs - after

    def start(self) -> None:
        if self.progress and self.epochs_total:  # the bar (and the pace behind its time left) starts with training
            self.progress("epochs, all variants", 0, self.epochs_total)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()

    def _run(self) -> None:
        while not self._stop.wait(self.poll):
            try:
                self.send()
            except BenchmarkError:
                return

    def send(self) -> None:
        with self.lock:
            for run_id, tail in list(self._tails.items()):
                for metrics, epoch in tail.new():
                    self.tracker.log_epoch(run_id, metrics, epoch)
                    self._count(run_id, 1)

    def _count(self, run_id: str, epochs: int) -> None:
        epochs = min(epochs, self._total.get(run_id, 0) - self._seen.get(run_id, 0))
        if epochs <= 0:
            return
        self._seen[run_id] = self._seen.get(run_id, 0) + epochs
        self.epochs_done += epochs
        if self.progress:
            self.progress("epochs, all variants", self.epochs_done, self.epochs_total)

    def finish(self, run_id: str, history: pl.DataFrame | None = None) -> None:
        """The variant ended: stop watching it, and buffer (with its other results) the epochs of ``history`` that
        were not sent live. A variant that failed counts its epochs as done: none of them is still to come."""
        tail = self._tails.pop(run_id, None)
        if history is not None:
            after = tail.after if tail is not None else 0
            self.tracker.log_history(run_id, history.filter(pl.col("epoch") > after))
        self._count(run_id, self._total.get(run_id, 0))

    def left(self, elapsed: float) -> str:
        """The time the watched variants still need at the pace of the epochs so far ("" before the first)."""
        if not self.epochs_done or self.epochs_done >= self.epochs_total:
            return ""
        seconds = int(elapsed / self.epochs_done * (self.epochs_total - self.epochs_done))
        return f"; about {seconds // 60} min {seconds % 60:02d} s to go"


def _fitting(history: pl.DataFrame) -> dict[str, float]:
    return {name: float("nan") if epochs is None else float(epochs)
            for name, epochs in analyse.fitting_speed(history).items()}


def _outcome(variant: Variant, run_id: str, status: str, reused: bool, metrics: dict) -> dict:
    return {"name": variant.name, "mixture": variant.mixture.name, "kind": variant.mixture.kind,
            "seed": variant.seed, "run_id": run_id, "status": status, "reused": reused,
            "unknown_fraction": variant.mixture.params.get("unknown_fraction"),
            "realized_unknown_fraction": variant.mixture.params.get("realized_unknown_fraction"),
            "epochs": metrics.get("convergence/epoch"),
            "final_train_fit": metrics.get("convergence/train/acc/all"),
            "early_stop_test_acc": metrics.get("early_stop/test/acc/all"),
            "convergence_test_acc": metrics.get("convergence/test/acc/all"), "metrics": metrics}


def sweep_label(swept: dict) -> str:
    """The swept settings of a configuration as a name suffix ("" for a suite without ``sweep:``): the same
    words its variants' names end with (``lr0.0001``)."""
    return "_".join(f"{k.partition('.')[2]}{v}" for k, v in swept.items())


def _findings_runs(variants: list[Variant], outcomes: list[dict], predictions: dict[str, pl.DataFrame],
                   test: pl.DataFrame) -> list[dict]:
    """One row per finished variant in the shape ``benchmark.findings`` reads, with ``config``, the swept
    settings it was trained with (``sweep_label``)."""
    by_name = {v.name: v for v in variants}
    runs = []
    for outcome in outcomes:
        if outcome["status"] != "FINISHED":
            continue
        variant, metrics = by_name[outcome["name"]], outcome["metrics"]
        params = variant.mixture.params
        row = {"variant": variant.name, "config": sweep_label(variant.swept), "mixture": variant.mixture.name,
               "kind": variant.mixture.kind, "seed": variant.seed, "unknown_fraction": params.get("unknown_fraction"),
               "realised_unknown_fraction": params.get("realized_unknown_fraction"),
               "category": params.get("category"), "n_train_known": params.get("n_known"),
               "n_train_unknown": params.get("n_unknown"), "epochs_trained": metrics.get("convergence/epoch"),
               "early_stop_epoch": metrics.get("early_stop/epoch"),
               "final_train_fit": metrics.get("convergence/train/acc/all"),
               "steps_per_epoch": metrics.get("train/steps_per_epoch"),
               "optimizer_steps": metrics.get("train/optimizer_steps"),
               "fit_epochs_known": metrics.get("fit/epochs_to_50pct/Known"),
               "fit_epochs_unknown": metrics.get("fit/epochs_to_50pct/Unknown"),
               "early_stop_acc": metrics.get("early_stop/test/acc/all"),
               "convergence_acc": metrics.get("convergence/test/acc/all")}
        for stop in analyse.STOPS:
            row[f"{stop}_acc_answered"] = metrics.get(f"{stop}/test/acc_answered")
            row[f"{stop}_answered_fraction"] = metrics.get(f"{stop}/test/answered_fraction")
        for metric in SEED_METRICS:
            row[metric] = metrics.get(metric)
        table = predictions.get(variant.name)
        if table is not None:
            for stop in analyse.STOPS:
                part = table.filter((pl.col("checkpoint") == stop) & ~pl.col("ood"))
                row[f"{stop}_correct"] = part["correct"].to_list()
                if variant.train.idk_answer is not None:
                    from benchmark.answers import normalize

                    row[f"{stop}_answered"] = [normalize(p) != normalize(variant.train.idk_answer)
                                               for p in part["prediction"]]
        runs.append(row)
    return runs


def _analyse(tracker: Tracker, parent_id: str, variants: list[Variant], histories: dict[str, pl.DataFrame],
             predictions: dict[str, pl.DataFrame], outcomes: list[dict], test: pl.DataFrame) -> dict:
    """Paper-level results on the parent run: seeds aggregated with intervals, the paper's significance test, the
    linear model with intervals, the findings as verdicts, and the figures."""
    import dataclasses

    from benchmark.findings import evaluate_findings, linear_fits

    by_name = {v.name: v for v in variants}
    runs = _findings_runs(variants, outcomes, predictions, test)
    if not runs:
        return {}
    scalar = [{k: v for k, v in r.items() if not isinstance(v, list)} for r in runs]
    runs_table = pl.DataFrame(scalar, infer_schema_length=None)
    tracker.log_parquet(parent_id, runs_table, "summary/runs.parquet")
    per_mixture = analyse.seed_summary(runs_table, SEED_METRICS)
    realised = runs_table.group_by("mixture", maintain_order=True).agg(
        pl.col("kind").first(), pl.col("unknown_fraction").first(), pl.col("realised_unknown_fraction").mean(),
        pl.col("epochs_trained").max())
    per_mixture = realised.join(per_mixture, on="mixture", how="left")
    tracker.log_parquet(parent_id, per_mixture, "summary/mixtures.parquet")
    seed_metrics = {}
    for row in per_mixture.iter_rows(named=True):
        for metric in SEED_METRICS:
            for suffix in ("", "/ci_low", "/ci_high"):
                seed_metrics[f"seeds/{row['mixture']}/{metric}{suffix}"] = row[metric + suffix]
    tracker.log_metrics(parent_id, {k: v for k, v in seed_metrics.items() if v is not None and not math.isnan(v)})

    # The paper's Table 2 test, per swept configuration: every seed kept, the best chosen on its dev accuracy (the
    # questions it is tested on do not choose it), Holm over the mixtures, and per test category.
    significance = {}
    labels = test.filter(~pl.col("ood"))["category"].to_list()
    dev_acc = {(o["name"], stop): o["metrics"].get(f"{stop}/dev/acc/all") for o in outcomes for stop in analyse.STOPS}
    for stop in analyse.STOPS:
        tests = {}
        for label in dict.fromkeys(r.get("config", "") for r in runs):
            correct: dict[str, list[list[bool]]] = {}
            dev: dict[str, list[float]] = {}
            for run in runs:
                if run.get("config", "") == label and run.get(f"{stop}_correct") is not None \
                        and run["kind"] != "idk_relabel":
                    name = f"{run['mixture']}.{label}" if label else run["mixture"]
                    correct.setdefault(name, []).append(run[f"{stop}_correct"])
                    dev.setdefault(name, []).append(dev_acc.get((run["variant"], stop)))
            select = {n: sum(v) / len(v) for n, v in dev.items() if None not in v}
            found = analyse.significance_vs_best(
                correct, select=select if len(select) == len(correct) else None,
                categories=labels if all(len(r[0]) == len(labels) for r in correct.values()) else None)
            if found:
                best = next(iter(found.values()))
                tracker.set_tags(parent_id, {f"best/{stop}" + (f".{label}" if label else ""): best["best"],
                                             f"best/{stop}/chosen_on": best["best_chosen_on"]})
            tests |= found
        significance[stop] = tests
        values = {}
        for name, t in tests.items():
            values |= {f"significance/{stop}/{name}/{k}": t[k] for k in ("p", "p_holm", "mean_diff")}
            for group, g in t["groups"].items():
                values |= {f"significance/{stop}/{name}/{k}_{group}": g[k] for k in ("p", "p_holm", "mean_diff")}
        tracker.log_metrics(parent_id, {k: v for k, v in values.items() if not math.isnan(v)})

    # One set of findings per swept configuration (a suite without ``sweep:`` has one, labelled ""): the findings
    # compare variants trained alike, never a learning rate with another.
    sizes = [v.mixture.rows.height for v in variants if v.mixture.kind in ("unknown_fraction", "single_category", "natural")]
    configs = list(dict.fromkeys(sweep_label(v.swept) for v in variants))
    all_fits, findings, all_points = {}, [], []
    for label in configs:
        members = {v.name: v for v in variants if sweep_label(v.swept) == label}
        fits = {}
        if sizes and any(name in histories for name in members):
            points = linear_points({n: h for n, h in histories.items() if n in members}, by_name, max(sizes))
            fits = linear_fits(points) if points.height else {}
            if fits:
                all_points.append(points.with_columns(pl.lit(label).alias("config")) if label else points)
                base = f"linear/{label}" if label else "linear"
                prefix = {"in_distribution": base, "ood": f"{base}/ood", "in_distribution_steps": f"{base}/steps",
                          "ood_steps": f"{base}/ood/steps"}
                linear_metrics = {}
                for split, fit in fits.items():
                    names = ("beta0", "beta_kn", "beta_unk") + (("beta_steps",) if split.endswith("_steps") else ())
                    for name in (*names, "r2", "n"):
                        linear_metrics[f"{prefix[split]}/{name}"] = fit[name]
                    for name in names:
                        for side in ("low", "high"):
                            linear_metrics[f"{prefix[split]}/{name}/ci_{side}"] = fit[f"{name}_ci_{side}"]
                tracker.log_metrics(parent_id, {k: v for k, v in linear_metrics.items() if not math.isnan(v)})
                plain = {split: fit for split, fit in fits.items() if not split.endswith("_steps")}
                figure = report.linear_fit(points, plain)
                tracker.log_figure(parent_id, figure, f"linear_model{'_' + label if label else ''}.png")
                report.close(figure)
            all_fits.update({f"{label}/{split}" if label else split: fit for split, fit in fits.items()})
        config_runs = [r for r in runs if r["config"] == label]
        for finding in evaluate_findings({"runs": config_runs, "linear": fits or None}):
            findings.append(dataclasses.replace(finding, name=f"{finding.name}.{label}") if label else finding)
    if all_points:
        tracker.log_parquet(parent_id, pl.concat(all_points, how="diagonal_relaxed"), "linear/points.parquet")
    # Verdicts are tags (the runs table can show them); the numbers behind them are one JSON file, not ~40 metrics
    # that would crowd the MLflow charts with single-value bars.
    for finding in findings:
        tracker.set_tags(parent_id, finding.tags())
    if findings:
        tracker.log_text(parent_id, json.dumps([f.document() for f in findings], indent=2, default=str),
                         "findings.json")
    sweep = per_mixture.filter(pl.col("kind").is_in(["unknown_fraction", "known_only"]))
    if not sweep.is_empty():
        figure = report.unknown_sweep(sweep)
        tracker.log_figure(parent_id, figure, "unknown_sweep.png")
        report.close(figure)
    return {
        "mixtures": per_mixture.to_dicts(),
        "linear": {s: {k: v for k, v in f.items() if k not in ("target", "covariate")} for s, f in all_fits.items()},
        "significance": {stop: {name: {k: t[k] for k in ("p", "p_holm", "mean_diff", "best", "best_chosen_on")}
                                for name, t in tests.items()} for stop, tests in significance.items()},
        "findings": [f.document() for f in findings],
    }
