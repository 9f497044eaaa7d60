"""Nothing lost, nothing leaked: the defects a red-team review found (D1-D24 below), each with the test that would
have caught it. Each test runs the real code on small inputs; faults that need a full disk are injected at the
one call that writes (``shutil``'s copy functions, ``zipfile``'s extraction), as tests/test_faults.py does.
"""

from __future__ import annotations

import errno
import json
import logging
import multiprocessing
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import warnings
import zipfile
from pathlib import Path

import polars as pl
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import components.entityquestions as eq
from benchmark import pipeline
from benchmark.cache import atomic_dir, cache_hit, write_checksums
from benchmark.categorize import categorize_suite
from benchmark.cli import main
from benchmark.errors import BenchmarkError, BenchmarkWarning
from benchmark.plan import plan_variants, planned_variant_names
from benchmark.suite import load_suite
from benchmark.tracking import Tracker
from tests.stores import SMOKE, own_cache
from tests.test_bad_input import cli_error
from tests.test_entityquestions import make_zip, write_release

REPO = Path(__file__).resolve().parent.parent


def no_space(*_args, **_kwargs):
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


# ---------------------------------------------------------------- D1: a folder slick-bench did not write is never emptied


def user_folder(path: Path) -> Path:
    (path / "sub").mkdir(parents=True)
    (path / "important.txt").write_text("keep me")
    (path / "sub" / "notes.md").write_text("and me")
    return path


def contents(path: Path) -> dict[str, str]:
    return {p.relative_to(path).as_posix(): p.read_text() for p in sorted(path.rglob("*")) if p.is_file()}


def test_data_fetch_never_replaces_a_folder_of_the_users(tmp_path, capsys):
    archive = make_zip(tmp_path)
    dest = user_folder(tmp_path / "mine")
    before = contents(dest)
    line = cli_error(capsys, "data", "fetch", "entityquestions", "--dest", str(dest), "--url", archive.as_uri(),
                     "--force")
    assert str(dest) in line and "important.txt" in line and "choose an empty or new folder" in line
    assert contents(dest) == before
    with pytest.raises(BenchmarkError, match="holds files slick-bench did not write"):  # the layer below, too
        eq.unpack_release(archive, dest, expected_sha256=None)
    assert contents(dest) == before
    # An empty folder, and a release fetched there before (--force), are replaced as before.
    (tmp_path / "empty").mkdir()
    assert eq.fetch_release(tmp_path / "empty", url=archive.as_uri(), expected_sha256=None)["downloaded"]
    assert eq.fetch_release(tmp_path / "empty", url=archive.as_uri(), expected_sha256=None, force=True)["downloaded"]


def test_atomic_dir_replaces_only_what_it_wrote(tmp_path):
    mine = user_folder(tmp_path / "mine")
    with pytest.raises(BenchmarkError, match="not replaced"), atomic_dir(mine) as tmp:
        (tmp / "x").write_text("never")
    assert contents(mine) == {"important.txt": "keep me", "sub/notes.md": "and me"}
    assert not list(tmp_path.glob(".mine.*"))
    with atomic_dir(tmp_path / "entry") as tmp:  # an entry it wrote (checksums.json): rebuilt in place
        (tmp / "a").write_text("1")
    with atomic_dir(tmp_path / "entry") as tmp:
        (tmp / "a").write_text("2")
    assert (tmp_path / "entry" / "a").read_text() == "2"


# ---------------------------------------------------------------- D2, D17, D19: the report's folder and its upload


def parent_run(experiment: str) -> str:
    """A finished suite parent run with nothing in it: what the report needs to be built and logged."""
    from mlflow import MlflowClient

    from benchmark.tracking import tracking_uri

    client = MlflowClient(tracking_uri=tracking_uri())
    found = client.get_experiment_by_name(experiment)
    experiment_id = found.experiment_id if found else client.create_experiment(experiment)
    run = client.create_run(experiment_id, run_name=f"{experiment[:20]}:toy",
                            tags={"slick.role": "parent", "base_model": "toy"})
    client.set_terminated(run.info.run_id, "FINISHED")
    return run.info.run_id


def artifacts(run_id: str, folder: str = "report") -> dict[str, int]:
    from mlflow import MlflowClient

    from benchmark.tracking import tracking_uri

    client = MlflowClient(tracking_uri=tracking_uri())
    out = {}
    for item in client.list_artifacts(run_id, folder):
        if item.is_dir:
            out |= artifacts(run_id, item.path)
        else:
            out[item.path] = item.file_size
    return out


@pytest.mark.parametrize("experiment", ["..", "a/../../b", "x" * 300], ids=["dot-dot", "slashes", "500-chars"])
def test_a_report_stays_in_reports_and_uploads_only_its_own_files(experiment, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "reports").mkdir()
    (tmp_path / ".env").write_text("SECRET=1")
    run_id = parent_run(experiment)
    assert main(["report", "--experiment", experiment, "--json"]) == 0
    document = json.loads(capsys.readouterr().out)
    index = Path(document["index"]).resolve()
    assert index.parent.parent == (tmp_path / "reports").resolve()  # one folder inside reports/, whatever the name
    assert not (tmp_path / "index.html").exists()
    uploaded = artifacts(run_id)
    assert {"report/index.html", "report/summary.md"} <= set(uploaded)
    assert all(p in ("report/index.html", "report/summary.md") or p.startswith("report/figures/") for p in uploaded)


def test_a_report_upload_that_fails_leaves_no_truncated_file(tmp_path, monkeypatch, capsys):
    """ENOSPC while the page is being copied into the store: whole files or none, and one line, rc 2."""
    monkeypatch.chdir(tmp_path)
    run_id = parent_run("robust-full-disk")
    real_copy2, real_copyfileobj = shutil.copy2, shutil.copyfileobj

    def copy2(src, dst, *args, **kwargs):  # how a folder upload copies (MLflow's local artifact store)
        if Path(src).name == "index.html":
            target = Path(dst) / Path(src).name if Path(dst).is_dir() else Path(dst)
            target.write_bytes(Path(src).read_bytes()[:100])
            no_space()
        return real_copy2(src, dst, *args, **kwargs)

    def copyfileobj(source, target, length=0):  # how a file upload copies
        if str(getattr(source, "name", "")).endswith("index.html"):
            target.write(source.read(100))
            no_space()
        return real_copyfileobj(source, target, length) if length else real_copyfileobj(source, target)

    monkeypatch.setattr(shutil, "copy2", copy2)
    monkeypatch.setattr(shutil, "copyfileobj", copyfileobj)
    line = cli_error(capsys, "report", "--experiment", "robust-full-disk")
    assert "index.html" in line and run_id in line and "no space left on device" in line
    monkeypatch.undo()
    uploaded = artifacts(run_id)
    page = (tmp_path / "reports" / "robust-full-disk" / "index.html").stat().st_size
    assert uploaded.get("report/index.html") in (None, page)  # absent or whole, never 100 bytes


# ---------------------------------------------------------------- D5: a finished variant's results are never dropped


@pytest.fixture(scope="module")
def world_cache() -> Path:
    from benchmark.registry import Registry

    Registry().model("toy-gpt-test").ensure_pretrained()
    categorize_suite(load_suite(SMOKE))
    return Path(os.environ["SLICK_BENCH_CACHE"])


def test_a_finished_variant_whose_cached_results_are_gone_is_read_back_from_its_run(world_cache, tmp_path,
                                                                                    monkeypatch, caplog):
    root = own_cache(tmp_path / "cache", world_cache)
    monkeypatch.setenv("SLICK_BENCH_CACHE", str(root))
    suite = load_suite(SMOKE, ["train.epochs=1", "tracking.experiment=robust-lost-predictions"])
    first = pipeline.run_suite(suite, SMOKE, log=lambda _: None)
    lost, damaged = sorted(p for p in (root / "variants").iterdir() if p.is_dir())[:2]
    (lost / "predictions.parquet").unlink()  # a teammate's cache without the file
    table = damaged / "predictions.parquet"
    table.write_bytes(table.read_bytes()[: table.stat().st_size // 2])
    said: list[str] = []
    with caplog.at_level(logging.WARNING, logger="benchmark.cache"):
        second = pipeline.run_suite(suite, SMOKE, log=said.append)
    assert all(v["reused"] for v in second["variants"]) and len(second["variants"]) == len(first["variants"])
    assert sum("predictions read back" in line for line in said) == 2, said
    assert any(str(table) in r.getMessage() for r in caplog.records)  # the damaged one is reported
    assert second["significance"] == first["significance"] and second["findings"] == first["findings"]
    assert (lost / "predictions.parquet").is_file()  # put back into the cache


# ---------------------------------------------------------------- D6, D16, D20: suites refused in one line


@pytest.mark.parametrize(("text", "phrase"), [
    ("mixtures: {unknown_fraction: [0.0, 0.5, 0.501]}", "0.5 and 0.501 both name the mixture unknown_50"),
    ("sweep: {train.lr: [1.0e-4, 1.0e-4]}", "name the same variant"),
    ("sweep: {train.epochs: [2, '2']}", "name the same variant"),
    ("mixtures: {single_category: [HighlyKnown, HighlyKnown]}", "each category may be listed once"),
    ("train: {lr: 1.0e-4}\nseeds: [0]\ntrain: {epochs: 2}", "duplicate key 'train' (first at line"),
    ("slick: {temperature: .inf}", "slick.temperature: Input should be a finite number"),
    ("slick: {temperature: 1.0e+308}", "slick.temperature: Input should be less than or equal to 10"),
], ids=["fraction-names", "sweep-duplicates", "sweep-same-text", "category-twice", "duplicate-key", "inf", "1e308"])
def test_a_suite_that_would_collide_or_lose_a_key_is_refused_before_any_run(text, phrase, tmp_path, capsys):
    path = tmp_path / "suite.yaml"
    path.write_text(f"extends: {SMOKE}\nname: robust-refused\n{text}\n")
    for command in ("validate", "run"):
        line = cli_error(capsys, command, str(path))
        assert phrase in line and "suite.yaml" in line
    from mlflow import MlflowClient

    from benchmark.tracking import tracking_uri

    assert MlflowClient(tracking_uri=tracking_uri()).get_experiment_by_name("robust-refused") is None


def test_variants_that_share_a_name_are_refused_by_the_planner_too(world_cache):
    suite = load_suite(SMOKE)
    source, model = pipeline.resolve_components(suite)
    table = pipeline.categorize(source, model, suite.slick).table
    train = table.filter((pl.col("split") == "train") & ~pl.col("ood"))
    mixtures = suite.mixtures.model_copy(update={"unknown_fraction": [0.5, 0.501]})  # past the validator, as code can
    with pytest.raises(BenchmarkError, match="two variants are both named 'unknown_50'"):
        plan_variants(suite.model_copy(update={"mixtures": mixtures}), train, {})


def test_the_names_planned_before_slick_are_the_names_the_variants_get(world_cache):
    """--only is checked against names made from the suite alone: with seeds, a sweep and every kind of mixture
    they are exactly the variants' names."""
    suite = load_suite(SMOKE, ["seeds=[0, 1]", "sweep={train.lr: [1.0e-4, 3.0e-4]}", "mixtures.natural=true",
                               "mixtures.unknown_fraction=[0.0, 0.5, 1.0]"])
    source, model = pipeline.resolve_components(suite)
    table = pipeline.categorize(source, model, suite.slick).table
    train = table.filter((pl.col("split") == "train") & ~pl.col("ood"))
    names = [v.name for v in plan_variants(suite, train, {})]
    assert len(names) == 2 * 2 * 5 and sorted(planned_variant_names(suite)) == sorted(names)


# ---------------------------------------------------------------- D7: user text is printed as text, never as markup


def test_markup_in_names_keys_and_paths_is_printed_as_written(tmp_path, capsys):
    # A path cannot hold "[/x]" (its slash is a separator); opening tags are what rich would swallow there.
    folder = tmp_path / "[red]dir[bold]"
    folder.mkdir()
    path = folder / "suite[italic].yaml"
    path.write_text(f"extends: {SMOKE}\nname: '[/x]robust[bold]'\n")
    assert main(["validate", str(path)]) == 0  # prints the path and the resolved suite
    printed = "".join(capsys.readouterr().err.split())  # rich folds long lines
    assert f"valid{path}" in printed and "[/x]robust[bold]" in printed
    path.write_text(f"extends: {SMOKE}\nname: robust\nmodel: 'toy[/x]'\n")
    line = cli_error(capsys, "validate", str(path))  # the error printer itself
    assert "unknown base model 'toy[/x]'" in line and str(path) in line
    from rich.console import Console

    from benchmark.cli.terminal import progress_bars, table

    console = Console(record=True, width=200)
    console.print(table("t [/x]", ["[/y]"], [["[red]v[/z]", 1.5]]))
    text = console.export_text()  # exporting clears the record: read it once
    assert "[red]v[/z]" in text and "t [/x]" in text
    with progress_bars() as update:
        update("SliCK train [/x]", 1, 2)


# ---------------------------------------------------------------- D11, D12, D14: the loader's input


def test_the_projects_own_warnings_reach_the_user_when_libraries_are_quiet(tmp_path):
    from benchmark.runtime import quiet_libraries

    release = write_release(tmp_path / "eq")
    templates = json.loads((release / "relation_query_templates.json").read_text())
    with warnings.catch_warnings():
        quiet_libraries()
        with warnings.catch_warnings(record=True) as caught:
            warnings.warn("library noise", UserWarning, stacklevel=1)
            eq.load_release(release, ["P69"], [])  # one question of P69 misses its template
        line = warnings.formatwarning(caught[0].message, caught[0].category, "f.py", 1)
    assert [w.category for w in caught] == [BenchmarkWarning]
    assert line.startswith("warning: ") and "do not match the template" in line and line.count("\n") == 1
    assert templates["P69"] in line


@pytest.mark.parametrize(("answers", "phrase"), [
    ([None], "answers[0]: expected a non-empty string, found null"),
    ([123], "answers[0]: expected a non-empty string, found 123"),
    ([{"a": 1}], 'answers[0]: expected a non-empty string, found {"a": 1}'),
    ([""], 'answers[0]: expected a non-empty string, found ""'),
    ([], "answers: expected a non-empty list of strings, found []"),
    ("Paris", 'answers: expected a non-empty list of strings, found "Paris"'),
], ids=["null", "number", "object", "empty", "no-answer", "not-a-list"])
def test_answers_are_checked_naming_the_file_and_the_record(answers, phrase, tmp_path):
    release = write_release(tmp_path / "eq")
    path = release / "dataset" / "train" / "P19.train.json"
    records = json.loads(path.read_text())
    records.insert(2, {"question": "Where was Nobody born?", "answers": answers})
    path.write_text(json.dumps(records))
    with pytest.raises(BenchmarkError) as error:
        eq.load_release(release, ["P19"], [])
    assert str(error.value) == f"{path}: record 2: {phrase}"


def test_bad_bytes_and_bad_templates_are_one_line(tmp_path):
    release = write_release(tmp_path / "eq")
    path = release / "dataset" / "train" / "P19.train.json"
    path.write_bytes(b'[{"question": "Where was \xff born?", "answers": ["x"]}]')
    with pytest.raises(BenchmarkError, match=r"P19.train.json: byte \d+: not UTF-8 text"):
        eq.load_release(release, ["P19"], [])
    write_release(release)
    templates = release / "relation_query_templates.json"
    for bad, found in ((["Where was [X] born?"], '["Where was [X] born?"]'), ("Where was he born?", "he born")):
        templates.write_text(json.dumps({**json.loads(templates.read_text()), "P19": bad}))
        with pytest.raises(BenchmarkError, match=r"relation_query_templates.json: P19: expected a question with one "
                                                 rf"\[X\] .*found .*{re.escape(found)}"):
            eq.load_release(release, ["P19"], [])


RECORD_VALUES = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=12),
                             lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner,
                                                                                         max_size=3), max_leaves=8)
RECORDS = st.lists(st.fixed_dictionaries({}, optional={"question": RECORD_VALUES | st.just("Where was Tom born?"),
                                                        "answers": RECORD_VALUES | st.just(["Paris"])}), max_size=4)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(records=RECORDS | RECORD_VALUES, template=RECORD_VALUES | st.just("Where was [X] born?"),
       raw=st.binary(max_size=16))
def test_the_loader_gives_its_own_error_or_a_table_whatever_the_files_hold(records, template, raw, tmp_path):
    """The property test of ``validate`` (tests/test_bad_input.py), for the knowledge-source loader: random JSON
    records, templates and bytes give a question table or one BenchmarkError line, never a traceback."""
    root = tmp_path / "fuzz"
    base = write_release(root) if not (root / "dataset").exists() else root
    (base / "relation_query_templates.json").write_text(json.dumps({**eq.RELEASE_TEMPLATES, "P19": template}))
    for split in ("train", "dev", "test"):
        (base / "dataset" / split / f"P19.{split}.json").write_text(json.dumps(records))
    (base / "dataset" / "dev" / "P19.dev.json").write_bytes(raw if raw[:1] not in (b"[", b"") else b"[]")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            eq.load_release(base, ["P19"], [])
    except BenchmarkError as exc:
        assert str(exc) and "\n" not in str(exc)


def test_a_truncated_safetensors_file_is_one_line(tmp_path, tiny_lm):
    from components.hf_causal_lm import load_hf, safetensors_parameters

    folder = tmp_path / "model"
    tiny_lm.model.save_pretrained(folder)
    tiny_lm.tokenizer.save_pretrained(folder)
    weights = folder / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    with pytest.raises(BenchmarkError, match="cannot load model 'tiny' from .*safetensors file is damaged"):
        load_hf("tiny", str(folder))
    weights.write_bytes(b"\x10\x00")
    with pytest.raises(BenchmarkError, match="not a readable safetensors file"):
        safetensors_parameters(weights)


def test_a_full_disk_in_data_fetch_is_named_and_changes_nothing(tmp_path, monkeypatch):
    archive = make_zip(tmp_path)
    dest = tmp_path / "eq"
    monkeypatch.setattr(zipfile.ZipFile, "extractall", no_space)
    with pytest.raises(BenchmarkError, match=r"no space left on the device while unpacking .*nothing was written"):
        eq.fetch_release(dest, url=archive.as_uri(), expected_sha256=None)
    assert not dest.exists() and not list(tmp_path.glob(".eq*"))
    monkeypatch.undo()
    monkeypatch.setattr(shutil, "copyfileobj", no_space)  # the download itself
    with pytest.raises(BenchmarkError, match="no space left on the device while downloading") as error:
        eq.fetch_release(dest, url=archive.as_uri(), expected_sha256=None)
    assert "offline" not in str(error.value) and not dest.exists()


def test_a_zip_that_unpacks_far_beyond_the_release_is_refused(tmp_path):
    archive = make_zip(tmp_path)
    with zipfile.ZipFile(archive, "a", compression=zipfile.ZIP_DEFLATED) as out:
        out.writestr("entity-questions/padding.bin", bytes(8 << 20))  # 8 MB of zeros in ~8 KB
    with pytest.raises(BenchmarkError, match=r"member entity-questions/padding.bin would unpack to 8388608 bytes"):
        eq.unpack_release(archive, tmp_path / "eq", expected_sha256=None)
    assert not (tmp_path / "eq").exists()


# ---------------------------------------------------------------- D13: a prompt longer than the model's context


def test_a_prompt_longer_than_the_models_context_is_one_line(tiny_lm):
    from benchmark.slick import SliCKConfig, categorize_questions
    from tests.test_slick import question_table

    questions = question_table(relations=("P19",)).with_columns(
        question=pl.when(pl.col("qid") == "train/P19/3").then(pl.lit("Where was " + "Mira " * 300 + "born?"))
        .otherwise(pl.col("question")))
    with pytest.raises(BenchmarkError) as error:
        categorize_questions(tiny_lm, questions, SliCKConfig(n_prompts=2, n_samples=2, p_true=False, splits=["train"]),
                             locate=lambda relation, split: f"/data/{relation}.{split}.json")
    message = str(error.value)
    assert message.startswith("/data/P19.train.json: question train/P19/3 needs a ") and "\n" not in message
    assert "context of 256 tokens" in message and "slick.k_shot" in message


# ---------------------------------------------------------------- D15: an entry without checksums is not adopted


def test_a_cache_entry_without_its_checksums_is_rebuilt_not_adopted(tmp_path, caplog):
    entry = tmp_path / "cache" / "slick" / "0123456789abcdef"
    with atomic_dir(entry) as folder:
        (folder / "categories.parquet").write_bytes(os.urandom(4096))
    assert cache_hit(entry, "categories.parquet")
    (entry / "checksums.json").unlink()
    data = entry / "categories.parquet"
    data.write_bytes(data.read_bytes()[:100])  # damaged, and nothing records what it was
    with caplog.at_level(logging.WARNING, logger="benchmark.cache"):
        assert not cache_hit(entry, "categories.parquet")
        assert not cache_hit(entry, "categories.parquet")  # and never blessed on the way
    assert any("checksums.json: missing" in r.getMessage() for r in caplog.records)
    assert not (entry / "checksums.json").exists()
    write_checksums(entry)  # what atomic_dir writes with every entry it makes
    assert cache_hit(entry, "categories.parquet")


# ---------------------------------------------------------------- D21: an in-memory store


@pytest.mark.parametrize("uri", ["sqlite://", "sqlite:///:memory:"])
def test_an_in_memory_store_is_refused_in_one_line(uri, monkeypatch, capsys):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    line = cli_error(capsys, "run", str(SMOKE))
    assert f"MLFLOW_TRACKING_URI={uri}: an in-memory SQLite store loses every run" in line


# ---------------------------------------------------------------- D22: summary.md carries no HTML from names


def test_the_markdown_summary_escapes_html_from_names(tmp_path):
    from benchmark.report.page import _Page, _write

    page = _Page(tmp_path)
    page.heading("<img src=x onerror=alert(1)>", "h")
    page.text("model <script>alert(2)</script> & co")
    page.table(["<b>model</b>"], [["<iframe src=//evil>", "a|b"]])
    _write(page, tmp_path, "<script>alert(3)</script>")
    summary = (tmp_path / "summary.md").read_text()
    assert "<" not in summary.replace("&lt;", "")
    assert "&lt;script&gt;alert(2)&lt;/script&gt; &amp; co" in summary and "a\\|b" in summary


# ---------------------------------------------------------------- D23: parent betas whatever order variants finished in


def test_the_linear_fit_does_not_depend_on_the_order_of_its_points():
    import random

    from benchmark.analyse.findings import linear_fits

    rng = random.Random(7)
    rows = []
    for v in range(12):
        unknown = v / 11
        for epoch in range(1, 6):
            rows.append({"variant": f"unknown_{v}", "epoch": epoch, "known_fitted_share": rng.random() * (1 - unknown),
                         "unknown_fitted_share": rng.random() * unknown, "test/acc/all": rng.random(),
                         "ood/acc/all": rng.random(), "steps": float(epoch * 10 + rng.randint(0, 3))})
    points = pl.DataFrame(rows)
    reference = linear_fits(points)
    assert reference
    for seed in range(5):
        shuffled = points.sample(fraction=1.0, shuffle=True, seed=seed)
        assert repr(linear_fits(shuffled)) == repr(reference)  # every digit


# ---------------------------------------------------------------- D24: a deep extends chain


def test_a_deep_extends_chain_is_reported_as_what_it_is(tmp_path, capsys):
    depth = 40
    for i in range(depth):
        parent = f"extends: s{i + 1}.yaml\n" if i + 1 < depth else f"extends: {SMOKE}\n"
        (tmp_path / f"s{i}.yaml").write_text(parent + f"name: level-{i}\n")
    line = cli_error(capsys, "validate", str(tmp_path / "s0.yaml"))
    assert "s0.yaml: extends: a chain of more than 32 suite files" in line and "not valid YAML" not in line
    assert main(["validate", str(tmp_path / "s10.yaml")]) == 0  # 30 levels: fine
    capsys.readouterr()


# ---------------------------------------------------------------- D18: a full SQLite store


def test_a_full_store_fails_at_once_in_one_line_naming_it(monkeypatch):
    from mlflow.exceptions import MlflowException
    from mlflow.protos.databricks_pb2 import TEMPORARILY_UNAVAILABLE

    tracker = Tracker("robust-full-store")
    monkeypatch.setattr(tracker.retrying, "budget", 30.0)

    def full(*_args, **_kwargs):  # what MLflow's SQLAlchemy store raises when SQLite cannot grow the file
        raise MlflowException("(sqlite3.OperationalError) database or disk is full",
                              error_code=TEMPORARILY_UNAVAILABLE)

    started = time.monotonic()
    with pytest.raises(BenchmarkError) as error:
        tracker.retrying("log to run x", full)
    assert time.monotonic() - started < 5  # not retried as if the store were unreachable
    assert "database or its disk is full" in str(error.value) and "\n" not in str(error.value)
    assert tracker.retrying.down is None  # closing the runs is still tried (FAILED, not left RUNNING)


# ---------------------------------------------------------------- D9: temporary names of one process


def _write_states(run_dir: str, rounds: int, errors) -> None:
    from benchmark.checkpoints import write_state

    try:
        for i in range(rounds):
            write_state(Path(run_dir), {"round": i, "pid": os.getpid()})
    except Exception as exc:  # noqa: BLE001 - reported to the parent
        errors.put(f"{type(exc).__name__}: {exc}")


def _two_processes(context, target, args, errors, timeout: float) -> tuple[list[str], list[int | None]]:
    """Run ``target(*args)`` in two processes at once: the errors they reported, and their exit codes."""
    workers = [context.Process(target=target, args=args) for _ in range(2)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout)
    found = []
    while not errors.empty():
        found.append(errors.get())
    return found, [w.exitcode for w in workers]


def test_two_processes_writing_one_run_directory_never_take_each_others_temporary_file(tmp_path):
    context = multiprocessing.get_context("fork")
    errors = context.Queue()
    assert _two_processes(context, _write_states, (str(tmp_path), 300, errors), errors, 60) == ([], [0, 0])
    from benchmark.checkpoints import read_state

    assert read_state(tmp_path)["round"] == 299


# ---------------------------------------------------------------- D3: two first runs into a fresh SQLite store


def _first_client(uri: str, start, errors) -> None:
    os.environ["MLFLOW_TRACKING_URI"] = uri
    try:
        start.wait()
        Tracker("robust-fresh-store")
    except BaseException as exc:  # noqa: BLE001 - reported to the parent
        errors.put(f"{type(exc).__name__}: {str(exc)[:300]}")


@pytest.mark.slow
def test_two_first_runs_into_a_fresh_sqlite_store_both_work(tmp_path):
    context = multiprocessing.get_context("fork")
    for attempt in range(7):
        uri = f"sqlite:///{tmp_path / str(attempt) / 'mlflow.db'}"
        start, errors = context.Barrier(2), context.Queue()
        found = _two_processes(context, _first_client, (uri, start, errors), errors, 120)
        assert found == ([], [0, 0]), (attempt, found)


# ---------------------------------------------------------------- D8: workers die with their driver

DRIVER = """
import sys, time
from pathlib import Path
from benchmark.executors.local import LocalExecutor

def job(path):
    import os
    Path(path).write_text(str(os.getpid()))
    time.sleep(600)

if __name__ == "__main__":  # spawned workers import this file again
    out = Path(sys.argv[1])
    for outcome in LocalExecutor(workers=2).run(job, [str(out / "a"), str(out / "b")]):
        pass
"""


@pytest.mark.slow
def test_workers_end_when_their_driver_is_killed(tmp_path):
    (tmp_path / "driver.py").write_text(DRIVER)
    driver = subprocess.Popen([sys.executable, str(tmp_path / "driver.py"), str(tmp_path)], cwd=REPO,
                              env={**os.environ, "PYTHONPATH": str(REPO)})
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not all((tmp_path / n).exists() and (tmp_path / n).read_text()
                                                  for n in "ab"):
        time.sleep(0.2)
    pids = [int((tmp_path / n).read_text()) for n in "ab"]
    os.kill(driver.pid, signal.SIGKILL)
    driver.wait(30)
    deadline = time.monotonic() + 20
    alive = pids
    while alive and time.monotonic() < deadline:
        time.sleep(0.2)
        alive = [pid for pid in pids if _alive(pid)]
    for pid in alive:  # do not leave them behind when the test fails
        os.kill(pid, signal.SIGKILL)
    assert alive == []


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().split(") ")[1][0] != "Z"
    except FileNotFoundError:
        return False
