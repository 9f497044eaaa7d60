"""The model being fine-tuned: dropout and LoRA applied to it, AdamW with its learning-rate schedule, and the
Lightning module whose loss covers the completion only."""

from __future__ import annotations

import math
from dataclasses import dataclass

import lightning as L
import torch

from benchmark import parallel
from benchmark.errors import BenchmarkError
from benchmark.train.config import TrainConfig
from benchmark.train.data import IGNORE_INDEX

# Hugging Face config fields that hold a dropout probability (GPT-2, Llama/Qwen, BERT-style names).
DROPOUT_FIELDS = ("resid_pdrop", "embd_pdrop", "attn_pdrop", "dropout", "attention_dropout", "hidden_dropout",
                  "hidden_dropout_prob", "attention_probs_dropout_prob", "activation_dropout")


def apply_dropout(model: torch.nn.Module, p: float) -> None:
    """Set dropout to ``p`` in the HF config fields that exist and in the layers already built from them."""
    for name in DROPOUT_FIELDS:
        if isinstance(getattr(model.config, name, None), int | float):
            setattr(model.config, name, p)
    for module in model.modules():
        if isinstance(module, torch.nn.Dropout):
            module.p = p
        elif isinstance(getattr(module, "attention_dropout", None), float):  # Llama-style attention reads a float
            module.attention_dropout = p


def add_lora(model: torch.nn.Module, config: TrainConfig) -> torch.nn.Module:
    try:
        from peft import LoraConfig, get_peft_model
    except ImportError as exc:
        raise BenchmarkError("method: lora needs peft (pip install 'slick-bench[lora]')") from exc
    lora = LoraConfig(task_type="CAUSAL_LM", r=config.lora_r, lora_alpha=config.lora_alpha,
                      lora_dropout=config.lora_dropout, target_modules=config.lora_target_modules)
    try:
        return get_peft_model(model, lora)
    except ValueError as exc:
        raise BenchmarkError(f"lora_target_modules: {exc} (name the layers, e.g. [q_proj, v_proj])") from exc


@dataclass
class LrSchedule:
    """Multiplier of the peak learning rate at each optimizer step: linear warmup, then constant or decay."""

    warmup_steps: int
    total_steps: int
    kind: str = "constant"

    def __call__(self, step: int) -> float:
        if step < self.warmup_steps:
            return (step + 1) / (self.warmup_steps + 1)
        if self.kind == "constant":
            return 1.0
        progress = min(1.0, (step - self.warmup_steps) / max(1, self.total_steps - self.warmup_steps))
        return 1.0 - progress if self.kind == "linear" else 0.5 * (1.0 + math.cos(math.pi * progress))


def make_optimizer(model: torch.nn.Module, config: TrainConfig, total_steps: int):
    """AdamW (weight decay on matrices only) and the per-step learning-rate schedule."""
    trainable = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    groups = [{"params": [p for _, p in trainable if p.ndim >= 2], "weight_decay": config.weight_decay},
              {"params": [p for _, p in trainable if p.ndim < 2], "weight_decay": 0.0}]
    optimizer = torch.optim.AdamW([g for g in groups if g["params"]], lr=config.lr)
    schedule = LrSchedule(round(config.warmup_ratio * total_steps), total_steps, config.lr_schedule)
    return optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)


class FineTuneModule(L.LightningModule):
    """The model being fine-tuned. ``causal_lm`` is the HF model itself (with LoRA layers inside, if any)."""

    def __init__(self, model: torch.nn.Module, config: TrainConfig):
        super().__init__()
        self.model, self.config = model, config
        self.reset_epoch_totals()

    @property
    def causal_lm(self) -> torch.nn.Module:
        return self.model.get_base_model() if hasattr(self.model, "get_base_model") else self.model

    def reset_epoch_totals(self) -> None:
        self._loss_sum, self._target_tokens, self._input_tokens = 0.0, 0, 0

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        # HF shifts the labels and averages cross-entropy over the positions whose label is not -100:
        # exactly the completion tokens (answer + "\n").
        out = self.causal_lm(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                             position_ids=batch["position_ids"], labels=batch["labels"], use_cache=False)
        targets = (batch["labels"][:, 1:] != IGNORE_INDEX).sum()
        self._loss_sum = self._loss_sum + out.loss.detach() * targets
        self._target_tokens = self._target_tokens + targets
        self._input_tokens = self._input_tokens + batch["attention_mask"].sum()
        return out.loss

    def epoch_totals(self) -> tuple[float, int]:
        """Mean loss per completion token and input tokens seen this epoch, summed over every rank."""
        totals = torch.tensor([float(self._loss_sum), float(self._target_tokens), float(self._input_tokens)],
                              device=self.device)
        totals = self.trainer.strategy.reduce(totals, reduce_op="sum")
        loss_sum, targets, inputs = totals.tolist()
        return loss_sum / max(targets, 1.0), int(inputs)

    def configure_optimizers(self):
        optimizer, scheduler = make_optimizer(self.model, self.config, int(self.trainer.estimated_stepping_batches))
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    def configure_model(self) -> None:
        """Under FSDP: shard the causal LM over the ranks (Lightning calls this once the ranks have met)."""
        if parallel.sharded(self.config) and not parallel.fsdp_units(self.causal_lm):
            parallel.shard(self.causal_lm, self.device_mesh["data_parallel"], self.config)

    def weights(self) -> dict[str, torch.Tensor]:
        """What a weights-only checkpoint holds, named as Lightning names them (``model.<name>``): every weight,
        or with LoRA the trained ones (the adapter). Under FSDP, this rank's shards."""
        if parallel.sharded(self.config):
            from torch.distributed.checkpoint.state_dict import get_model_state_dict

            state = get_model_state_dict(self.model)
        else:
            state = self.model.state_dict()
        if self.config.method == "lora":
            trained = {name for name, p in self.model.named_parameters() if p.requires_grad}
            state = {k: v for k, v in state.items() if k in trained}
        return {f"model.{k}": v for k, v in state.items()}
