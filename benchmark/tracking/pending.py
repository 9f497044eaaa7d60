"""What a run has waiting to be sent: its values, cut into ``log_batch`` calls within MLflow's limits, its input
datasets, and its artifacts staged in a folder of their own (uploaded in one go)."""

from __future__ import annotations

import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

# MLflow's log_batch limits.
MAX_METRICS, MAX_PARAMS, MAX_TAGS, MAX_VALUES = 1000, 100, 100, 1000


@dataclass
class Pending:
    """What a run has waiting to be sent."""

    metrics: list = field(default_factory=list)
    params: dict = field(default_factory=dict)
    tags: dict = field(default_factory=dict)
    datasets: list = field(default_factory=list)
    tables: list[str] = field(default_factory=list)
    folder: Path | None = None

    def stage(self, artifact_file: str) -> Path:
        if self.folder is None:
            self.folder = Path(tempfile.mkdtemp(prefix="slick-bench-artifacts-"))
        path = self.folder / artifact_file
        path.parent.mkdir(parents=True, exist_ok=True)
        return path

    def batches(self):
        """(metrics, params, tags) within MLflow's limits for one log_batch call."""
        metrics, params, tags = list(self.metrics), list(self.params.values()), list(self.tags.values())
        while metrics or params or tags:
            p, params = params[:MAX_PARAMS], params[MAX_PARAMS:]
            t, tags = tags[:MAX_TAGS], tags[MAX_TAGS:]
            room = min(MAX_METRICS, MAX_VALUES - len(p) - len(t))
            m, metrics = metrics[:room], metrics[room:]
            yield m, p, t

    def discard(self) -> None:
        if self.folder is not None:
            shutil.rmtree(self.folder, ignore_errors=True)
            self.folder = None
