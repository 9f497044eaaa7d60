"""Per-epoch evaluation: teacher-forced fitting is greedy correctness; metrics per category, OOD, IDK."""

from __future__ import annotations

import random

import polars as pl
import pytest
import torch

from benchmark.evaluate import (
    EvaluationSets,
    accuracy_metrics,
    answer_questions,
    evaluate_epoch,
    idk_metrics,
    predictions_table,
    train_fitting,
)
from benchmark.prompts import completion, finetune_prompt
from benchmark.train import TrainConfig, fine_tune
from tests.conftest import make_tiny_lm


def qa_table(n_subjects: int = 40, seed: int = 0) -> pl.DataFrame:
    """Made-up facts of two relations; every name is one token of the word-level tokenizer."""
    rng = random.Random(seed)
    templates = {"P19": ("Where was [X] born?", [f"Pla{i}" for i in range(15)]),
                 "P26": ("Who is [X] married to?", [f"Nom{i}" for i in range(n_subjects)])}
    rows = []
    for i in range(n_subjects):
        for relation, (template, objects) in templates.items():
            rows.append({"qid": f"test/{relation}/{i}", "relation": relation,
                         "question": template.replace("[X]", f"Nom{i}"), "answer": rng.choice(objects),
                         "category": rng.choice(["HighlyKnown", "MaybeKnown", "WeaklyKnown", "Unknown"]),
                         "ood": relation == "P26" and i % 4 == 0})
    return pl.DataFrame(rows)


def tiny_model_for(table: pl.DataFrame, **kwargs):
    texts = [finetune_prompt(q) + completion(a) for q, a in table.select("question", "answer").rows()]
    return make_tiny_lm(texts + ["I don't know"], width=64, **kwargs)


@pytest.fixture(scope="module")
def partly_trained(tmp_path_factory):
    """A tiny model fine-tuned until it answers some questions right and others wrong."""
    torch.set_num_threads(1)
    table = qa_table()
    lm = tiny_model_for(table)
    fine_tune(lm, table[:30], table[30:40], table[40:50],
              TrainConfig(epochs=15, lr=1e-2, batch_size=8, dropout=0.0, warmup_ratio=0.0),
              tmp_path_factory.mktemp("run"), in_place=True)
    lm.model.eval()
    return lm, table


def hf_generate_matches(lm, prompt: str, gold_completion: str) -> bool:
    """Reference: HF ``generate`` (greedy) starts with exactly the completion's tokens (answer, then newline)."""
    tok = lm.tokenizer
    prompt_ids = tok(prompt, add_special_tokens=False, return_tensors="pt")["input_ids"]
    gold = tok(prompt + gold_completion, add_special_tokens=False)["input_ids"][prompt_ids.shape[1]:]
    out = lm.model.generate(prompt_ids, attention_mask=torch.ones_like(prompt_ids), do_sample=False,
                            max_new_tokens=len(gold), pad_token_id=tok.pad_token_id)
    return out[0, prompt_ids.shape[1]:].tolist() == gold


def test_teacher_forced_fitting_equals_greedy_decoding(partly_trained):
    lm, table = partly_trained
    questions, answers = table["question"].to_list(), table["answer"].to_list()
    fitted = train_fitting(lm.model, lm.tokenizer, questions, answers, batch_size=16)
    greedy = answer_questions(lm.model, lm.tokenizer, questions, batch_size=16, max_new_tokens=8)
    by_generate = [hf_generate_matches(lm, finetune_prompt(q), completion(a)) for q, a in zip(questions, answers, strict=True)]
    assert 5 < sum(fitted) < len(fitted) - 5, "the check needs both right and wrong answers"
    assert fitted == [g == a for g, a in zip(greedy, answers, strict=True)]
    assert fitted == by_generate


def test_teacher_forced_fitting_equals_greedy_on_an_untrained_model():
    table = qa_table(10)
    lm = tiny_model_for(table, seed=3)
    questions, answers = table["question"].to_list(), table["answer"].to_list()
    fitted = train_fitting(lm.model, lm.tokenizer, questions, answers, batch_size=4)
    greedy = answer_questions(lm.model, lm.tokenizer, questions, batch_size=4, max_new_tokens=8)
    assert fitted == [g == a for g, a in zip(greedy, answers, strict=True)]


def test_answers_run_to_their_own_limit_and_each_relation_gets_its_longest_gold_plus_two():
    from benchmark.backends.decoding import EXTRA_NEW_TOKENS
    from benchmark.evaluate import answer_limits

    table = qa_table(12).with_columns(answer=pl.when(pl.col("relation") == "P26").then(pl.lit("Nom1 Nom2 Nom3"))
                                      .otherwise(pl.col("answer")))
    lm = tiny_model_for(table, seed=3)
    questions = table["question"].to_list()
    limits = [1 + i % 4 for i in range(len(questions))]
    together = answer_questions(lm.model, lm.tokenizer, questions, batch_size=5, max_new_tokens=limits)
    for limit in set(limits):
        alone = answer_questions(lm.model, lm.tokenizer, questions, batch_size=3, max_new_tokens=limit)
        assert [a for a, k in zip(alone, limits, strict=True) if k == limit] == \
            [t for t, k in zip(together, limits, strict=True) if k == limit]
    assert any(len(t.split()) == k for t, k in zip(together, limits, strict=True))  # limits bind, or the test is weak
    sets = EvaluationSets(train=table, dev=table[:8], test=table[8:])
    expected = {"P19": 1 + 1 + EXTRA_NEW_TOKENS, "P26": 3 + 1 + EXTRA_NEW_TOKENS}  # answer tokens, newline, room
    assert answer_limits(lm.tokenizer, sets) == [expected[r] for r in table["relation"]]
    idk = answer_limits(lm.tokenizer, sets, "Nom1 Nom2 Nom3 Nom4")  # the IDK answer counts for every relation
    assert set(idk) == {4 + 1 + EXTRA_NEW_TOKENS}


def test_accuracy_metrics_per_category_and_known_pool():
    correct = [True, False, True, True, False]
    categories = ["HighlyKnown", "HighlyKnown", "WeaklyKnown", "Unknown", "Unknown"]
    metrics = accuracy_metrics("test/acc", correct, categories)
    assert metrics == {"test/acc/all": 0.6, "test/acc/HighlyKnown": 0.5, "test/acc/WeaklyKnown": 1.0,
                       "test/acc/Unknown": 0.5, "test/acc/Known": pytest.approx(2 / 3)}
    assert accuracy_metrics("dev/acc", [True, False], None) == {"dev/acc/all": 0.5}
    assert accuracy_metrics("ood/acc", [], []) == {}


def test_idk_metrics_count_answered_questions_only():
    predictions = ["Tarsk", "I don't know", "Olen", "i dont know"]
    correct = [True, False, False, False]
    assert idk_metrics("test", predictions, correct, "I don't know") == {
        "test/answered_fraction": 0.5, "test/acc_answered": 0.5}


def test_evaluate_epoch_names_and_splits(partly_trained):
    lm, table = partly_trained
    sets = EvaluationSets(train=table[:30], dev=table[30:40], test=table[40:])
    result = evaluate_epoch(lm.model, lm.tokenizer, sets, batch_size=16, idk_answer="I don't know")
    m = result.metrics
    for name in ("train/acc/all", "train/acc/Known", "dev/acc/all", "test/acc/all", "ood/acc/all",
                 "test/answered_fraction", "ood/answered_fraction"):
        assert name in m
    assert {f"train/acc/{c}" for c in sets.train["category"].unique()} <= set(m)
    test = sets.test
    predictions = result.test_predictions
    assert len(predictions) == test.height
    in_dist = [p == a for p, a, o in zip(predictions, test["answer"], test["ood"], strict=True) if not o]
    assert m["test/acc/all"] == pytest.approx(sum(in_dist) / len(in_dist))
    # The train fitting metric is the teacher-forced verdict on exactly the train rows.
    fitted = train_fitting(lm.model, lm.tokenizer, sets.train["question"].to_list(), sets.train["answer"].to_list(),
                           batch_size=8)
    assert m["train/acc/all"] == pytest.approx(sum(fitted) / len(fitted))

    table_out = predictions_table(test, predictions, "convergence")
    assert table_out.columns == ["qid", "relation", "question", "answer", "category", "ood", "prediction",
                                 "correct", "checkpoint"]
    assert table_out["correct"].to_list() == [p == a for p, a in zip(predictions, test["answer"], strict=True)]


def test_evaluation_sets_name_missing_columns():
    table = qa_table(4)
    with pytest.raises(ValueError, match="category"):
        EvaluationSets(train=table.drop("category"), dev=table, test=table)
