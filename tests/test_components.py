"""Component registry and the ENTITYQUESTIONS loader on the shipped sample."""

import json
import shutil

import polars as pl
import pytest

from benchmark.errors import BenchmarkError
from benchmark.registry import Registry
from components.entityquestions import load_release, template_pattern
from tests.conftest import EQ_SAMPLE

pytestmark = pytest.mark.skipif(not EQ_SAMPLE.exists(), reason="../shared/entityquestions-sample not beside the repo")


def test_unknown_names_suggest_the_closest():
    with pytest.raises(BenchmarkError, match="did you mean 'smollm2-135m'"):
        Registry().model("smollm2-135")
    with pytest.raises(BenchmarkError, match="unknown knowledge source"):
        Registry().dataset("nothing-like-it")


def test_component_file_errors_name_file_and_key(tmp_path):
    (tmp_path / "models").mkdir()
    (tmp_path / "datasets").mkdir()
    (tmp_path / "models" / "typo.yaml").write_text("family: hf\ndescription: x\npaht: gpt2\n")
    (tmp_path / "models" / "nofamily.yaml").write_text("description: x\npath: gpt2\n")
    (tmp_path / "models" / "badfamily.yaml").write_text("family: hff\ndescription: x\npath: gpt2\n")
    registry = Registry(tmp_path)
    with pytest.raises(BenchmarkError) as error:
        registry.model("typo")
    assert "typo.yaml: paht: unknown key" in str(error.value) and "typo.yaml: path: required key is missing" in str(error.value)
    with pytest.raises(BenchmarkError, match="nofamily.yaml: family: required key is missing"):
        registry.model("nofamily")
    with pytest.raises(BenchmarkError, match="badfamily.yaml: family: unknown family 'hff'; did you mean 'hf'"):
        registry.model("badfamily")


def test_unreadable_model_path_is_one_line(tmp_path):
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "broken.yaml").write_text(f"family: hf\ndescription: x\npath: {tmp_path / 'missing'}\n")
    with pytest.raises(BenchmarkError) as error:
        Registry(tmp_path).model("broken").load()
    assert "broken" in str(error.value) and "\n" not in str(error.value)


def test_sample_is_preprocessed_as_the_paper_says():
    source = Registry().dataset("entityquestions-sample")
    table = source.questions()
    assert set(table["split"].unique()) == {"train", "dev", "test"}
    assert table.filter(pl.col("ood"))["split"].unique().to_list() == ["test"]
    raw = json.loads((EQ_SAMPLE / "dataset" / "train" / "P26.train.json").read_text())
    multi = sum(len(r["answers"]) > 1 for r in raw)
    kept = table.filter((pl.col("split") == "train") & (pl.col("relation") == "P26")).height
    assert multi > 0 and kept == len(raw) - multi
    test_subjects = set(table.filter(pl.col("split") == "test")["subject"])
    assert not test_subjects & set(table.filter(pl.col("split") == "train")["subject"])


def test_train_subject_seen_in_any_test_split_is_dropped(tmp_path):
    root = tmp_path / "eq"
    shutil.copytree(EQ_SAMPLE, root)
    test_file = root / "dataset" / "test" / "P36.test.json"
    records = json.loads(test_file.read_text())
    subject = template_pattern("Where was [X] born?").match(
        json.loads((root / "dataset" / "train" / "P19.train.json").read_text())[0]["question"]).group(1)
    records.append({"question": f"What is the capital of {subject}?", "answers": ["A", "B"]})  # multi-answer counts too
    test_file.write_text(json.dumps(records))
    table, dropped = load_release(root, ["P19", "P36"], [])
    assert dropped["test_subject_in_train"] >= 1
    assert subject not in table.filter(pl.col("split") == "train")["subject"].to_list()


def test_bad_files_are_clear(tmp_path):
    root = tmp_path / "eq"
    shutil.copytree(EQ_SAMPLE, root)
    (root / "dataset" / "dev" / "P19.dev.json").write_text("[]")
    with pytest.raises(BenchmarkError, match=r"P19.dev.json: the dev split of P19 is empty"):
        load_release(root, ["P19"], [])
    (root / "dataset" / "dev" / "P19.dev.json").write_text("{not json")
    with pytest.raises(BenchmarkError, match="P19.dev.json: not valid JSON"):
        load_release(root, ["P19"], [])
    with pytest.raises(BenchmarkError, match="no template for relation 'P999'"):
        load_release(root, ["P999"], [])


def test_template_mismatch_is_skipped_with_a_warning_and_counted(tmp_path):
    root = tmp_path / "eq"
    shutil.copytree(EQ_SAMPLE, root)
    path = root / "dataset" / "train" / "P19.train.json"
    records = json.loads(path.read_text()) + [{"question": "Totally different question?", "answers": ["X"]}]
    path.write_text(json.dumps(records))
    with pytest.warns(UserWarning, match="do not match the template"):
        _, dropped = load_release(root, ["P19"], [])
    assert dropped["template_mismatch"] == 1
