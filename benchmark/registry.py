"""One registry for every component: base models and knowledge sources, found by name, loaded lazily.

A component file ``components/<kind>/<name>.yaml`` names a ``family``; families map to ``"module:Class"``
strings so an optional back-end costs nothing until a suite asks for it. Unknown names fail with
"did you mean ...".
"""

from __future__ import annotations

import difflib
import importlib
from dataclasses import dataclass
from pathlib import Path

import yaml
from pydantic import ValidationError

from benchmark.errors import BenchmarkError

COMPONENTS_DIR = Path(__file__).resolve().parent.parent / "components"
SUITES_DIR = Path(__file__).resolve().parent.parent / "suites"

FAMILIES: dict[str, dict[str, str]] = {
    "models": {
        "hf": "components.hf_causal_lm:HFCausalLM",
        "world": "components.world.model:WorldModel",
    },
    "datasets": {
        "entityquestions": "components.entityquestions:EntityQuestions",
        "world": "components.world.source:WorldSource",
    },
}
KIND_OF = {"model": "models", "dataset": "datasets"}


def did_you_mean(name: str, choices: list[str]) -> str:
    close = difflib.get_close_matches(name, choices, n=1, cutoff=0.5)
    return f"; did you mean '{close[0]}'?" if close else f"; known: {', '.join(sorted(choices)) or 'none'}"


def format_validation_error(file: Path | str, error: ValidationError, prefix: str = "",
                            hints: dict[str, str] | None = None) -> str:
    """One line per problem: file, dotted key path, what was expected (and a suggestion where one is known)."""
    lines = []
    for item in error.errors():
        key = ".".join(str(p) for p in (prefix, *item["loc"]) if p != "")
        message = item["msg"]
        if item["type"] == "extra_forbidden":
            message = "unknown key"
        elif item["type"] == "missing":
            message = "required key is missing"
        if hints and key in hints:
            message += f"; {hints[key]}"
        lines.append(f"{file}: {key or '<top>'}: {message}")
    return "\n".join(lines)


def import_object(target: str):
    module_name, _, attr = target.partition(":")
    try:
        return getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as exc:
        raise BenchmarkError(f"cannot import '{target}': {exc}") from exc


def read_yaml(path: Path) -> dict:
    try:
        data = yaml.safe_load(path.read_text())
    except OSError as exc:
        raise BenchmarkError(f"{path}: cannot read: {exc.strerror}") from exc
    except yaml.YAMLError as exc:
        raise BenchmarkError(f"{path}: not valid YAML: {exc}".replace("\n", " ")) from exc
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise BenchmarkError(f"{path}: expected a mapping of keys at the top, found {type(data).__name__}")
    return data


@dataclass(frozen=True)
class Entry:
    kind: str  # "models" or "datasets"
    name: str
    file: Path

    @property
    def description(self) -> str:
        try:
            return str(read_yaml(self.file).get("description", ""))
        except BenchmarkError as exc:
            return f"(unreadable: {exc})"


class Registry:
    def __init__(self, root: Path = COMPONENTS_DIR):
        self.root = root

    def entries(self, kind: str) -> list[Entry]:
        folder = self.root / kind
        return [Entry(kind, p.stem, p) for p in sorted(folder.glob("*.yaml"))]

    def names(self, kind: str) -> list[str]:
        return [e.name for e in self.entries(kind)]

    def _resolve(self, kind: str, name: str, overrides: dict | None = None):
        kind = KIND_OF.get(kind, kind)
        label = "model" if kind == "models" else "knowledge source"
        names = self.names(kind)
        if name not in names:
            raise BenchmarkError(f"unknown {label} '{name}'{did_you_mean(name, names)}")
        file = self.root / kind / f"{name}.yaml"
        data = {**read_yaml(file), **(overrides or {})}
        family = data.get("family")
        families = FAMILIES[kind]
        if family is None:
            raise BenchmarkError(f"{file}: family: required key is missing (one of {', '.join(families)})")
        if family not in families:
            raise BenchmarkError(f"{file}: family: unknown family '{family}'{did_you_mean(str(family), list(families))}")
        cls = import_object(families[family])
        try:
            spec = cls.Spec.model_validate(data)
        except ValidationError as exc:
            raise BenchmarkError(format_validation_error(file, exc)) from exc
        return cls(name, spec, file)

    def model(self, name: str, overrides: dict | None = None):
        return self._resolve("models", name, overrides)

    def dataset(self, name: str, overrides: dict | None = None):
        return self._resolve("datasets", name, overrides)


def suite_files(root: Path = SUITES_DIR) -> list[Path]:
    return sorted(root.rglob("*.yaml"))
