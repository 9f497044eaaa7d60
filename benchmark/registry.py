"""One registry for every component: base models and knowledge sources, found by name, loaded lazily.

A component file ``components/<kind>/<name>.yaml`` names a ``family``; families map to ``"module:Class"``
strings so an optional back-end costs nothing until a suite asks for it. Unknown names fail with
"did you mean ...". Resolving a name reads and validates component files only (no weights, no data);
``check_paths`` also checks, still without loading anything, that the local folders a component names exist.
"""

from __future__ import annotations

import difflib
import importlib
import importlib.util
import re
from dataclasses import dataclass
from pathlib import Path

import yaml
from pydantic import ValidationError

from benchmark import yaml_safe
from benchmark.errors import BenchmarkError

REPO_ROOT = Path(__file__).resolve().parent.parent
COMPONENTS_DIR = REPO_ROOT / "components"
SUITES_DIR = REPO_ROOT / "suites"

FAMILIES: dict[str, dict[str, str]] = {
    "models": {
        "hf": "components.hf_causal_lm:HFCausalLM",
        "world": "components.world.model:WorldModel",
    },
    "datasets": {
        "entityquestions": "components.entityquestions:EntityQuestions",
        "qa": "components.qa:QASource",
        "world": "components.world.source:WorldSource",
    },
}
KIND_OF = {"model": "models", "dataset": "datasets"}
# A base model named on the command line without a component file: ``hf:<hub id or local folder>``, family hf with
# its defaults (float32 weights, the hub's main revision, no remote code).
INLINE_MODEL = "hf:"
LABELS = {"models": "base model", "datasets": "knowledge source"}
# "name" or "org/name", as the Hugging Face hub spells a repository id; anything else must be a local folder.
HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[A-Za-z0-9][\w.-]*)?$")
WEIGHT_FILES = ("*.safetensors", "*.bin", "*.gguf")
# pydantic names the member of a union that failed (int, literal['auto'], IdkConfig, ...) as the last part of the
# location; one problem with a union field becomes one line.
_UNION_MEMBER = re.compile(r"^(int|float|str|bool|none|[a-z-]+\[.*\]|[A-Z]\w*)$")


def closest(name: str, choices: list[str], cutoff: float = 0.5) -> str | None:
    """The choice closest to a mistyped ``name``, if one is close enough: every did-you-mean asks this."""
    close = difflib.get_close_matches(name, choices, n=1, cutoff=cutoff)
    return close[0] if close else None


def did_you_mean(name: str, choices: list[str], *, listed: bool = False) -> str:
    """"; did you mean 'x'?" for the closest choice, else every choice; ``listed``: every choice in either case
    (where they are the user's own names, such as a suite's variants, and few)."""
    close = closest(name, choices)
    known = f"known: {', '.join(sorted(choices)) or 'none'}"
    if close is None:
        return f"; {known}"
    return f"; did you mean '{close}'?" + (f" ({known})" if listed else "")


def validation_problems(error: ValidationError) -> list[tuple[tuple, str]]:
    """(location, what was expected) per problem; the failed members of one union field are one problem."""
    problems: dict[tuple, list[str]] = {}
    found: dict[tuple, str] = {}
    for item in error.errors():
        loc, message = tuple(item["loc"]), item["msg"].removeprefix("Value error, ")
        if item["type"] == "extra_forbidden":
            message = "unknown key"
        elif item["type"] == "missing":
            message = "required key is missing"
        elif isinstance(item.get("input"), str | int | float | bool) and len(repr(item["input"])) <= 40:
            found[loc[:-1] if loc and _is_member(loc[-1]) else loc] = f" (found {item['input']!r})"
        if loc and _is_member(loc[-1]):
            loc = loc[:-1]
        problems.setdefault(loc, []).append(message)
    out = []
    for loc, messages in problems.items():
        if len(messages) > 1:
            wanted = [m.removeprefix("Input should be ").split(", ")[0] for m in messages]
            messages = ["Input should be " + " or ".join(dict.fromkeys(wanted))]
        out.append((loc, messages[0] + found.get(loc, "")))
    return out


def _is_member(part: object) -> bool:
    return isinstance(part, str) and bool(_UNION_MEMBER.match(part))


def format_validation_error(file: Path | str, error: ValidationError, prefix: str = "",
                            hints: dict[str, str] | None = None) -> str:
    """One line per problem: file, dotted key path, what was expected (and a suggestion where one is known)."""
    lines = []
    for loc, message in validation_problems(error):
        key = ".".join(str(p) for p in (prefix, *loc) if p != "")
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


def read_yaml(path: Path, shown: Path | str | None = None) -> dict:
    """A YAML mapping; errors name the file as ``shown`` (default: ``path``), the line and what was expected."""
    name = path if shown is None else shown
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise BenchmarkError(f"{name}: cannot read: {exc.strerror or exc}") from exc
    except UnicodeDecodeError as exc:
        raise BenchmarkError(f"{name}: byte {exc.start}: not UTF-8 text") from exc
    try:
        data = yaml_safe.load(text)  # yaml.safe_load, with a key written twice refused
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise BenchmarkError(" ".join(f"{name}: {where}not valid YAML: {problem}".split())) from exc
    except (ValueError, RecursionError) as exc:  # a scalar YAML cannot construct, e.g. the date 2024-13-45
        raise BenchmarkError(" ".join(f"{name}: not valid YAML: {exc}".split())) from exc
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise BenchmarkError(f"{name}: <top>: expected a mapping of keys, found {type(data).__name__}")
    return data


def local_path_problem(kind: str, value: str, file_ok: bool = False) -> str | None:
    """Why a component's ``path`` cannot work, found without loading anything; None if it may.

    A base model's path is a local folder holding weights (relative to the working directory, as transformers
    reads it), a hub id ("org/name", fetched on load) or ``package:<module>`` (weights shipped in an installed
    package); a knowledge source's is a folder (relative to the repository root, as its loader reads it).
    """
    if value.startswith("package:"):
        module = value.removeprefix("package:")
        try:
            spec = importlib.util.find_spec(module) if module else None
        except (ImportError, ValueError):
            spec = None
        if spec is None or not spec.submodule_search_locations:
            return f"package '{module}' is not installed"
        folder = Path(next(iter(spec.submodule_search_locations)))
    else:
        local = Path(value).expanduser()
        folder = local if local.is_absolute() or kind == "models" else REPO_ROOT / local
    try:
        if not folder.exists():
            if kind == "models" and HUB_ID.match(value) and ".." not in value:
                return None
            if kind == "models":
                return f"'{value}' is neither an existing local folder nor a Hugging Face hub id ('org/name')"
            looked = "" if Path(value).expanduser().is_absolute() else f" (relative to {REPO_ROOT})"
            return f"{'file or folder' if file_ok else 'folder'} '{value}' does not exist{looked}"
        if not folder.is_dir() and not file_ok:  # file_ok: a family that reads one file (qa)
            return f"'{value}' is a file; expected a folder"
        if kind == "models" and not any(next(folder.glob(p), None) for p in WEIGHT_FILES):
            return f"'{value}' holds no model weights (expected {', '.join(WEIGHT_FILES)})"
    except (OSError, ValueError) as exc:
        return f"'{value}' is not a usable path ({exc})"
    return None


@dataclass(frozen=True)
class Origin:
    """Where a suite named a component, so errors about the name or its overrides point at the suite."""

    file: str  # the suite file
    key: str  # "model" or "knowledge_source"; its overrides are "<key>_overrides"

    def at(self, overridden: bool = False, subkey: str = "") -> str:
        key = f"{self.key}_overrides.{subkey}" if overridden else self.key
        return f"{self.file}: {key}: "


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

    def _resolve(self, kind: str, name: str, overrides: dict | None = None, origin: Origin | None = None,
                 check_paths: bool = False):
        kind = KIND_OF.get(kind, kind)
        overrides = overrides or {}
        names = self.names(kind)
        at = origin.at() if origin else ""
        if kind == "models" and name.startswith(INLINE_MODEL):
            return self._inline_model(name, overrides, at, check_paths)
        if name not in names:
            close = closest(name, names)
            hint = f"; did you mean '{close}'?" if close else ""
            raise BenchmarkError(f"{at}unknown {LABELS[kind]} '{name}'{hint} (known: {', '.join(names) or 'none'})")
        file = self.root / kind / f"{name}.yaml"

        def where(key: str) -> str:
            """A problem with ``key`` is the suite's if its overrides set the key, else the component file's."""
            if origin and key.partition(".")[0] in overrides:
                return origin.at(True, key)
            return f"{at}{file}: {key or '<top>'}: "

        try:
            data = {**read_yaml(file), **overrides}
        except BenchmarkError as exc:
            raise BenchmarkError(f"{at}{exc}") from exc
        family = data.get("family")
        families = FAMILIES[kind]
        if family is None:
            raise BenchmarkError(f"{where('family')}required key is missing (one of {', '.join(families)})")
        if not isinstance(family, str) or family not in families:
            raise BenchmarkError(f"{where('family')}unknown family '{family}'{did_you_mean(str(family), list(families))}")
        cls = import_object(families[family])
        try:
            spec = cls.Spec.model_validate(data)
        except ValidationError as exc:
            lines = [where(".".join(map(str, loc))) + message for loc, message in validation_problems(exc)]
            raise BenchmarkError("\n".join(lines)) from exc
        path = getattr(spec, "path", None)
        if check_paths and isinstance(path, str):
            problem = local_path_problem(kind, path, file_ok=getattr(cls, "path_may_be_file", False))
            if problem:
                raise BenchmarkError(f"{where('path')}{problem}")
        return cls(name, spec, file)

    def _inline_model(self, name: str, overrides: dict, at: str, check_paths: bool):
        cls = import_object(FAMILIES["models"]["hf"])
        target = name.removeprefix(INLINE_MODEL)
        if not target:
            raise BenchmarkError(f"{at}'{name}': name a hub id or a local folder after '{INLINE_MODEL}', e.g. "
                                 f"{INLINE_MODEL}HuggingFaceTB/SmolLM2-135M")
        data = {"family": "hf", "path": target, **overrides,
                "description": f"{target} (named on the command line: family hf, its defaults)"}
        try:
            spec = cls.Spec.model_validate(data)
        except ValidationError as exc:
            lines = [f"{at}{name}: {'.'.join(map(str, loc))}: {message}" for loc, message in validation_problems(exc)]
            raise BenchmarkError("\n".join(lines)) from exc
        if check_paths:
            problem = local_path_problem("models", target)
            if problem:
                raise BenchmarkError(f"{at}{name}: {problem}")
        return cls(name, spec, Path(name))  # no file: errors name the model as it was given

    def model(self, name: str, overrides: dict | None = None, *, origin: Origin | None = None,
              check_paths: bool = False):
        """A base model's component, not loaded. ``check_paths``: also check that its local files are there."""
        return self._resolve("models", name, overrides, origin, check_paths)

    def dataset(self, name: str, overrides: dict | None = None, *, origin: Origin | None = None,
                check_paths: bool = False):
        """A knowledge source's component, not read. ``check_paths``: also check that its folder is there."""
        return self._resolve("datasets", name, overrides, origin, check_paths)


def suite_files(root: Path = SUITES_DIR) -> list[Path]:
    return sorted(root.rglob("*.yaml"))
