"""Pretrain the world's tiny GPT-2 on its corpus with Lightning on CPU, and save it as an ordinary HF model folder.

The recipe (validated by the prototype): word-level tokenizer over corpus + questions + prompt words;
documents shuffled every epoch, packed into blocks separated by EOS; 4 layers x 256, AdamW, lr 2e-3 with warmup
and cosine decay, batch 16 x 128 tokens, 6 epochs, float32 (bfloat16 autocast was 1.5x faster on CPU, but its
kernels round differently on each CPU's ISA path, so the world model, and everything after it, would differ from
machine to machine: benchmark.numerics). More epochs move *every* exposure bucket towards "known", so scale epochs
and exposures together.

Threads: ``benchmark.runtime.compute_threads`` (``SLICK_BENCH_THREADS``, else every core); the weights are the
same at any count (tested).

Normally reached through ``components.world.model.WorldModel.load`` (which caches the result); into a folder::

    SLICK_BENCH_THREADS=2 .venv/bin/python -m benchmark world pretrain --size test --out /tmp/toy-gpt-test
"""

from __future__ import annotations

import math
import random
import time
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from benchmark.runtime import compute_threads, quiet_lightning, torch_threads
from components.world.tokenizer import build_tokenizer

# Bump when this file changes what a given configuration trains, so cached models are rebuilt.


class PretrainConfig(BaseModel):
    """Model shape and training recipe; every field is part of the cached model's key."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    layers: int = Field(4, ge=1, description="transformer blocks")
    width: int = Field(256, ge=8, description="hidden size (n_embd)")
    heads: int = Field(4, ge=1, description="attention heads")
    context: int = Field(128, ge=16, description="tokens per training block and the model's maximum length")
    dropout: float = Field(0.0, ge=0, lt=1, description="dropout in attention, residual and embeddings")
    epochs: float = Field(6.0, gt=0, description="passes over the corpus (fractions allowed)")
    batch_size: int = Field(16, ge=1, description="blocks per optimiser step")
    learning_rate: float = Field(2e-3, gt=0, description="peak AdamW learning rate")
    min_lr_ratio: float = Field(0.1, ge=0, le=1, description="final learning rate as a share of the peak (cosine)")
    warmup_steps: int = Field(50, ge=0, description="linear warm-up steps")
    weight_decay: float = Field(0.01, ge=0, description="AdamW weight decay")
    precision: Literal["bf16-mixed", "32-true"] = Field(
        "32-true", description="Lightning precision: 32-true gives the same weights at any thread count and "
                               "on the CPUs benchmark.numerics names; bf16-mixed is faster on CPUs with "
                               "AVX512-BF16/AMX, not reproducible")
    train_seed: int = Field(0, description="seed of initialisation and of the document order")




def pack_blocks(documents: list[list[int]], eos: int, context: int, epochs: float, seed: int):
    """Token blocks for every epoch: documents in a fresh seeded order each epoch, joined by EOS, cut into
    ``context``-token blocks (the last partial block of an epoch is dropped)."""
    import torch

    blocks = []
    for epoch in range(math.ceil(epochs)):
        order = list(range(len(documents)))
        random.Random(f"{seed}:{epoch}").shuffle(order)
        stream: list[int] = []
        for i in order:
            stream.extend(documents[i])
            stream.append(eos)
        whole = len(stream) // context
        epoch_blocks = torch.tensor(stream[:whole * context], dtype=torch.long).view(whole, context)
        if epoch + 1 > epochs:  # a fractional last epoch
            epoch_blocks = epoch_blocks[:round((epochs - epoch) * whole)]
        blocks.append(epoch_blocks)
    return torch.cat(blocks)


def _lightning_module(model, config: PretrainConfig, total_steps: int):
    import lightning as L
    import torch

    class CausalLMPretraining(L.LightningModule):
        def __init__(self):
            super().__init__()
            self.model = model
            self.losses: list[float] = []

        def training_step(self, batch, batch_idx):
            (ids,) = batch
            loss = self.model(input_ids=ids, labels=ids).loss
            self.losses.append(float(loss.detach()))
            return loss

        def configure_optimizers(self):
            decay = [p for n, p in self.model.named_parameters() if p.ndim >= 2]
            no_decay = [p for n, p in self.model.named_parameters() if p.ndim < 2]
            optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": config.weight_decay},
                                           {"params": no_decay, "weight_decay": 0.0}],
                                          lr=config.learning_rate, betas=(0.9, 0.95))

            def scale(step: int) -> float:
                if step < config.warmup_steps:
                    return (step + 1) / config.warmup_steps
                progress = min(1.0, (step - config.warmup_steps) / max(1, total_steps - config.warmup_steps))
                return config.min_lr_ratio + (1 - config.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))

            schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, scale)
            return {"optimizer": optimizer, "lr_scheduler": {"scheduler": schedule, "interval": "step"}}

    return CausalLMPretraining()


def pretrain(documents: list[str], vocabulary: list[str], config: PretrainConfig, out: Path, *,
             threads: int | None = None, progress: bool = False) -> dict:
    """Train a GPT-2 on ``documents`` and ``save_pretrained`` model and tokenizer into ``out``; returns statistics."""
    import lightning as L
    import torch
    from torch.utils.data import DataLoader, TensorDataset
    from transformers import GPT2Config, GPT2LMHeadModel

    from benchmark.thread_invariant import make_thread_invariant

    started = time.perf_counter()
    threads = threads or compute_threads()
    tokenizer = build_tokenizer(vocabulary)
    encoded = tokenizer(documents, add_special_tokens=False)["input_ids"]
    blocks = pack_blocks(encoded, tokenizer.eos_token_id, config.context, config.epochs, config.train_seed)
    total_steps = len(blocks) // config.batch_size
    if total_steps == 0:
        raise ValueError(f"corpus too small: {len(blocks)} blocks of {config.context} tokens for a batch of {config.batch_size}")

    torch.manual_seed(config.train_seed)
    model_config = GPT2Config(
        vocab_size=len(tokenizer), n_positions=config.context, n_embd=config.width, n_layer=config.layers,
        n_head=config.heads, resid_pdrop=config.dropout, embd_pdrop=config.dropout, attn_pdrop=config.dropout,
        bos_token_id=tokenizer.eos_token_id, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
    )
    model = make_thread_invariant(GPT2LMHeadModel(model_config))
    model.loss_type = "ForCausalLM"  # transformers infers it from the class name, which GPT2LMHeadModel does not match
    module = _lightning_module(model, config, total_steps)
    loader = DataLoader(TensorDataset(blocks), batch_size=config.batch_size, shuffle=False, drop_last=True)
    with torch_threads(threads), quiet_lightning():
        trainer = L.Trainer(accelerator="cpu", devices=1, precision=config.precision, max_epochs=1,
                            logger=False, enable_checkpointing=False, enable_model_summary=False,
                            enable_progress_bar=progress, gradient_clip_val=1.0, num_sanity_val_steps=0)
        fit_started = time.perf_counter()
        trainer.fit(module, loader)
        fit_seconds = time.perf_counter() - fit_started

    model = model.float().eval()
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    tail = module.losses[-50:]
    stats = {
        "parameters": sum(p.numel() for p in model.parameters()),
        "vocabulary": len(tokenizer),
        "corpus_tokens": sum(len(e) + 1 for e in encoded),
        "trained_tokens": total_steps * config.batch_size * config.context,
        "steps": total_steps,
        "threads": threads,
        "train_seconds": round(fit_seconds, 1),
        "total_seconds": round(time.perf_counter() - started, 1),
        "tokens_per_second": round(total_steps * config.batch_size * config.context / fit_seconds),
        "final_loss": round(sum(tail) / len(tail), 4),
    }
    return stats


def pretrain_into(out: Path, config: PretrainConfig, *, size: str = "default", seed: int = 0,
                  progress: bool = False) -> dict:
    """Pretrain the model of the world of ``size`` and ``seed`` into the folder ``out``, not the cache
    (``python -m benchmark world pretrain``); returns the statistics."""
    from benchmark.cache import atomic_dir
    from components.world.corpus import build_documents, vocabulary_texts
    from components.world.generate import WorldConfig, generate_world

    world = generate_world(WorldConfig.preset(size, seed=seed))  # type: ignore[arg-type]
    documents = build_documents(world)
    with atomic_dir(Path(out).resolve()) as tmp:
        return pretrain(documents, vocabulary_texts(world, documents), config, tmp, progress=progress)
