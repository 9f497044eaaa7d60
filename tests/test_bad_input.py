"""Bad input fails before any compute, as one line naming the file, the key and what was expected.

The corpus is ``tests/bad_input/*.yaml``; adding a case is adding a file whose first line says what its error
must contain, the key path and then a phrase of the message::

    # expect: train.lr | greater than 0

Files under ``tests/bad_input/parts/`` are parents that corpus files extend, not cases of their own.
"""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from benchmark.cache import ensure_writable
from benchmark.cli import main
from benchmark.errors import BenchmarkError
from benchmark.suite import check_components, load_raw, load_suite

REPO = Path(__file__).resolve().parent.parent
CORPUS = Path(__file__).resolve().parent / "bad_input"
CASES = sorted(CORPUS.glob("*.yaml"))
SMOKE = REPO / "suites" / "smoke.yaml"


def expectation(path: Path) -> tuple[str, str]:
    first = path.read_bytes().split(b"\n", 1)[0].decode()
    match = re.fullmatch(r"# expect: (.+?) \| (.+)", first)
    assert match, f"{path.name}: the first line must be '# expect: KEY | PHRASE'"
    return match.group(1), match.group(2)


def cli_error(capsys, *argv: str) -> str:
    """Run the command line in-process; it must fail with exit code 2 and exactly one line on stderr."""
    code = main(list(argv))
    out, err = capsys.readouterr()
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2, err
    assert out == ""
    assert len(lines) == 1, err
    assert lines[0].startswith("error: ")
    return lines[0]


def test_the_corpus_is_there():
    assert len(CASES) >= 30


@pytest.mark.parametrize("path", CASES, ids=lambda p: p.stem)
def test_validate_rejects_with_one_line(path, capsys):
    key, phrase = expectation(path)
    line = cli_error(capsys, "validate", str(path.relative_to(REPO)))
    assert path.name in line
    assert re.search(rf": {re.escape(key)}[:,]", line), f"key '{key}' not named: {line}"
    assert phrase in line


@pytest.mark.parametrize("name", ["unknown_model.yaml", "negative_lr.yaml", "model_path_missing.yaml",
                                  "dataset_folder_missing.yaml"])
def test_run_and_categorize_say_the_same_and_open_no_run(name, capsys):
    from mlflow import MlflowClient

    from benchmark.tracking import tracking_uri

    path = str((CORPUS / name).relative_to(REPO))
    expected = cli_error(capsys, "validate", path)
    assert cli_error(capsys, "run", path) == expected
    assert cli_error(capsys, "categorize", path) == expected
    experiment = yaml.safe_load((CORPUS / name).read_text())["name"]
    assert MlflowClient(tracking_uri=tracking_uri()).get_experiment_by_name(experiment) is None


def test_a_name_set_on_the_command_line_is_checked_too(capsys):
    line = cli_error(capsys, "validate", str(SMOKE), "--set", "knowledge_source=wrold")
    assert "smoke.yaml: knowledge_source: unknown knowledge source 'wrold'; did you mean 'world'?" in line


# -- an unwritable cache or MLflow store ------------------------------------------------------------------------
@pytest.fixture
def blocker(tmp_path) -> Path:
    """A plain file: nothing can be created under it, not even by root (chmod does not stop root)."""
    path = tmp_path / "file"
    path.write_text("")
    return path


@pytest.mark.parametrize("where", ["the file itself", "a folder under the file"])
def test_unwritable_cache_fails_before_any_compute(where, blocker, monkeypatch, capsys):
    cache = blocker if where == "the file itself" else blocker / "sub" / "cache"
    monkeypatch.setenv("SLICK_BENCH_CACHE", str(cache))
    for command in ("run", "categorize"):
        line = cli_error(capsys, command, str(SMOKE))
        assert f"{cache}: cannot write here (SLICK_BENCH_CACHE)" in line


def test_unwritable_mlflow_store_fails_before_any_compute(blocker, monkeypatch, capsys):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{blocker}/sub/mlflow.db")
    line = cli_error(capsys, "run", str(SMOKE))
    assert f"{blocker}/sub: cannot write here (the folder of sqlite:///{blocker}/sub/mlflow.db)" in line


def test_ensure_writable(tmp_path, blocker):
    ensure_writable(tmp_path / "new" / "folder", f"sqlite:///{tmp_path}/store/mlflow.db", f"file://{tmp_path}/runs")
    assert (tmp_path / "new" / "folder").is_dir() and (tmp_path / "store").is_dir()
    assert list((tmp_path / "new" / "folder").iterdir()) == []  # the probe file is gone
    ensure_writable("sqlite://", "databricks")  # in memory, or remote without a folder: not checked
    assert not Path("databricks").exists()  # an MLflow store name, not a folder to create in the working directory
    # (an http(s) server must answer: tests/test_faults.py::test_an_unreachable_tracking_server_fails_fast_naming_it)
    with pytest.raises(BenchmarkError, match=rf"^{re.escape(str(blocker))}: cannot write here"):
        ensure_writable(blocker)


# -- nothing but BenchmarkError, whatever the file says ---------------------------------------------------------
SMOKE_DOC = load_raw(SMOKE)
NAMES = ["toy-gpt", "toy-gtp", "toy-gpt-test", "world", "world-test", "wrold", "entityquestions-sample",
         "qwen2.5-0.5b", "hf", "entityquestions", "/nonexistent", "package:no_such_module", "package:", ".", "",
         "Qwen/Qwen2.5-0.5B", "a\x00b", "x" * 300, "../../suites/smoke.yaml", "suite.yaml", "2024-13-45"]
FIELDS = sorted({"extends", "path", "family", "world", "size", *SMOKE_DOC, *(k for v in SMOKE_DOC.values()
                                                                             if isinstance(v, dict) for k in v)})
scalars = (st.none() | st.booleans() | st.integers(-(2**40), 2**40) | st.floats() | st.sampled_from(NAMES)
           | st.text(max_size=10))
keys = st.sampled_from(FIELDS) | st.text(max_size=8) | st.integers(-3, 3)
values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(keys, inner, max_size=4),
                      max_leaves=12)


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("fuzz")


def survives(folder: Path, text: str | bytes, overrides: list[str] = ()) -> None:
    """Loading and checking the suite either works or raises BenchmarkError with a message; nothing else."""
    path = folder / "suite.yaml"
    path.write_bytes(text if isinstance(text, bytes) else text.encode("utf-8", "surrogatepass"))
    try:
        suite = load_suite(path, list(overrides))
        check_components(suite, path, check_paths=True)
    except BenchmarkError as exc:
        assert str(exc).strip()


def dump(document) -> str:
    return yaml.safe_dump(document, allow_unicode=True)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(document=st.dictionaries(keys, values, max_size=8) | values)
def test_random_documents(folder, document):
    survives(folder, dump(document))


@settings(max_examples=200, deadline=None)
@given(text=st.text(max_size=80) | st.binary(max_size=40))
def test_random_text(folder, text):
    survives(folder, text)


def key_paths(node, prefix=()):
    items = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else ()
    for key, value in items:
        yield (*prefix, key)
        yield from key_paths(value, (*prefix, key))


def swapped(value, how: int):
    return [str(value), [value], {"value": value}, None][how]


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_mutated_smoke_suite(folder, data):
    document = copy.deepcopy(SMOKE_DOC)
    for _ in range(data.draw(st.integers(1, 4), label="mutations")):
        paths = list(key_paths(document))
        if not paths:
            break
        *parent_path, key = data.draw(st.sampled_from(paths), label="key")
        parent = document
        for part in parent_path:
            parent = parent[part]
        action = data.draw(st.sampled_from(["delete", "replace", "swap"]), label="action")
        if action == "delete":
            del parent[key]
        elif action == "replace":
            parent[key] = data.draw(values, label="value")
        else:
            parent[key] = swapped(parent[key], data.draw(st.integers(0, 3), label="how"))
    dotted = st.sampled_from([".".join(map(str, p)) for p in key_paths(SMOKE_DOC)] + ["model_overrides.path",
                             "knowledge_source_overrides.path", "model_overrides.family", "", "a..b"])
    overrides = data.draw(st.lists(st.tuples(dotted, values), max_size=2), label="--set")
    survives(folder, dump(document), [f"{k}={json.dumps(v)}" for k, v in overrides])


@pytest.mark.parametrize("text", ["name: 2024-13-45\n", "a: &x [*x]\n", "[" * 200 + "]" * 200, "? [a]\n: b\n",
                                  "<<: 5\n", "extends: \"a\\0b\"\n", f"extends: {'x' * 5000}\n"])
def test_awkward_yaml(folder, text):
    survives(folder, text)


def test_a_misspelt_only_is_refused_before_slick_runs(capsys, monkeypatch):
    from benchmark import pipeline

    def no_slick(*args, **kwargs):
        raise AssertionError("SliCK ran before --only was checked")

    monkeypatch.setattr(pipeline, "categorize", no_slick)
    line = cli_error(capsys, "run", str(SMOKE), "--only", "unknown_5")
    assert "--only unknown_5: no such variant; did you mean 'unknown_50'?" in line
    assert "unknown_50_known_only" in line  # every variant named
