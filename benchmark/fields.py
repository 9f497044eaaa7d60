"""Every key a suite and each component family takes, read off their pydantic schemas (``ls --fields``): the
schema is the documentation, as litgpt's typed configs are its ``--help``."""

from __future__ import annotations

import types
import typing

from pydantic import BaseModel
from pydantic_core import PydanticUndefined


def schema_rows(model: type[BaseModel], prefix: str = "") -> list[dict[str, str]]:
    """One row per key (``key``, ``type``, ``default``, ``description``); a nested section's keys are dotted."""
    rows = []
    for name, field in model.model_fields.items():
        key = f"{prefix}{name}"
        nested = _section(field.annotation)
        if nested is not None:
            rows += schema_rows(nested, f"{key}.")
            continue
        if field.default is not PydanticUndefined:
            default = field.default
        elif field.default_factory is not None:
            default = field.default_factory()
        else:
            default = "(required)"
        rows.append({"key": key, "type": _type_name(field.annotation), "default": _shown(default),
                     "description": field.description or ""})
    return rows


def family_schemas() -> dict[str, list[dict[str, str]]]:
    """``suite`` and ``<kind>/<family>`` (``models/hf``, ``datasets/qa``, ...) to their keys."""
    from benchmark.registry import FAMILIES, import_object
    from benchmark.suite import Suite

    out = {"suite": schema_rows(Suite)}
    for kind, families in FAMILIES.items():
        for family, target in families.items():
            out[f"{kind}/{family}"] = schema_rows(import_object(target).Spec)
    return out


def _section(annotation) -> type[BaseModel] | None:
    """The section's schema, for a key that holds a section (or an optional one: ``mixtures.idk_relabel``)."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    members = [a for a in typing.get_args(annotation) if a is not type(None)]
    if typing.get_origin(annotation) in (typing.Union, types.UnionType) and len(members) == 1:
        return _section(members[0])
    return None


def _type_name(annotation) -> str:
    if annotation is None or annotation is type(None):
        return "null"
    origin = typing.get_origin(annotation)
    if origin is typing.Literal:
        return " | ".join(repr(a) for a in typing.get_args(annotation))
    if origin in (typing.Union, types.UnionType):
        return " | ".join(_type_name(a) for a in typing.get_args(annotation))
    if origin is typing.Annotated:
        return _type_name(typing.get_args(annotation)[0])
    if origin is not None:
        args = ", ".join(_type_name(a) for a in typing.get_args(annotation))
        return f"{getattr(origin, '__name__', str(origin))}[{args}]"
    return getattr(annotation, "__name__", str(annotation).replace("typing.", ""))


def _shown(value) -> str:
    if isinstance(value, BaseModel):
        return "(section)"
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    return str(value) if not isinstance(value, str) else (value or "''")
