"""The ranks of one variant's training: processes the benchmark starts itself, each running the training step

    python -m benchmark train-step RUN_DIR          # one rank; RUN_DIR/job/ says what to train

so the driver (SliCK, MLflow) runs once and only training is replicated. ``fine_tune`` calls ``train_on_ranks``
when a variant needs several ranks (``train.devices`` x ``train.num_nodes`` > 1) or FSDP:

- **One node**: one process per device, started here with the rank environment torchrun would give
  (``LOCAL_RANK``, ``NODE_RANK``, ``MASTER_ADDR``/``MASTER_PORT`` on 127.0.0.1, and ``SLICK_BENCH_RANK`` so every
  part of the benchmark knows it is a rank the benchmark started). Rank r uses device r of those it can see: under
  Ray or SLURM, the GPUs granted to the variant.
- **Several nodes**: inside a SLURM allocation, ``srun`` starts ``devices`` ranks on each of ``num_nodes`` nodes
  (the same command); each rank takes its place from ``SLURM_PROCID``/``SLURM_LOCALID``/``SLURM_NODEID``, and
  the rendezvous is this host. Not tested on a cluster (no SLURM here).

The job is data, not pickles: the three tables as Parquet, the settings as JSON, and the model either as a
component name (each rank loads it itself, on the CPU, before it is sharded or moved to its device) or, for a
model handed over in memory, a ``save_pretrained`` folder written once. Rank 0 appends every epoch's metrics to
``progress.jsonl`` (``benchmark.progress``); the caller reads them while it waits and gets the result from
``state.json``. A rank that fails stops the others and the failure is reported with the end of its log
(``job/rank<r>.log``); Ctrl-C or SIGTERM in the caller stops every rank (checkpoints stay; a re-run resumes).
Ranks never outlive the process that started them.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from benchmark import progress
from benchmark.cache import read_parquet, write_parquet
from benchmark.errors import BenchmarkError

RANK_ENV = "SLICK_BENCH_RANK"  # set in every training rank the benchmark starts
MASTER_ENV = "SLICK_BENCH_MASTER"  # host:port of the rendezvous, for ranks started by srun
JOB = "job"
# World sizes a launcher sets for the processes it starts: torchrun, srun (its step, not the batch script: a
# single-task sbatch, or a batch script that runs one command, is one process), Open MPI, Intel MPI / MPICH.
LAUNCHER_SIZES = ("WORLD_SIZE", "SLURM_STEP_NUM_TASKS", "OMPI_COMM_WORLD_SIZE", "PMI_SIZE")


def launcher_world_size() -> int:
    """How many ranks a launcher started this process among (1 when none did)."""
    sizes = []
    for name in LAUNCHER_SIZES:
        try:
            sizes.append(int(os.environ.get(name) or 1))
        except ValueError:
            continue
    return max(sizes, default=1)


def started_by_the_benchmark() -> bool:
    return RANK_ENV in os.environ


def ranks_started_by_a_launcher() -> bool:
    """This process is one of several ranks that torchrun, srun or mpirun started (not the benchmark): a
    ``fine_tune`` call here joins them, as Lightning does, instead of starting ranks of its own."""
    return not started_by_the_benchmark() and launcher_world_size() > 1


def inside_ranks() -> bool:
    return started_by_the_benchmark() or ranks_started_by_a_launcher()


# ---------------------------------------------------------------------------------------------------------------
# What a rank trains
# ---------------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ModelRef:
    """A base model by component name, loaded where it is used (each rank; a worker), never carried over."""

    name: str
    overrides: dict = field(default_factory=dict)
    registry_root: str | None = None

    def component(self):
        from benchmark.registry import Registry

        registry = Registry(root=Path(self.registry_root)) if self.registry_root else Registry()
        return registry.model(self.name, self.overrides)

    def load(self, device: str = "cpu"):
        return self.component().load(device=device)

    @property
    def identity(self) -> str:
        return self.component().identity()

    def spec(self) -> dict:
        return {"kind": "component", **asdict(self)}


def model_spec(model, job_dir: Path) -> dict:
    """How a rank gets the base model: by name, or from a folder this writes (a model handed over loaded)."""
    if isinstance(model, ModelRef):
        return model.spec()
    from components.hf_causal_lm import quiet_loading

    base = job_dir / "base"
    with quiet_loading():  # no progress bars
        model.model.save_pretrained(base)
        model.tokenizer.save_pretrained(base)
    return {"kind": "folder", "name": model.name, "path": str(base), "identity": model.identity}


def load_model(spec: dict):
    if spec["kind"] == "component":
        return ModelRef(spec["name"], spec["overrides"], spec["registry_root"]).load("cpu")
    from components.base import LoadedModel
    from components.hf_causal_lm import load_hf

    loaded = load_hf(spec["name"], spec["path"], dtype="auto")
    return LoadedModel(name=spec["name"], model=loaded.model, tokenizer=loaded.tokenizer, identity=spec["identity"])


def write_job(run_dir: Path, model, train, dev, test, config, *, fingerprint: str, threads: int) -> Path:
    job = Path(run_dir) / JOB
    job.mkdir(parents=True, exist_ok=True)
    for name, table in (("train", train), ("dev", dev), ("test", test)):
        write_parquet(table, job / f"{name}.parquet")
    document = {"model": model_spec(model, job), "config": config.model_dump(mode="json"),
                "fingerprint": fingerprint, "threads": threads}
    (job / "job.json").write_text(json.dumps(document, indent=2))
    return job


# ---------------------------------------------------------------------------------------------------------------
# Starting and watching the ranks
# ---------------------------------------------------------------------------------------------------------------
def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _ignore_interrupts() -> None:
    # The caller decides when ranks stop (it terminates them); a terminal's Ctrl-C reaches only the caller.
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def rank_command(run_dir: Path) -> list[str]:
    return [sys.executable, "-m", "benchmark", "train-step", str(run_dir)]


def srun_command(run_dir: Path, config) -> list[str]:
    """What starts the ranks of a variant on several nodes of the SLURM allocation this runs in."""
    # --overlap: the batch script (this driver) holds a share of the first node; the ranks may run beside it.
    return ["srun", f"--nodes={config.num_nodes}", f"--ntasks-per-node={config.devices}", "--kill-on-bad-exit=1",
            "--overlap", f"--output={Path(run_dir) / JOB / 'rank%t.log'}", *rank_command(run_dir)]


def start_ranks(run_dir: Path, config) -> list[subprocess.Popen]:
    job = Path(run_dir) / JOB
    base = {k: v for k, v in os.environ.items() if k not in ("WORLD_SIZE", "RANK", "LOCAL_RANK", "NODE_RANK")}
    base["PYTHONPATH"] = os.pathsep.join(dict.fromkeys([str(Path(__file__).resolve().parents[1]),
                                                        *filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep))]))
    port = str(free_port())
    if config.num_nodes > 1:
        if "SLURM_JOB_ID" not in os.environ:
            raise BenchmarkError(f"train.num_nodes: {config.num_nodes} needs a SLURM allocation of that many nodes "
                                 "(srun starts the ranks); run `benchmark run` inside it (scripts/slurm_example.sbatch)")
        env = {**base, MASTER_ENV: f"{socket.gethostname()}:{port}"}
        return [subprocess.Popen(srun_command(run_dir, config), env=env, stdin=subprocess.DEVNULL,
                                 start_new_session=True, preexec_fn=_ignore_interrupts)]
    processes = []
    for local_rank in range(config.devices):
        env = {**base, RANK_ENV: str(local_rank), "LOCAL_RANK": str(local_rank), "NODE_RANK": "0",
               "WORLD_SIZE": str(config.devices), "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": port}
        log = open(job / f"rank{local_rank}.log", "w")  # noqa: SIM115 - the child holds it; closed below
        processes.append(subprocess.Popen(rank_command(run_dir), env=env, stdin=subprocess.DEVNULL, stdout=log,
                                          stderr=subprocess.STDOUT, start_new_session=True,
                                          preexec_fn=_ignore_interrupts))
        log.close()
    return processes


def stop(processes: list[subprocess.Popen], grace: float = 10.0) -> None:
    for process in processes:
        if process.poll() is None:
            process.terminate()
    deadline = time.monotonic() + grace
    for process in processes:
        try:
            process.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def log_tail(run_dir: Path, rank: int, lines: int = 3) -> str:
    try:
        text = (Path(run_dir) / JOB / f"rank{rank}.log").read_text(errors="replace")
    except OSError:
        return ""
    kept = [line for line in text.strip().splitlines() if line.strip()]
    return " | ".join(kept[-lines:])


def train_on_ranks(model, train, dev, test, config, run_dir: Path, on_epoch: Callable | None, *,
                   fingerprint: str, reported_through: int, threads: int, poll: float = 0.2) -> None:
    """Train in rank processes and wait for them, calling ``on_epoch(metrics, epoch)`` here for each new epoch
    (after ``reported_through``) as rank 0 reports it. Returns when every rank has finished; raises when one fails."""
    run_dir = Path(run_dir)
    write_job(run_dir, model, train, dev, test, config, fingerprint=fingerprint, threads=threads)
    tail = progress.Tail(run_dir / progress.PROGRESS, after=reported_through)
    processes = start_ranks(run_dir, config)
    try:
        while True:
            for metrics, epoch in tail.new():
                if on_epoch is not None:
                    on_epoch(metrics, epoch)
            codes = [p.poll() for p in processes]
            failed = [(r, c) for r, c in enumerate(codes) if c not in (None, 0)]
            if failed:
                rank, code = failed[0]
                stop(processes)
                detail = log_tail(run_dir, rank)
                raise BenchmarkError(f"{run_dir}: training failed on rank {rank} (exit code {code})"
                                     + (f": {detail}" if detail else f"; see {run_dir / JOB}"))
            if all(c == 0 for c in codes):
                break
            time.sleep(poll)
        for metrics, epoch in tail.new():
            if on_epoch is not None:
                on_epoch(metrics, epoch)
    except BaseException:
        stop(processes)
        raise


# ---------------------------------------------------------------------------------------------------------------
# Inside a rank
# ---------------------------------------------------------------------------------------------------------------
def rank_environment() -> None:
    """The torchrun-style variables Lightning's environment reads, from srun's when srun started this rank."""
    if "LOCAL_RANK" in os.environ or "SLURM_PROCID" not in os.environ:
        return
    host, _, port = os.environ.get(MASTER_ENV, "127.0.0.1:29500").rpartition(":")
    os.environ.update({RANK_ENV: os.environ["SLURM_PROCID"], "LOCAL_RANK": os.environ.get("SLURM_LOCALID", "0"),
                       "NODE_RANK": os.environ.get("SLURM_NODEID", "0"),
                       "WORLD_SIZE": os.environ.get("SLURM_NTASKS", "1"), "MASTER_ADDR": host, "MASTER_PORT": port})


def watch_parent() -> None:
    """Exit when the process that started this rank is gone (killed), rather than train on unobserved."""
    parent = os.getppid()

    def watch() -> None:
        while True:
            time.sleep(2.0)
            if os.getppid() != parent:
                os._exit(3)

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()


def run_rank(run_dir: Path) -> None:
    """``python -m benchmark train-step RUN_DIR``: this process's rank of the job in ``RUN_DIR/job``."""
    run_dir = Path(run_dir)
    rank_environment()
    if RANK_ENV not in os.environ:
        raise BenchmarkError("train-step runs as a rank that `benchmark run` (or fine_tune) starts, with "
                             f"{RANK_ENV}, LOCAL_RANK, MASTER_ADDR and MASTER_PORT set, or under srun")
    watch_parent()
    job = run_dir / JOB
    try:
        document = json.loads((job / "job.json").read_text())
    except (OSError, ValueError) as exc:
        raise BenchmarkError(f"{job / 'job.json'}: not a training job ({exc})") from exc
    from benchmark.numerics import set_threads
    from benchmark.runtime import quiet_libraries, silence_lightning
    from benchmark.train import train_rank
    from benchmark.train.config import TrainConfig

    quiet_libraries()
    silence_lightning()
    set_threads(int(document["threads"]))
    tables = {}
    for name in ("train", "dev", "test"):
        table = read_parquet(job / f"{name}.parquet")
        if table is None:
            raise BenchmarkError(f"{job / (name + '.parquet')}: missing or damaged")
        tables[name] = table
    model = load_model(document["model"])
    train_rank(model, tables["train"], tables["dev"], tables["test"],
               TrainConfig.model_validate(document["config"]), run_dir, fingerprint=document["fingerprint"])
