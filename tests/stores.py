"""Test helpers for tracking stores and caches: a real ``mlflow server`` on 127.0.0.1, and a cache of one's own
that shares the session's expensive stages (world, world model, SliCK table) but trains its own variants."""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import requests

REPO = Path(__file__).resolve().parent.parent
SMOKE = REPO / "suites" / "smoke.yaml"
SHARED_STAGES = ("world", "world-model", "slick")
_REQUEST = re.compile(r'"(GET|POST|PUT|PATCH|DELETE|HEAD) (\S+) HTTP/')


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class MlflowServer:
    """``mlflow server`` with a SQLite store and its own proxied artifact folder under ``root``, one worker.
    ``requests()`` reads the server's access log: every request it received, as ``"METHOD /path"``."""

    def __init__(self, root: Path, port: int | None = None):
        self.root, self.port = Path(root), port or free_port()
        self.root.mkdir(parents=True, exist_ok=True)
        self.log = self.root / "server.log"
        self.process: subprocess.Popen | None = None

    @property
    def uri(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 300) -> MlflowServer:
        command = [sys.executable, "-m", "mlflow", "server", "--backend-store-uri",
                   f"sqlite:///{self.root / 'mlflow.db'}", "--serve-artifacts", "--artifacts-destination",
                   str(self.root / "artifacts"), "--host", "127.0.0.1", "--port", str(self.port), "--workers", "1"]
        env = {**{k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}, "MLFLOW_DISABLE_TELEMETRY": "true"}
        with open(self.log, "a") as log:
            self.process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, cwd=self.root, env=env,
                                            start_new_session=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"mlflow server exited with {self.process.returncode}: {self.log.read_text()[-2000:]}")
            try:
                if requests.get(f"{self.uri}/health", timeout=2).status_code == 200:
                    return self
            except requests.RequestException:
                pass
            time.sleep(0.3)
        self.stop()
        raise RuntimeError(f"mlflow server did not answer within {timeout} s: {self.log.read_text()[-2000:]}")

    def stop(self) -> None:
        """Gone at once, as a crashed server: its process group is killed."""
        if self.process is None or self.process.poll() is not None:
            return
        os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(30)

    def requests(self) -> list[str]:
        return [f"{m.group(1)} {m.group(2).split('?')[0]}" for m in _REQUEST.finditer(self.log.read_text())]


def own_cache(root: Path, session_cache: Path, *, copy: tuple[str, ...] = (),
              stages: tuple[str, ...] = SHARED_STAGES) -> Path:
    """A cache folder that shares the session cache's ``stages`` (default: world, world model and SliCK tables;
    symlinks; ``copy`` names stages to copy instead, for tests that damage them) but has its own variants, so its
    runs train."""
    root.mkdir(parents=True, exist_ok=True)
    for stage in stages:
        source = session_cache / stage
        if not source.exists():
            continue
        if stage in copy:
            shutil.copytree(source, root / stage, symlinks=True, ignore=shutil.ignore_patterns(".*.lock"))
        else:
            (root / stage).symlink_to(source, target_is_directory=True)
    return root


def statuses(tracker, parent_id: str) -> dict[str, list[str]]:
    """Variant name -> the statuses of its child runs under ``parent_id``."""
    runs: dict[str, list[str]] = {}
    for run in tracker.children(parent_id):
        runs.setdefault(run.data.tags["slick.variant"], []).append(run.info.status)
    return runs
