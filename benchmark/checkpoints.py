"""What a fine-tuning run keeps on disk, and how it is written, checked and exported (``benchmark.train`` uses it).

A run directory holds, besides ``train_config.json``:

- ``best.ckpt``: the weights at EARLY_STOP (the best dev epoch so far), weights only; with LoRA the adapter only.
- ``convergence.ckpt``: the weights at CONVERGENCE (the last epoch), likewise, written when the run finishes.
- ``last.ckpt``: everything needed to resume (weights, optimizer and scheduler state, loop position, history, RNG
  state), one of it, rewritten every ``checkpoint_every`` epochs and removed once the run has finished: the
  optimizer state (two float32 moments per trained weight) is kept only while a resume may need it.
- ``state.json``: the finished run's history, EARLY_STOP epoch and test predictions (what ``fine_tune`` returns).

On one rank or under DDP each checkpoint is one file (``torch.save``, loadable with ``weights_only=True``), written
by rank 0 and hashed while it is written (``benchmark.cache.save_torch``; the checksum in ``<name>.sha256``).
Under FSDP each is a folder written with ``torch.distributed.checkpoint``: every rank writes its own shard, hashes
the files it wrote, and rank 0 records all of them in the folder's ``checksums.json``; no rank ever holds the whole
model. Either kind is replaced atomically (a kill leaves the previous checkpoint or the new one, never half of one).

``export`` turns a run's EARLY_STOP or CONVERGENCE weights into a folder that loads without this benchmark: a
``save_pretrained`` model folder (full fine-tuning) or a peft adapter folder (LoRA), with the tokenizer.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
from pathlib import Path

import torch

from benchmark.cache import (
    _entry,
    atomic_write_bytes,
    record_checksum,
    remove_with_checksum,
    save_torch,
    verify_checksums,
    verify_file,
    write_checksums,
)
from benchmark.errors import BenchmarkError
from benchmark.hashing import HashingWriter

LAST, BEST, CONVERGENCE, STATE = "last.ckpt", "best.ckpt", "convergence.ckpt", "state.json"
WEIGHTS = {"early_stop": BEST, "convergence": CONVERGENCE}
META = "meta.json"  # in a sharded weights folder: the epoch and what the folder holds


# ---------------------------------------------------------------------------------------------------------------
# Checking and replacing
# ---------------------------------------------------------------------------------------------------------------
def problem(path: Path) -> str | None:
    """Why the checkpoint at ``path`` (a file or a sharded folder) cannot be trusted, or None."""
    path = Path(path)
    if path.is_dir():
        bad = verify_checksums(path)
        return bad[0] if bad else None
    return verify_file(path)


def remove(path: Path) -> None:
    path = Path(path)
    if path.is_dir():
        shutil.rmtree(path, ignore_errors=True)
    remove_with_checksum(path)


def recover(path: Path) -> None:
    """A kill between the two renames of ``replace_folder`` leaves the old folder aside: put it back."""
    aside = _aside(path)
    if not path.exists() and aside.exists():
        os.replace(aside, path)
    elif aside.exists():
        shutil.rmtree(aside, ignore_errors=True)


def _aside(path: Path) -> Path:
    return path.with_name(f".{path.name}.previous")


def replace_folder(new: Path, final: Path) -> None:
    """``new`` becomes ``final``; the folder it replaces is removed only once ``new`` is in place."""
    if final.is_file():
        remove(final)
    if final.exists():
        os.replace(final, _aside(final))
    os.replace(new, final)
    shutil.rmtree(_aside(final), ignore_errors=True)


def temporary(path: Path) -> Path:
    """The temporary name every rank of one run writes a sharded checkpoint under (they must agree on it)."""
    return path.with_name(f".{path.name}.tmp")


def private_temporary(path: Path) -> Path:
    """A temporary name only this process writes to (host and pid in it): two processes that write the same run
    directory (two stores sharing a cache, a lock taken over from a frozen holder) never remove or rename each
    other's half-written file."""
    return path.with_name(f".{path.name}.tmp.{socket.gethostname()}.{os.getpid()}")


# ---------------------------------------------------------------------------------------------------------------
# Writing
# ---------------------------------------------------------------------------------------------------------------
def shard_entries(folder: Path, rank: int) -> dict[str, dict]:
    """Checksums of the files of a ``torch.distributed.checkpoint`` folder that ``rank`` wrote (``__<rank>_*``),
    and, on rank 0, of the files besides the shards (the metadata). Each rank hashes its own shard, in parallel,
    right after writing it."""
    entries = {}
    for path in sorted(folder.iterdir()):
        if not path.is_file() or path.name.startswith(".") and path.name != ".metadata":
            continue
        ours = path.name.startswith(f"__{rank}_") if path.name.startswith("__") else rank == 0
        if ours:
            entries[path.name] = _entry(path)
    return entries


def finish_sharded(folder: Path, final: Path, ranks, *, meta: dict | None = None) -> None:
    """After every rank wrote its part of ``folder``: gather the checksums, record them, move it into place."""
    entries = {}
    for part in ranks.gather(shard_entries(folder, ranks.rank)):
        entries.update(part)
    if ranks.rank == 0:
        if meta is not None:
            (folder / META).write_text(json.dumps(meta))
        write_checksums(folder, known=entries)
        replace_folder(folder, final)


def save_weights(state_dict: dict, path: Path, *, epoch: int, trainable_only: bool, ranks, sharded: bool) -> None:
    """Weights only: ``state_dict`` (this rank's shards under FSDP), as Lightning names them (``model.<name>``).
    ``epoch`` counts from 1; it is stored as Lightning does, from 0."""
    meta = {"epoch": epoch - 1, "trainable_only": trainable_only}
    if not sharded:
        if ranks.rank == 0:
            save_torch({"state_dict": {k: v.detach().cpu() for k, v in state_dict.items()}, **meta}, path)
        return
    import torch.distributed.checkpoint as dcp

    tmp = temporary(path)
    if ranks.rank == 0:
        shutil.rmtree(tmp, ignore_errors=True)
    ranks.gather(None)  # nobody writes before the old temporary folder is gone
    dcp.save({"state_dict": state_dict}, checkpoint_id=tmp)
    finish_sharded(tmp, path, ranks, meta=meta)


def commit(tmp: Path, final: Path, entry: dict) -> None:
    """A checkpoint file written (and hashed) at ``tmp`` becomes ``final``, its checksum recorded first."""
    record_checksum(final, tmp, entry=entry)
    os.replace(tmp, final)


def streaming_checkpoint_io():
    """Lightning's checkpoint writer, streaming ``torch.save`` into the file and hashing it on the way (Lightning's
    own first serialises the whole checkpoint into memory). ``written[path]`` is then the file's checksum entry."""
    from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO

    class StreamingCheckpointIO(TorchCheckpointIO):
        def __init__(self):
            super().__init__()
            self.written: dict[str, dict] = {}

        def save_checkpoint(self, checkpoint, path, storage_options=None) -> None:
            path = Path(path)
            path.parent.mkdir(parents=True, exist_ok=True)
            with HashingWriter(path) as out:
                torch.save(checkpoint, out)
            self.written[str(path)] = _entry(path, out.digest.hexdigest())

    return StreamingCheckpointIO()


def write_state(run_dir: Path, state: dict) -> None:
    """``state.json`` with its checksum beside it (small: hashed as usual)."""
    path = run_dir / STATE
    tmp = private_temporary(path)
    atomic_write_bytes(tmp, json.dumps(state).encode())
    record_checksum(path, tmp)
    os.replace(tmp, path)


def read_state(run_dir: Path) -> dict | None:
    path = run_dir / STATE
    return json.loads(path.read_text()) if path.is_file() else None


# ---------------------------------------------------------------------------------------------------------------
# Reading
# ---------------------------------------------------------------------------------------------------------------
def resume_state(checkpoint: Path) -> dict:
    """The ``EpochEnd`` state inside a resumable checkpoint (a file, or a sharded folder's ``meta.pt``)."""
    checkpoint = Path(checkpoint)
    file = checkpoint / "meta.pt" if checkpoint.is_dir() else checkpoint
    return torch.load(file, map_location="cpu", weights_only=True, mmap=not checkpoint.is_dir())["callbacks"]["EpochEnd"]


def load_weights(path: Path) -> tuple[dict[str, torch.Tensor], dict]:
    """A weights checkpoint as a plain state dict on the CPU (``model.<name>`` keys) and its metadata. A sharded
    folder is read whole, without a process group (``dcp_to_torch_save`` into a temporary file)."""
    path = Path(path)
    if not path.is_dir():
        saved = torch.load(path, map_location="cpu", weights_only=True)
        return saved["state_dict"], {k: v for k, v in saved.items() if k != "state_dict"}
    from torch.distributed.checkpoint.format_utils import dcp_to_torch_save

    flat = path.with_name(f".{path.name}.flat.pt")
    try:
        dcp_to_torch_save(path, flat)
        saved = torch.load(flat, map_location="cpu", weights_only=True)
    finally:
        flat.unlink(missing_ok=True)
    meta = json.loads((path / META).read_text()) if (path / META).is_file() else {}
    return saved["state_dict"], meta


# ---------------------------------------------------------------------------------------------------------------
# Export
# ---------------------------------------------------------------------------------------------------------------
def export(run_dir: Path, which: str, out: Path, base) -> Path:
    """The run's ``which`` (early_stop or convergence) weights as a folder that loads without this benchmark:
    ``save_pretrained`` of the whole model (full fine-tuning) or of the peft adapter (LoRA), with the tokenizer.
    ``base`` is the base model (``LoadedModel``) the run started from; it is changed (the weights are loaded in)."""
    if which not in WEIGHTS:
        raise BenchmarkError(f"export: checkpoint must be one of {', '.join(WEIGHTS)}, not '{which}'")
    run_dir, out = Path(run_dir), Path(out)
    path = run_dir / WEIGHTS[which]
    if not path.exists():
        raise BenchmarkError(f"{path}: no {which} checkpoint (has the run finished?)")
    if (why := problem(path)) is not None:
        raise BenchmarkError(f"{path}: damaged ({why}); not exported")
    settings = json.loads((run_dir / "train_config.json").read_text())
    if settings.get("model") != base.identity:
        raise BenchmarkError(f"{run_dir}: was trained from {settings.get('model')}, not {base.identity}")
    weights, _ = load_weights(path)
    weights = {k.removeprefix("model."): v for k, v in weights.items()}
    network = base.model
    if settings["train"]["method"] == "lora":
        from benchmark.train import add_lora
        from benchmark.train.config import TrainConfig

        network = add_lora(network, TrainConfig.model_validate(settings["train"]))
    missing, unexpected = network.load_state_dict(weights, strict=False)
    trained_only = settings["train"]["method"] == "lora"
    if unexpected or (missing and not trained_only):
        raise BenchmarkError(f"{path}: does not fit the base model (missing {missing[:3]}, unexpected "
                             f"{unexpected[:3]})")
    from components.hf_causal_lm import quiet_loading

    out.mkdir(parents=True, exist_ok=True)
    with quiet_loading():  # no progress bars
        network.save_pretrained(out)
        base.tokenizer.save_pretrained(out)
    (out / "slick_bench.json").write_text(json.dumps({"checkpoint": which, "run_dir": str(run_dir), **settings},
                                                     indent=2))
    return out
