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

import subprocess
import time
from collections.abc import Callable
from pathlib import Path

from benchmark import __version__
from benchmark.analyse.suite import analyse
from benchmark.backends import gpus_per_copy
from benchmark.cache import (
    cache_root,
    ensure_writable,
)
from benchmark.errors import BenchmarkError
from benchmark.execute import Finished, open_jobs, reuse_finished, train_pending
from benchmark.executors import make_executor, shards_slick
from benchmark.numerics import environment_tags, set_threads
from benchmark.plan import (
    check_only,
    notes_line,
    plan_variants,
    planned_variant_names,
    question_sets,
)
from benchmark.record import ParentRecord
from benchmark.recorder import record_analysis, record_inputs
from benchmark.registry import COMPONENTS_DIR, INLINE_MODEL, Registry
from benchmark.runtime import compute_threads
from benchmark.slick import categorize
from benchmark.slick_tables import majority_baseline
from benchmark.suite import Suite, check_components
from benchmark.tracking import Tracker, tracking_uri

Progress = Callable[[str, int, int], None]  # (label, done, total): a progress bar's update


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
    holds one inference copy of its back-end (``backends.gpus_per_copy``), unless the suite says otherwise."""
    if stage == "slick":
        gpus = settings.gpus_per_slick_shard
        gpus = gpus_per_copy(suite.slick, suite.device) if gpus is None else gpus
        return settings.cpus_per_slick_shard, gpus
    train = suite.train
    on_gpu = train.accelerator == "gpu" or (train.accelerator == "auto" and suite.device == "cuda")
    gpus = settings.gpus_per_variant if settings.gpus_per_variant is not None else (train.devices if on_gpu else 0)
    return settings.cpus_per_variant, gpus


def slick_executor(runner):
    """Where SliCK's shards run: on several local workers, or on Ray (whose workers may hold the accelerators the
    driver lacks); else in this process."""
    return runner if shards_slick(runner) else None


# ---------------------------------------------------------------------------------------------------------------
# The driver
# ---------------------------------------------------------------------------------------------------------------
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
    """``run_suite`` once its components are resolved and its executors made: categorise → plan → execute →
    analyse → record."""
    result = categorize(source, model_component, suite.slick, device=device, progress=progress, force=fresh,
                        executor=slick_executor(shard_runner))
    train, dev, test = question_sets(result.table, suite)
    identity = {"model": model_component.identity(), "data": source.identity(), "slick": result.key}
    variants = plan_variants(suite, train, identity)
    if only:  # checked against the planned names above; plan_variants names them with the same function
        variants = [v for v in variants if v.name in only]
    notes = sorted({note for v in variants for note in v.mixture.notes})
    if notes:  # one line, each reason once with the relations it concerns; every note is on the parent run
        log(notes_line(notes))

    tracker = Tracker(suite.experiment, suite.description or "")
    # The suite's settings in the name: a suite run with other settings (--set, a sweep edited) is another parent,
    # and reads as another in the UI's run list.
    parent_id, reopened = tracker.open_parent(suite.key(), parent_run_name(suite),
                                              parent_tags(suite, suite_file, result, model_component, device),
                                              fresh=fresh)
    log(f"{'resuming' if reopened else 'started'} parent run {parent_id} in experiment '{suite.experiment}'")
    open_runs: dict[str, str] = {}
    try:
        if not reopened:
            record_inputs(tracker, parent_id, suite, result, source, variants, notes)
        finished = Finished()
        pending = reuse_finished(tracker, parent_id, variants, fresh, finished, log)
        jobs, open_runs = open_jobs(tracker, parent_id, suite, pending, fresh, registry_root=_registry_root(model_component),
                                    dev=dev, test=test, device=device)
        if pending:  # a parent that had finished runs again; one with nothing to train keeps its status and times
            tracker.resume(parent_id)
        tracker.flush(parent_id)  # the parent's inputs are in the store before any training (a kill loses none)
        if pending:
            log(f"fine-tuning {len(pending)} variant(s), {suite.train.epochs} epochs each, on the {runner.name} "
                f"executor" + (f" ({settings.workers} workers)" if runner.slots > 1 else ""))
        failures = train_pending(tracker, runner, pending, jobs, open_runs, finished, progress=progress, log=log,
                                 started=started)
        ordered = [finished.outcomes[v.name] for v in variants if v.name in finished.outcomes]
        analysis = analyse(variants, finished.histories, finished.predictions, ordered, test)
        if analysis is not None:
            record_analysis(tracker, parent_id, analysis)
        tracker.close(parent_id, "FAILED" if failures else "FINISHED")
    except BaseException as exc:  # a Ctrl-C is KILLED, anything else FAILED: the runs it leaves open, and the parent
        status = "KILLED" if isinstance(exc, KeyboardInterrupt) else "FAILED"
        for run_id in open_runs.values():
            tracker.close(run_id, status)
        tracker.close(parent_id, status)
        raise
    document = {"experiment": suite.experiment, "model": suite.model, "seeds": len(suite.seeds),
                "parent_run_id": parent_id, "seconds": time.time() - started,
                "executor": runner.name, "workers": settings.workers,
                "variants": [{k: v for k, v in o.items() if k != "metrics"} for o in ordered],
                "majority_baseline": majority_baseline(result), **(analysis.document() if analysis else {})}
    if failures:
        raise BenchmarkError(f"{len(failures)} variant(s) failed: {', '.join(failures)} (marked FAILED in MLflow; "
                             "rerun the suite to retry them)")
    return document


def parent_tags(suite: Suite, suite_file: Path | None, result, model_component, device: str) -> dict[str, str]:
    """What the parent run says of itself: the model, data, keys, code and machine, and SliCK's back-end."""
    record = ParentRecord(base_model=suite.model, model_params=model_params(model_component),
                          knowledge_source=suite.knowledge_source, suite_key=suite.key(),
                          settings_key=suite.settings_key(), code_version=code_version(),
                          suite_file=str(suite_file or ""), seeds=tuple(suite.seeds), epochs=suite.train.epochs)
    return {**record.tags(), **{f"slick.{k}": str(v) for k, v in result.backend_info.items()},
            **suite.slick.limit_tags(),
            **environment_tags(_dtypes(model_component, suite), device)}


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


def model_params(component) -> int | None:
    """The model's parameter count, when it is known without loading the model."""
    try:
        return component.parameters()
    except (KeyError, OSError, BenchmarkError):
        return None
