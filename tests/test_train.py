"""Fine-tuning with Lightning: loss mask, batching, EARLY_STOP, checkpoints, resume, fitting speed."""

from __future__ import annotations

import copy
import math
import random

import lightning as L
import polars as pl
import pytest
import torch

from benchmark.analyse.measures import epochs_to_fit, fitting_speed
from benchmark.errors import BenchmarkError
from benchmark.evaluate import answer_questions
from benchmark.numerics import set_threads
from benchmark.prompts import completion, finetune_prompt
from benchmark.runtime import quiet_lightning
from benchmark.train import (
    IGNORE_INDEX,
    Collate,
    FineTuneModule,
    LengthGroupedBatchSampler,
    QADataModule,
    TrainConfig,
    early_stop_epoch,
    encode_examples,
    fine_tune,
    make_trainer,
)
from tests.conftest import make_tiny_lm

FAST = {"lr": 1e-2, "batch_size": 8, "warmup_ratio": 0.0}


@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)


def qa_table(n_subjects: int = 30, seed: int = 0) -> pl.DataFrame:
    rng = random.Random(seed)
    rows = []
    for i in range(n_subjects):
        for relation, template, objects in (("P19", "Where was [X] born?", [f"Pla{j}" for j in range(12)]),
                                            ("P26", "Who is [X] married to?", [f"Nom{j}" for j in range(n_subjects)])):
            rows.append({"qid": f"test/{relation}/{i}", "relation": relation,
                         "question": template.replace("[X]", f"Nom{i}"), "answer": rng.choice(objects),
                         "category": ["HighlyKnown", "MaybeKnown", "Unknown"][i % 3], "ood": i % 5 == 0})
    return pl.DataFrame(rows)


@pytest.fixture
def world():
    table = qa_table()
    texts = [finetune_prompt(q) + completion(a) for q, a in table.select("question", "answer").rows()]
    lm = make_tiny_lm(texts, width=48)
    return lm, table[:24], table[24:36], table[36:]


def without_timings(history: pl.DataFrame) -> pl.DataFrame:
    return history.select([c for c in history.columns if not c.startswith("time/")])


# ---------------------------------------------------------------- data


def test_loss_mask_covers_exactly_the_answer_and_terminator(tiny_lm):
    tok = tiny_lm.tokenizer
    questions, answers = ["Where was Zorvik born?", "Who is Mira's child?"], ["Tarsk", "Olen Vell"]
    batch = Collate(tok.pad_token_id)(encode_examples(tok, questions, answers))
    labels, ids, mask = batch["labels"], batch["input_ids"], batch["attention_mask"]
    for row, (q, a) in enumerate(zip(questions, answers, strict=True)):
        supervised = labels[row][labels[row] != IGNORE_INDEX]
        # the word-level tokenizer: one token per answer word, then the newline; its decoder drops the lead space
        assert tok.decode(supervised) == f"{a}\n" and len(supervised) == len(a.split()) + 1
        assert supervised.tolist() == ids[row][labels[row] != IGNORE_INDEX].tolist()
        # everything before the completion (the prompt) and after it (padding) is ignored
        real = int(mask[row].sum())
        assert tok.decode(ids[row][:real][labels[row][:real] == IGNORE_INDEX]) == finetune_prompt(q)
        assert (labels[row][real:] == IGNORE_INDEX).all() and (ids[row][real:] == tok.pad_token_id).all()


def test_padded_batch_gives_the_same_logits_as_each_example_alone(tiny_lm):
    tok, model = tiny_lm.tokenizer, tiny_lm.model
    examples = encode_examples(tok, ["Where was Zorvik born?", "Who is Mira's child?"], ["Tarsk", "Olen"])
    batch = Collate(tok.pad_token_id)(examples)
    with torch.no_grad():
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                       position_ids=batch["position_ids"]).logits
        for row, (ids, _) in enumerate(examples):
            alone = model(input_ids=torch.tensor([ids])).logits[0]
            torch.testing.assert_close(logits[row, :len(ids)], alone, atol=1e-5, rtol=1e-5)


def test_length_grouped_batches_cover_everything_once_per_epoch():
    lengths = [random.Random(i).randint(5, 40) for i in range(100)]
    sampler = LengthGroupedBatchSampler(lengths, 8, seed=1, length_grouping=4)
    for epoch in (0, 1):
        batches = sampler.batches(epoch)
        assert sorted(i for b in batches for i in b) == list(range(100))
        assert len(batches) == len(sampler) == 13
    assert sampler.batches(0) == LengthGroupedBatchSampler(lengths, 8, seed=1, length_grouping=4).batches(0)
    assert sampler.batches(0) != sampler.batches(1)
    padding = sum(len(b) * max(lengths[i] for i in b) - sum(lengths[i] for i in b) for b in sampler.batches(0))
    unsorted = LengthGroupedBatchSampler(lengths, 8, seed=1, length_grouping=1).batches(0)
    padding_random = sum(len(b) * max(lengths[i] for i in b) - sum(lengths[i] for i in b) for b in unsorted)
    assert padding < padding_random / 2


def test_length_grouped_batches_are_split_between_ranks():
    lengths = list(range(50))
    ranks = [LengthGroupedBatchSampler(lengths, 4, seed=0, num_replicas=2, rank=r).batches(3) for r in (0, 1)]
    assert len(ranks[0]) == len(ranks[1]) == 6
    assert not {i for b in ranks[0] for i in b} & {i for b in ranks[1] for i in b}


def test_matched_slots_cover_every_example_each_epoch_and_equally_over_the_run():
    lengths = [random.Random(i).randint(5, 40) for i in range(30)]
    sampler = LengthGroupedBatchSampler(lengths, 8, seed=2, length_grouping=2, examples_per_epoch=71)
    assert len(sampler) == math.ceil(71 / 8) == 9  # the batches of a 71-example set
    counts = [0] * 30
    for epoch in range(30):
        batches = sampler.batches(epoch)
        drawn = [i for b in batches for i in b]
        assert len(batches) == 9 and len(drawn) == 71
        assert set(drawn) == set(range(30))  # two whole passes, then 11 more
        assert max(drawn.count(i) for i in range(30)) <= 3
        for i in drawn:
            counts[i] += 1
    assert max(counts) - min(counts) <= 1  # 30 epochs x 71 slots = 71 draws of each of the 30
    again = LengthGroupedBatchSampler(lengths, 8, seed=2, length_grouping=2, examples_per_epoch=71)
    assert [again.batches(e) for e in (0, 7)] == [sampler.batches(e) for e in (0, 7)]  # a function of (seed, epoch)
    assert sampler.batches(0) != sampler.batches(1)
    assert sampler.batches(0) != LengthGroupedBatchSampler(lengths, 8, seed=3, length_grouping=2,
                                                           examples_per_epoch=71).batches(0)
    # the set's own size is a plain epoch, batch for batch
    plain = LengthGroupedBatchSampler(lengths, 8, seed=2, length_grouping=2)
    assert LengthGroupedBatchSampler(lengths, 8, seed=2, length_grouping=2, examples_per_epoch=30).batches(4) == \
        plain.batches(4)
    # ranks share the matched epoch's batches without overlap, each taking the same number
    ranks = [LengthGroupedBatchSampler(lengths, 4, seed=0, num_replicas=2, rank=r, examples_per_epoch=50)
             for r in (0, 1)]
    assert [len(r) for r in ranks] == [len(r.batches(3)) for r in ranks] == [6, 6]
    whole = LengthGroupedBatchSampler(lengths, 4, seed=0, examples_per_epoch=50).batches(3)
    assert sorted(map(sorted, ranks[0].batches(3) + ranks[1].batches(3))) == sorted(map(sorted, whole[:12]))


class StepRecorder(L.Callback):
    """Every optimizer step the real Trainer takes, with the learning rate it took it at."""

    def __init__(self):
        self.lrs: list[float] = []
        self.steps = 0

    def on_before_optimizer_step(self, trainer, pl_module, optimizer):
        self.lrs.append(optimizer.param_groups[0]["lr"])
        self.steps += 1


def steps_and_lrs(lm, rows, config, tmp_path):
    recorder = StepRecorder()
    network = copy.deepcopy(lm.model).train()
    with quiet_lightning():
        trainer = make_trainer(config, [recorder], tmp_path)
        trainer.fit(FineTuneModule(network, config), datamodule=QADataModule(lm.tokenizer, rows, config))
    assert trainer.global_step == recorder.steps
    return recorder.steps, recorder.lrs


def test_d_known_matched_to_its_d_takes_the_same_steps_at_the_same_learning_rates(world, tmp_path):
    lm, train, _, _ = world
    unknown = train.filter(pl.col("category") == "Unknown")
    d = pl.concat([train.filter(pl.col("category") != "Unknown").head(unknown.height), unknown])  # D at 50%
    d_known = d.filter(pl.col("category") != "Unknown")
    assert (d.height, d_known.height) == (16, 8)
    config = TrainConfig(epochs=3, lr=1e-3, batch_size=3, warmup_ratio=0.2, lr_schedule="linear",
                         accumulate_grad_batches=2)
    d_steps, d_lrs = steps_and_lrs(lm, d, config, tmp_path / "d")
    matched_steps, matched_lrs = steps_and_lrs(lm, d_known, config.model_copy(update={"examples_per_epoch": 16}),
                                               tmp_path / "matched")
    own_steps, _ = steps_and_lrs(lm, d_known, config, tmp_path / "own")
    assert d_steps == 3 * math.ceil(math.ceil(16 / 3) / 2) == 9  # 6 batches an epoch, accumulated in pairs
    assert matched_steps == d_steps and matched_lrs == d_lrs  # warmup, decay to 0: step for step the same
    assert len(set(d_lrs)) >= 6 and d_lrs[-1] < d_lrs[len(d_lrs) // 2]
    assert own_steps == 3 * 2 < d_steps  # the paper's D_Known: one pass over its 8 examples per epoch


def test_fine_tune_reports_its_optimizer_steps(world, tmp_path):
    lm, train, dev, test = world
    config = TrainConfig(epochs=2, examples_per_epoch=40, **FAST)
    result = fine_tune(lm, train, dev, test, config, tmp_path)
    assert result.history["train/optimizer_steps"].to_list() == [5.0, 10.0]  # 40 slots, batch 8
    assert result.summary["train/optimizer_steps"] == 10 and result.summary["train/steps_per_epoch"] == 5
    assert result.summary["early_stop/train/optimizer_steps"] == 5 * result.early_stop_epoch


def test_train_config_documents_every_field_and_rejects_typos():
    for name, field in TrainConfig.model_fields.items():
        assert field.description, name
    with pytest.raises(ValueError, match="learning_rate"):
        TrainConfig(learning_rate=1e-3)


# ---------------------------------------------------------------- fine_tune


def test_fine_tune_reports_each_epoch_once_and_keeps_two_checkpoints(world, tmp_path):
    lm, train, dev, test = world
    before = copy.deepcopy(lm.model.state_dict())
    calls: list[tuple[int, dict]] = []
    result = fine_tune(lm, train, dev, test, TrainConfig(epochs=3, **FAST), tmp_path,
                       on_epoch=lambda metrics, epoch: calls.append((epoch, metrics)))

    assert [epoch for epoch, _ in calls] == [1, 2, 3]
    names = set(calls[0][1])
    for name in ("train/acc/all", "train/acc/Known", "train/acc/HighlyKnown", "train/acc/Unknown", "dev/acc/all",
                 "test/acc/all", "test/acc/MaybeKnown", "ood/acc/all", "ood/acc/Unknown", "train/loss",
                 "time/epoch_seconds", "time/train_tokens_per_s", "time/eval_seconds"):
        assert name in names
    assert result.history.height == 3 and result.history["epoch"].to_list() == [1, 2, 3]
    assert calls[-1][1]["train/loss"] < calls[0][1]["train/loss"]

    # Finished: the weights at EARLY_STOP and CONVERGENCE (weights only), the result; no optimizer state left.
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "best.ckpt", "best.ckpt.sha256", "convergence.ckpt", "convergence.ckpt.sha256", "progress.jsonl",
        "state.json", "state.json.sha256", "train_config.json"]
    for name in ("best.ckpt", "convergence.ckpt"):
        assert set(torch.load(tmp_path / name, weights_only=True)) == {"state_dict", "epoch", "trainable_only"}
    assert [line.count('"epoch"') for line in (tmp_path / "progress.jsonl").read_text().splitlines()] == [1, 1, 1]

    assert result.convergence_epoch == 3 and result.summary["convergence/epoch"] == 3
    assert result.predictions.height == 2 * test.height
    assert set(result.predictions["checkpoint"]) == {"early_stop", "convergence"}
    assert "fit/epochs_to_50pct/Unknown" in result.summary
    # the caller's base model is untouched (fine_tune trained a copy)
    for key, value in lm.model.state_dict().items():
        assert torch.equal(value, before[key]), key
    assert lm.model.config.resid_pdrop == 0.1 and not lm.model.training


def test_early_stop_epoch_is_the_best_dev_epoch_ties_earliest():
    history = [{"epoch": e, "dev/acc/all": acc} for e, acc in enumerate([0.1, 0.3, 0.2, 0.3, 0.25], start=1)]
    assert early_stop_epoch(history) == 2
    assert early_stop_epoch(history[:1]) == 1
    assert early_stop_epoch([{"epoch": 1, "dev/acc/all": 0.0}, {"epoch": 2, "dev/acc/all": 0.0}]) == 1


def test_early_stop_results_and_best_checkpoint_match_the_best_dev_epoch(world, tmp_path):
    lm, train, dev, test = world
    result = fine_tune(lm, train, dev, test, TrainConfig(epochs=8, dropout=0.0, **FAST), tmp_path)
    history = result.history
    dev_acc = history["dev/acc/all"].to_list()
    assert result.early_stop_epoch == dev_acc.index(max(dev_acc)) + 1
    row = history.row(result.early_stop_epoch - 1, named=True)
    assert result.summary["early_stop/test/acc/all"] == row["test/acc/all"]
    assert result.summary["early_stop/ood/acc/all"] == row["ood/acc/all"]
    assert result.summary["convergence/test/acc/all"] == history["test/acc/all"][-1]

    best = torch.load(result.best_checkpoint, weights_only=True)
    assert best["epoch"] == result.early_stop_epoch - 1  # Lightning counts epochs from 0
    model = copy.deepcopy(lm.model)
    model.load_state_dict({k.removeprefix("model."): v for k, v in best["state_dict"].items()})
    model.eval()
    predictions = answer_questions(model, lm.tokenizer, test["question"].to_list(), batch_size=8, max_new_tokens=6)
    early = result.predictions.filter(pl.col("checkpoint") == "early_stop")
    assert early["prediction"].to_list() == predictions
    assert early["correct"].mean() == pytest.approx(
        (row["test/acc/all"] * (~test["ood"]).sum() + row["ood/acc/all"] * test["ood"].sum()) / test.height)


class Killed(Exception):
    """Stands in for a crash or a pre-empted job."""


def test_resume_after_a_kill_equals_an_uninterrupted_run(world, tmp_path):
    lm, train, dev, test = world
    config = TrainConfig(epochs=5, dropout=0.1, **FAST)  # dropout: the RNG state must resume too
    uninterrupted = fine_tune(lm, train, dev, test, config, tmp_path / "a")

    def crash_at_epoch_3(metrics, epoch):
        if epoch == 3:
            raise Killed

    with pytest.raises(Killed):
        fine_tune(lm, train, dev, test, config, tmp_path / "b", on_epoch=crash_at_epoch_3)
    last = torch.load(tmp_path / "b" / "last.ckpt", weights_only=True)
    assert last["epoch"] == 1  # epochs 1-2 saved, with everything a resume needs
    assert {"state_dict", "optimizer_states", "lr_schedulers", "callbacks"} <= set(last)

    reported: list[int] = []
    resumed = fine_tune(lm, train, dev, test, config, tmp_path / "b", on_epoch=lambda m, e: reported.append(e))
    assert reported == [3, 4, 5]
    assert without_timings(resumed.history).equals(without_timings(uninterrupted.history))
    assert resumed.early_stop_epoch == uninterrupted.early_stop_epoch
    assert resumed.predictions.equals(uninterrupted.predictions)

    again = fine_tune(lm, train, dev, test, config, tmp_path / "b", on_epoch=lambda m, e: reported.append(e))
    assert reported == [3, 4, 5]  # a finished run is returned, not trained again
    assert without_timings(again.history).equals(without_timings(uninterrupted.history))


def test_a_run_directory_of_another_configuration_is_refused(world, tmp_path):
    lm, train, dev, test = world
    fine_tune(lm, train, dev, test, TrainConfig(epochs=1, **FAST), tmp_path)
    with pytest.raises(BenchmarkError, match="fresh run directory"):
        fine_tune(lm, train, dev, test, TrainConfig(epochs=1, **{**FAST, "lr": 5e-3}), tmp_path)


def test_thread_count_never_changes_a_result(world, tmp_path):
    """A speed choice: 1 or 2 torch threads give the same metrics and byte-identical weights (dropout on,
    so the RNG path is exercised too). Fused LayerNorm backward alone would make them differ; so would MKL at
    the thread count torch gives it (hence ``benchmark.numerics.set_threads``)."""
    lm, train, dev, test = world
    config = TrainConfig(epochs=3, dropout=0.1, **FAST)
    outcomes = []
    for threads in (1, 2):
        set_threads(threads)
        result = fine_tune(lm, train, dev, test, config, tmp_path / f"threads{threads}")
        weights = torch.load(result.convergence_checkpoint, weights_only=True)["state_dict"]
        outcomes.append((without_timings(result.history), weights))
    (history_1, weights_1), (history_2, weights_2) = outcomes
    assert history_1.equals(history_2)
    assert weights_1.keys() == weights_2.keys()
    assert all(torch.equal(weights_1[k], weights_2[k]) for k in weights_1)

def test_lora_trains_adapters_keeps_only_them_and_exports_an_adapter_folder(world, tmp_path):
    from peft import PeftModel

    from benchmark.train import export

    lm, train, dev, test = world
    config = TrainConfig(epochs=2, method="lora", lora_r=4, lora_target_modules=["c_attn"], **FAST)
    trained = copy.deepcopy(lm)
    result = fine_tune(trained, train, dev, test, config, tmp_path, in_place=True)
    assert result.history["train/loss"][1] < result.history["train/loss"][0]
    for checkpoint in (result.best_checkpoint, result.convergence_checkpoint):
        state = torch.load(checkpoint, weights_only=True)["state_dict"]
        assert state and all("lora_" in k for k in state)  # the adapter alone, not the frozen base
    base = {k.replace(".base_layer", ""): v for k, v in trained.model.state_dict().items() if "lora_" not in k}
    for key, value in lm.model.state_dict().items():
        assert torch.equal(base[key], value), key
    out = export(tmp_path, "convergence", tmp_path / "adapter", base=copy.deepcopy(lm))
    model = PeftModel.from_pretrained(copy.deepcopy(lm).model, out).eval()
    answers = answer_questions(model, lm.tokenizer, test["question"].to_list(), batch_size=8, max_new_tokens=6)
    assert answers == result.predictions.filter(pl.col("checkpoint") == "convergence")["prediction"].to_list()


# ---------------------------------------------------------------- fitting speed


def test_fitting_speed_on_a_hand_made_history():
    history = pl.DataFrame({
        "epoch": [1, 2, 3, 4, 5],
        "train/acc/HighlyKnown": [0.6, 0.95, 1.0, 1.0, 1.0],
        "train/acc/Unknown": [0.0, 0.2, 0.5, 0.85, 0.9],
        "train/acc/WeaklyKnown": [0.1, 0.2, 0.3, 0.4, 0.45],
        "dev/acc/all": [0.1, 0.2, 0.2, 0.1, 0.1],
    })
    assert fitting_speed(history) == {
        "fit/epochs_to_50pct/HighlyKnown": 1, "fit/epochs_to_90pct/HighlyKnown": 2,
        "fit/epochs_to_50pct/WeaklyKnown": None, "fit/epochs_to_90pct/WeaklyKnown": None,
        "fit/epochs_to_50pct/Unknown": 3, "fit/epochs_to_90pct/Unknown": 5,
    }
    assert epochs_to_fit([3, 1, 2], [0.9, 0.1, math.nan], 0.5) == 3
