"""Component registry: names, component files and their errors (the ENTITYQUESTIONS loader: test_entityquestions.py)."""

import pytest

from benchmark.errors import BenchmarkError
from benchmark.registry import Registry


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

