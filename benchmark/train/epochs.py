"""What happens at the end of every epoch (``EpochEnd``: evaluate, report, save) and what a run's history comes to
(EARLY_STOP, CONVERGENCE and the fitting speed)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from time import perf_counter

import lightning as L
import polars as pl
import torch

from benchmark import checkpoints, parallel, progress
from benchmark.analyse.measures import fitting_speed
from benchmark.checkpoints import BEST, CONVERGENCE, LAST
from benchmark.evaluate import EvaluationSets, evaluate_epoch
from benchmark.train.config import TrainConfig
from benchmark.train.model import FineTuneModule

OnEpoch = Callable[[dict[str, float], int], None]


def early_stop_epoch(history: Sequence[dict[str, float]]) -> int:
    """EARLY_STOP: the epoch with the best dev accuracy; on a tie, the earliest of them."""
    best = max(row["dev/acc/all"] for row in history)
    return min(int(row["epoch"]) for row in history if row["dev/acc/all"] == best)


class EpochEnd(L.Callback):
    """Once per epoch, on every rank: evaluate (each rank its share), report (rank 0: ``progress.jsonl`` and
    ``on_epoch``), save best.ckpt (dev improved), then either last.ckpt (every ``checkpoint_every`` epochs) or, at
    the last epoch, convergence.ckpt and state.json, and last.ckpt goes.

    Reporting comes before last.ckpt is written: a run killed in between repeats (and reports again) that epoch
    rather than skip it. The state below travels in last.ckpt and, without the RNG state, in state.json.
    """

    def __init__(self, sets: EvaluationSets, tokenizer, config: TrainConfig, run_dir: Path,
                 on_epoch: OnEpoch | None, fingerprint: str):
        self.sets, self.tokenizer, self.config, self.run_dir = sets, tokenizer, config, run_dir
        self.on_epoch, self.fingerprint = on_epoch, fingerprint
        self.history: list[dict[str, float]] = []
        self.best_epoch = 0
        self.best_predictions: list[str] = []
        self.last_predictions: list[str] = []
        self.finished = False
        self._started = 0.0
        self.checkpoint_io = checkpoints.streaming_checkpoint_io()

    @property
    def state_key(self) -> str:
        return "EpochEnd"

    def on_train_epoch_start(self, trainer, pl_module: FineTuneModule) -> None:
        pl_module.reset_epoch_totals()
        self._started = perf_counter()

    def on_train_epoch_end(self, trainer, pl_module: FineTuneModule) -> None:
        train_seconds = perf_counter() - self._started
        epoch = trainer.current_epoch + 1
        loss, tokens = pl_module.epoch_totals()

        started = perf_counter()
        pl_module.eval()
        with parallel.gathered(pl_module.causal_lm), torch.no_grad(), trainer.precision_plugin.forward_context():
            result = evaluate_epoch(pl_module.causal_lm, self.tokenizer, self.sets, ranks=parallel.ranks_of(trainer),
                                    batch_size=self.config.eval_batch_size, idk_answer=self.config.idk_answer)
        pl_module.train()
        # Optimizer steps so far: what a comparison on equal footing must hold equal besides the epochs.
        metrics = {**result.metrics, "train/loss": loss, "train/optimizer_steps": float(trainer.global_step),
                   "time/epoch_seconds": train_seconds,
                   "time/train_tokens_per_s": tokens / max(train_seconds, 1e-9),
                   "time/eval_seconds": perf_counter() - started}
        # Every rank has every answer; rank 0's timings go to all, so every rank keeps the same history.
        metrics = trainer.strategy.broadcast(metrics, src=0)
        test_predictions = result.test_predictions

        self.history.append({"epoch": epoch, **metrics})
        improved = early_stop_epoch(self.history) == epoch
        if improved:
            self.best_epoch, self.best_predictions = epoch, test_predictions
        self.last_predictions = test_predictions
        self.finished = epoch >= self.config.epochs

        if trainer.is_global_zero:
            progress.append(self.run_dir, metrics, epoch)
            if self.on_epoch is not None:
                self.on_epoch(metrics, epoch)
        if improved:
            self._save_weights(trainer, pl_module, BEST, epoch)
        if self.finished:
            self._save_weights(trainer, pl_module, CONVERGENCE, epoch)
            if trainer.is_global_zero:
                checkpoints.write_state(self.run_dir, self.result_state())
            trainer.strategy.barrier("EpochEnd.finished")
            if trainer.is_global_zero:  # the resume state is not needed any more
                checkpoints.remove(self.run_dir / LAST)
        elif epoch % self.config.checkpoint_every == 0:
            self._save_resumable(trainer)

    def _save_weights(self, trainer, pl_module: FineTuneModule, name: str, epoch: int) -> None:
        checkpoints.save_weights(pl_module.weights(), self.run_dir / name, epoch=epoch,
                                 trainable_only=self.config.method == "lora", ranks=parallel.ranks_of(trainer),
                                 sharded=parallel.sharded(self.config))
        trainer.strategy.barrier("EpochEnd.weights")

    def _save_resumable(self, trainer) -> None:
        """last.ckpt through Lightning (everything to resume), replaced atomically with its checksum."""
        final = self.run_dir / LAST
        # Sharded: every rank writes under one agreed name; a single file: under a name of this process alone.
        sharded = parallel.sharded(self.config)
        tmp = checkpoints.temporary(final) if sharded else checkpoints.private_temporary(final)
        ranks = parallel.ranks_of(trainer)
        if sharded:
            if trainer.is_global_zero:
                checkpoints.remove(tmp)
            trainer.strategy.barrier("EpochEnd.resumable")
            trainer.save_checkpoint(tmp)  # a torch.distributed.checkpoint folder: each rank writes its shard
            checkpoints.finish_sharded(tmp, final, ranks)
        else:
            trainer.save_checkpoint(tmp)  # rank 0 writes it, hashed as it streams out (StreamingCheckpointIO)
            if trainer.is_global_zero:
                checkpoints.commit(tmp, final, self.checkpoint_io.written.pop(str(tmp)))
        trainer.strategy.barrier("EpochEnd.resumable")

    def result_state(self) -> dict:
        """What a finished run needs to be returned again (state.json)."""
        return {"fingerprint": self.fingerprint, "history": self.history, "best_epoch": self.best_epoch,
                "best_predictions": self.best_predictions, "last_predictions": self.last_predictions,
                "finished": self.finished}

    def state_dict(self) -> dict:
        rng = {"torch": torch.get_rng_state()}
        if torch.cuda.is_available():
            rng["cuda"] = torch.cuda.get_rng_state_all()
        return {**self.result_state(), "rng": rng}

    def load_state_dict(self, state: dict) -> None:
        self.history, self.best_epoch = state["history"], state["best_epoch"]
        self.best_predictions, self.last_predictions = state["best_predictions"], state["last_predictions"]
        self.finished = state["finished"]
        # Dropout draws from the global RNG: continue exactly where the interrupted run stopped.
        torch.set_rng_state(state["rng"]["torch"])
        if "cuda" in state["rng"] and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["rng"]["cuda"])


def summarise(history: pl.DataFrame, early_stop_epoch: int) -> dict[str, float]:
    """Every non-timing metric at EARLY_STOP and at CONVERGENCE, the two epochs, and the fitting speed."""
    convergence_epoch = int(history["epoch"].max())
    summary: dict[str, float] = {"early_stop/epoch": float(early_stop_epoch),
                                 "convergence/epoch": float(convergence_epoch)}
    names = [c for c in history.columns if c != "epoch" and not c.startswith("time/")]
    for label, epoch in (("early_stop", early_stop_epoch), ("convergence", convergence_epoch)):
        row = history.filter(pl.col("epoch") == epoch).row(0, named=True)
        summary.update({f"{label}/{name}": float(row[name]) for name in names if row[name] is not None})
    for name, epochs in fitting_speed(history).items():
        summary[name] = float("nan") if epochs is None else float(epochs)
    if "train/optimizer_steps" in history.columns:  # every epoch takes the same number of steps
        total = float(history.filter(pl.col("epoch") == convergence_epoch)["train/optimizer_steps"][0])
        summary["train/optimizer_steps"] = total
        summary["train/steps_per_epoch"] = total / convergence_epoch
    return summary
