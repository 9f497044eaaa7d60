"""A suite key whose values are implementations, each declared once: SliCK's back-ends
(``benchmark.backends.BACKENDS``) and the executors (``benchmark.executors.EXECUTORS``).

Entries name their code by lazy ``"module:attribute"`` strings, as lm-eval's registry does, so an optional extra
(vLLM, Ray) is imported only when a suite chooses it. The schema's annotation (``annotation``) shows the names known
at import, which is what ``ls --fields`` lists; validation asks the registry itself, so a choice registered later
(a plug-in, a test's toy back-end) validates too, and an unknown name fails with "did you mean ...". A choice
registered at run time exists only in the process that registered it: SliCK shards and variants run in fresh
worker processes, which know it only if it is registered by a module they import.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Annotated, Generic, Literal, TypeVar

from pydantic import PlainValidator

from benchmark.registry import did_you_mean

E = TypeVar("E")


class Choices(Mapping[str, E], Generic[E]):
    """Name -> declaration (``what``: what one is called in errors), in the order they were registered."""

    def __init__(self, what: str, entries: dict[str, E]):
        self.what = what
        self._entries = dict(entries)

    def register(self, name: str, entry: E) -> None:
        """Add a choice. A name already taken is an error: replacing one would change what its results mean."""
        if name in self._entries:
            raise ValueError(f"{self.what} '{name}' is already registered")
        self._entries[name] = entry

    def unregister(self, name: str) -> None:
        del self._entries[name]

    def __getitem__(self, name: str) -> E:
        if name not in self._entries:
            raise KeyError(f"unknown {self.what} '{name}'{did_you_mean(str(name), list(self._entries))}")
        return self._entries[name]

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def check(self, value: object) -> str:
        """``value`` if it names a choice; else the one-line problem pydantic reports under the key (it appends
        what was found)."""
        if value in self:
            return value
        raise ValueError(f"unknown {self.what}{did_you_mean(str(value), list(self._entries))}")

    def annotation(self):
        """The schema's type: the names known now (what ``ls --fields`` shows), validated by ``check``."""
        return Annotated[Literal[tuple(self._entries)], PlainValidator(self.check)]

    def described(self) -> str:
        """The schema's description: each name with what its entry says of itself."""
        return "; ".join(f"{name}: {entry.description}" for name, entry in self._entries.items())
