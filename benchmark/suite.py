"""Suites: YAML files whose whole meaning is this schema. ``python -m benchmark validate SUITE`` prints one resolved.

Composition: ``extends: other.yaml`` (a path relative to the suite's own file) loads the other suite first and
merges this one over it: local keys win, mappings merge key by key, lists and scalars are replaced. Cycles are
reported. Command-line overrides (``--set train.lr=3e-5``) apply last; values are parsed as YAML.

Every section is a typed model; its fields and their descriptions are the reference for what a suite may say,
and unknown keys are errors with a suggestion. Loading a suite also resolves the base model and knowledge
source it names through the registry (component files only: no weights, no data), so a misspelt name fails
here, naming the suite file and the key.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationError,
    ValidationInfo,
    field_validator,
)

from benchmark import yaml_safe
from benchmark.errors import BenchmarkError
from benchmark.executors import EXECUTORS, ExecutorKind
from benchmark.hashing import content_key
from benchmark.mixtures import MixtureConfig
from benchmark.registry import (
    Origin,
    Registry,
    closest,
    format_validation_error,
    read_yaml,
    validation_problems,
)
from benchmark.slick_config import SliCKConfig
from benchmark.train.config import TrainConfig


class EvaluationConfig(BaseModel):
    """Which held-out questions are scored every epoch (docs/method.md §4)."""

    model_config = ConfigDict(extra="forbid")

    dev_limit: int | None = Field(None, ge=1, description="score at most this many dev questions per epoch (EARLY_STOP selection); None = all")
    test_limit: int | None = Field(None, ge=1, description="score at most this many in-distribution test questions; None = all")
    ood: bool = Field(True, description="also score the out-of-distribution test relations")


class ExecutorConfig(BaseModel):
    """Where variants run (``benchmark/executors``). A speed choice: it is not part of the suite's key, and the
    results are the same on every executor and worker count."""

    model_config = ConfigDict(extra="forbid")

    # The choices and their descriptions are the registry's (``benchmark.executors.EXECUTORS``).
    kind: ExecutorKind = Field("local", description=EXECUTORS.described())
    workers: int = Field(1, ge=1, description="local: variants trained at once, each in its own one-thread process")
    cpus_per_variant: float = Field(1, gt=0, description="ray: CPUs each variant's task asks for")
    gpus_per_variant: float | None = Field(
        None, ge=0, description="GPUs each variant gets (a Ray task's, a local worker's own): null = train.devices "
                                "when it trains on GPUs (train.accelerator gpu, or auto with device cuda), else 0")
    cpus_per_slick_shard: float = Field(1, gt=0, description="ray: CPUs each SliCK shard's task asks for")
    gpus_per_slick_shard: float | None = Field(
        None, ge=0, description="GPUs each SliCK shard gets (Ray task, local worker): null = 1 when SliCK runs on "
                                "cuda (slick.vllm.tensor_parallel_size with vLLM), else 0")
    address: str | None = Field(None, description="ray: cluster address; default $RAY_ADDRESS, else a local instance")


class TrackingConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    experiment: str | None = Field(None, description="MLflow experiment; default: the suite's name, so models land side by side")


class Suite(BaseModel):
    """A whole experiment: base model, knowledge source, SliCK, mixtures, training, evaluation, tracking."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, description="the suite's name; the MLflow experiment unless tracking.experiment says otherwise")
    description: str = Field("", description="what question the suite answers")
    model: str = Field(description="base-model component name (components/models/<name>.yaml)")
    models: list[str] = Field(default_factory=list, description="a model ladder: `run` runs the suite once per "
                              "base model named here (each in place of `model`), all into the same experiment")
    model_overrides: dict[str, Any] = Field(default_factory=dict, description="keys that replace the component file's")
    knowledge_source: str = Field(description="knowledge-source component name (components/datasets/<name>.yaml)")
    knowledge_source_overrides: dict[str, Any] = Field(default_factory=dict, description="keys that replace the component file's")
    device: Literal["auto", "cpu", "cuda", "mps"] = Field("auto", description="where SliCK and evaluation run; 'auto' = cuda if available")
    seeds: list[Annotated[int, Field(ge=0, le=2**32 - 1)]] = Field(
        default_factory=lambda: [0], min_length=1, description="one variant per seed (mixture sampling and training)")
    slick: SliCKConfig = Field(default_factory=SliCKConfig)
    mixtures: MixtureConfig = Field(default_factory=MixtureConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    evaluation: EvaluationConfig = Field(default_factory=EvaluationConfig)
    sweep: dict[str, list[Any]] = Field(default_factory=dict,
                                        description="training fields to sweep, e.g. {'train.lr': [1e-5, 3e-5]}: one variant per value")
    tracking: TrackingConfig = Field(default_factory=TrackingConfig)
    executor: ExecutorConfig = Field(default_factory=ExecutorConfig)
    _file: str | None = PrivateAttr(None)

    @field_validator("seeds")
    @classmethod
    def _distinct_seeds(cls, seeds: list[int]) -> list[int]:
        if len(set(seeds)) != len(seeds):
            raise ValueError("seeds must be distinct (each names one variant)")
        return seeds

    @field_validator("mixtures")
    @classmethod
    def _distinct_mixture_names(cls, mixtures: MixtureConfig) -> MixtureConfig:
        """Every mixture names its variants, so two that share a name would write into one run (``fraction_name``
        rounds to whole percent: 0.5 and 0.501 are both unknown_50)."""
        from benchmark.mixtures import fraction_name

        named: dict[str, float] = {}
        for x in mixtures.unknown_fraction:
            other = named.setdefault(fraction_name(x), x)
            if other != x:
                raise ValueError(f"unknown_fraction: {other} and {x} both name the mixture unknown_"
                                 f"{fraction_name(x)} (mixtures are named in whole percent); use fractions that "
                                 "differ by at least 0.01")
        if len(set(mixtures.single_category)) != len(mixtures.single_category):
            raise ValueError("single_category: each category may be listed once (it names its mixture)")
        return mixtures

    @field_validator("sweep")
    @classmethod
    def _sweep_fields(cls, sweep: dict[str, list[Any]], info: ValidationInfo) -> dict[str, list[Any]]:
        fields = list(TrainConfig.model_fields)
        for key, values in sweep.items():
            section, _, name = key.partition(".")
            if section != "train" or name not in fields:
                hint = closest(name, fields, cutoff=0.6)
                raise ValueError(f"'{key}' is not a train field" + (f"; did you mean 'train.{hint}'?" if hint else ""))
            if not values:
                raise ValueError(f"'{key}' has no values")
            labels: dict[str, int] = {}
            for at, value in enumerate(values):  # each value names its variants (``_lr0.0001``): two alike would
                first = labels.setdefault(str(value), at)  # share one run
                if first != at:
                    raise ValueError(f"'{key}': the values {values[first]!r} and {value!r} name the same variant "
                                     f"('{name}{value}'); list each value once")
            train = info.data.get("train")
            if train is None:  # the train section itself is invalid, and reported as such
                continue
            for value in values:  # checked here, not when variants are planned, so it fails before any compute
                try:
                    TrainConfig.model_validate({**train.model_dump(), name: value})
                except ValidationError as exc:
                    raise ValueError(f"'{key}': {validation_problems(exc)[0][1]}") from None
        return sweep

    @property
    def file(self) -> str | None:
        """The suite file it was loaded from (None if built in code); errors about components name it."""
        return self._file

    @property
    def experiment(self) -> str:
        return self.tracking.experiment or self.name

    def key(self) -> str:
        """Content hash of the resolved suite (what runs, not where it came from)."""
        return content_key(self.model_dump(mode="json", exclude={"executor", "models"}))

    def settings_key(self) -> str:
        """The suite's key without its base model (and without where it is logged): the models of a ladder share
        it, and ``compare`` warns when the models it sets side by side do not."""
        return content_key(self.model_dump(mode="json", exclude={"executor", "models", "model", "model_overrides",
                                                                "tracking"}))

    def per_model(self) -> list[Suite]:
        """One suite per base model of a ladder (``models``), else just this one. Each keeps the experiment."""
        if not self.models:
            return [self]
        return [self.model_copy(update={"model": name, "models": []}) for name in dict.fromkeys(self.models)]


MAX_EXTENDS = 32  # suite files in one extends chain


def merge(base: dict, local: dict) -> dict:
    """Local keys win; mappings merge recursively; anything else is replaced."""
    merged = dict(base)
    for key, value in local.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def _closest_suite(path: Path) -> str:
    """"; did you mean 'suites/unknown_sweep.yaml'?" for a mistyped file name beside real suites, else nothing."""
    try:
        siblings = [p.name for p in path.parent.glob("*.yaml")] if path.parent.is_dir() else []
    except OSError:
        return ""
    close = closest(path.name, siblings, cutoff=0.6)
    return f"; did you mean '{path.parent / close}'?" if close else ""


def load_raw(path: Path, _chain: tuple[tuple[Path, Path], ...] = ()) -> dict:
    """The suite file merged over everything it extends (recursively), without validation."""
    shown = Path(os.path.normpath(path))  # messages show the path as written, minus ./ and ../ detours
    where = f"{_chain[-1][1]}: extends: " if _chain else ""
    try:
        resolved = path.resolve()
        found = resolved.is_file()
    except (OSError, ValueError) as exc:  # e.g. a NUL byte or an over-long name
        raise BenchmarkError(f"{where}{shown}: not a usable path ({exc})") from exc
    seen = [r for r, _ in _chain]
    if resolved in seen:
        raise BenchmarkError(f"{where}cycle ({' -> '.join(p.name for p in (*seen, resolved))})")
    if len(_chain) >= MAX_EXTENDS:  # a chain this long is a generated mistake; deeper, Python's stack would give out
        raise BenchmarkError(f"{_chain[0][1]}: extends: a chain of more than {MAX_EXTENDS} suite files "
                             f"({_chain[0][1].name} -> {_chain[1][1].name if len(_chain) > 1 else shown.name} -> ... -> "
                             f"{shown.name}); at most {MAX_EXTENDS} levels of extends are allowed")
    if not found:
        raise BenchmarkError(f"{where}{shown}: suite file not found{_closest_suite(shown)}")
    try:
        data = read_yaml(resolved, shown)
    except BenchmarkError as exc:
        raise BenchmarkError(f"{where}{exc}") from exc
    if not data:
        raise BenchmarkError(f"{where}{shown}: <top>: the file is empty; a suite needs at least name, model and "
                             "knowledge_source (or extends: another suite)")
    parent = data.pop("extends", None)
    if parent is None:
        return data
    if not isinstance(parent, str):
        raise BenchmarkError(f"{shown}: extends: expected a path to another suite file, found {type(parent).__name__}")
    return merge(load_raw(path.parent / parent, (*_chain, (resolved, shown))), data)


def apply_overrides(data: dict, overrides: list[str]) -> dict:
    """``key.path=value`` pairs (value parsed as YAML) applied over the merged suite."""
    for item in overrides:
        dotted, sep, raw = item.partition("=")
        if not sep or not dotted:
            raise BenchmarkError(f"--set {item}: expected KEY.PATH=VALUE, e.g. train.lr=3e-5")
        try:
            value = yaml_safe.load(raw)
        except (yaml.YAMLError, ValueError) as exc:  # ValueError: a scalar YAML cannot construct (2024-13-45)
            raise BenchmarkError(f"--set {item}: value is not valid YAML") from exc
        parts = dotted.split(".")
        node = data
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise BenchmarkError(f"--set {item}: '{part}' is not a section")
        node[parts[-1]] = value
    return data


def _suggest(error: ValidationError) -> dict[str, str]:
    """"did you mean" for unknown keys, from the field names of the section they sit in."""
    hints = {}
    for item in error.errors():
        if item["type"] != "extra_forbidden":
            continue
        *section, bad = item["loc"]
        model: type[BaseModel] = Suite
        for part in section:
            annotation = model.model_fields.get(str(part))
            inner = getattr(annotation, "annotation", None) if annotation else None
            candidates = [inner, *getattr(inner, "__args__", ())]
            model = next((c for c in candidates if isinstance(c, type) and issubclass(c, BaseModel)), None)
            if model is None:
                break
        if model is not None:
            close = closest(str(bad), list(model.model_fields), cutoff=0.6)
            if close:
                hints[".".join(map(str, item["loc"]))] = f"did you mean '{close}'?"
    return hints


def load_suite(path: str | Path, overrides: list[str] | None = None) -> Suite:
    """Read, compose, override and validate a suite, and resolve the components it names (no weights, no data);
    every problem names the file and the key."""
    path = Path(path)
    data = apply_overrides(load_raw(path), overrides or [])
    try:
        suite = Suite.model_validate(data)
    except ValidationError as exc:
        raise BenchmarkError(format_validation_error(path, exc, hints=_suggest(exc))) from exc
    suite._file = str(path)
    for each in suite.per_model():
        check_components(each, origin_key="models" if suite.models else "model")
    return suite


def check_components(suite: Suite, path: str | Path | None = None, *, registry: Registry | None = None,
                     check_paths: bool = False, origin_key: str = "model"):
    """The suite's (knowledge source, base model) components, resolved by name from their files, not loaded.

    Unknown names, bad component files and bad ``*_overrides`` fail with the suite file and the key.
    ``check_paths`` also checks that the local folders they name exist (model weights, data): validate, run and
    categorize do; loading alone does not, so a suite written for another machine still loads.
    """
    registry = registry or Registry()
    file = str(path or suite.file or "<suite>")
    model = registry.model(suite.model, suite.model_overrides, origin=Origin(file, origin_key), check_paths=check_paths)
    source = registry.dataset(suite.knowledge_source, suite.knowledge_source_overrides,
                              origin=Origin(file, "knowledge_source"), check_paths=check_paths)
    return source, model


def expand_sweep(suite: Suite) -> list[tuple[dict[str, Any], TrainConfig]]:
    """Every combination of swept train fields: (the values that vary, the resulting TrainConfig)."""
    combos: list[dict[str, Any]] = [{}]
    for key, values in suite.sweep.items():
        combos = [{**c, key: v} for c in combos for v in values]
    out = []
    for combo in combos:
        fields = {k.partition(".")[2]: v for k, v in combo.items()}
        try:
            out.append((combo, TrainConfig.model_validate({**suite.train.model_dump(), **fields})))
        except ValidationError as exc:
            raise BenchmarkError(format_validation_error("sweep", exc)) from exc
    return out
