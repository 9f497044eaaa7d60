"""The suite's ``train:`` section: every fine-tuning setting, typed and documented (no torch or Lightning import,
so ``validate`` and ``categorize`` stay fast)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

# Settings that change how fast evaluation runs but not what training does; a resumed run may change them.
RUNTIME_ONLY_FIELDS = {"eval_batch_size"}


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
    precision: Literal["32-true", "bf16-mixed", "16-mixed", "bf16-true"] = Field(
        "32-true", description="Lightning precision: 32-true on CPU (exact, resumable bit for bit), bf16-mixed on GPU")
    strategy: Literal["auto", "ddp", "fsdp", "deepspeed"] = Field(
        "auto", description="Lightning distribution strategy. ddp (or auto on several devices) spawns one process per "
                            "device from the calling one (torchrun/srun ranks are joined instead); batch_size is per "
                            "device, so n devices equal accumulate_grad_batches n on one (benchmark/train.py). fsdp "
                            "and deepspeed need a GPU and processes started by torchrun/srun")
    accelerator: Literal["auto", "cpu", "gpu"] = Field("auto", description="where to train")
    devices: int = Field(1, ge=1, description="devices per node")
    num_nodes: int = Field(1, ge=1, description="machines")
    seed: int = Field(0, ge=0, le=2**32 - 1, description="seeds batch order, dropout and LoRA initialisation")
    eval_batch_size: int = Field(64, ge=1, description="prompts per batch in the per-epoch evaluation (64 was fastest on CPU)")
    idk_answer: str | None = Field(None, min_length=1, description="the IDK relabelling answer (e.g. \"I don't "
                                   "know\"); adds test/answered_fraction and test/acc_answered")
