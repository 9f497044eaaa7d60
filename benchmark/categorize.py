"""SliCK on its own: a suite's categorisation (``categorize SUITE``), or any knowledge source or question file with
any model, outside a suite (``categorize --source FILE_OR_COMPONENT --model NAME``), with a filtered fine-tuning
file of the categories kept."""

from __future__ import annotations

import io
from pathlib import Path

import polars as pl
from pydantic import ValidationError

from benchmark.cache import atomic_write_bytes, cache_root, ensure_writable
from benchmark.errors import BenchmarkError
from benchmark.hashing import content_key
from benchmark.numerics import set_threads
from benchmark.pipeline import (
    Progress,
    make_runner,
    model_params,
    resolve_components,
    resolve_device,
    slick_executor,
)
from benchmark.record import Artifact, ParentRecord, slick_count
from benchmark.registry import Registry
from benchmark.runtime import compute_threads
from benchmark.slick import SliCKConfig, categorize
from benchmark.slick_tables import category_counts, confusion_table, counts_by_split, summary
from benchmark.suite import Suite
from benchmark.tracking import Tracker, tracking_uri


def categorize_suite(suite: Suite, progress: Progress | None = None, force: bool = False):
    """SliCK only: (the summary document, the category × exposure confusion table or None)."""
    ensure_writable(cache_root())
    source, model = resolve_components(suite)
    set_threads(compute_threads())  # MKL pinned to one thread for whatever runs in this process (numerics)
    result = categorize(source, model, suite.slick, device=resolve_device(suite.device), progress=progress, force=force,
                        executor=slick_executor(make_runner(suite, stage="slick")[1]))
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
    run_id = _record(experiment, source, model, config, result, table, document, out, keep)
    return document | {"experiment": experiment, "run_id": run_id}


def _record(experiment: str, source, model, config: SliCKConfig, result, table: pl.DataFrame, document: dict,
            out: Path, keep: tuple[str, ...] | None) -> str:
    """One MLflow run of ``experiment`` for a categorisation: counts per category and relation, the share dropped,
    the tables and the filtered file. Returns its id."""
    tracker = Tracker(experiment)
    per_relation = document["counts_by_relation"]
    identity = ParentRecord(base_model=model.name, model_params=model_params(model), knowledge_source=source.name)
    tags = {**identity.tags(), "slick.key": result.key,
            **{f"slick.{k}": str(v) for k, v in result.backend_info.items()}, **config.limit_tags()}
    run_id, _ = tracker.open_parent(content_key("categorize", result.key, keep), f"categorize:{source.name}:{model.name}",
                                    tags, fresh=True)
    try:
        tracker.set_tags(run_id, {"slick.role": "categorize"})  # not a suite's parent: report and compare skip it
        tracker.log_params(run_id, {"source": source.identity(), "model": model.identity(), "out": str(out),
                                    "keep": ",".join(keep or ()),
                                    **{f"slick.{k}": v for k, v in config.cache_fields().items()}})
        metrics = {slick_count(c): n for c, n in document["counts"].items()}
        metrics |= {slick_count(c, r): n for r, counts in per_relation.items() for c, n in counts.items()}
        metrics |= {"slick/questions": table.height, "slick/seconds": result.seconds,
                    "slick/generations": result.generations}
        if keep is not None:
            metrics |= {f"filter/{k}": document[k] for k in ("kept", "dropped", "dropped_share")}
        tracker.log_metrics(run_id, metrics)
        tracker.log_parquet(run_id, table, Artifact.CATEGORIES)
        tracker.log_table(run_id, table.group_by("relation", "split", "category").len().sort("relation", "split",
                                                                                          "category"),
                          Artifact.COUNTS_PER_RELATION)
        if keep is not None and Path(document["filtered"]).is_file():
            tracker.log_file(run_id, Path(document["filtered"]), "filtered")
    except BaseException:
        tracker.close(run_id, "FAILED")
        raise
    tracker.close(run_id, "FINISHED")
    return run_id
