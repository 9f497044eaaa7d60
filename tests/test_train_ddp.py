"""Fine-tuning on two CPU processes: DDP over gloo, its ranks started from a plain library call (``benchmark.launch``:
``python -m benchmark train-step`` per rank), and how a run knows whether a launcher started it.

n ranks of batch B take the same optimizer steps as one process of batch B accumulating n batches: rank r gets
batches r, r + n, ... of the same length-grouped order (``LengthGroupedBatchSampler``), and DDP averages the
ranks' gradients as accumulation averages the batches'. Halving a loss is exact in floating point and addition
is commutative, so the weights come out the same; only ``train/loss``, summed over the ranks in another order, may
differ in its last bits (relative tolerance 1e-6). Dropout is off: its masks are drawn per process.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

from benchmark import launch
from benchmark.errors import BenchmarkError
from benchmark.prompts import completion, finetune_prompt
from benchmark.runtime import torch_threads
from benchmark.train import TrainConfig, fine_tune
from tests.conftest import make_tiny_lm
from tests.test_train import qa_table, without_timings

REPO = Path(__file__).resolve().parent.parent
SMOKE = REPO / "suites" / "smoke.yaml"
DDP = {"strategy": "ddp", "accelerator": "cpu", "devices": 2}


@dataclass
class EpochLog:
    """An ``on_epoch`` that records where it was called."""

    calls: list

    def __call__(self, metrics: dict[str, float], epoch: int) -> None:
        self.calls.append({"epoch": epoch, "pid": os.getpid(), "dev": metrics["dev/acc/all"]})


# One sbatch job with one task, as the scheduler leaves it in the batch script's environment.
ONE_TASK_SBATCH = {"SLURM_JOB_ID": "4242", "SLURM_NTASKS": "1", "SLURM_PROCID": "0", "SLURM_LOCALID": "0",
                   "SLURM_NODEID": "0", "SLURM_JOB_NAME": "sweep"}


@pytest.mark.parametrize(("environment", "launched"), [
    ({}, False),
    (ONE_TASK_SBATCH, False),
    ({**ONE_TASK_SBATCH, "SLURM_NTASKS": "8"}, False),  # a batch script of an 8-task job: still one process
    ({**ONE_TASK_SBATCH, "SLURM_NTASKS": "8", "SLURM_STEP_NUM_TASKS": "8", "SLURM_STEP_ID": "0"}, True),  # srun
    ({"WORLD_SIZE": "2", "LOCAL_RANK": "1", "RANK": "1"}, True),  # torchrun
    ({"OMPI_COMM_WORLD_SIZE": "4"}, True),  # mpirun
    ({"WORLD_SIZE": "2", "LOCAL_RANK": "1", launch.RANK_ENV: "1"}, False),  # a rank the benchmark started
], ids=["plain", "sbatch-1-task", "sbatch-batch-script", "srun-8", "torchrun", "mpirun", "own-rank"])
def test_only_a_launchers_world_counts_as_ranks(environment, launched, monkeypatch):
    for name in (*launch.LAUNCHER_SIZES, launch.RANK_ENV, "SLURM_NTASKS", "SLURM_JOB_ID", "LOCAL_RANK"):
        monkeypatch.delenv(name, raising=False)
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    assert launch.ranks_started_by_a_launcher() is launched


def test_ddp_refuses_fewer_batches_than_ranks(tiny_lm, tmp_path):
    table = qa_table(n_subjects=4)
    with pytest.raises(BenchmarkError, match=r"make 1 batch.*fewer than the 2 ranks .*lower train.batch_size"):
        fine_tune(tiny_lm, table[:6], table[6:], table[6:], TrainConfig(batch_size=8, **DDP), tmp_path)


def test_ddp_on_two_processes_equals_gradient_accumulation(tmp_path, monkeypatch):
    """Under a one-task sbatch job's environment (SLURM_NTASKS=1), which Lightning's own detection took for a
    one-rank SLURM world: the two ranks start, and the caller hears every epoch in its own process."""
    for name, value in ONE_TASK_SBATCH.items():
        monkeypatch.setenv(name, value)
    table = qa_table()
    texts = [finetune_prompt(q) + completion(a) for q, a in table.select("question", "answer").rows()]
    lm = make_tiny_lm(texts, width=48)
    train, dev, test = table[:24], table[24:36], table[36:]  # 24 = 3 steps of 2 x 4: no tail batch to drop
    before = {k: v.clone() for k, v in lm.model.state_dict().items()}
    # Evaluation in batches of 5, so each rank answers its share (benchmark.evaluate.rank_share), unevenly.
    common = {"epochs": 3, "batch_size": 4, "lr": 1e-2, "warmup_ratio": 0.0, "dropout": 0.0, "eval_batch_size": 5}
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # each rank then keeps one thread, as this process does
    with torch_threads(1):
        single = fine_tune(lm, train, dev, test, TrainConfig(**common, accumulate_grad_batches=2), tmp_path / "one")
        log = EpochLog([])
        ddp = fine_tune(lm, train, dev, test, TrainConfig(**common, **DDP), tmp_path / "ddp", on_epoch=log)

    assert [c["epoch"] for c in log.calls] == [1, 2, 3]  # once per epoch, here, while the ranks train
    assert {c["pid"] for c in log.calls} == {os.getpid()}

    one, two = without_timings(single.history), without_timings(ddp.history)
    assert one.columns == two.columns
    assert one.drop("train/loss").equals(two.drop("train/loss"))
    assert two["train/loss"].to_list() == pytest.approx(one["train/loss"].to_list(), rel=1e-6)
    assert ddp.early_stop_epoch == single.early_stop_epoch
    assert ddp.predictions.equals(single.predictions)
    for name in ("best.ckpt", "convergence.ckpt"):
        weights = [torch.load(result.best_checkpoint.parent / name, weights_only=True)["state_dict"]
                   for result in (single, ddp)]
        assert weights[0].keys() == weights[1].keys()
        assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0]), name
    assert not (tmp_path / "ddp" / "last.ckpt").exists()  # no optimizer state left once finished
    for key, value in lm.model.state_dict().items():  # the caller's model is untouched
        assert torch.equal(value, before[key]), key


def test_smoke_suite_trains_a_variant_with_ddp_on_two_cpu_processes():
    """``strategy: ddp, accelerator: cpu, devices: 2`` through ``run_suite``: SliCK once, in this process; the
    variant on two spawned ranks; one MLflow run, its metrics logged once per epoch by this process."""
    from benchmark import pipeline
    from benchmark.suite import load_suite
    from benchmark.tracking import Tracker

    overrides = ["tracking.experiment=smoke-ddp", "train.strategy=ddp", "train.accelerator=cpu", "train.devices=2",
                 "train.batch_size=4"]  # the smoke sets are small: several batches for each of the two ranks
    suite = load_suite(SMOKE, overrides)
    document = pipeline.run_suite(suite, SMOKE, log=lambda _: None, only=["unknown_50"])
    (variant,) = document["variants"]
    assert variant["status"] == "FINISHED" and variant["epochs"] == 3
    tracker = Tracker("smoke-ddp")
    history = tracker.metric_history(variant["run_id"], "dev/acc/all")
    assert [step for step, _ in history] == [1, 2, 3]
    assert {r.info.status for r in tracker.children(document["parent_run_id"])} == {"FINISHED"}


@pytest.mark.parametrize("variable", ["WORLD_SIZE", "SLURM_STEP_NUM_TASKS"])
def test_run_started_as_one_of_several_launcher_ranks_refuses_before_any_work(variable, monkeypatch, tmp_path,
                                                                               capsys):
    from benchmark import cli

    monkeypatch.setenv(variable, "2")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    for command in ("run", "categorize"):
        assert cli.main([command, str(SMOKE)]) == 2
        err = capsys.readouterr().err
        assert "one of 2 ranks" in err and "train.devices" in err and "Traceback" not in err
    assert not (tmp_path / "mlflow.db").exists()  # no run was created


def test_a_one_task_sbatch_job_is_one_driver_not_a_rank(monkeypatch, capsys):
    """What ``benchmark run`` in a single-task sbatch script sees: it is not refused (categorize stands for it:
    same check, no training)."""
    from benchmark import cli

    for name, value in ONE_TASK_SBATCH.items():
        monkeypatch.setenv(name, value)
    assert cli.main(["categorize", str(SMOKE), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["counts"]
