"""The suite's ``train:`` section: every fine-tuning setting, typed and documented (no torch or Lightning import,
so ``validate`` and ``categorize`` stay fast)."""

from __future__ import annotations

import math
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

# Settings that change how a run is laid out or how fast it goes, not what it computes: left out of every key and
# fingerprint (a resumed run may change them). The layout (devices, nodes, strategy) enters ``result_settings`` as
# what it does to the optimizer steps, and by itself only where it changes the numbers (see there).
RUNTIME_ONLY_FIELDS = {"eval_batch_size", "devices", "num_nodes", "strategy", "checkpoint_every"}


class TrainConfig(BaseModel):
    """The suite's ``train:`` section. Defaults suit the embedded world on a laptop CPU. Measured on toy-gpt, 200
    examples (50% Unknown), batch 16: lr 1e-4 peaked higher (test 0.29 at epoch 2) and separated the fitting
    speeds more (50% of Known fitted at epoch 1, of Unknown at epoch 10) than the prototype's 3e-4 (0.23 at epoch 1;
    Unknown at epoch 6, then test accuracy collapsed to 0.02); by epoch 20 at 1e-4, 97% of Unknown is fitted, so
    30 epochs reach CONVERGENCE. The paper's setting for PaLM 2: 50 epochs, lr 1e-5, batch 128."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)  # an infinite lr or NaN decay is a typo

    epochs: int = Field(30, ge=1, description="passes over the fine-tuning set; CONVERGENCE is the last one")
    lr: float = Field(1e-4, gt=0, description="peak learning rate of AdamW")
    batch_size: int = Field(16, ge=1, description="examples per optimizer step per device (before accumulation)")
    accumulate_grad_batches: int = Field(1, ge=1, description="batches whose gradients are summed per step")
    weight_decay: float = Field(0.0, ge=0, description="AdamW weight decay on matrices (not on biases or norms)")
    warmup_ratio: float = Field(0.03, ge=0, lt=1, description="fraction of all optimizer steps with linear warmup from 0")
    lr_schedule: Literal["constant", "linear", "cosine"] = Field(
        "constant", description="after warmup: constant, or decay to 0 at the last step (linear or cosine)")
    gradient_clip: float | None = Field(1.0, gt=0, description="clip the gradient norm to this; null = no clipping")
    dropout: float | None = Field(0.05, ge=0, lt=1, description="dropout written into the model's dropout fields and "
                                  "layers (paper: 0.05); null keeps the model's own")
    length_grouping: int = Field(8, ge=1, description="batches drawn from each length-sorted pool of this many "
                                 "batches: 1 = plain random batches, larger = less padding")
    examples_per_epoch: int | None = Field(
        None, ge=1, description="example slots drawn per epoch: null = the set's own size (one pass). Larger than "
        "the set, each epoch covers every example and draws the rest from a fixed seeded cycle over the set, so "
        "every example is seen equally often (within one) over the run. The pipeline sets it to |D| for D_Known "
        "(mixtures.known_only_steps: matched), so D_Known takes the optimizer steps and learning-rate schedule of "
        "its D")
    method: Literal["full", "lora"] = Field("full", description="full fine-tuning (the paper) or LoRA adapters (peft)")
    lora_r: int = Field(8, ge=1, description="LoRA rank")
    lora_alpha: int = Field(16, ge=1, description="LoRA scaling numerator (scale = alpha / r)")
    lora_dropout: float = Field(0.05, ge=0, lt=1, description="dropout on the LoRA branch")
    lora_target_modules: list[str] | None = Field(
        None, description="module names that get adapters; null = peft's default for the architecture")
    precision: Literal["32-true", "bf16-mixed", "16-mixed"] = Field(
        "32-true", description="32-true: float32 throughout (on CPU exact and resumable bit for bit); bf16-mixed (GPU): "
        "bfloat16 compute, float32 master weights and gradient reduction; 16-mixed: float16 autocast with loss "
        "scaling. Trained weights are always kept in float32, whatever dtype the model was loaded in")
    strategy: Literal["auto", "ddp", "fsdp"] = Field(
        "auto", description="how several devices share a variant: ddp (or auto on several devices) keeps the whole "
                            "model on each; fsdp shards weights, gradients and optimizer state over them (FSDP2; what "
                            "a full fine-tune of an 8B model needs). The benchmark starts one process per device "
                            "itself (benchmark/launch.py); batch_size is per device, so n devices take the optimizer "
                            "steps of accumulate_grad_batches n on one")
    accelerator: Literal["auto", "cpu", "gpu"] = Field("auto", description="where to train")
    devices: int = Field(1, ge=1, description="devices (processes) per node for each variant")
    num_nodes: int = Field(1, ge=1, description="machines per variant (more than 1: inside a SLURM allocation, "
                                                "whose srun starts the ranks)")
    checkpoint_every: int = Field(1, ge=1, description="epochs between resumable checkpoints (weights and optimizer "
                                  "state, one kept, removed when the variant finishes); a kill loses at most this "
                                  "many epochs. The weights at EARLY_STOP and CONVERGENCE are kept in any case")
    seed: int = Field(0, ge=0, le=2**32 - 1, description="seeds batch order, dropout and LoRA initialisation")
    eval_batch_size: int = Field(64, ge=1, description="prompts per batch in the per-epoch evaluation (64 was fastest on CPU)")
    idk_answer: str | None = Field(None, min_length=1, description="the IDK relabelling answer (e.g. \"I don't "
                                   "know\"); adds test/answered_fraction and test/acc_answered")

    @field_validator("precision", mode="before")
    @classmethod
    def _no_low_precision_master(cls, value):
        if value in ("bf16-true", "16-true"):
            raise ValueError(f"'{value}' would train {value[:-5]} weights with no float32 copy: an AdamW step of 1e-5 "
                             "on a weight of 0.02 is below half its rounding step, so most updates are lost; use "
                             "bf16-mixed (bfloat16 compute, float32 master weights)")
        return value

    @field_validator("strategy", mode="before")
    @classmethod
    def _no_deepspeed(cls, value):
        if value == "deepspeed":
            raise ValueError("deepspeed is not offered: use fsdp (FSDP2 shards weights, gradients and optimizer "
                             "state over the devices, as DeepSpeed ZeRO-3 does)")
        return value

    @model_validator(mode="after")
    def _sharded_precision(self) -> TrainConfig:
        if self.strategy == "fsdp" and self.precision == "16-mixed":
            raise ValueError("strategy fsdp runs precision 32-true or bf16-mixed (float16 needs loss scaling, "
                             "which FSDP2 does not do here)")
        return self


def result_settings(config: TrainConfig, examples: int) -> dict:
    """The training settings a run's results depend on, for keys and fingerprints (``examples``: the train set's
    size). The layout enters only through what it does:

    - n ranks of batch B with accumulation a take the optimizer steps of one process with batch B and
      accumulation n·a (rank r takes batches r, r + n, ...; gradients are averaged as accumulation averages them),
      so ``micro_batches_per_step`` = n·a replaces devices, nodes and accumulation. Tested: equal weights on 1 and
      2 DDP ranks, and on 1 and 2 FSDP ranks up to float summation order (FSDP2 reduces in another order).
    - The ranks count by themselves where that equality fails: when the epoch's batches do not divide by n (the
      ranks drop the tail a single process would train on), and with dropout (each rank draws its own masks).
    - With reduced precision the strategy counts too: under FSDP the weights are cast to bfloat16 where under
      DDP autocast chooses per operation.
    """
    ranks = config.devices * config.num_nodes
    settings = config.model_dump(mode="json", exclude=RUNTIME_ONLY_FIELDS | {"accumulate_grad_batches"})
    settings["micro_batches_per_step"] = config.accumulate_grad_batches * ranks
    batches = math.ceil((config.examples_per_epoch or examples) / config.batch_size)
    dropout = bool(config.dropout) or (config.method == "lora" and config.lora_dropout > 0)
    if ranks > 1 and (batches % ranks or dropout):
        settings["ranks"] = ranks
    if config.precision != "32-true":
        settings["sharded"] = config.strategy == "fsdp"
    return settings
