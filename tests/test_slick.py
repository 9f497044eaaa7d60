"""SliCK: the category rule, early exit, exemplar exclusion, normalisation, the cache, and the generation engine.

The orchestration is tested through a scripted backend (answers fixed per question, prompt and sample) injected
at the engine's seam; the engine itself on tiny random GPT-2 and Llama models against plain decoding.
"""

from __future__ import annotations

import random
import re

import polars as pl
import pytest
import torch

from benchmark.answers import exact_match
from benchmark.backends.decoding import option_probability
from benchmark.backends.engine import Engine, PromptJob
from benchmark.backends.noise import MASK32, choose_tokens, counter_uniform, question_key, sample_keys
from benchmark.backends.verdicts import can_still_match
from benchmark.errors import BenchmarkError
from benchmark.slick import CATEGORIES, SliCKConfig, build_prompts, categorize, categorize_questions, category
from benchmark.slick_tables import confusion_table, relation_table, summary
from tests.conftest import EQ_SAMPLE, make_tiny_lm

torch.set_num_threads(1)

WORDS = "Tarsk Olen Vell Brin Quor Dask Mira Zorvik Pell Kam Ruun Sato Lume Fenn Ivra Toma".split()
GLUE = "Q : A ? . , Where was born What is the capital of Who child True False Question Proposed Answer " \
       "proposed answer Is ( ) B The Answer following question"
TEXTS = ["Q: Where was Zorvik born?\nA: Tarsk\n", " ".join(WORDS), GLUE]


def question_table(relations=("P19", "P36"), sizes=(("train", 10), ("dev", 8), ("test", 4)), seed=0) -> pl.DataFrame:
    rng = random.Random(seed)
    rows = []
    for relation in relations:
        for split, n in sizes:
            for i in range(n):
                subject = f"{rng.choice(WORDS)} {rng.choice(WORDS)}"
                text = f"Where was {subject} born?" if relation == "P19" else f"What is the capital of {subject}?"
                rows.append({"qid": f"{split}/{relation}/{i}", "split": split, "relation": relation,
                             "question": text, "answer": rng.choice(WORDS[:4]), "subject": subject, "ood": False})
    return pl.DataFrame(rows)


class ScriptedBackend:
    """Answers fixed per (qid, prompt) for greedy and per (qid, prompt, sample) for samples; records its jobs."""

    def __init__(self, greedy_right, sample_right, right_text=None):
        self.greedy_right, self.sample_right = greedy_right, sample_right
        self.right_text = right_text or (lambda gold: gold)
        self.greedy_jobs, self.sample_jobs = [], []

    def _answer(self, job, right: bool) -> str:
        return self.right_text(job.gold) if right else "Nobody"

    def greedy(self, jobs):
        self.greedy_jobs += jobs
        return [self._answer(j, self.greedy_right(j.qid, j.prompt_index)) for j in jobs]

    def sample(self, jobs, n_samples, *, stop_at_hit=False):
        self.sample_jobs += jobs
        out = []
        for j in jobs:
            verdicts = []
            for s in range(n_samples):
                verdicts.append(exact_match(self._answer(j, self.sample_right(j.qid, j.prompt_index, s)), j.gold))
                if verdicts[-1] and stop_at_hit:
                    verdicts += [None] * (n_samples - s - 1)  # started in parallel, abandoned once decided
                    break
            out.append(verdicts)
        return out


def random_script(seed: int):
    """Per question a kind (known / maybe / sample-hit rate) and deterministic outcomes."""
    rng = random.Random(seed)
    kinds, rates = {}, {}

    def kind(qid):
        if qid not in kinds:
            kinds[qid] = rng.choice(["high", "maybe", "none", "none", "none"])
            rates[qid] = rng.choice([0.0, 0.0, 0.01, 0.05, 0.3])
        return kinds[qid]

    def greedy_right(qid, p):
        k = kind(qid)
        return k == "high" or (k == "maybe" and p % 3 == 0)

    def sample_right(qid, p, s):
        kind(qid)
        return random.Random(f"{qid}/{p}/{s}").random() < rates[qid]

    return greedy_right, sample_right


# ---------------------------------------------------------------------------------------------------------------
# The rule and the orchestration
# ---------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(("p_greedy", "any_sample", "expected"), [
    (1.0, False, "HighlyKnown"), (1.0, True, "HighlyKnown"), (0.1, False, "MaybeKnown"), (0.9, True, "MaybeKnown"),
    (0.0, True, "WeaklyKnown"), (0.0, False, "Unknown"),
])
def test_category_rule(p_greedy, any_sample, expected):
    assert category(p_greedy, any_sample) == expected


def test_categories_from_scripted_outcomes():
    questions = question_table()
    fixed = {"train/P19/0": "high", "train/P19/1": "maybe", "train/P19/2": "weak", "train/P19/3": "unknown"}
    backend = ScriptedBackend(
        lambda qid, p: fixed.get(qid) == "high" or (fixed.get(qid) == "maybe" and p == 7),
        lambda qid, p, s: fixed.get(qid) == "weak" and (p, s) == (9, 15),  # the very last sample
    )
    table = categorize_questions(None, questions, SliCKConfig(), backend=backend).filter(pl.col("qid").is_in(list(fixed)))
    got = dict(zip(table["qid"], table["category"], strict=True))
    assert got == {"train/P19/0": "HighlyKnown", "train/P19/1": "MaybeKnown", "train/P19/2": "WeaklyKnown",
                   "train/P19/3": "Unknown"}
    rows = {r["qid"]: r for r in table.iter_rows(named=True)}
    assert rows["train/P19/1"]["p_correct_greedy"] == pytest.approx(0.1)
    assert rows["train/P19/0"]["generations"] == 10  # known: greedy only, no samples
    assert rows["train/P19/2"]["generations"] == 170 and rows["train/P19/2"]["p_correct_sampled"] == pytest.approx(1 / 160)
    assert rows["train/P19/3"]["generations"] == 170 and rows["train/P19/3"]["p_correct_sampled"] == 0.0
    assert rows["train/P19/0"]["p_correct_sampled"] is None


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_early_exit_gives_the_exhaustive_categories(seed):
    questions = question_table(relations=("P19", "P36", "P17"), sizes=(("train", 40), ("dev", 10), ("test", 10)), seed=seed)
    greedy_right, sample_right = random_script(seed)
    lazy = categorize_questions(None, questions, SliCKConfig(), backend=ScriptedBackend(greedy_right, sample_right))
    full = categorize_questions(None, questions, SliCKConfig(exhaustive=True),
                                backend=ScriptedBackend(greedy_right, sample_right))
    assert lazy["qid"].to_list() == full["qid"].to_list()
    assert lazy["category"].to_list() == full["category"].to_list()
    assert set(lazy["category"]) >= {"HighlyKnown", "MaybeKnown", "WeaklyKnown", "Unknown"}
    assert (full["generations"] == 170).all()
    assert lazy["generations"].sum() < full["generations"].sum()
    # Where the lazy run has an estimate it is the exhaustive one (Unknown: all 160 samples drawn, none right).
    both = lazy.join(full, on="qid", suffix="_full").filter(pl.col("p_correct_sampled").is_not_null())
    assert (both["p_correct_sampled"] == both["p_correct_sampled_full"]).all()
    assert set(both["category"]) == {"Unknown"}


def test_samples_only_for_questions_with_every_greedy_answer_wrong():
    questions = question_table()
    backend = ScriptedBackend(lambda qid, p: qid.endswith("/0") and p == 3, lambda qid, p, s: False)
    table = categorize_questions(None, questions, SliCKConfig(), backend=backend)
    sampled = {j.qid for j in backend.sample_jobs}
    assert sampled == set(table.filter(pl.col("p_correct_greedy") == 0)["qid"])
    assert not any(qid.endswith("/0") for qid in sampled)


def test_a_question_stops_sampling_at_its_first_correct_sample():
    questions = question_table()
    backend = ScriptedBackend(lambda qid, p: False, lambda qid, p, s: (p, s) == (2, 5))
    table = categorize_questions(None, questions, SliCKConfig(), backend=backend)
    assert set(table["category"]) == {"WeaklyKnown"}
    assert {j.prompt_index for j in backend.sample_jobs} == {0, 1, 2}  # prompts 3..9 never sampled
    assert (table["generations"] == 10 + 3 * 16).all()


def test_answers_are_normalised_before_exact_match():
    questions = question_table()
    backend = ScriptedBackend(lambda qid, p: True, lambda qid, p, s: False, right_text=lambda gold: f"The {gold.upper()}.")
    table = categorize_questions(None, questions, SliCKConfig(), backend=backend)
    assert set(table["category"]) == {"HighlyKnown"}
    assert exact_match("  the Tarsk!\nmore text", "Tarsk") and not exact_match("Tarsks", "Tarsk")
    # a gold answer that normalises to nothing is never matched, least of all by an empty answer
    for gold in ("The", "...", " ", ""):
        assert not any(exact_match(prediction, gold) for prediction in ("", gold, "the", "\n", "."))
    empty = question_table().with_columns(answer=pl.lit("The"))
    blank = ScriptedBackend(lambda qid, p: True, lambda qid, p, s: True, right_text=lambda gold: "")
    assert set(categorize_questions(None, empty, SliCKConfig(), backend=blank)["category"]) == {"Unknown"}


def test_prompts_are_fixed_per_relation_from_dev_and_never_contain_their_question():
    questions = question_table(sizes=(("train", 10), ("dev", 6), ("test", 4)))
    config = SliCKConfig(splits=["train", "dev", "test"])
    backend = ScriptedBackend(lambda qid, p: False, lambda qid, p, s: False)
    categorize_questions(None, questions, config, backend=backend)
    dev_questions = set(questions.filter(pl.col("split") == "dev")["question"])
    prompts = build_prompts(questions, config, seed=0)
    for job in backend.greedy_jobs:
        exemplar_questions = re.findall(r"Q: (.*)\n", job.prefix)
        assert len(exemplar_questions) == 4 and set(exemplar_questions) <= dev_questions
        assert job.question.removeprefix("Q: ").removesuffix("\nA:") not in exemplar_questions
        relation = job.qid.split("/")[1]
        standard = [e.question for e in prompts[relation].prompts[job.prompt_index]]
        own_text = job.question.removeprefix("Q: ").removesuffix("\nA:")
        if own_text not in standard:
            assert exemplar_questions == standard  # the same prompts for every question of the relation
        else:  # the question (or a duplicate of its text) is an exemplar: that exemplar was swapped, in place
            assert sum(a != b for a, b in zip(exemplar_questions, standard, strict=True)) <= 1
    swapped = [j for j in backend.greedy_jobs if j.qid.startswith("dev/")
               and re.findall(r"Q: (.*)\n", j.prefix) != [e.question for e in prompts[j.qid.split("/")[1]].prompts[j.prompt_index]]]
    assert swapped  # with 6 dev questions and 10 prompts of 4, some dev questions are their own exemplars
    assert build_prompts(questions, config, seed=0)["P19"].prompts == prompts["P19"].prompts  # seeded
    assert build_prompts(questions, config, seed=1)["P19"].prompts != prompts["P19"].prompts


def test_too_few_dev_questions_or_an_empty_split_fail_clearly():
    thin = question_table(sizes=(("train", 5), ("dev", 4), ("test", 2)))
    with pytest.raises(BenchmarkError, match=r"P19\.dev\.json: relation P19 has 4 dev question\(s\); .* at least k_shot \+ 1 = 5"):
        build_prompts(thin, SliCKConfig(), 0, locate=lambda r, s: f"/data/dataset/{s}/{r}.{s}.json")
    no_test = question_table(sizes=(("train", 5), ("dev", 6)))
    with pytest.raises(BenchmarkError, match="relation P19 has no test questions"):
        build_prompts(no_test, SliCKConfig(), 0)
    build_prompts(no_test, SliCKConfig(splits=["train"]), 0)  # not asked for, not needed
    with pytest.raises(BenchmarkError, match="nothing to categorise"):
        build_prompts(no_test.filter(pl.col("split") == "dev"), SliCKConfig(splits=["train"]), 0)


def test_ood_exemplars_come_from_the_ood_dev_split_and_never_silently_from_test():
    questions = question_table(sizes=(("train", 10), ("dev", 6), ("test", 4)))
    ood = question_table(relations=("P36",), sizes=(("dev", 6), ("test", 5)), seed=1).with_columns(
        ood=pl.lit(True), relation=pl.lit("P50"), qid=pl.col("qid").str.replace("P36", "P50"))
    table = pl.concat([questions.filter(pl.col("relation") == "P19"), ood])
    backend = ScriptedBackend(lambda qid, p: False, lambda qid, p, s: False)
    result = categorize_questions(None, table, SliCKConfig(), backend=backend)
    # OOD questions are categorised on test only; their dev questions are the exemplar pool
    assert set(result.filter(pl.col("ood"))["split"]) == {"test"} and result.filter(pl.col("ood")).height == 5
    ood_dev, ood_test = (set(ood.filter(pl.col("split") == s)["question"]) for s in ("dev", "test"))
    jobs = [j for j in backend.greedy_jobs if "/P50/" in j.qid]
    assert jobs and all(set(re.findall(r"Q: (.*)\n", j.prefix)) <= ood_dev for j in jobs)
    assert not any(set(re.findall(r"Q: (.*)\n", j.prefix)) & ood_test for j in jobs)
    # no OOD dev split: an error naming the file, not a switch to test
    without_dev = table.filter(~(pl.col("ood") & (pl.col("split") == "dev")))
    with pytest.raises(BenchmarkError, match=r"dataset/dev/P50\.dev\.json: out-of-distribution relation P50 has "
                                             r"no dev questions.*ood_exemplars to 'test'"):
        build_prompts(without_dev, SliCKConfig(), 0, locate=lambda r, s: f"/data/dataset/{s}/{r}.{s}.json")
    # test only where the suite says so
    chosen = build_prompts(without_dev, SliCKConfig(ood_exemplars="test"), 0)["P50"]
    assert {e.question for e in chosen.pool} == ood_test
    assert "P50" not in build_prompts(without_dev, SliCKConfig(ood_exemplars="skip"), 0)


def test_progress_reports_every_split_to_completion():
    questions = question_table()
    seen = {}
    greedy_right, sample_right = random_script(0)
    categorize_questions(None, questions, SliCKConfig(), backend=ScriptedBackend(greedy_right, sample_right),
                         progress=lambda what, done, total: seen.__setitem__(what, (done, total)))
    assert seen == {"SliCK train": (20, 20), "SliCK dev": (16, 16), "SliCK test": (8, 8)}


# ---------------------------------------------------------------------------------------------------------------
# The cached stage and its reports
# ---------------------------------------------------------------------------------------------------------------
class FakeSource:
    def __init__(self, questions, identity="data:1", exposures=None, guessable=()):
        self._questions, self._identity, self._exposures, self._guessable = questions, identity, exposures, guessable
        self.file = "components/datasets/fake.yaml"

    def identity(self):
        return self._identity

    def questions(self):
        return self._questions

    def exposures(self):
        return self._exposures

    def guessable_relations(self):
        return list(self._guessable)


class FakeModel:
    def __init__(self, identity="tiny:0"):
        self._identity, self.loads = identity, 0

    def identity(self):
        return self._identity

    def load(self, *, device="cpu", dtype=None):
        self.loads += 1
        return make_tiny_lm(TEXTS, seed=1)

    def prepare(self, log=None):  # ModelComponent's hook: nothing to build before the workers load these weights
        pass


FAST = SliCKConfig(n_prompts=2, n_samples=2, max_new_tokens=3, splits=["train"])


def test_cache_hits_on_identical_inputs_and_misses_on_any_change():
    questions = question_table(sizes=(("train", 3), ("dev", 5)))
    source, model = FakeSource(questions), FakeModel()
    first = categorize(source, model, FAST)
    again = categorize(source, model, FAST)
    assert not first.cache_hit and again.cache_hit and model.loads == 1  # a hit never loads the model
    assert again.key == first.key and (again.path / "categories.parquet").exists()
    assert again.table.equals(first.table) and again.generations == first.generations
    assert categorize(source, model, FAST.model_copy(update={"batch_size": 3})).cache_hit  # batching: same results
    changed = [
        (FakeSource(questions), FakeModel("tiny:other-weights"), FAST, 0),
        (FakeSource(questions, identity="data:2"), model, FAST, 0),
        (source, model, FAST.model_copy(update={"temperature": 0.7}), 0),
        (source, model, FAST, 1),
    ]
    for src, mdl, cfg, seed in changed:
        result = categorize(src, mdl, cfg, seed=seed)
        assert not result.cache_hit and result.key != first.key
    assert categorize(source, model, FAST, force=True).cache_hit is False


def test_categorize_checks_the_data_before_loading_the_model():
    model = FakeModel()
    with pytest.raises(BenchmarkError, match="relation P19 has 3 dev"):
        categorize(FakeSource(question_table(sizes=(("train", 3), ("dev", 3))), identity="data:thin"), model, FAST)
    assert model.loads == 0


def test_summary_confusion_and_relation_tables():
    questions = question_table(sizes=(("train", 12), ("dev", 6)))
    train = questions.filter(pl.col("split") == "train")
    exposures = train.select("relation", "question", exposure=pl.Series([0, 1, 2, 3, 5, 9, 17, 40, 0, 0, 4, 8] * 2))
    source = FakeSource(questions, exposures=exposures, guessable=("P36",))
    known = set(exposures.filter(pl.col("exposure") >= 9)["question"])
    backend = ScriptedBackend(lambda qid, p: False, lambda qid, p, s: False)
    table = categorize_questions(None, questions, SliCKConfig(splits=["train"]), backend=backend)
    table = table.with_columns(category=pl.when(pl.col("question").is_in(list(known))).then(pl.lit("HighlyKnown"))
                               .otherwise(pl.col("category")))
    from benchmark.slick import CategorizeResult

    result = CategorizeResult(table, 1.0, False, int(table["generations"].sum()), 10.0, "k", None)
    facts = summary(result, source)
    assert set(facts["counts"]) == set(CATEGORIES) and sum(facts["counts"].values()) == 24
    assert facts["exposure"]["zero_exposure_unknown_share"] == 1.0
    assert facts["exposure"]["median"]["HighlyKnown"] == 17  # P19 only: 9, 17, 40
    confusion = confusion_table(result, source)
    assert confusion.columns == ["category", "0", "1-2", "3-4", "5-8", "9-16", "17+"]
    assert confusion.filter(pl.col("category") == "Unknown").row(0)[1:] == (3, 2, 2, 2, 0, 0)
    assert "exposure" not in summary(result, FakeSource(questions))
    per_relation = relation_table(result)
    assert set(per_relation["relation"]) == {"P19", "P36"} and per_relation["questions"].sum() == 24
    assert per_relation["most_common_answer_accuracy"].is_between(0, 1).all()


def test_counts_by_split_and_the_majority_baseline():
    from benchmark.slick import CategorizeResult
    from benchmark.slick_tables import majority_baseline

    questions = question_table(sizes=(("train", 12), ("dev", 6), ("test", 5)))
    ood = question_table(relations=("P50",), sizes=(("dev", 5), ("test", 6))).with_columns(ood=pl.lit(True))
    questions = pl.concat([questions, ood])
    backend = ScriptedBackend(lambda qid, p: qid.endswith("/0"), lambda qid, p, s: False)
    table = categorize_questions(None, questions, SliCKConfig(), backend=backend)
    result = CategorizeResult(table, 1.0, False, int(table["generations"].sum()), 10.0, "k", None)
    facts = summary(result, FakeSource(questions))
    assert list(facts["counts_by_split"]) == ["train", "dev", "test"]
    assert facts["counts_by_split"]["train"] == facts["counts"] == {"HighlyKnown": 2, "MaybeKnown": 0,
                                                                    "WeaklyKnown": 0, "Unknown": 22}
    assert sum(facts["counts_by_split"]["test"].values()) == 16 and sum(facts["counts_ood"].values()) == 6
    # The baseline: always answer the relation's most common train answer (OOD: its own questions).
    metrics = majority_baseline(result)
    assert set(metrics) == {"baseline/majority/test/P19", "baseline/majority/test/P36", "baseline/majority/test/all",
                            "baseline/majority/ood/P50", "baseline/majority/ood/all"}
    gold = questions.filter((pl.col("relation") == "P19") & (pl.col("split") == "train"))["answer"]
    common = gold.value_counts(sort=True).sort(["count", "answer"], descending=[True, False])["answer"][0]
    test = questions.filter((pl.col("relation") == "P19") & (pl.col("split") == "test"))
    assert metrics["baseline/majority/test/P19"] == pytest.approx(float((test["answer"] == common).mean()))
    assert 0 <= metrics["baseline/majority/test/all"] <= 1
    assert "most_common_answer" in relation_table(result).columns


# ---------------------------------------------------------------------------------------------------------------
# The engine
# ---------------------------------------------------------------------------------------------------------------
def _jobs(seed=0, prompts=3, per_prompt=12):
    rng = random.Random(seed)
    jobs = []
    for p in range(prompts):
        block = "".join(f"Q: Where was {rng.choice(WORDS)} born?\nA: {rng.choice(WORDS)}\n" for _ in range(4))
        for i in range(per_prompt):
            subject = " ".join(rng.choice(WORDS) for _ in range(rng.randint(1, 3)))
            jobs.append(PromptJob(block, f"Q: Where was {subject} born?\nA:", f"train/P19/{i}", p, rng.choice(WORDS)))
    return jobs


def _tiny_llama():
    from transformers import LlamaConfig, LlamaForCausalLM

    lm = make_tiny_lm(TEXTS, seed=2)
    tok = lm.tokenizer
    torch.manual_seed(2)
    config = LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                         pad_token_id=tok.pad_token_id, bos_token_id=tok.eos_token_id, eos_token_id=tok.eos_token_id)
    lm.model = LlamaForCausalLM(config).eval()
    return lm


def _opinionated(lm, std: float = 0.3):
    """Re-draw the weight matrices with a larger spread: a freshly initialised model says one token everywhere,
    which would make "equal outputs" a weak test."""
    torch.manual_seed(0)
    with torch.no_grad():
        for parameter in lm.model.parameters():
            if parameter.dim() == 2:
                parameter.normal_(0, std)
        # Never say <pad> or <unk>: invisible in decoded text, they would make texts and token paths disagree.
        lm.model.get_output_embeddings().weight[[lm.tokenizer.pad_token_id, lm.tokenizer.unk_token_id]] = 0
    return lm


@pytest.fixture(scope="module", params=["gpt2", "llama"])
def lm(request):
    return _opinionated(make_tiny_lm(TEXTS, seed=5, width=48) if request.param == "gpt2" else _tiny_llama())


def test_engine_greedy_equals_plain_greedy_decoding(lm):
    from benchmark.backends.decoding import greedy_generate

    jobs = _jobs()
    engine = Engine(lm.model, lm.tokenizer, max_new_tokens=6, batch_size=5)
    plain = greedy_generate(lm.model, lm.tokenizer, [j.text for j in jobs], max_new_tokens=6, batch_size=8)
    ours = engine.greedy(jobs)
    assert ours == plain
    assert len(set(plain)) > 3  # the random model says different things, so the comparison means something
    assert engine.stats.prefix_prefills == 3  # one prefill per shared exemplar block


def test_engine_cuts_each_job_at_its_own_answer_length_as_greedy_decoding_does(lm):
    """SliCK and evaluation give an answer the same room: per job (its relation's limit) the engine stops where
    ``greedy_generate`` with per-prompt limits stops, samples included."""
    import dataclasses

    from benchmark.backends.decoding import greedy_generate

    jobs = [dataclasses.replace(j, max_new_tokens=1 + i % 5) for i, j in enumerate(_jobs())]
    engine = Engine(lm.model, lm.tokenizer, max_new_tokens=16, batch_size=7)
    limits = [j.max_new_tokens for j in jobs]
    assert engine.greedy(jobs) == greedy_generate(lm.model, lm.tokenizer, [j.text for j in jobs],
                                                  max_new_tokens=limits, batch_size=8)
    for job, texts in zip(jobs, engine.sample_texts(jobs, 3), strict=True):
        assert all(len(lm.tokenizer(t, add_special_tokens=False)["input_ids"]) <= job.max_new_tokens for t in texts)
    alone = Engine(lm.model, lm.tokenizer, max_new_tokens=3, batch_size=7)  # a job's limit, or the engine's own
    assert alone.greedy([dataclasses.replace(j, max_new_tokens=None) for j in jobs]) == greedy_generate(
        lm.model, lm.tokenizer, [j.text for j in jobs], max_new_tokens=3, batch_size=8)


def test_slick_and_evaluation_give_a_relation_s_answers_the_same_room(tiny_lm):
    from benchmark.backends.decoding import EXTRA_NEW_TOKENS, answer_token_limit
    from benchmark.evaluate import EvaluationSets, answer_limits
    from benchmark.slick import answer_limits as slick_limits

    questions = question_table(sizes=(("train", 10), ("dev", 6), ("test", 4))).with_columns(
        answer=pl.when(pl.col("relation") == "P36").then(pl.lit(" ".join(WORDS * 2))).otherwise(pl.col("answer")))
    tok = tiny_lm.tokenizer
    long_answer = len(WORDS) * 2 + 1 + EXTRA_NEW_TOKENS  # one token per word, then the newline
    assert answer_token_limit(tok, [" ".join(WORDS * 2), "Tarsk"]) == long_answer > 16  # longer than the old cap
    backend = ScriptedBackend(lambda qid, p: True, lambda qid, p, s: False)
    table = categorize_questions(tiny_lm, questions, SliCKConfig(n_prompts=2, p_true=False), backend=backend)
    by_relation = {}
    for job in backend.greedy_jobs:
        by_relation.setdefault(job.qid.split("/")[1], set()).add(job.max_new_tokens)
    assert by_relation == {"P19": {1 + 1 + EXTRA_NEW_TOKENS}, "P36": {long_answer}}
    assert set(table["category"]) == {"HighlyKnown"}
    # evaluation on the same questions: the same number per relation
    asked = questions.filter(pl.col("split") != "train").with_columns(category=pl.lit("Unknown"))
    sets = EvaluationSets(train=asked, dev=asked.filter(pl.col("split") == "dev"),
                          test=asked.filter(pl.col("split") == "test"))
    evaluation = dict(zip([*sets.dev["relation"], *sets.test["relation"]], answer_limits(tok, sets), strict=True))
    assert evaluation == slick_limits(asked, SliCKConfig(), tiny_lm) == {"P19": 4, "P36": long_answer}
    assert slick_limits(asked, SliCKConfig(max_new_tokens=5), tiny_lm) == {"P19": 5, "P36": 5}  # a suite's fixed one


def test_sampled_answers_do_not_depend_on_batching(lm):
    jobs = _jobs(seed=1)
    small = Engine(lm.model, lm.tokenizer, max_new_tokens=5, batch_size=4).sample_texts(jobs, 6)
    order = list(range(len(jobs)))
    random.Random(0).shuffle(order)
    big = Engine(lm.model, lm.tokenizer, max_new_tokens=5, batch_size=500).sample_texts([jobs[i] for i in order], 6)
    assert [big[order.index(i)] for i in range(len(jobs))] == small
    assert len({s for row in small for s in row}) > 10  # samples differ from each other
    plain_cache = Engine(lm.model, lm.tokenizer, max_new_tokens=5, batch_size=7)
    plain_cache.roomy = False  # the model's own DynamicCache instead of the preallocated layers
    assert plain_cache.sample_texts(jobs, 6) == small
    again = Engine(lm.model, lm.tokenizer, max_new_tokens=5, seed=1, batch_size=4).sample_texts(jobs, 6)
    assert again != small  # the seed matters


def test_early_verdicts_equal_judging_the_full_samples(lm):
    jobs = _jobs(seed=4)
    texts = Engine(lm.model, lm.tokenizer, max_new_tokens=5).sample_texts(jobs, 8)
    # Gold = one of the job's own samples (so there are hits) or a word it never says.
    golds = [row[i % 8] if i % 3 else "Nobody" for i, row in enumerate(texts)]
    judged = [PromptJob(j.prefix, j.question, j.qid, j.prompt_index, g) for j, g in zip(jobs, golds, strict=True)]
    engine = Engine(lm.model, lm.tokenizer, max_new_tokens=5, batch_size=9)
    verdicts = engine.sample(judged, 8)
    assert verdicts == [[exact_match(t, g) for t in row] for row, g in zip(texts, golds, strict=True)]
    assert any(any(v) for v in verdicts) and not all(all(v) for v in verdicts)
    remembered = Engine(lm.model, lm.tokenizer, max_new_tokens=5, batch_size=9)
    remembered.greedy(judged)  # keeps each prompt's first-step candidates; sampling then starts from them
    prefills = remembered.stats.forwards
    assert remembered.sample(judged, 8) == verdicts
    assert remembered.stats.forwards - prefills < engine.stats.forwards  # no first-step prefill needed
    full_tokens = Engine(lm.model, lm.tokenizer, max_new_tokens=5)
    full_tokens.sample_texts(jobs, 8)
    assert engine.stats.tokens < full_tokens.stats.tokens  # rows stop once their verdict is known


@pytest.mark.parametrize("gold", ["Tarsk", "the Tarsk Olen", "O'Brien-Vell", "an Olen", "Mira, Quor."])
def test_can_still_match_never_rules_out_an_answer_that_matches(gold):
    rng = random.Random(gold)
    pieces = ["the ", "The ", "a ", "an ", ". ", ",", " ", "  ", "-", "'"]
    checked = 0
    for _ in range(300):
        text = ""
        for word in gold.split():
            text += rng.choice(["", "", "the ", "A "]) + (word.upper() if rng.random() < 0.3 else word)
            text += rng.choice([" ", "  ", ". ", ", ", " the "])
        noise = "".join(rng.choice(pieces + gold.split()) for _ in range(rng.randint(1, 6)))
        for candidate in (text, noise):
            if exact_match(candidate, gold):
                checked += 1
                for cut in range(len(candidate) + 1):
                    assert can_still_match(candidate[:cut], gold), (candidate[:cut], gold)
    assert checked > 100
    assert not can_still_match("Olen", "Tarsk") and not can_still_match("Tarsk Olen", "Tarsk")
    assert not can_still_match("Tarsks", "Tarsk Vell") and can_still_match("Tar", "Tarsk")


def test_engine_samples_equal_generate_with_the_same_counter_noise(lm):
    from transformers import LogitsProcessorList

    from benchmark.backends.decoding import stop_token_mask
    from benchmark.backends.naive import CounterNoiseProcessor

    jobs = _jobs(seed=2, prompts=2, per_prompt=3)
    engine = Engine(lm.model, lm.tokenizer, max_new_tokens=5, top_k=5, seed=3)
    ours = engine.sample_texts(jobs, 4)
    stops = stop_token_mask(lm.tokenizer, "cpu").nonzero().squeeze(-1).tolist()
    for job, answers in zip(jobs, ours, strict=True):
        ids = torch.tensor([lm.tokenizer(job.text, add_special_tokens=False)["input_ids"]])
        keys = sample_keys(torch.full((4,), question_key(3, job.qid)), torch.full((4,), job.prompt_index), torch.arange(4))
        noise = CounterNoiseProcessor(keys, ids.shape[1], temperature=0.5, top_k=5)
        out = lm.model.generate(ids, attention_mask=torch.ones_like(ids), do_sample=True, temperature=0.5, top_k=5,
                                num_return_sequences=4, max_new_tokens=5, eos_token_id=stops,
                                pad_token_id=lm.tokenizer.pad_token_id, logits_processor=LogitsProcessorList([noise]))
        texts = [t.split("\n")[0].strip() for t in lm.tokenizer.batch_decode(out[:, ids.shape[1]:], skip_special_tokens=True)]
        assert texts == answers


def test_stop_at_hit_abandons_the_rest_of_a_decided_question(lm):
    jobs = _jobs(seed=3, prompts=1, per_prompt=4)
    full = Engine(lm.model, lm.tokenizer, max_new_tokens=5).sample_texts(jobs, 8)
    # Make each job's gold the answer its sample 2 gives: that question is decided when sample 2 finishes.
    rigged = [PromptJob(j.prefix, j.question, j.qid, j.prompt_index, texts[2]) for j, texts in zip(jobs, full, strict=True)]
    lazy = Engine(lm.model, lm.tokenizer, max_new_tokens=5).sample(rigged, 8, stop_at_hit=True)
    for texts, verdicts, job in zip(full, lazy, rigged, strict=True):
        assert verdicts[2] is True
        assert all(v is None or v == exact_match(t, job.gold) for v, t in zip(verdicts, texts, strict=True))


def test_counter_noise_is_a_pure_function_of_its_counters():
    def fmix(h):
        h ^= h >> 16
        h = (h * 0x85EBCA6B) & MASK32
        h ^= h >> 13
        h = (h * 0xC2B2AE35) & MASK32
        return h ^ (h >> 16)

    keys = sample_keys(torch.tensor([question_key(0, "train/P19/7")] * 3), torch.tensor([1, 1, 2]), torch.tensor([0, 5, 5]))
    tokens = torch.tensor([[3, 4], [3, 4], [3, 4]])
    u = counter_uniform(keys, 2, tokens)
    for r in range(3):
        at_step = fmix(int(keys[r]) ^ ((3 * 0x165667B1) & MASK32))
        for c in range(2):
            expected = (fmix(at_step ^ ((int(tokens[r, c]) * 0x9E3779B1) & MASK32)) + 0.5) / 2**32
            assert float(u[r, c]) == pytest.approx(expected, abs=1e-15)
    assert len(set(u.flatten().tolist())) == 6


def test_gumbel_choice_samples_softmax_over_the_top_k():
    logits = torch.tensor([[2.0, 1.5, 1.0, 0.0, -1.0, -5.0]]).repeat(20000, 1)
    keys = sample_keys(torch.full((20000,), 7), torch.zeros(20000, dtype=torch.long), torch.arange(20000))
    chosen = choose_tokens(logits, keys, 0, temperature=0.5, top_k=3)
    freq = torch.bincount(chosen, minlength=6).double() / 20000
    expected = torch.softmax(logits[0, :3] / 0.5, -1)
    assert freq[3:].sum() == 0
    assert torch.allclose(freq[:3], expected.double(), atol=0.015)
    assert torch.equal(choose_tokens(logits[:2], None, 0, temperature=0.5, top_k=3), torch.tensor([0, 0]))


def test_p_true_is_a_probability_between_true_and_false():
    lm = make_tiny_lm(TEXTS, seed=4)
    from benchmark.prompts import p_true_prompt

    prompts = [p_true_prompt("Where was Zorvik born?", "Tarsk"), p_true_prompt("Where was Mira born?", "Olen")]
    scores = option_probability(lm.model, lm.tokenizer, prompts)
    assert all(0 < s < 1 for s in scores) and scores[0] != scores[1]
    single = option_probability(lm.model, lm.tokenizer, prompts[1:])
    assert single[0] == pytest.approx(scores[1], abs=1e-5)  # padding does not change a row


def test_engine_and_naive_reference_agree_end_to_end():
    lm = _opinionated(make_tiny_lm(TEXTS, seed=6, width=48))
    questions = question_table(sizes=(("train", 4), ("dev", 5)))
    config = SliCKConfig(n_prompts=2, n_samples=3, max_new_tokens=4, top_k=8, splits=["train"], exhaustive=True)
    engine = categorize_questions(lm, questions, config)
    naive = categorize_questions(lm, questions, config.model_copy(update={"backend": "naive"}))
    assert engine.drop("p_true").equals(naive.drop("p_true"))
    assert engine["p_true"].is_not_null().all()


@torch.inference_mode()
def test_exact_estimator_matches_greedy_decoding_and_sampling_frequencies(lm):
    from benchmark.backends.decoding import stop_token_mask
    from benchmark.prompts import completion

    jobs = _jobs(seed=5, prompts=2, per_prompt=8)
    engine = Engine(lm.model, lm.tokenizer, max_new_tokens=8, top_k=6)
    greedy = engine.greedy(jobs)
    right = [PromptJob(j.prefix, j.question, j.qid, j.prompt_index, greedy[i]) for i, j in enumerate(jobs)]
    wrong = [PromptJob(j.prefix, j.question, j.qid, j.prompt_index, "Nobody") for j in jobs]
    scores = engine.teacher_forced(right)
    assert any(g for g, _ in scores)  # answers that ended at a newline are reproduced
    assert not any(g for g, _ in engine.teacher_forced(wrong))
    stops = stop_token_mask(lm.tokenizer, "cpu")
    for job, (greedy_match, chance) in zip(right, scores, strict=True):  # against one plain forward pass per job
        base = lm.tokenizer(job.text, add_special_tokens=False)["input_ids"]
        full = lm.tokenizer(job.text + completion(job.gold), add_special_tokens=False)["input_ids"]
        logits = lm.model(torch.tensor([full])).logits[0, len(base) - 1:len(full) - 1]
        target = torch.tensor(full[len(base):])
        probs = torch.softmax(torch.topk(logits, 6).values.double() / 0.5, -1)
        tokens = torch.topk(logits, 6).indices
        wanted = torch.cat([tokens[:-1] == target[:-1, None], stops[tokens[-1:]]])
        assert greedy_match == bool(torch.cat([logits[:-1].argmax(-1) == target[:-1], stops[logits[-1:].argmax(-1)]]).all())
        assert chance == pytest.approx(float((probs * wanted).sum(-1).prod()), abs=1e-5)
    # q is the chance that one sample is exactly the gold answer: compare with the frequency over many samples.
    # Compare with the frequency of the same token path (answer tokens, then a stop) among 600 samples.
    sharp = Engine(lm.model, lm.tokenizer, max_new_tokens=8, top_k=3, temperature=0.3)  # frequent answers
    frequencies = []
    for job in jobs[:4]:
        rows = sharp._sample([job], 600, golds=None, stop_at_hit=False)
        paths = [tuple(rows.tokens[r, :rows.lengths[r]].tolist()) for r in range(600)]
        ended = [p for p in paths if stops[p[-1]]]
        path = max(set(ended), key=ended.count)
        gold = lm.tokenizer.decode(list(path[:-1]), skip_special_tokens=True).strip()
        full = lm.tokenizer(job.text + completion(gold), add_special_tokens=False)["input_ids"]
        if tuple(full[-len(path):-1]) != path[:-1]:
            continue  # the answer's text does not re-tokenise to the sampled tokens
        frequency = sum(p[:-1] == path[:-1] for p in ended) / 600
        (_, chance), = sharp.teacher_forced([PromptJob(job.prefix, job.question, job.qid, 0, gold)])
        assert chance == pytest.approx(frequency, abs=4 * (frequency * (1 - frequency) / 600) ** 0.5 + 0.01)
        frequencies.append(frequency)
    assert frequencies and max(frequencies) > (0.2 if "GPT2" in type(lm.model).__name__ else 0.01)  # random Llama rarely stops


def test_exact_estimator_end_to_end():
    lm = _opinionated(make_tiny_lm(TEXTS, seed=6, width=48))
    questions = question_table(sizes=(("train", 4), ("dev", 5)))
    config = SliCKConfig(n_prompts=2, max_new_tokens=4, splits=["train"], estimator="exact", p_true=False)
    table = categorize_questions(lm, questions, config)
    assert table.height == 8 and (table["generations"] == 2).all() and (table["samples"] == 0).all()
    assert table["p_correct_sampled"].is_between(0, 1).all()
    with pytest.raises(ValueError, match="engine only"):
        SliCKConfig(estimator="exact", backend="naive")


@pytest.mark.skipif(not EQ_SAMPLE.exists(), reason="../shared/entityquestions-sample not beside the repo")
def test_thin_dev_split_error_names_the_release_file():
    from benchmark.registry import Registry
    from benchmark.slick import locate_in

    source = Registry().dataset("entityquestions-sample")
    questions = source.questions()
    dev = questions.filter(pl.col("split") == "dev").group_by("relation").len()
    smallest = dev.sort("len").row(0)
    config = SliCKConfig(k_shot=smallest[1], n_prompts=1)
    with pytest.raises(BenchmarkError, match=rf"dataset/dev/(P\d+)\.dev\.json: relation \1 has {smallest[1]} dev"):
        build_prompts(questions, config, 0, locate_in(source))


def test_running_out_of_memory_halves_the_batch_and_gives_the_same_answers(lm):
    jobs = _jobs(seed=6, prompts=1, per_prompt=10)
    expected = Engine(lm.model, lm.tokenizer, max_new_tokens=5, batch_size=16).greedy(jobs)
    engine = Engine(lm.model, lm.tokenizer, max_new_tokens=5, batch_size=16)
    prefill = engine._prefill

    def tight(shared, tails, **kwargs):  # pretend more than 4 rows do not fit on the accelerator
        if len(tails) > 4:
            raise torch.OutOfMemoryError("simulated")
        return prefill(shared, tails, **kwargs)

    engine._prefill = tight
    assert engine.greedy(jobs) == expected
    assert engine.rows == 4 and engine.stats.out_of_memory_retries == 2
