"""ENTITYQUESTIONS: preprocessing as the paper says, `data stats` counts, and `data fetch` without the network."""

from __future__ import annotations

import hashlib
import json
import shutil
import urllib.error
import urllib.request
import zipfile
from pathlib import Path

import polars as pl
import pytest

import components.entityquestions as eq
from benchmark.cli import main
from benchmark.errors import BenchmarkError
from benchmark.registry import Registry
from components.entityquestions import (
    EXCLUDED,
    IN_DISTRIBUTION,
    OUT_OF_DISTRIBUTION,
    RELEASE_RELATIONS,
    RELEASE_TEMPLATES,
    fetch_release,
    load_release,
    release_stats,
    template_pattern,
    unpack_release,
)
from tests.conftest import EQ_SAMPLE

needs_sample = pytest.mark.skipif(not EQ_SAMPLE.exists(), reason="../shared/entityquestions-sample not beside the repo")
SIZES = {"train": 3, "dev": 2, "test": 2}  # plain single-answer questions per file, unique subjects


def ask(relation: str, subject: str, *answers: str) -> dict:
    # The default is not "A": an article, which normalises to nothing (such questions are dropped).
    return {"question": RELEASE_TEMPLATES[relation].replace("[X]", subject), "answers": list(answers or ["Ans"])}


# Questions added to the plain ones, each testing one rule (relation, split) -> records.
SPECIAL = {
    ("P19", "train"): [ask("P19", "Twin Answer", "A", "B"),       # (1) several answers: dropped
                       ask("P19", "Excluded Person")],           # (2) subject of a P20 (excluded) test question
    ("P20", "test"): [ask("P20", "Excluded Person")],
    ("P17", "train"): [ask("P17", "Shared Kid"),                  # (2) subject of a multi-answer P40 test question
                       ask("P17", "Multi Worker")],              # (2) subject of a multi-answer P106 test question
    ("P40", "test"): [ask("P40", "Shared Kid", "A", "B")],        # (1) dropped from test, still counts for (2)
    ("P106", "test"): [ask("P106", "Multi Worker", "A", "B")],
    ("P26", "train"): [ask("P26", "Ood Book")],                   # (2) subject of an OOD (P50) test question
    ("P50", "test"): [ask("P50", "Ood Book"), ask("P50", "Two Authors", "A", "B")],
    ("P26", "dev"): [ask("P26", "Two Spouses", "A", "B")],        # (1) in dev too
    ("P36", "dev"): [ask("P36", "Dev Land")],
    ("P36", "train"): [ask("P36", "Dev Land")],                   # a dev subject is NOT a reason to drop
    ("P69", "train"): [{"question": "Totally unrelated question?", "answers": ["X"]},      # (3) dropped, counted
                       {"question": "Another odd one?", "answers": ["X", "Y"]}],         # (1) drops it first
}


def write_release(root: Path, templates: bool = True) -> Path:
    """Every file of the 24 relations in the release layout: plain questions plus ``SPECIAL``."""
    for relation in RELEASE_RELATIONS:
        for split, n in SIZES.items():
            records = [ask(relation, f"{relation} {split} subject {i}") for i in range(n)]
            records += SPECIAL.get((relation, split), [])
            path = root / "dataset" / split / f"{relation}.{split}.json"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(records, indent=4))
    if templates:
        (root / "relation_query_templates.json").write_text(json.dumps(RELEASE_TEMPLATES, indent=4))
    return root


def expected_counts() -> dict:
    def plain(split: str, train: bool = False) -> dict:
        n = SIZES[split]
        return {"raw": n, "after_multi_answer": n, **({"after_overlap": n} if train else {}),
                "template_mismatch": 0, "final": n}

    train = {r: plain("train", train=True) for r in IN_DISTRIBUTION}
    train["P19"] = {"raw": 5, "after_multi_answer": 4, "after_overlap": 3, "template_mismatch": 0, "final": 3}
    train["P17"] = {"raw": 5, "after_multi_answer": 5, "after_overlap": 3, "template_mismatch": 0, "final": 3}
    train["P26"] = {"raw": 4, "after_multi_answer": 4, "after_overlap": 3, "template_mismatch": 0, "final": 3}
    train["P36"] = {"raw": 4, "after_multi_answer": 4, "after_overlap": 4, "template_mismatch": 0, "final": 4}
    train["P69"] = {"raw": 5, "after_multi_answer": 4, "after_overlap": 4, "template_mismatch": 1, "final": 3}
    dev = {r: plain("dev") for r in IN_DISTRIBUTION}
    dev["P26"] = {"raw": 3, "after_multi_answer": 2, "template_mismatch": 0, "final": 2}
    dev["P36"] = {"raw": 3, "after_multi_answer": 3, "template_mismatch": 0, "final": 3}
    test = {r: plain("test") for r in IN_DISTRIBUTION}
    test["P40"] = {"raw": 3, "after_multi_answer": 2, "template_mismatch": 0, "final": 2}
    ood = {r: plain("test") for r in OUT_OF_DISTRIBUTION}
    ood["P50"] = {"raw": 4, "after_multi_answer": 3, "template_mismatch": 0, "final": 3}
    sections = {"train": train, "dev": dev, "test": test, "ood_test": ood}
    for section in sections.values():
        for counts in section.values():
            counts.setdefault("empty_answer", 0)
    return sections


@pytest.fixture
def release(tmp_path) -> Path:
    return write_release(tmp_path / "eq")


def stats_quietly(path) -> dict:
    with pytest.warns(UserWarning, match="do not match the template"):
        return release_stats(path)


# -- preprocessing and `data stats` ------------------------------------------------------------------------------
def test_every_count_of_every_step(release):
    doc = stats_quietly(release)
    expected = expected_counts()
    for section, counts in expected.items():
        assert doc[section]["relations"] == counts, section
        assert list(doc[section]["relations"]) == list(counts)  # relations in the paper's order
        assert doc[section]["total"] == sum(c["final"] for c in counts.values())
    assert (doc["train"]["total"], doc["dev"]["total"], doc["test"]["total"], doc["ood_test"]["total"]) == (
        12 * 3 + 0 + 0 + 0 + 1 + 0, 12 * 2 + 1, 12 * 2, 7 * 2 + 1)
    assert set(doc["subject_check_relations"]) == set(RELEASE_RELATIONS)
    assert doc["full_release"] is False and "matches_paper" not in doc
    assert "P17.train.json has 5 records; the release has 8000" in doc["full_release_note"]
    assert doc["ood_dev"]["total"] == 7 * SIZES["dev"] and list(doc["ood_dev"]["relations"]) == OUT_OF_DISTRIBUTION


def test_ood_dev_files_are_read_where_they_are(release):
    for relation in OUT_OF_DISTRIBUTION:
        (release / "dataset" / "dev" / f"{relation}.dev.json").unlink()
    assert "ood_dev" not in stats_quietly(release)
    with pytest.warns(UserWarning, match="do not match the template"):
        table, _ = load_release(release, IN_DISTRIBUTION, OUT_OF_DISTRIBUTION)
    assert set(table.filter(pl.col("ood"))["split"]) == {"test"}  # SliCK then refuses, naming the file


def test_loader_keeps_exactly_what_stats_counts(release):
    with pytest.warns(UserWarning, match="do not match the template"):
        table, dropped = load_release(release, IN_DISTRIBUTION, OUT_OF_DISTRIBUTION)
    # multi-answer: P19/P69 train, P26 dev, P40 test, P50 OOD test (P106's is in a subject-only file)
    assert dropped == {"multi_answer": 5, "test_subject_in_train": 1 + 2 + 1, "template_mismatch": 1, "empty_answer": 0}
    for split in ("train", "dev", "test"):
        expected = sum(c["final"] for c in expected_counts()[split].values())
        assert table.filter((pl.col("split") == split) & ~pl.col("ood")).height == expected
    # OOD relations: their test questions, and their dev files as SliCK's exemplar pools (2 plain questions each)
    assert table.filter(pl.col("ood") & (pl.col("split") == "test")).height == 15
    assert table.filter(pl.col("ood") & (pl.col("split") == "dev")).height == 7 * SIZES["dev"]
    assert set(table.filter(pl.col("ood"))["split"]) == {"test", "dev"}
    assert set(table.filter(pl.col("ood"))["relation"]) == set(OUT_OF_DISTRIBUTION)
    train_subjects = set(table.filter(pl.col("split") == "train")["subject"])
    assert not {"Excluded Person", "Shared Kid", "Multi Worker", "Ood Book", "Twin Answer"} & train_subjects
    assert "Dev Land" in train_subjects  # only test subjects are removed from train
    assert table["subject"].null_count() == 0 and not table["relation"].is_in(EXCLUDED).any()


def test_excluded_relations_are_read_only_when_there(release):
    for relation in EXCLUDED:
        (release / "dataset" / "test" / f"{relation}.test.json").unlink()
    doc = stats_quietly(release)
    assert doc["train"]["relations"]["P19"]["after_overlap"] == 4  # Excluded Person stays: P20's test file is gone
    assert doc["train"]["relations"]["P17"]["after_overlap"] == 4  # Multi Worker stays, Shared Kid (P40) goes
    assert not set(EXCLUDED) & set(doc["subject_check_relations"])


def test_malformed_question_is_dropped_with_a_warning_naming_file_and_question(release):
    with pytest.warns(UserWarning) as caught:
        doc = release_stats(release)
    messages = [str(w.message) for w in caught]
    assert len(messages) == 1
    assert str(release / "dataset" / "train" / "P69.train.json") in messages[0]
    assert "'Totally unrelated question?'" in messages[0] and "'Another odd one?'" in messages[0]
    assert "Where was [X] educated?" in messages[0] and "\n" not in messages[0]
    assert doc["template_mismatches"] == [
        {"file": "dataset/train/P69.train.json", "question": "Totally unrelated question?"},
        {"file": "dataset/train/P69.train.json", "question": "Another odd one?"}]


def test_a_gold_answer_that_normalises_to_nothing_is_dropped_with_a_warning(release):
    for relation, split, subject, answer in (("P136", "test", "Silent Band", "The"), ("P19", "train", "Mute Man", "...")):
        path = release / "dataset" / split / f"{relation}.{split}.json"
        path.write_text(json.dumps([*json.loads(path.read_text()), ask(relation, subject, answer)]))
    with pytest.warns(UserWarning) as caught:
        table, dropped = load_release(release, IN_DISTRIBUTION, OUT_OF_DISTRIBUTION)
    assert dropped["empty_answer"] == 2 and not {"Silent Band", "Mute Man"} & set(table["subject"])
    empty = [str(w.message) for w in caught if "normalises to nothing" in str(w.message)]
    assert len(empty) == 2 and any(str(release / "dataset" / "test" / "P136.test.json") in m for m in empty)
    with pytest.warns(UserWarning) as caught:
        doc = release_stats(release)
    assert sum("normalises to nothing" in str(w.message) for w in caught) == 2
    assert doc["test"]["relations"]["P136"] == {"raw": 3, "after_multi_answer": 3, "template_mismatch": 0,
                                                 "empty_answer": 1, "final": 2}
    assert doc["train"]["relations"]["P19"]["empty_answer"] == 1


def test_paper_totals_are_checked_only_on_the_full_release(release, monkeypatch):
    sizes = {r: tuple(len(json.loads((release / "dataset" / s / f"{r}.{s}.json").read_text()))
                      for s in ("train", "dev", "test")) for r in RELEASE_RELATIONS}
    monkeypatch.setattr(eq, "RELEASE_SIZES", sizes)  # pretend this mini release is the full one
    monkeypatch.setattr(eq, "PAPER_TOTALS", {"train": 37, "test": 24, "ood_test": 15})
    doc = stats_quietly(release)
    assert doc["full_release"] is True and doc["matches_paper"] is True and "full_release_note" not in doc
    monkeypatch.setattr(eq, "PAPER_TOTALS", {"train": 38, "test": 24, "ood_test": 15})
    assert stats_quietly(release)["matches_paper"] is False
    (release / "dataset" / "test" / "P413.test.json").unlink()
    doc = stats_quietly(release)
    assert doc["full_release"] is False and "matches_paper" not in doc and "P413.test.json is missing" in doc["full_release_note"]


def test_the_real_paper_totals_are_recorded():
    assert eq.PAPER_TOTALS == {"train": 81_700, "test": 10_481, "ood_test": 5_848}
    assert sum(s[0] for s in eq.RELEASE_SIZES.values()) == 176_560  # SOURCE.md: the release's train records
    assert len(RELEASE_RELATIONS) == len(set(RELEASE_RELATIONS)) == 24


def test_stats_accepts_the_dataset_folder_and_names_a_wrong_one(release, tmp_path):
    assert stats_quietly(release / "dataset")["path"] == str(release)
    with pytest.raises(BenchmarkError, match="no dataset/ folder"):
        release_stats(tmp_path / "nowhere")


def test_data_stats_through_the_cli(release, capsys):
    assert main(["data", "stats", "entityquestions", "--path", str(release), "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert {s: doc[s]["relations"] for s in ("train", "dev", "test", "ood_test")} == expected_counts()
    assert doc["template_mismatches"][0]["question"] == "Totally unrelated question?"
    assert main(["data", "stats", "entityquestions", "--path", str(release)]) == 0  # the rich tables
    captured = capsys.readouterr()
    assert captured.out == "" and "ood_test" in captured.err and "Totally unrelated question?" in captured.err
    assert "ood_dev" in captured.err and "empty_answer" in captured.err


@needs_sample
def test_data_stats_on_the_shared_sample(capsys):
    assert main(["data", "stats", "entityquestions", "--path", str(EQ_SAMPLE), "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert list(doc["train"]["relations"]) == IN_DISTRIBUTION and list(doc["ood_test"]["relations"]) == OUT_OF_DISTRIBUTION
    for section, raw in (("train", 200), ("dev", 50), ("test", 50), ("ood_test", 50)):
        for relation, counts in doc[section]["relations"].items():
            steps = ["raw", "after_multi_answer", *(["after_overlap"] if section == "train" else []),
                     "template_mismatch", "empty_answer", "final"]
            assert list(counts) == steps, (section, relation)
            assert counts["raw"] == raw and counts["raw"] >= counts["after_multi_answer"] >= counts["final"]
        assert doc[section]["total"] == sum(c["final"] for c in doc[section]["relations"].values())
    assert [doc[s]["total"] for s in ("train", "dev", "test", "ood_test")] == [2269, 571, 556, 339]
    assert sum(c["empty_answer"] for s in ("train", "dev", "test", "ood_test", "ood_dev")
               for c in doc[s]["relations"].values()) == 0  # the release has no empty answer
    assert doc["ood_dev"]["relations"].keys() == doc["ood_test"]["relations"].keys()
    assert doc["template_mismatches"] == [] and doc["full_release"] is False and "matches_paper" not in doc
    assert set(doc["subject_check_relations"]) == set(RELEASE_RELATIONS)


# -- the loader on the shared sample (moved from test_components.py) ---------------------------------------------
@needs_sample
def test_sample_is_preprocessed_as_the_paper_says():
    source = Registry().dataset("entityquestions-sample")
    table = source.questions()
    assert set(table["split"].unique()) == {"train", "dev", "test"}
    # OOD relations: test questions, and the dev files the sample ships (SliCK's exemplar pools)
    assert sorted(table.filter(pl.col("ood"))["split"].unique().to_list()) == ["dev", "test"]
    files = {path.resolve() for path in source.files()}  # both sides resolved: ../shared may be a symlink
    assert (EQ_SAMPLE / "dataset" / "dev" / "P50.dev.json").resolve() in files
    raw = json.loads((EQ_SAMPLE / "dataset" / "train" / "P26.train.json").read_text())
    multi = sum(len(r["answers"]) > 1 for r in raw)
    kept = table.filter((pl.col("split") == "train") & (pl.col("relation") == "P26")).height
    assert multi > 0 and kept == len(raw) - multi
    test_subjects = set(table.filter(pl.col("split") == "test")["subject"])
    assert not test_subjects & set(table.filter(pl.col("split") == "train")["subject"])
    assert (EQ_SAMPLE / "dataset" / "test" / "P20.test.json").resolve() in files  # the identity covers them


@needs_sample
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


@needs_sample
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


@needs_sample
def test_template_mismatch_is_skipped_with_a_warning_and_counted(tmp_path):
    root = tmp_path / "eq"
    shutil.copytree(EQ_SAMPLE, root)
    path = root / "dataset" / "train" / "P19.train.json"
    records = json.loads(path.read_text()) + [{"question": "Totally different question?", "answers": ["X"]}]
    path.write_text(json.dumps(records))
    with pytest.warns(UserWarning, match="do not match the template"):
        _, dropped = load_release(root, ["P19"], [])
    assert dropped["template_mismatch"] == 1


# -- `data fetch`, never touching the network ---------------------------------------------------------------------
def make_zip(tmp_path: Path, wrapper: str = "entity-questions", templates: bool = False) -> Path:
    """A zip shaped like the public one: the release under a wrapper folder, by default without templates."""
    source = write_release(tmp_path / "zip-source" / wrapper, templates=templates)
    archive = tmp_path / "dataset.zip"
    with zipfile.ZipFile(archive, "w") as out:
        for path in sorted(source.parent.rglob("*")):
            out.write(path, path.relative_to(source.parent))
    return archive


def sha256_of(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_fetch_offline_fails_at_once_and_says_where_to_put_the_files(tmp_path, capsys):
    dest = tmp_path / "data" / "eq"
    with pytest.raises(BenchmarkError) as error:
        fetch_release(dest, url="http://127.0.0.1:9/x.zip", timeout=2)
    message = str(error.value)
    assert "could not download http://127.0.0.1:9/x.zip" in message and "\n" not in message
    assert f"{dest}/dataset/{{train,dev,test}}/P<id>.<split>.json" in message
    assert "relation_query_templates.json" in message
    assert not dest.parent.exists()  # not even the folder above it is created
    assert main(["data", "fetch", "entityquestions", "--dest", str(dest), "--url", "http://127.0.0.1:9/x.zip"]) == 2
    assert "could not download" in capsys.readouterr().err


def test_fetch_of_the_public_url_offline(tmp_path, monkeypatch):
    def offline(url, timeout):
        assert url == eq.DATASET_URL and timeout <= 10
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(urllib.request, "urlopen", offline)
    with pytest.raises(BenchmarkError, match="Temporary failure in name resolution; offline"):
        fetch_release(tmp_path / "eq")


def test_fetch_unpacks_a_verified_zip_atomically(tmp_path, capsys):
    archive = make_zip(tmp_path)
    dest = tmp_path / "cache" / "data" / "entityquestions"
    doc = fetch_release(dest, url=archive.as_uri(), expected_sha256=sha256_of(archive))
    assert doc["verified"] is True and doc["downloaded"] is True and doc["sha256"] == sha256_of(archive)
    assert doc["path"] == str(dest) and "has none" in doc["templates"]
    assert json.loads((dest / "relation_query_templates.json").read_text()) == RELEASE_TEMPLATES
    assert sorted(p.name for p in dest.iterdir()) == ["dataset", "relation_query_templates.json"]
    assert stats_quietly(dest)["train"]["relations"] == expected_counts()["train"]
    assert not list(dest.parent.glob(".*"))  # no temporary file or folder left beside it
    again = fetch_release(dest, url="http://127.0.0.1:9/never-asked.zip")
    assert again["downloaded"] is False and again["path"] == str(dest)
    assert main(["data", "fetch", "entityquestions", "--dest", str(dest), "--url", archive.as_uri(), "--force",
                 "--sha256", sha256_of(archive), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["verified"] is True


def test_fetch_without_a_known_hash_says_so(tmp_path, capsys):
    archive = make_zip(tmp_path, wrapper="dataset-root", templates=True)
    doc = fetch_release(tmp_path / "eq", url=archive.as_uri(), expected_sha256=None)
    assert doc["verified"] is False and doc["templates"] == "from the zip"
    assert f"sha256 {sha256_of(archive)} NOT verified" in doc["note"]
    assert main(["data", "fetch", "entityquestions", "--dest", str(tmp_path / "eq2"), "--url", archive.as_uri()]) == 0
    err = capsys.readouterr().err
    assert "NOT verified" in err and f"path: {tmp_path / 'eq2'}" in err


def test_wrong_hash_or_wrong_zip_leaves_nothing(tmp_path):
    archive = make_zip(tmp_path)
    dest = tmp_path / "eq"
    with pytest.raises(BenchmarkError, match="differs from the expected"):
        fetch_release(dest, url=archive.as_uri(), expected_sha256="0" * 64)
    assert not dest.exists() and not list(tmp_path.glob(".eq*"))
    other = tmp_path / "other.zip"
    with zipfile.ZipFile(other, "w") as out:
        out.writestr("README.md", "not the release")
    with pytest.raises(BenchmarkError, match="not the ENTITYQUESTIONS release layout"):
        unpack_release(other, dest, expected_sha256=None)
    assert not dest.exists() and not list(tmp_path.glob(".eq*"))
    (tmp_path / "broken.zip").write_bytes(b"not a zip")
    with pytest.raises(BenchmarkError, match="not a zip file"):
        unpack_release(tmp_path / "broken.zip", dest, expected_sha256=None)
    assert not dest.exists()
