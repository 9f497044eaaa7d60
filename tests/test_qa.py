"""Question/answer files as a knowledge source (``family: qa``) and ``categorize --source``: formats, bad files,
equivalence with the release-layout loader (the test world with its tiny model; the ENTITYQUESTIONS slice with
SmolLM2), the filtered fine-tuning file read again, and suites over a qa component."""

from __future__ import annotations

import json
import re
from pathlib import Path

import polars as pl
import pytest

from benchmark.cli import main
from benchmark.errors import BenchmarkError
from benchmark.registry import Registry
from benchmark.slick import SliCKConfig, categorize
from components.entityquestions import IN_DISTRIBUTION, SPLITS
from components.qa import QASource
from tests.conftest import EQ_SAMPLE

REPO = Path(__file__).resolve().parent.parent
TEST_MODEL = "toy-gpt-test"
# Small SliCK settings for the world's comparisons; the command line test sets the same (a cache hit there).
WORLD_SLICK = {"n_prompts": 2, "n_samples": 4}

ROWS = [  # two relations, every split, an answer as a string and as a list, one row with two answers
    {"question": "Where was Ada born?", "answers": ["London"], "relation": "born", "split": "train"},
    {"question": "Where was Bo born?", "answers": "Paris", "relation": "born", "split": "train"},
    {"question": "Where was Cy born?", "answers": ["Rome", "Roma"], "relation": "born", "split": "train"},
    {"question": "Where was Di born?", "answers": ["Oslo"], "relation": "born", "split": "dev"},
    {"question": "Where was Ed born?", "answers": ["Bern"], "relation": "born", "split": "dev"},
    {"question": "Where was Flo born?", "answers": ["Kyiv"], "relation": "born", "split": "test"},
    {"question": "Who wrote Emma?", "answers": ["Jane Austen"], "relation": "author", "split": "train"},
    {"question": "Who wrote Ulysses?", "answers": ["James Joyce"], "relation": "author", "split": "dev"},
    {"question": "Who wrote Dracula?", "answers": ["Bram Stoker"], "relation": "author", "split": "dev"},
    {"question": "Who wrote Beloved?", "answers": ["Toni Morrison"], "relation": "author", "split": "test"},
]


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def write_csv(path: Path, rows: list[dict]) -> Path:
    """Lists as JSON arrays in their cells, strings as they are."""
    pl.DataFrame([{k: json.dumps(v) if isinstance(v, list) else v for k, v in r.items()} for r in rows]).write_csv(path)
    return path


def write_parquet(path: Path, rows: list[dict]) -> Path:
    pl.DataFrame([{**r, "answers": r["answers"] if isinstance(r["answers"], list) else [r["answers"]]}
                  for r in rows]).write_parquet(path)
    return path


WRITERS = {"jsonl": write_jsonl, "csv": write_csv, "parquet": write_parquet}


def copies(folder: Path, rows: list[dict], stem: str = "qa") -> dict[str, Path]:
    return {fmt: writer(folder / f"{stem}.{fmt}", rows) for fmt, writer in WRITERS.items()}


# -- formats ----------------------------------------------------------------------------------------------------
def test_jsonl_csv_and_parquet_give_the_same_questions(tmp_path):
    sources = {fmt: QASource.from_file(path) for fmt, path in copies(tmp_path, ROWS).items()}
    tables = {fmt: s.questions() for fmt, s in sources.items()}
    first = tables["jsonl"]
    assert first.columns == ["qid", "split", "relation", "question", "answer", "subject", "ood"]
    # The row with two answers is dropped (answers_are: distinct) but still counts in its split's numbering.
    assert first.height == 9 and sources["jsonl"].dropped == {"multi_answer": 1}
    assert first.filter(pl.col("relation") == "born")["qid"].to_list() == [
        "train/born/0", "train/born/1", "dev/born/0", "dev/born/1", "test/born/0"]
    assert first.filter(pl.col("question") == "Where was Bo born?")["answer"].to_list() == ["Paris"]
    assert not first["ood"].any() and first["subject"].is_null().all()
    for fmt, table in tables.items():
        assert table.equals(first), fmt
    assert len({s.identity() for s in sources.values()}) == 1  # the same questions: one SliCK table for all three
    assert sources["jsonl"].rows()["row"].to_list() == [1, 2, 4, 5, 6, 7, 8, 9, 10]


def test_the_identity_follows_the_questions(tmp_path):
    path = write_jsonl(tmp_path / "qa.jsonl", ROWS)
    before = QASource.from_file(path).identity()
    write_jsonl(path, [{**r, "note": "x"} for r in ROWS])  # a column SliCK does not read
    assert QASource.from_file(path).identity() == before
    write_jsonl(path, [{**ROWS[0], "answers": ["Leeds"]}, *ROWS[1:]])
    assert QASource.from_file(path).identity() != before


def test_without_split_and_relation_columns_one_group_is_split_as_stated(tmp_path):
    rows = [{"question": f"What is item {i}?", "answer": f"thing {i}"} for i in range(30)]
    path = write_jsonl(tmp_path / "plain.jsonl", rows)
    table = QASource.from_file(path, split_sizes={"dev": 6, "test": 0.1}).questions()
    assert set(table["relation"]) == {"all"}
    assert dict(table.group_by("split").len().iter_rows()) == {"dev": 6, "test": 3, "train": 21}
    again = QASource.from_file(path, split_sizes={"dev": 6, "test": 0.1}).questions()
    other = QASource.from_file(path, split_sizes={"dev": 6, "test": 0.1}, seed=1).questions()
    assert again.equals(table) and not other.equals(table)
    assert table.filter(pl.col("split") == "dev")["qid"].to_list() == [f"dev/all/{i}" for i in range(6)]
    default = QASource.from_file(path).questions()  # 10% dev and test
    assert dict(default.group_by("split").len().iter_rows()) == {"dev": 3, "test": 3, "train": 24}


# -- bad files: one line each, naming the file, the row and the column -------------------------------------------
BAD = [
    ("missing column", "jsonl", [{"query": "Q?", "answers": ["A"]}], r"column 'question' is missing"),
    ("empty question", "jsonl", [ROWS[0], {**ROWS[1], "question": "  "}], r"row 2, column 'question': empty question"),
    ("empty answer", "csv", [ROWS[0], {**ROWS[1], "answers": ""}], r"row 2, column 'answers': empty answer$"),
    ("no answer", "jsonl", [ROWS[0], {"question": "Q?", "relation": "born", "split": "dev"}],
     r"row 2, column 'answers': empty answer \(no value\)"),
    ("answer not text", "jsonl", [ROWS[0], {**ROWS[1], "answers": {"text": "Paris"}}],
     r"row 2, column 'answers': expected an answer, or a list of answers, found dict"),
    ("empty list", "parquet", [ROWS[0], {**ROWS[1], "answers": []}], r"row 2, column 'answers': empty answer"),
    ("answer of articles", "jsonl", [ROWS[0], {**ROWS[1], "answers": ["The"]}],
     r"row 2, column 'answers': the answer 'The' is empty once normalised"),
    ("duplicate", "csv", [ROWS[0], ROWS[1], {**ROWS[0], "answers": ["Leeds"], "split": "dev"}],
     r"row 3, column 'question': 'Where was Ada born\?' is a duplicate of row 1 in relation 'born'"),
    ("bad split", "jsonl", [ROWS[0], {**ROWS[1], "split": "validation"}],
     r"row 2, column 'split': 'validation' is not one of train, dev, test"),
    ("empty relation", "parquet", [ROWS[0], {**ROWS[1], "relation": ""}], r"row 2, column 'relation': empty relation"),
]


@pytest.mark.parametrize("case", BAD, ids=[c[0] for c in BAD])
def test_a_bad_file_is_one_line_naming_file_row_and_column(case, tmp_path):
    _, fmt, rows, expected = case
    path = WRITERS[fmt](tmp_path / f"bad.{fmt}", rows)
    with pytest.raises(BenchmarkError) as raised:
        QASource.from_file(path).questions()
    message = str(raised.value)
    assert "\n" not in message and message.startswith(f"{path}: ") and re.search(expected, message), message


def test_not_utf8_names_the_line(tmp_path):
    path = tmp_path / "latin1.jsonl"
    path.write_bytes(json.dumps(ROWS[0]).encode() + b"\n" + '{"question": "Où?", "answers": ["Là"]}\n'.encode("latin-1"))
    with pytest.raises(BenchmarkError, match=rf"^{re.escape(str(path))}: line 2: not UTF-8 text \(byte 0xf9"):
        QASource.from_file(path).questions()


def test_aliases_keep_every_answer_beside_the_first(tmp_path):
    path = write_jsonl(tmp_path / "aliases.jsonl", ROWS)
    distinct, aliases = QASource.from_file(path), QASource.from_file(path, answers_are="aliases")
    table = aliases.questions()
    assert table.height == distinct.questions().height + distinct.dropped["multi_answer"] and "aliases" not in \
        distinct.questions().columns
    several = table.filter(pl.col("aliases").list.len() > 1).row(0, named=True)
    assert several["answer"] == several["aliases"][0] and len(several["aliases"]) == 2
    assert aliases.identity() != distinct.identity()  # another table, another SliCK cache entry
    bad = write_jsonl(tmp_path / "bad.jsonl", [*ROWS[:2], {**ROWS[2], "answers": ["Roma", "The"]}])
    with pytest.raises(BenchmarkError, match=r"row 3, column 'answers': the answer 'The' is empty once normalised"):
        QASource.from_file(bad, answers_are="aliases").questions()


def test_any_alias_is_right_in_slick_and_in_evaluation(world_files, tmp_path):
    """Each world question with a wrong alias beside its answer: SliCK gives every question the category it gets
    with its one answer, and evaluation scores a prediction of either alias right. Train and test questions have
    the wrong alias first, so only the second can match (the engine's early exits follow every alias); dev
    questions, whose first alias is what the few-shot exemplars show, have it second. The exact estimator, which
    scores one answer, is refused."""
    from benchmark.answers import exact_match, golds
    from benchmark.backends.verdicts import can_still_match
    from benchmark.evaluate import predictions_table

    def aliased_row(row: dict) -> dict:
        answer = row["answers"][0] if isinstance(row["answers"], list) else row["answers"]
        return {**row, "answers": [answer, "zq"] if row["split"] == "dev" else ["zq", answer]}

    rows = [aliased_row(r) for r in pl.read_ndjson(world_files["jsonl"]).to_dicts()]
    aliased = QASource.from_file(write_jsonl(tmp_path / "aliased.jsonl", rows), answers_are="aliases")
    model, config = Registry().model(TEST_MODEL), SliCKConfig(**WORLD_SLICK)
    one = categorize(QASource.from_file(world_files["jsonl"]), model, config).table
    got = categorize(aliased, model, config).table
    columns = ["qid", "category", "p_correct_greedy", "p_correct_sampled", "greedy_answers"]
    assert got.select(columns).sort("qid").equals(one.select(columns).sort("qid"))
    assert set(one["category"]) >= {"HighlyKnown", "Unknown"}
    assert got.filter(pl.col("split") != "dev")["aliases"].list.first().eq("zq").all()
    with pytest.raises(BenchmarkError, match="estimator: exact scores one gold answer"):
        categorize(aliased, model, config.model_copy(update={"estimator": "exact"}))
    test = got.filter(pl.col("split") == "test").head(2)
    table = predictions_table(test, [test["aliases"][0][1], "zq"], "convergence")
    assert table["correct"].to_list() == [True, True]
    assert golds(test)[0] == ("zq", test["aliases"][0][1]) and not exact_match("Paris", ("zq", "Rome"))
    assert can_still_match("Ro", ("zq", "Rome")) and not can_still_match("Pa", ("zq", "Rome"))


def test_too_few_dev_rows_for_the_exemplars_names_file_column_and_relation(tmp_path):
    source = QASource.from_file(write_jsonl(tmp_path / "qa.jsonl", ROWS))
    source.check_slick(SliCKConfig(k_shot=1, n_prompts=10))  # 2 dev rows per relation: k_shot + 1
    with pytest.raises(BenchmarkError, match=r"qa.jsonl: column 'split': relation 'born' has 2 dev row\(s\); SliCK "
                                             r"needs at least k_shot \+ 1 = 5 to draw its 10 prompts of 4 exemplars"):
        source.check_slick(SliCKConfig())
    plain = QASource.from_file(write_jsonl(tmp_path / "plain.jsonl", [{"question": f"Q{i}?", "answers": ["Ans"]}
                                                                       for i in range(10)]))
    with pytest.raises(BenchmarkError, match=r"split_sizes.dev: the file has 1 dev row\(s\).*raise split_sizes.dev"):
        plain.check_slick(SliCKConfig())


def cli_error(capsys, *argv: str) -> str:
    assert main(list(argv)) == 2
    out, err = capsys.readouterr()
    lines = [line for line in err.splitlines() if line.strip()]
    assert out == "" and len(lines) == 1 and lines[0].startswith("error: "), err
    return lines[0]


def test_the_command_line_says_each_problem_in_one_line_before_any_model_loads(tmp_path, capsys):
    bad = write_jsonl(tmp_path / "bad.jsonl", [ROWS[0], {**ROWS[1], "question": ""}])
    assert f"{bad}: row 2, column 'question': empty question" in cli_error(
        capsys, "categorize", "--source", str(bad), "--model", TEST_MODEL, "--out", str(tmp_path / "out"))
    thin = write_jsonl(tmp_path / "thin.jsonl", ROWS)
    assert "relation 'born' has 2 dev row(s)" in cli_error(capsys, "categorize", "--source", str(thin), "--model",
                                                           TEST_MODEL, "--out", str(tmp_path / "out"))
    assert "did you mean 'my-questions'?" in cli_error(capsys, "categorize", "--source", "my-questons", "--model",
                                                       TEST_MODEL)
    assert "no such file" in cli_error(capsys, "categorize", "--source", str(tmp_path / "gone.csv"), "--model",
                                       TEST_MODEL)
    assert "--set train: with --source only slick.* keys and device" in cli_error(
        capsys, "categorize", "--source", str(thin), "--model", TEST_MODEL, "--set", "train.lr=1")
    assert "--drop Unknwn: not a SliCK category; did you mean 'Unknown'?" in cli_error(
        capsys, "categorize", "--source", str(thin), "--model", TEST_MODEL, "--drop", "Unknwn")
    assert "--keep goes with --source" in cli_error(capsys, "categorize", str(REPO / "suites" / "smoke.yaml"),
                                                    "--keep", "Unknown")
    assert not (tmp_path / "out" / "categories.parquet").exists()


# -- the filtered file, written in the input's own format, reads again ---------------------------------------------
@pytest.mark.parametrize("fmt", list(WRITERS))
def test_written_rows_keep_the_format_and_columns_and_read_again(fmt, tmp_path):
    rows = [{**r, "note": f"n{i}"} for i, r in enumerate(ROWS)]
    source = QASource.from_file(WRITERS[fmt](tmp_path / f"qa.{fmt}", rows))
    (tmp_path / "out").mkdir()
    target = source.write_rows({1, 4, 7}, tmp_path / "out")
    assert target.name == f"qa.filtered.{fmt}"
    again = QASource.from_file(target)
    assert again.questions()["question"].to_list() == [ROWS[0]["question"], ROWS[3]["question"], ROWS[6]["question"]]
    if fmt == "jsonl":  # the very lines of the input
        lines = (tmp_path / "qa.jsonl").read_text().splitlines()
        assert target.read_text().splitlines() == [lines[0], lines[3], lines[6]]
    else:
        original = source._frame()
        assert again._frame().columns == original.columns and again._frame().equals(original[[0, 3, 6]])


# -- equivalence with the release-layout loader -------------------------------------------------------------------
def release_as_rows(root: Path, relations: list[str]) -> list[dict]:
    """A release-layout folder as one table: every record of every file, in the loader's order."""
    return [{"question": r["question"], "answers": r["answers"], "relation": relation, "split": split}
            for relation in relations for split in SPLITS
            for r in json.loads((root / "dataset" / split / f"{relation}.{split}.json").read_text())]


@pytest.fixture(scope="module")
def world_files(tmp_path_factory) -> dict[str, Path]:
    """The test world's in-distribution relations as JSONL, CSV and Parquet (OOD relations are the release
    layout's own notion: a qa source has none)."""
    world = Registry().dataset("world-test")
    return copies(tmp_path_factory.mktemp("world-qa"), release_as_rows(world.root, world.config().relations), "world")


def test_the_world_as_one_file_gets_the_categories_of_the_release_loader(world_files):
    registry = Registry()
    world, model = registry.dataset("world-test"), registry.model(TEST_MODEL)
    config = SliCKConfig(**WORLD_SLICK)
    expected = categorize(world, model, config).table.filter(~pl.col("ood"))
    qa = QASource.from_file(world_files["jsonl"])
    assert qa.questions().drop("subject").equals(world.questions().filter(~pl.col("ood")).drop("subject"))
    got = categorize(qa, model, config)
    columns = ["qid", "relation", "split", "question", "answer", "category", "p_correct_greedy", "p_correct_sampled",
               "greedy_answers", "p_true"]
    assert got.table.select(columns).sort("qid").equals(expected.select(columns).sort("qid"))
    assert set(expected["category"]) >= {"HighlyKnown", "Unknown"}  # a comparison that could tell them apart
    for fmt in ("csv", "parquet"):
        copy = QASource.from_file(world_files[fmt])
        assert copy.questions().equals(qa.questions()) and copy.identity() == qa.identity()
        assert categorize(copy, model, config).cache_hit  # the same questions: the same table, not recomputed


def test_categorize_source_writes_every_example_a_filtered_file_and_one_mlflow_run(world_files, tmp_path, capsys):
    from mlflow import MlflowClient

    from benchmark.tracking import ResultStore, tracking_uri

    out = tmp_path / "out"
    argv = ["categorize", "--source", str(world_files["jsonl"]), "--model", TEST_MODEL, "--drop", "Unknown",
            "--out", str(out), "--experiment", "own-data", "--json",
            *(a for k, v in WORLD_SLICK.items() for a in ("--set", f"slick.{k}={v}"))]
    assert main(argv) == 0
    document = json.loads(capsys.readouterr().out)
    table = pl.read_parquet(out / "categories.parquet")
    assert table.height == document["questions"] == QASource.from_file(world_files["jsonl"]).questions().height
    assert pl.read_ndjson(out / "categories.jsonl").height == table.height
    assert {"row", "p_correct_greedy", "p_correct_sampled", "category"} <= set(table.columns)
    unknown = int((table["category"] == "Unknown").sum())
    assert document["dropped"] == unknown > 0 and document["dropped_share"] == pytest.approx(unknown / table.height)
    assert sum(document["counts"].values()) == table.height == sum(
        sum(c.values()) for c in document["counts_by_relation"].values())
    filtered = Path(document["filtered"])
    assert filtered == out / "world.filtered.jsonl"
    again = QASource.from_file(filtered).questions()  # a fine-tuning file this family reads again
    assert sorted(again["question"]) == sorted(table.filter(pl.col("category") != "Unknown")["question"])
    lines = world_files["jsonl"].read_text().splitlines()
    kept_rows = table.filter(pl.col("category") != "Unknown")["row"].sort().to_list()
    assert filtered.read_text().splitlines() == [lines[r - 1] for r in kept_rows]
    run = MlflowClient(tracking_uri=tracking_uri()).get_run(document["run_id"])
    assert run.info.status == "FINISHED" and run.data.tags["slick.role"] == "categorize"
    assert run.data.metrics["filter/dropped_share"] == pytest.approx(document["dropped_share"])
    assert run.data.metrics["slick/count/Unknown"] == unknown
    assert "own-data" not in {name for _, name in ResultStore().experiments()}  # not a suite: no report of it
    # The human form prints the counts per relation and what was dropped (the table is a cache hit now).
    assert main(argv[:-1 - 2 * len(WORLD_SLICK)] + [a for k, v in WORLD_SLICK.items()
                                                    for a in ("--set", f"slick.{k}={v}")]) == 0
    err = capsys.readouterr().err
    assert "SliCK categories of world with toy-gpt-test" in err and f"dropped {unknown} (" in err
    assert "cache hit: True" in err


@pytest.mark.skipif(not EQ_SAMPLE.exists(), reason="../shared/entityquestions-sample not beside the repo")
def test_the_entityquestions_slice_as_one_file_is_the_release_loader_question_by_question(tmp_path):
    expected = Registry().dataset("entityquestions-sample").questions().filter(~pl.col("ood")).drop("subject")
    rows = release_as_rows(EQ_SAMPLE, IN_DISTRIBUTION)
    for fmt, path in copies(tmp_path, rows, "eq").items():
        # The release asks a few questions twice (two counties named Montgomery): kept, as the loader keeps them.
        source = QASource.from_file(path, duplicates="keep")
        assert source.questions().drop("subject").equals(expected), fmt
        assert source.dropped == {"multi_answer": 204}


# -- suites over a qa component -------------------------------------------------------------------------------------
def test_a_suite_may_name_a_qa_component_and_its_file_is_checked(tmp_path):
    from benchmark.suite import check_components, load_suite

    suite = load_suite(REPO / "suites" / "smoke.yaml", ["knowledge_source=my-questions"])
    source, _ = check_components(suite, check_paths=True)  # a file, not a folder: the path check accepts it
    assert isinstance(source, QASource) and source.questions().height == 20
    suite = load_suite(REPO / "suites" / "smoke.yaml", ["knowledge_source=my-questions",
                                                         "knowledge_source_overrides.path=examples/nowhere.jsonl"])
    with pytest.raises(BenchmarkError, match=r"knowledge_source_overrides.path: file or folder 'examples/nowhere.jsonl' "
                                             r"does not exist"):
        check_components(suite, check_paths=True)


def test_the_smoke_sweep_runs_on_a_qa_file_and_states_its_findings(world_files):
    """The whole pipeline (SliCK, mixtures, fine-tuning, analysis, findings) on the test world written as one
    JSONL file and named through a qa component: every variant finishes and every finding gets a verdict."""
    from benchmark import pipeline
    from benchmark.suite import load_suite

    smoke = REPO / "suites" / "smoke.yaml"
    suite = load_suite(smoke, ["knowledge_source=my-questions", f"knowledge_source_overrides.path={world_files['jsonl']}",
                               "tracking.experiment=smoke-on-qa",
                               *(f"slick.{k}={v}" for k, v in WORLD_SLICK.items())])  # the comparison's SliCK table
    document = pipeline.run_suite(suite, smoke, log=lambda _: None)
    assert [v["status"] for v in document["variants"]] == ["FINISHED"] * len(document["variants"]) != []
    assert document["findings"] and all(f["verdict"] in ("holds", "not shown", "contradicted")
                                        for f in document["findings"])


def test_a_model_named_on_the_command_line_and_a_limit_categorise_a_few_questions(world_files, tmp_path, capsys,
                                                                                    monkeypatch):
    """``--model hf:<local folder>`` needs no component file; ``--limit N`` keeps N questions of each relation in
    each split, and the run records it. The folder is a randomly initialised GPT-2 saved as transformers saves one."""
    from mlflow import MlflowClient

    from benchmark.cli.run import shortcut_overrides
    from benchmark.pipeline import _registry_root
    from benchmark.registry import COMPONENTS_DIR
    from benchmark.suite import check_components, load_suite
    from benchmark.tracking import tracking_uri
    from tests.conftest import make_tiny_lm

    folder = tmp_path / "tiny-gpt2"
    texts = pl.read_ndjson(world_files["jsonl"])["question"].to_list()
    loaded = make_tiny_lm(texts)
    loaded.model.save_pretrained(folder)
    loaded.tokenizer.save_pretrained(folder)
    argv = ["categorize", "--source", str(world_files["jsonl"]), "--model", f"hf:{folder}", "--limit", "2",
            "--out", str(tmp_path / "out"), "--experiment", "inline-model", "--json", "--set", "slick.n_prompts=1",
            "--set", "slick.n_samples=2"]
    assert main(argv) == 0
    document = json.loads(capsys.readouterr().out)
    table = pl.read_parquet(tmp_path / "out" / "categories.parquet")
    per_group = table.group_by("split", "relation").len()
    assert per_group["len"].max() == 2 and per_group.height == table.height / 2 == document["questions"] / 2
    run = MlflowClient(tracking_uri=tracking_uri()).get_run(document["run_id"])
    assert run.data.tags["base_model"] == f"hf:{folder}"
    # Without --out the files go under reports/: nothing else lands in the working directory.
    (tmp_path / "cwd").mkdir()
    monkeypatch.chdir(tmp_path / "cwd")
    assert main([a for a in argv if a not in ("--out", str(tmp_path / "out"))]) == 0
    assert [p.name for p in (tmp_path / "cwd").iterdir()] == ["reports"]
    assert json.loads(capsys.readouterr().out)["files"][0].startswith("reports/categorized/")
    assert run.data.tags["limit"] == "2 questions per relation and split"
    # A suite takes the same two flags (over --set), and the model resolves without a file, its path checked.
    args = type("Args", (), {"set": ["train.epochs=2"], "model": f"hf:{folder}", "limit": 3})()
    suite = load_suite(REPO / "suites" / "smoke.yaml", shortcut_overrides(args))
    assert (suite.model, suite.models, suite.slick.limit, suite.train.epochs) == (f"hf:{folder}", [], 3, 2)
    _, model = check_components(suite, check_paths=True)
    assert model.spec.path == str(folder) and model.spec.dtype == "float32" and not model.spec.trust_remote_code
    assert _registry_root(model) == str(COMPONENTS_DIR)
    with pytest.raises(BenchmarkError, match=f"hf:{tmp_path}/nowhere: '{tmp_path}/nowhere' is neither"):
        Registry().model(f"hf:{tmp_path}/nowhere", check_paths=True)
    with pytest.raises(BenchmarkError, match="name a hub id or a local folder after 'hf:'"):
        Registry().model("hf:")
