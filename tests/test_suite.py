"""Suite schema: composition, overrides, and errors that name the file and the key."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from benchmark.errors import BenchmarkError
from benchmark.registry import suite_files
from benchmark.suite import expand_sweep, load_suite

REPO = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize("path", suite_files(), ids=lambda p: p.name)
def test_shipped_suites_are_valid(path):
    suite = load_suite(path)
    assert suite.name and suite.description


def write(folder: Path, name: str, text: str) -> Path:
    path = folder / name
    path.write_text(text)
    return path


def test_extends_local_keys_win_and_mappings_merge(tmp_path):
    write(tmp_path, "base.yaml", "name: base\nmodel: toy-gpt\nknowledge_source: world\n"
                                 "train: {epochs: 7, lr: 0.001}\nmixtures: {unknown_fraction: [0.0, 1.0]}\n")
    child = write(tmp_path, "child.yaml", "extends: base.yaml\nname: child\ntrain: {lr: 0.002}\n"
                                          "mixtures: {unknown_fraction: [0.5]}\n")
    suite = load_suite(child)
    assert suite.name == "child" and suite.model == "toy-gpt"
    assert suite.train.epochs == 7 and suite.train.lr == 0.002
    assert suite.mixtures.unknown_fraction == [0.5]  # lists are replaced, not appended


def test_smoke_extends_the_sweep():
    smoke = load_suite(REPO / "suites" / "smoke.yaml")
    sweep = load_suite(REPO / "suites" / "unknown_sweep.yaml")
    # Inherited where smoke says nothing (dropout, batch size, SliCK's temperature), its own where it does.
    assert smoke.train.dropout == sweep.train.dropout and smoke.train.batch_size == sweep.train.batch_size
    assert smoke.slick.temperature == sweep.slick.temperature and smoke.slick.n_prompts != sweep.slick.n_prompts
    assert smoke.train.epochs != sweep.train.epochs and smoke.seeds == [0] != sweep.seeds


def test_cycle_is_reported(tmp_path):
    write(tmp_path, "a.yaml", "extends: b.yaml\nname: a\n")
    write(tmp_path, "b.yaml", "extends: a.yaml\nname: b\n")
    with pytest.raises(BenchmarkError, match=r"cycle \(a.yaml -> b.yaml -> a.yaml\)"):
        load_suite(tmp_path / "a.yaml")


def test_missing_parent_names_the_child(tmp_path):
    child = write(tmp_path, "child.yaml", "extends: nowhere.yaml\nname: c\n")
    with pytest.raises(BenchmarkError, match=r"child.yaml: extends: .*nowhere.yaml: suite file not found"):
        load_suite(child)


def test_command_line_overrides(tmp_path):
    suite = load_suite(REPO / "suites" / "smoke.yaml", ["train.lr=3e-5", "mixtures.unknown_fraction=[0.25]", "seeds=[1, 2]"])
    assert suite.train.lr == 3e-5 and suite.mixtures.unknown_fraction == [0.25] and suite.seeds == [1, 2]
    with pytest.raises(BenchmarkError, match="expected KEY.PATH=VALUE"):
        load_suite(REPO / "suites" / "smoke.yaml", ["train.lr"])


def test_unknown_key_names_file_path_and_suggestion(tmp_path):
    broken = write(tmp_path, "broken.yaml", "name: x\nmodel: toy-gpt\nknowledge_source: world\ntrain: {learning_rate: 0.1, lr: 1}\n")
    with pytest.raises(BenchmarkError) as error:
        load_suite(broken)
    message = str(error.value)
    assert "broken.yaml: train.learning_rate: unknown key" in message


def test_misspelled_top_level_key_suggests(tmp_path):
    broken = write(tmp_path, "broken.yaml", "name: x\nmodel: toy-gpt\nknowledge_source: world\nmixture: {}\n")
    with pytest.raises(BenchmarkError, match="did you mean 'mixtures'"):
        load_suite(broken)


def test_wrong_type_and_missing_key(tmp_path):
    broken = write(tmp_path, "broken.yaml", "name: x\nknowledge_source: world\ntrain: {epochs: many}\n")
    with pytest.raises(BenchmarkError) as error:
        load_suite(broken)
    assert "broken.yaml: model: required key is missing" in str(error.value)
    assert "broken.yaml: train.epochs:" in str(error.value)


def test_bad_fraction_and_sweep_field(tmp_path):
    bad = write(tmp_path, "bad.yaml", "name: x\nmodel: m\nknowledge_source: w\nmixtures: {unknown_fraction: [1.5]}\n")
    with pytest.raises(BenchmarkError, match="mixtures.unknown_fraction"):
        load_suite(bad)
    bad = write(tmp_path, "bad2.yaml", "name: x\nmodel: m\nknowledge_source: w\nsweep: {train.lrr: [1, 2]}\n")
    with pytest.raises(BenchmarkError, match="did you mean 'train.lr'"):
        load_suite(bad)


def test_sweep_expands_to_every_combination(tmp_path):
    path = write(tmp_path, "s.yaml", "name: x\nmodel: toy-gpt\nknowledge_source: world\n"
                                     "sweep: {train.lr: [0.1, 0.2], train.batch_size: [4, 8]}\n")
    combos = expand_sweep(load_suite(path))
    assert len(combos) == 4 and {(c.lr, c.batch_size) for _, c in combos} == {(0.1, 4), (0.1, 8), (0.2, 4), (0.2, 8)}


def test_component_names_are_resolved_on_load(tmp_path):
    write(tmp_path, "parent.yaml", "name: p\nmodel: toy-gtp\nknowledge_source: world\n")
    child = write(tmp_path, "child.yaml", "extends: parent.yaml\nname: c\n")
    # The name comes from the parent; the error names the suite that was loaded, and the key.
    with pytest.raises(BenchmarkError, match=r"child.yaml: model: unknown base model 'toy-gtp'; did you mean "
                                             r"'toy-gpt'\? \(known: .*toy-gpt-test, .*toy-gpt\)$"):
        load_suite(child)
    with pytest.raises(BenchmarkError, match=r"smoke.yaml: knowledge_source: unknown knowledge source 'nowhere' "
                                             r"\(known: entityquestions-sample, "):
        load_suite(REPO / "suites" / "smoke.yaml", ["knowledge_source=nowhere"])


def test_overrides_are_checked_against_the_component_schema(tmp_path):
    bad = write(tmp_path, "bad.yaml", "extends: " + str(REPO / "suites" / "smoke.yaml") + "\n"
                                      "model_overrides: {layers: 0, heads: x}\n")
    with pytest.raises(BenchmarkError) as error:
        load_suite(bad)
    assert str(error.value).splitlines() == [
        f"{bad}: model_overrides.layers: Input should be greater than or equal to 1 (found 0)",
        f"{bad}: model_overrides.heads: Input should be a valid integer, unable to parse string as an integer "
        "(found 'x')"]


def test_local_paths_are_checked_only_when_asked(tmp_path):
    from benchmark.pipeline import resolve_components
    from benchmark.suite import Suite, check_components

    weightless = tmp_path / "weights"
    weightless.mkdir()
    suite = load_suite(REPO / "suites" / "smoke.yaml", ["model=qwen2.5-0.5b", f"model_overrides.path={weightless}"])
    with pytest.raises(BenchmarkError, match=rf"smoke.yaml: model_overrides.path: '{weightless}' holds no model weights"):
        check_components(suite, check_paths=True)
    (weightless / "model.safetensors").write_bytes(b"")
    source, model = check_components(suite, check_paths=True)
    assert model.spec.path == str(weightless) and source.name == "world-test"
    # A suite built in code has no file: the pipeline's errors still name the key.
    in_code = Suite.model_validate({"name": "x", "model": "qwen2.5-0.5b", "knowledge_source": "world",
                                    "model_overrides": {"path": "/nonexistent"}})
    with pytest.raises(BenchmarkError, match=r"^<suite>: model_overrides.path: '/nonexistent' is neither"):
        resolve_components(in_code)
    hub = in_code.model_copy(update={"model_overrides": {"path": "Qwen/Qwen2.5-0.5B"}})
    assert resolve_components(hub)[1].spec.path == "Qwen/Qwen2.5-0.5B"  # a hub id: fetched on load, not here


def test_sweep_values_are_checked_on_load(tmp_path):
    bad = write(tmp_path, "bad.yaml", "name: x\nmodel: toy-gpt\nknowledge_source: world\n"
                                      "sweep: {train.epochs: [3, 0]}\n")
    with pytest.raises(BenchmarkError, match=r"bad.yaml: sweep: 'train.epochs': Input should be greater than or "
                                             r"equal to 1 \(found 0\)"):
        load_suite(bad)


def test_yaml_errors_give_the_line(tmp_path):
    bad = write(tmp_path, "bad.yaml", "name: x\nmodel: toy-gpt\n  knowledge_source: world\n")
    with pytest.raises(BenchmarkError, match=r"bad.yaml: line 3, column 19: not valid YAML: mapping values are not "
                                             r"allowed here$"):
        load_suite(bad)
    bad = write(tmp_path, "date.yaml", "name: 2024-13-45\n")
    with pytest.raises(BenchmarkError, match=r"date.yaml: not valid YAML: month must be in 1..12"):
        load_suite(bad)


def test_key_changes_with_content_only(tmp_path):
    a = load_suite(REPO / "suites" / "smoke.yaml")
    b = load_suite(REPO / "suites" / "smoke.yaml")
    c = load_suite(REPO / "suites" / "smoke.yaml", ["train.epochs=4"])
    assert a.key() == b.key() != c.key()


def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "benchmark", *args], capture_output=True, text=True, cwd=REPO)


def test_validate_and_ls_commands(tmp_path):
    result = cli("validate", "suites/smoke.yaml", "--json")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["resolved"]["model"] == "toy-gpt-test"
    broken = write(tmp_path, "broken.yaml", "extends: " + str(REPO / "suites" / "smoke.yaml") + "\ntrain: {epoch: 3}\n")
    result = cli("validate", str(broken))
    assert result.returncode == 2
    assert "broken.yaml: train.epoch: unknown key" in result.stderr and "Traceback" not in result.stderr
    listing = json.loads(cli("ls", "--json").stdout)
    assert "toy-gpt" in listing["models"] and "world" in listing["knowledge_sources"]
    assert any(name.endswith("unknown_sweep.yaml") for name in listing["suites"])
    # A component whose data is not on this machine is listed as such (the full release is fetched on request).
    assert "data/entityquestions' does not exist" in listing["unavailable"]["entityquestions"]
    assert "toy-gpt" not in listing["unavailable"]


def test_ls_fields_is_the_schema_with_every_key_explained():
    """Every key a suite and each component family accepts, with its type, default and meaning: what the schema
    validates is what the listing shows (a key without a description fails here)."""
    from benchmark.fields import family_schemas
    from benchmark.registry import FAMILIES

    document = json.loads(cli("ls", "--fields", "--json").stdout)["fields"]
    assert document == json.loads(json.dumps(family_schemas()))
    assert set(document) == {"suite", *(f"{kind}/{family}" for kind, fams in FAMILIES.items() for family in fams)}
    for schema, rows in document.items():
        assert rows and all(row["description"] for row in rows), schema
    keys = {schema: {row["key"]: row for row in rows} for schema, rows in document.items()}
    assert keys["models/hf"]["gguf_file"]["default"] == "null" and keys["models/hf"]["path"]["default"] == "(required)"
    assert keys["models/world"]["layers"]["type"] == "int"
    assert keys["suite"]["train.epochs"]["type"] == "int" and "mixtures.idk_relabel.answer" in keys["suite"]
    assert keys["suite"]["slick.backend"]["type"] == "'engine' | 'naive' | 'vllm'"
    # Each listed suite key is one --set accepts.
    assert cli("validate", "suites/smoke.yaml", "--set", "slick.limit=2", "--json").returncode == 0
    human = cli("ls", "--fields").stderr
    assert "Keys of family qa (datasets/qa)" in human and "Suite keys" in human
