"""The two component interfaces every family implements, and the schema every component file shares."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import polars as pl
from pydantic import BaseModel, ConfigDict, Field

# Columns of the question table every knowledge source returns. ``qid`` is "<split>/<relation>/<index in file>".
QUESTION_COLUMNS = ("qid", "split", "relation", "question", "answer", "subject", "ood")


class ComponentSpec(BaseModel):
    """Keys shared by every component file. Unknown keys are errors, so a typo never silently does nothing."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    family: str = Field(description="which code reads the file (`ls --fields` lists each family's keys)")
    description: str = Field(description="one line, shown by `ls`")


@dataclass
class LoadedModel:
    """A causal LM ready for generation and training: HF model, tokenizer (left padding), and its identity."""

    name: str
    model: Any
    tokenizer: Any
    identity: str


class Component:
    """What every component is: its name, its validated file (``spec``) and where that file is."""

    Spec: ClassVar[type[ComponentSpec]]
    first_use: ClassVar[str] = ""  # what the first run costs beyond the cached ones, for the console

    def __init__(self, name: str, spec: ComponentSpec, file: Path):
        self.name, self.spec, self.file = name, spec, file

    def __reduce__(self):
        # Crosses process boundaries (executors) as its description alone, never with loaded data or caches.
        return type(self), (self.name, self.spec, self.file)


class ModelComponent(Component):
    """A base model. ``identity`` must change whenever the weights could (hub revision, local file hash)."""

    def identity(self) -> str:
        raise NotImplementedError

    def load(self, *, device: str = "cpu", dtype: str | None = None) -> LoadedModel:
        raise NotImplementedError

    def prepare(self, log=None) -> None:
        """Whatever the weights need before any process loads them (a world model is pretrained), done once by
        the driver: workers would otherwise each wait for the first to do it, on one thread. ``log`` (a function
        of one line) hears about work that takes long, before and after it."""

    def tokenizer(self):
        """The tokenizer alone; families that can load it without the weights override this."""
        return self.load().tokenizer

    def parameters(self) -> int | None:
        """Parameter count, where it is known without loading the weights (the ``model_params`` tag); else None."""
        return None


class KnowledgeSource(Component):
    """A question set in the ENTITYQUESTIONS release layout, preprocessed as docs/method.md §2 says."""

    def identity(self) -> str:
        """Hash of the data files (and anything else that changes the questions)."""
        raise NotImplementedError

    def questions(self) -> pl.DataFrame:
        """One row per question, columns ``QUESTION_COLUMNS``."""
        raise NotImplementedError

    def exposures(self) -> pl.DataFrame | None:
        """Ground-truth pretraining exposure per question (columns relation, question, exposure), if known."""
        return None

    def guessable_relations(self) -> list[str]:
        """Relations with a small answer space, where lucky samples make never-seen facts look WeaklyKnown."""
        return []
