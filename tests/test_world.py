"""The embedded world: deterministic files, clean splits, exposures that match the corpus, a model that loads with
plain transformers, knowledge that follows exposure, and a cache that is reused or rebuilt as it should be.

Real code on the test-size world (components/datasets/world-test.yaml, models/toy-gpt-test.yaml); the model is
pretrained once per session (seconds) in the session's temporary cache.
"""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl
import pytest

from benchmark.errors import BenchmarkError
from benchmark.registry import Registry
from components.base import QUESTION_COLUMNS
from components.entityquestions import load_release
from components.world.corpus import count_occurrences
from components.world.generate import TEMPLATES, WorldConfig, generate_world, template_words
from components.world.source import build_world_files, read_documents

from .conftest import EQ_SAMPLE

TEST_MODEL = "toy-gpt-test"


@pytest.fixture(scope="module")
def session_cache(tmp_path_factory):
    """The cache folder conftest's autouse fixture points at, usable from module-scoped fixtures too."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("SLICK_BENCH_CACHE", str(tmp_path_factory.getbasetemp() / "cache"))
        yield


@pytest.fixture(scope="module")
def world_model(session_cache):
    """The test-size world model, pretrained once (or found in the session cache)."""
    component = Registry().model(TEST_MODEL)
    return component, component.load()


@pytest.fixture(scope="module")
def world_files(tmp_path_factory):
    base = tmp_path_factory.mktemp("worlds")
    return {name: build_world_files(seed, base / name, size="test")
            for name, seed in (("a", 0), ("b", 0), ("c", 1))}


def _all_files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_same_seed_gives_byte_identical_files_and_another_seed_differs(world_files):
    a, b, c = (_all_files(Path(world_files[k]["path"])) for k in "abc")
    assert any(name.startswith("dataset/train/") for name in a)
    assert a == b
    questions = [n for n in a if n.startswith("dataset/")]
    assert questions == [n for n in c if n.startswith("dataset/")]
    assert all(a[n] != c[n] for n in questions)
    assert a["corpus.jsonl"] != c["corpus.jsonl"]


def test_build_summary_counts_what_was_written(world_files):
    summary = world_files["a"]
    config = WorldConfig.preset("test")
    assert summary["facts"] == sum(sum(config.sizes(r).values()) for r in config.all_relations())
    assert summary["documents"] == len(read_documents(Path(summary["path"])))
    assert summary["corpus_tokens"] > summary["occurrences"] > 0
    assert sum(summary["exposure_histogram"].values()) == summary["facts"]
    assert list(summary["exposure_histogram"])[:2] == ["0", "1-2"]


def test_question_files_use_the_release_format(world_files):
    root = Path(world_files["a"]["path"])
    config = WorldConfig.preset("test")
    raw = (root / "dataset" / "train" / "P19.train.json").read_text()
    records = json.loads(raw)
    assert raw == json.dumps(records, indent=4)
    assert len(records) == config.split_sizes["train"]
    assert all(set(r) == {"question", "answers"} and len(r["answers"]) == 1 for r in records)
    assert json.loads((root / "relation_query_templates.json").read_text())["P19"] == "Where was [X] born?"


def test_templates_are_the_real_entityquestions_templates():
    if not (EQ_SAMPLE / "relation_query_templates.json").exists():
        pytest.skip("../shared/entityquestions-sample is not here")
    real = json.loads((EQ_SAMPLE / "relation_query_templates.json").read_text())
    assert {r: real[r] for r in TEMPLATES} == TEMPLATES


def test_names_are_unique_single_words_and_never_template_words():
    world = generate_world(WorldConfig.preset("default"))
    names = [n for names in world.entities.values() for n in names]
    assert len({n.lower() for n in names}) == len(names)
    assert all(n.isalpha() and n[0].isupper() for n in names)
    assert not {n.lower() for n in names} & template_words()
    assert len(world.facts) >= 3500
    per_relation = {r: sum(f.relation == r and f.split == "dev" for f in world.facts) for r in world.config.relations}
    assert min(per_relation.values()) >= 30


def test_no_test_subject_is_a_train_subject(world_files):
    root = Path(world_files["a"]["path"])
    config = WorldConfig.preset("test")
    table, dropped = load_release(root, config.relations, config.ood_relations)
    assert dropped == {"multi_answer": 0, "test_subject_in_train": 0, "template_mismatch": 0, "empty_answer": 0}
    subjects = {split: set(table.filter(pl.col("split") == split)["subject"]) for split in ("train", "dev", "test")}
    assert not subjects["train"] & subjects["test"]
    assert not subjects["train"] & subjects["dev"]
    assert not subjects["dev"] & subjects["test"]


def test_exposures_match_the_corpus(world_files):
    root = Path(world_files["a"]["path"])
    config = WorldConfig.preset("test")
    exposures = pl.read_csv(root / "exposures.csv")
    documents = read_documents(root)
    counts = count_occurrences(documents, config.all_relations())
    expected = {(r, s, a): e for r, s, a, e in exposures.select("relation", "subject", "answer", "exposure").iter_rows()}
    assert {k: v for k, v in counts.items()} == {k: v for k, v in expected.items() if v > 0}
    zero = (exposures["exposure"] == 0).mean()
    assert 0.3 <= zero <= 0.4
    assert exposures["exposure"].max() == config.max_exposure
    exposed = exposures.filter(pl.col("exposure") > 0)
    assert 0.2 <= (exposed["qa_lines"] > 0).mean() <= 0.4


def test_qa_documents_are_in_the_few_shot_format(world_files):
    documents = read_documents(Path(world_files["a"]["path"]))
    qa = [d for d in documents if d.startswith("Q: ")]
    assert qa
    for document in qa:
        lines = document.split("\n")
        assert len(lines) % 2 == 0
        assert all(q.startswith("Q: ") and a.startswith("A: ") for q, a in zip(lines[::2], lines[1::2], strict=True))


def test_world_source_component(session_cache):
    source = Registry().dataset("world-test")
    questions = source.questions()
    assert questions.columns == list(QUESTION_COLUMNS)
    # OOD relations have test questions and, as in the release, dev questions for their few-shot exemplars
    assert set(questions.filter(pl.col("ood"))["split"]) == {"dev", "test"}
    assert source.guessable_relations() == ["P17", "P136", "P495", "P407"]
    exposures = source.exposures()
    assert {"relation", "question", "exposure"} <= set(exposures.columns)
    assert questions.join(exposures, on=["split", "relation", "question"], how="anti").is_empty()
    assert source.identity() == Registry().dataset("world-test").identity()
    assert source.identity() != Registry().dataset("world-test", {"seed": 1}).identity()
    assert (source.root / "dataset" / "test").is_dir()


def test_saved_model_loads_with_plain_transformers(world_model):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    component, _ = world_model
    folder = component.ensure_pretrained()
    model = AutoModelForCausalLM.from_pretrained(folder)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    assert model.config.model_type == "gpt2"
    manifest = json.loads((folder / "world_model.json").read_text())
    assert manifest["stats"]["vocabulary"] == len(tokenizer)
    # Every question and answer (zero-exposure names included) and every benchmark prompt is in the vocabulary.
    source = Registry().dataset(component.spec.world)
    texts = [*source.questions()["question"], *source.questions()["answer"], "I don't know",
             "Answer the following question. Who is Q?\nA:",
             "Question: q\nProposed Answer: a\nIs the proposed answer:\n (A) True\n (B) False\nThe proposed answer is:"]
    assert [t for t in texts if tokenizer.unk_token_id in tokenizer(t)["input_ids"]] == []
    row = source.questions().row(0, named=True)
    text = f"Q: {row['question']}\nA: {row['answer']}"
    assert tokenizer.decode(tokenizer(text)["input_ids"]) == text


def test_probe_accuracy_rises_with_exposure(world_model):
    from components.world.probe import probe

    result = probe(TEST_MODEL)
    buckets = result["buckets"]
    assert [b["min_exposure"] for b in buckets] == sorted(b["min_exposure"] for b in buckets)
    assert buckets[0]["min_exposure"] == buckets[0]["max_exposure"] == 0
    assert all(b["max_exposure"] < c["min_exposure"] for b, c in zip(buckets, buckets[1:], strict=False))
    assert sum(b["n"] for b in buckets) == result["questions"]
    assert buckets[-1]["accuracy"] >= buckets[0]["accuracy"] + 0.3
    assert buckets[0]["accuracy"] <= 0.1
    assert set(result["guessable"]["relations"]) == {"P17", "P136", "P495", "P407"}


def test_model_cache_is_reused_and_rebuilt_when_the_config_changes(world_model, monkeypatch):
    import components.world.model as world_model_module

    component, loaded = world_model
    folder = component.ensure_pretrained()
    stamp = (folder / "world_model.json").stat().st_mtime_ns

    def no_training(*args, **kwargs):
        raise AssertionError("pretrained again although the cache holds this model")

    monkeypatch.setattr(world_model_module, "pretrain", no_training)
    again = Registry().model(TEST_MODEL)
    assert again.load().identity == loaded.identity == component.identity()
    assert (folder / "world_model.json").stat().st_mtime_ns == stamp

    changed = Registry().model(TEST_MODEL, {"epochs": 1})
    assert changed.identity() != component.identity()
    with pytest.raises(AssertionError, match="pretrained again"):
        changed.load()
    assert not changed.folder().exists()  # an interrupted build leaves nothing behind
    monkeypatch.undo()
    assert changed.load().identity == changed.identity()
    assert changed.folder() != folder and (changed.folder() / "world_model.json").exists()


@pytest.mark.parametrize("kind, name, key", [("datasets", "world", "sead"), ("models", "toy-gpt", "layres")])
def test_misspelled_key_is_one_line_naming_file_and_key(tmp_path, kind, name, key):
    source = Path(__file__).resolve().parent.parent / "components" / kind / f"{name}.yaml"
    (tmp_path / kind).mkdir()
    bad = tmp_path / kind / f"{name}.yaml"
    bad.write_text(source.read_text() + f"{key}: 1\n")
    registry = Registry(root=tmp_path)
    with pytest.raises(BenchmarkError) as info:
        registry.dataset(name) if kind == "datasets" else registry.model(name)
    message = str(info.value)
    assert "\n" not in message
    assert str(bad) in message and key in message


def test_pretraining_gives_byte_identical_weights_at_1_and_2_threads(session_cache, tmp_path):
    """A speed choice never changes a result: the world model is the same whatever the thread count (or the
    machine's load, which used to pick it). Two epochs are enough to show it; the full test model takes 40."""
    from components.world.corpus import vocabulary_texts
    from components.world.pretrain import PretrainConfig, pretrain

    component = Registry().model(TEST_MODEL, {"epochs": 2})
    source = component.source()
    world = generate_world(source.config())
    documents = source.documents()
    config = component.training_config()
    assert isinstance(config, PretrainConfig) and config.precision == "32-true"
    weights = []
    for threads in (1, 2):
        pretrain(documents, vocabulary_texts(world, documents), config, tmp_path / str(threads), threads=threads)
        weights.append((tmp_path / str(threads) / "model.safetensors").read_bytes())
    assert weights[0] == weights[1]


def test_editing_a_stage_source_changes_its_cache_key(tmp_path, monkeypatch):
    """Keys hash the code that computes a stage: an edited stage can never reuse a stale result."""
    import importlib
    import sys

    from benchmark import hashing

    package = tmp_path / "fake_stage_pkg"
    package.mkdir()
    (package / "__init__.py").write_text("")
    stage = package / "stage.py"
    stage.write_text("def compute(x):\n    return x + 1\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    importlib.invalidate_caches()
    sys.modules.pop("fake_stage_pkg", None)
    before = hashing.code_key("fake_stage_pkg.stage")
    stage.write_text("def compute(x):\n    return x + 2\n")
    hashing.code_key.cache_clear()
    after = hashing.code_key("fake_stage_pkg.stage")
    assert before != after
    hashing.code_key.cache_clear()
    assert hashing.code_key("fake_stage_pkg.stage") == after

    from benchmark.slick import CODE_MODULES, SliCKConfig, slick_key
    component = Registry().model(TEST_MODEL)
    source = Registry().dataset("world-test")
    key = slick_key(source, component, SliCKConfig(), 0, "cpu")
    assert slick_key(source, component, SliCKConfig(), 0, "cuda") != key  # the device is in the key
    monkeypatch.setattr("benchmark.slick.CODE_MODULES", (*CODE_MODULES, "fake_stage_pkg.stage"))
    assert slick_key(source, component, SliCKConfig(), 0, "cpu") != key
