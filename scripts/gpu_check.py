"""The checks only a GPU can answer, in one short run (``scripts/gpu_check.sh`` installs what is missing and calls
this). Each check prints one JSON line; the exit code is the number of failed checks (0: all passed).

    GPU_CHECK_DEVICE=cuda python scripts/gpu_check.py     # the default: every GPU this process sees
    GPU_CHECK_DEVICE=cpu  python scripts/gpu_check.py     # the same checks, smaller, on 2 CPU ranks (gloo)

1. ``launch``: one variant through ``fine_tune``'s own launch path (``benchmark.launch``: rank processes), FSDP2
   with bf16-mixed precision, on one GPU (and on two when there are two): it finishes, its loss falls, its
   checkpoints are sharded and its resume state is gone.
2. ``master_weights``: one AdamW step at lr 1e-5 on weights ~N(0, 0.02) loaded in bfloat16, on the device: with
   float32 master weights (``benchmark.parallel.master_weights``) every weight moves by ~1e-5; in bfloat16 alone
   most do not move.
3. ``evaluation_and_checkpoint``: a Llama-architecture model of ~0.7B parameters built from a config (no
   download): one evaluation epoch (``benchmark.evaluate.evaluate_epoch``, bfloat16) and one weights checkpoint
   (``benchmark.checkpoints.save_weights``), timed.
4. ``slick_engine``: SliCK's engine on the device against the naive reference (one ``generate()`` per question and
   prompt) on a few hundred questions of the test-size world, with its model pretrained here: identical greedy
   answers, and categories that agree.

Nothing is downloaded: models are built from configs, the world is generated and its model pretrained locally.
The cache goes to ``$SLICK_BENCH_CACHE`` (default: a temporary folder).
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
import traceback
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
os.environ.setdefault("SLICK_BENCH_CACHE", tempfile.mkdtemp(prefix="gpu-check-cache-"))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import benchmark  # noqa: E402,F401  (first: pins the CPU numerics before torch is imported)

DEVICE = os.environ.get("GPU_CHECK_DEVICE", "cuda")
ON_GPU = DEVICE == "cuda"
results: list[dict] = []


def report(name: str, ok: bool, **figures) -> None:
    line = {"check": name, "ok": bool(ok), "device": DEVICE, **figures}
    results.append(line)
    print(json.dumps(line, default=str), flush=True)


def check(function):
    def run():
        started = time.monotonic()
        try:
            function()
        except Exception as exc:  # noqa: BLE001 - a check that raises failed; the others still run
            report(function.__name__, False, error=f"{type(exc).__name__}: {exc}",
                   traceback=traceback.format_exc(limit=8), seconds=round(time.monotonic() - started, 1))
    return run


def world_tables(limit: int):
    """Question tables from the test-size world (generated here), with made-up categories for fine-tuning."""
    import polars as pl

    from benchmark.registry import Registry

    questions = Registry().dataset("world-test").questions().sort("qid")
    categories = ["HighlyKnown", "MaybeKnown", "WeaklyKnown", "Unknown"]
    ind = questions.filter(~pl.col("ood"))

    def split(name: str, n: int):
        table = ind.filter(pl.col("split") == name).head(n)
        return table.with_columns(pl.Series("category", [categories[i % 4] for i in range(table.height)]))

    return questions, split("train", limit), split("dev", limit // 4), split("test", limit // 2)


def world_tokenizer(questions):
    from benchmark.prompts import completion, finetune_prompt
    from components.world.tokenizer import build_tokenizer

    return build_tokenizer([finetune_prompt(q) + completion(a) for q, a in questions.select("question", "answer").rows()])


def gpus() -> int:
    import torch

    return torch.cuda.device_count() if ON_GPU else 2


@check
def launch():
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    from benchmark import checkpoints
    from benchmark.train import fine_tune
    from benchmark.train.config import TrainConfig
    from components.base import LoadedModel

    questions, train, dev, test = world_tables(192 if ON_GPU else 48)
    tokenizer = world_tokenizer(questions)
    torch.manual_seed(0)
    config = GPT2Config(vocab_size=len(tokenizer), n_positions=128, n_embd=256, n_layer=4, n_head=4,
                        bos_token_id=tokenizer.eos_token_id, eos_token_id=tokenizer.eos_token_id,
                        pad_token_id=tokenizer.pad_token_id)
    model = LoadedModel("gpu-check-gpt2", GPT2LMHeadModel(config).eval(), tokenizer, "gpu-check-gpt2:0")
    layouts = [1, 2] if gpus() >= 2 else [1]
    for ranks in layouts:
        started = time.monotonic()
        settings = TrainConfig(epochs=2, lr=1e-3, batch_size=8, warmup_ratio=0.0, strategy="fsdp", devices=ranks,
                               accelerator="gpu" if ON_GPU else "cpu", precision="bf16-mixed", eval_batch_size=64)
        run_dir = Path(tempfile.mkdtemp(prefix=f"gpu-check-launch-{ranks}-"))
        result = fine_tune(model, train, dev, test, settings, run_dir)
        losses = result.history["train/loss"].to_list()
        ok = (len(losses) == 2 and losses[1] < losses[0] and result.convergence_checkpoint.is_dir()
              and checkpoints.problem(result.convergence_checkpoint) is None
              and not (run_dir / checkpoints.LAST).exists())
        report(f"launch_fsdp_{ranks}_rank", ok, ranks=ranks, losses=losses,
               dev=result.history["dev/acc/all"].to_list(), seconds=round(time.monotonic() - started, 1))


@check
def master_weights():
    import torch

    from benchmark.parallel import master_weights as keep_master
    from benchmark.train import make_optimizer
    from benchmark.train.config import TrainConfig

    device = "cuda" if ON_GPU else "cpu"
    figures = {}
    for label, master in (("bf16_alone", False), ("fp32_master", True)):
        torch.manual_seed(0)
        layer = torch.nn.Linear(2048, 2048, bias=False)
        torch.nn.init.normal_(layer.weight, std=0.02)
        layer.to(device=device, dtype=torch.bfloat16)
        start = layer.weight.detach().float().clone()
        if master:
            keep_master(layer)
        optimizer, _ = make_optimizer(layer, TrainConfig(lr=1e-5, weight_decay=0.0), total_steps=1)
        x = torch.randn(256, 2048, device=device, dtype=torch.bfloat16)
        with torch.autocast(device, dtype=torch.bfloat16):
            loss = layer(x).float().pow(2).mean()
        loss.backward()
        optimizer.step()
        moved = (layer.weight.detach().float() - start).abs()
        figures[label] = {"changed": round((moved > 0).float().mean().item(), 4),
                          "mean_update": float(moved.mean().item())}
    ok = (figures["fp32_master"]["changed"] > 0.99 and abs(figures["fp32_master"]["mean_update"] - 1e-5) < 1e-6
          and figures["bf16_alone"]["changed"] < 0.5)
    report("master_weights", ok, lr=1e-5, **figures)


@check
def evaluation_and_checkpoint():
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from benchmark import checkpoints
    from benchmark.evaluate import EvaluationSets, evaluate_epoch
    from benchmark.parallel import ALONE

    questions, train, dev, test = world_tables(2000 if ON_GPU else 64)
    tokenizer = world_tokenizer(questions)
    size = (dict(hidden_size=1536, intermediate_size=4096, num_hidden_layers=24, num_attention_heads=12,
                 num_key_value_heads=4) if ON_GPU else
            dict(hidden_size=256, intermediate_size=768, num_hidden_layers=4, num_attention_heads=4,
                 num_key_value_heads=2))
    config = LlamaConfig(vocab_size=len(tokenizer), max_position_embeddings=256, bos_token_id=tokenizer.eos_token_id,
                         eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id, **size)
    device = "cuda" if ON_GPU else "cpu"
    torch.manual_seed(0)
    model = LlamaForCausalLM(config).to(device).eval()
    parameters = sum(p.numel() for p in model.parameters())
    sets = EvaluationSets(train, dev, test)
    if ON_GPU:
        torch.cuda.synchronize()
    started = time.monotonic()
    with torch.no_grad(), torch.autocast(device, dtype=torch.bfloat16):
        result = evaluate_epoch(model, tokenizer, sets, batch_size=256 if ON_GPU else 32)
    if ON_GPU:
        torch.cuda.synchronize()
    evaluation = time.monotonic() - started
    questions_scored = train.height + dev.height + test.height
    folder = Path(tempfile.mkdtemp(prefix="gpu-check-weights-"))
    started = time.monotonic()
    state = {f"model.{k}": v for k, v in model.state_dict().items()}
    checkpoints.save_weights(state, folder / checkpoints.BEST, epoch=1, trainable_only=False, ranks=ALONE,
                             sharded=False)
    saving = time.monotonic() - started
    written = (folder / checkpoints.BEST).stat().st_size
    ok = bool(result.metrics) and len(result.test_predictions) == test.height \
        and checkpoints.problem(folder / checkpoints.BEST) is None
    report("evaluation_and_checkpoint", ok, parameters=parameters, questions=questions_scored,
           evaluation_seconds=round(evaluation, 2), questions_per_second=round(questions_scored / evaluation, 1),
           checkpoint_gb=round(written / 1e9, 3), checkpoint_seconds=round(saving, 2),
           checkpoint_gb_per_s=round(written / 1e9 / saving, 2))


@check
def slick_engine():
    import polars as pl

    from benchmark.backends.engine import open_engine
    from benchmark.backends.naive import NaiveBackend
    from benchmark.registry import Registry
    from benchmark.slick import SliCKConfig, categorize_questions, locate_in

    component = Registry().model("toy-gpt-test")
    source = component.source()
    started = time.monotonic()
    loaded = component.load(device="cuda" if ON_GPU else "cpu")  # pretrained here first (CPU, ~20 s)
    pretrain = time.monotonic() - started
    questions = source.questions()
    train = questions.filter(pl.col("split") == "train").sort("qid")
    chosen = train.head(300 if ON_GPU else 40)["qid"].to_list()
    table = questions.filter(pl.col("split") != "train").vstack(train.filter(pl.col("qid").is_in(chosen)))
    config = SliCKConfig(splits=["train"], p_true=False)
    timings = {}
    tables = {}
    for name, backend in (("engine", open_engine(loaded, config, 0)), ("naive", NaiveBackend(loaded, 0))):
        started = time.monotonic()
        tables[name] = categorize_questions(loaded, table, config, backend=backend, locate=locate_in(source))
        timings[name] = time.monotonic() - started
    engine, naive = tables["engine"].sort("qid"), tables["naive"].sort("qid")
    same_greedy = (engine["greedy_answers"] == naive["greedy_answers"]).mean()
    agreement = (engine["category"] == naive["category"]).mean()
    report("slick_engine", same_greedy == 1.0 and agreement >= 0.9, questions=engine.height,
           greedy_identical=float(same_greedy), category_agreement=float(agreement),
           engine_seconds=round(timings["engine"], 1), naive_seconds=round(timings["naive"], 1),
           speedup=round(timings["naive"] / timings["engine"], 1), pretrain_seconds=round(pretrain, 1))


def main() -> int:
    import torch

    if ON_GPU and not torch.cuda.is_available():
        report("cuda", False, error="GPU_CHECK_DEVICE=cuda but torch.cuda.is_available() is False")
        return 1
    report("environment", True, torch=torch.__version__, gpus=torch.cuda.device_count() if ON_GPU else 0,
           gpu_name=torch.cuda.get_device_name(0) if ON_GPU else "cpu", python=sys.version.split()[0])
    if not ON_GPU:
        torch.set_num_threads(1)
    for run in (master_weights, launch, evaluation_and_checkpoint, slick_engine):
        run()
    failed = [r["check"] for r in results if not r["ok"]]
    print(json.dumps({"check": "summary", "ok": not failed, "failed": failed}), flush=True)
    return len(failed)


if __name__ == "__main__":
    raise SystemExit(main())
