"""Models side by side: a model ladder run through the CLI (two test-size world models, the smoke suite's
settings), the report and the comparison built from the MLflow store alone, every figure function, the P(True)
comparison, and a headless-Chromium render of the page (skipped where Chromium is absent).

Real code end to end on small inputs (see conftest: a per-session MLflow store and cache).
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import json
import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

import polars as pl
import pytest

from benchmark import cli
from benchmark.analyse.p_true import mean_correct, p_true_vs_slick
from benchmark.categories import CATEGORIES
from benchmark.cli.inspect import print_comparison
from benchmark.errors import BenchmarkError
from benchmark.report import figures
from benchmark.report.build import build_report
from benchmark.report.compare import compare
from benchmark.report.select import mean_history, p_true_results, reference_mixture, relation_baseline
from benchmark.results import PAPER_LINEAR, ChildRun, ModelRun, load_models, select_parents
from benchmark.suite import load_suite
from benchmark.tracking import EXPERIMENT_KIND, EXPERIMENT_KIND_TAG, VIEW_KEY, VIEW_TAG, ResultStore, ui_links

REPO = Path(__file__).resolve().parent.parent
SMOKE = REPO / "suites" / "smoke.yaml"
LADDER = ["toy-gpt-test-xs", "toy-gpt-test"]
EXPERIMENT = "report-ladder"


def run_cli(*argv: str) -> tuple[int, str]:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = cli.main(list(argv))
    return code, out.getvalue()


@pytest.fixture(scope="module")
def ladder(tmp_path_factory):
    """The smoke suite as a two-model ladder, run once through ``python -m benchmark run``; a fixed |D| as in
    suites/model_ladder.yaml ('auto' is 0 for a model without MaybeKnown facts)."""
    here = os.getcwd()
    os.chdir(tmp_path_factory.mktemp("run"))  # the report goes to reports/<experiment> under the working directory
    try:
        code, out = run_cli("run", str(SMOKE), "--set", f"models=[{', '.join(LADDER)}]", "--set", "mixtures.size=30",
                            "--set", f"tracking.experiment={EXPERIMENT}", "--json")
    finally:
        os.chdir(here)
    assert code == 0
    return json.loads(out)


@pytest.fixture(scope="module")
def models(ladder):
    return load_models([EXPERIMENT])


def test_ladder_runs_every_model_into_one_experiment(ladder):
    assert ladder["experiment"] == EXPERIMENT
    assert [run["experiment"] for run in ladder["runs"]] == [EXPERIMENT] * len(LADDER)
    store = ResultStore()
    (experiment_id, _), = store.experiments([EXPERIMENT])
    parents = {p.tags["base_model"]: p for p in store.parents(experiment_id)}
    assert set(parents) == set(LADDER)
    for parent in parents.values():
        assert parent.status == "FINISHED"
        assert int(parent.tags["model_params"]) > 0 and parent.tags["knowledge_source"] == "world-test"
        children = store.children(experiment_id, parent.run_id)
        assert children
        for child in children:
            assert {"variant_kind", "mixture", "unknown_fraction", "seed", "base_model"} <= set(child.tags)
    sizes = {name: int(p.tags["model_params"]) for name, p in parents.items()}
    assert sizes["toy-gpt-test-xs"] < sizes["toy-gpt-test"]


def test_experiment_opens_on_model_development(ladder):
    store = ResultStore()
    (experiment_id, _), = store.experiments([EXPERIMENT])
    tags = store.experiment_tags(experiment_id)
    assert tags[EXPERIMENT_KIND_TAG] == EXPERIMENT_KIND
    assert tags["mlflow.note.content"] == load_suite(SMOKE).description  # the suite's, on the experiment's page


def test_ui_links_open_the_runs_charts_in_model_training_mode(ladder, models):
    links = dict(ui_links(port=5123))
    assert links[EXPERIMENT].startswith("http://127.0.0.1:5123/#/experiments/")
    assert "workflowType=machine_learning" in links[EXPERIMENT] and "compareRunsMode=CHART" in links[EXPERIMENT]
    # The link's view (stored on the experiment) leads with accuracy against the realised share of Unknown
    # examples, then the per-epoch test curves; what it charts is what the variants log.
    assert f"viewStateShareKey={VIEW_KEY}" in links[EXPERIMENT]
    store = ResultStore()
    (experiment_id, _), = store.experiments([EXPERIMENT])
    view = json.loads(store.experiment_tags(experiment_id)[VIEW_TAG])
    assert [s["name"] for s in view["compareRunSections"]][1:3] == ["test/acc", "ood/acc"]
    child = models[0].children[0]
    for chart in view["compareRunCharts"]:
        assert chart["xaxis"]["key"] in child.params and chart["yaxis"]["key"] in child.metrics
    (record, *_) = store.children(experiment_id, models[0].run_id)
    assert view["groupBy"]["groupByKeys"][0]["groupByData"] in record.tags  # seeds of a mixture, averaged


def test_a_ladder_run_ends_on_the_models_side_by_side(ladder, capsys):
    """Run again (every variant reused), as a person reads it: each model's tables, then the comparison."""
    code = cli.main(["run", str(SMOKE), "--set", f"models=[{', '.join(LADDER)}]", "--set", "mixtures.size=30",
                     "--set", f"tracking.experiment={EXPERIMENT}", "--no-report"])  # nothing written here
    assert code == 0
    err = capsys.readouterr().err
    assert err.count("reused finished run") == 2 * 3
    comparison = err[err.rindex(f"{EXPERIMENT}: toy-gpt-test "):]
    assert "Test accuracy on" in comparison and all(name in comparison.split("Test accuracy on")[1] for name in LADDER)
    assert "settings key" in comparison and "different suite settings" not in comparison  # like for like


def test_run_builds_the_report_and_logs_it_on_each_parent(ladder, models):
    built = ladder["report"]
    page = Path(built["index"]).read_text()
    for name in LADDER:
        assert name in page
    assert Path(built["summary"]).read_text().count("toy-gpt-test-xs") >= 2
    store = ResultStore()
    for model in models:
        with tempfile.TemporaryDirectory() as tmp:
            assert store.artifact(model.run_id, "report/index.html", Path(tmp)) is not None


def test_report_command_from_the_store_alone(ladder, tmp_path):
    code, out = run_cli("report", "--experiment", EXPERIMENT, "--out", str(tmp_path / "r"), "--no-log", "--json")
    assert code == 0
    document = json.loads(out)
    assert {m["model"] for m in document["models"]} == set(LADDER)
    page = (tmp_path / "r" / "index.html").read_text()
    assert "toy-gpt-test-xs" in page and "toy-gpt-test (" in page
    # Self-contained: every image is inline; nothing is fetched from anywhere.
    assert re.search(r"<img[^>]+src='data:image/png;base64,", page)
    assert not re.search(r"(src|href)=['\"](https?:|//)", page)
    assert "<link" not in page and "<script" not in page
    for section in ("Fig. 1", "Fig. 3a", "Fig. 3b", "Table 1", "Table 2", "Fig. 5", "exposure", "baseline",
                    "Numeric environment", "COMPATIBLE,STRICT", "bitwise reproducible at any thread count"):
        assert section in page, section
    for figure in document["figures"]:
        assert Path(figure).stat().st_size > 1000


def test_compare_json_lists_every_model(ladder, capsys):
    assert cli.main(["compare", "--experiment", EXPERIMENT, "--json"]) == 0
    document = json.loads(capsys.readouterr().out)
    rows = {row["model"]: row for row in document["models"]}
    assert set(rows) == set(LADDER)
    for row in rows.values():
        assert row["reference_mixture"] == "unknown_50"
        assert row["accuracy"]["early_stop"]["all"] is not None
        assert row["linear"]["beta_unk"]["value"] is not None
        assert row["findings"]
    assert cli.main(["compare", "--experiment", EXPERIMENT]) == 0  # the rich tables render


def test_every_figure_function_writes_a_png(models, tmp_path):
    by_label = {m.label: m for m in models}
    mixtures = {k: m.mixtures for k, m in by_label.items()}
    drawn = {
        "fitting": figures.fitting_by_category({k: mean_history(m, reference_mixture(m)) for k, m in by_label.items()}),
        "sweep": figures.unknown_sweep_models(mixtures),
        "d_known": figures.d_vs_d_known(mixtures),
        "linear": figures.linear_coefficients({k: m.linear() for k, m in by_label.items()}, PAPER_LINEAR),
        "heatmap": figures.heatmap([[0.1, 0.2], [0.3, float("nan")]], ["a", "b"], ["x", "y"], [["1", "2"], ["3", ""]],
                                  "t"),
        "p_true": figures.p_true_vs_slick({k: p_true_results(m)["early_stop"] for k, m in by_label.items()}),
        "exposure": figures.exposure_heatmaps({k: m.confusion for k, m in by_label.items()}),
        "relations": figures.categories_per_relation({k: m.counts_per_relation for k, m in by_label.items()}),
        "single_sweep": figures.unknown_sweep(next(iter(mixtures.values()))),
    }
    for name, figure in drawn.items():
        path = tmp_path / f"{name}.png"
        figure.savefig(path)
        figures.close(figure)
        assert path.stat().st_size > 1000, name


def test_build_report_with_one_model_and_with_none(models, tmp_path):
    one = build_report(models[:1], tmp_path / "one")
    assert models[0].base_model in Path(one["index"]).read_text()
    none = build_report([], tmp_path / "none")
    assert "No finished suite runs" in Path(none["index"]).read_text()


def test_compare_is_pure_over_loaded_runs(models):
    document = compare(models)
    assert [row["model"] for row in document["models"]] == [m.base_model for m in models]
    assert document["findings"]
    assert document["warning"] is None  # one ladder: one suite's settings for every model


def test_compare_warns_when_the_models_were_run_with_other_settings(models, capsys):
    """A model re-run with --set train.epochs=30 is its latest finished run: set beside another at 3 epochs, the
    comparison says so, naming both settings."""
    longer = dataclasses.replace(models[0], tags={**models[0].tags, "epochs": "30",
                                                  "settings_key": "another-setting"})
    document = compare([longer, *models[1:]])
    assert "different suite settings" in document["warning"]
    assert f"{longer.label}: smoke.yaml, 30 epochs" in document["warning"] and "3 epochs" in document["warning"]
    print_comparison(document)
    shown = capsys.readouterr().err
    assert shown.startswith("warning: these models were run with different suite settings") and "30" in shown
    # Runs logged before the settings key was (no such tag): what they do record decides.
    old = [dataclasses.replace(m, tags={k: v for k, v in m.tags.items() if k != "settings_key"}) for m in models]
    assert compare(old)["warning"] is None


@pytest.mark.skipif(not (shutil.which("chromium") or shutil.which("chromium-browser")),
                    reason="Chromium is not installed (CI: apt-get install -y chromium)")
def test_report_renders_in_headless_chromium_without_errors(ladder, tmp_path):
    """Every image decodes and the page logs no console error: a checker script is put in front of the page's
    own content (the page itself has no script)."""
    page = Path(ladder["report"]["index"]).read_text()
    checker = ("<script>window.__errors=[];window.addEventListener('error',e=>__errors.push(String(e.message||e.type)),"
               "true);const _e=console.error;console.error=(...a)=>{__errors.push(a.join(' '));_e(...a)};"
               "window.addEventListener('load',()=>{const imgs=[...document.images];const bad=imgs.filter(i=>!i.complete"
               "||i.naturalWidth===0).length;const d=document.createElement('pre');d.id='check';d.textContent="
               "JSON.stringify({images:imgs.length,broken:bad,errors:__errors});document.body.appendChild(d)});</script>")
    checked = tmp_path / "checked.html"
    checked.write_text(page.replace("<head>", "<head>" + checker, 1))
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    result = subprocess.run(
        [browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run", f"--user-data-dir={tmp_path / 'profile'}",
         "--enable-logging=stderr", "--v=0", "--virtual-time-budget=5000", "--dump-dom", checked.as_uri()],
        capture_output=True, text=True, timeout=120)
    found = re.search(r"<pre id=\"check\">(.*?)</pre>", result.stdout)
    assert found, result.stderr[-2000:]
    check = json.loads(found.group(1).replace("&quot;", '"'))
    assert check["images"] >= 8 and check["broken"] == 0 and check["errors"] == []
    console = [line for line in result.stderr.splitlines() if "CONSOLE" in line and "checked.html" in line]
    assert console == []


# ---------------------------------------------------------------------------------------------------------------
# Pure pieces on tiny hand-made inputs
# ---------------------------------------------------------------------------------------------------------------
def _categories() -> pl.DataFrame:
    # Ten test questions; SliCK calls q0-q3 Unknown, P(True) ranks q0, q1, q8, q9 lowest.
    p_true = [0.05, 0.10, 0.60, 0.70, 0.50, 0.55, 0.80, 0.90, 0.15, 0.20]
    category = ["Unknown"] * 4 + ["HighlyKnown"] * 6
    return pl.DataFrame({"qid": [f"q{i}" for i in range(10)], "split": ["test"] * 10, "ood": [False] * 10,
                         "category": category, "p_true": p_true, "relation": ["P1"] * 10,
                         "answer": ["A"] * 6 + ["B"] * 4, "p_correct_greedy": [0.0] * 4 + [1.0] * 6})


def test_p_true_against_slick_at_equal_coverage():
    correct = pl.DataFrame({"qid": [f"q{i}" for i in range(10)],
                            "correct": [0.0, 0.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 0.0]})
    result = p_true_vs_slick(_categories(), correct)
    assert result["questions"] == 10 and result["n_unknown"] == 4 and result["coverage"] == 0.4
    assert result["slick"]["accuracy"] == 0.5  # q0-q3: 0, 0, 1, 1
    assert result["p_true"]["accuracy"] == 0.25  # q0, q1, q8, q9: 0, 0, 1, 0
    assert result["overlap"] == 0.5
    assert result["curve"][-1] == {"coverage": 1.0, "questions": 10, "accuracy": 0.7}


def test_mean_correct_averages_seeds_on_in_distribution_test_questions():
    def run(values):
        return pl.DataFrame({"qid": ["a", "b", "c"], "checkpoint": ["early_stop"] * 3, "ood": [False, False, True],
                             "correct": values})

    table = mean_correct([run([True, False, True]), run([True, True, True])], "early_stop")
    assert table.to_dicts() == [{"qid": "a", "correct": 1.0}, {"qid": "b", "correct": 0.5}]


def test_majority_baseline_uses_train_answers_on_test_questions():
    train = pl.DataFrame({"qid": ["t1", "t2", "t3"], "split": ["train"] * 3, "ood": [False] * 3,
                          "category": ["Unknown"] * 3, "p_true": [0.5] * 3, "relation": ["P1"] * 3,
                          "answer": ["B", "B.", "A"], "p_correct_greedy": [0.0] * 3})
    baseline = relation_baseline(pl.concat([train, _categories()]))
    row = baseline.row(0, named=True)
    assert row["most_common"] == "b" and row["majority_accuracy"] == 0.4 and row["unknown_share"] == 0.4


def test_ladder_suite_expands_to_one_suite_per_model():
    suite = load_suite(REPO / "suites" / "model_ladder.yaml")
    each = suite.per_model()
    assert [s.model for s in each] == suite.models and len(each) >= 3
    assert {s.experiment for s in each} == {suite.experiment}
    assert len({s.key() for s in each}) == len(each)
    plain = load_suite(SMOKE)
    assert plain.per_model() == [plain]


def test_a_misspelt_ladder_model_fails_on_load_naming_the_key(tmp_path):
    suite = tmp_path / "ladder.yaml"
    suite.write_text(f"extends: {SMOKE}\nname: ladder\nmodels: [toy-gpt-test, toy-gpt-tset]\n")
    with pytest.raises(BenchmarkError, match=r"ladder.yaml: models: unknown base model 'toy-gpt-tset'; did you mean"):
        load_suite(suite)


def test_latest_finished_parent_per_model_is_chosen():
    class Run:
        def __init__(self, model, status, start):
            self.tags, self.status, self.start_time, self.name = {"base_model": model}, status, start, model

    runs = [Run("a", "FINISHED", 1), Run("a", "FINISHED", 3), Run("a", "FAILED", 4), Run("b", "RUNNING", 5)]
    assert [(r.tags["base_model"], r.start_time) for r in select_parents(runs)] == [("a", 3)]


def test_linear_figure_when_ood_is_not_scored_every_epoch(tmp_path):
    """A suite with ``evaluation.ood: false`` (the SmolLM2 one) has OOD accuracy at no point: the in-distribution
    figure is still drawn from every point (it once dropped every row, and the run failed after training)."""
    from benchmark.analyse.stats import linear_model_ci

    known = [0.2, 0.4, 0.6, 0.8, 0.5, 0.3]
    unknown = [0.0, 0.1, 0.2, 0.3, 0.4, 0.1]
    points = pl.DataFrame({"variant": ["a", "a", "a", "b", "b", "b"], "known_fitted_share": known,
                           "unknown_fitted_share": unknown,
                           "test/acc/all": [0.3 + 0.1 * k - 0.1 * u for k, u in zip(known, unknown, strict=True)],
                           "ood/acc/all": [None] * 6}, schema_overrides={"ood/acc/all": pl.Float64})
    fits = {"in_distribution": {**linear_model_ci(points, "test/acc/all"), "target": "test/acc/all"}}
    figure = figures.linear_fit(points, fits)
    figure.savefig(tmp_path / "linear.png")
    figures.close(figure)
    assert (tmp_path / "linear.png").stat().st_size > 0
    assert len(figure.axes[0].collections[0].get_offsets()) == 6


def _hand_made_model() -> ModelRun:
    """A model's run as the store returns it: three single-category mixtures x 2 seeds, metrics per test category,
    significance logged as the pipeline logs it, and a P(True) with no signal (the embedded world's: ~0.525 in
    every category)."""
    import numpy as np

    rng = np.random.default_rng(0)
    qids = [f"test/P1/{i}" for i in range(200)]
    category = [CATEGORIES[i % 4] for i in range(200)]
    categories = pl.DataFrame({"qid": qids, "split": "test", "ood": False, "category": category,
                               "p_true": rng.normal(0.525, 0.009, 200), "relation": "P1", "answer": "a",
                               "p_correct_greedy": 0.0})
    children, metrics = [], {}
    for mixture, level in (("HighlyKnown", 0.3), ("MaybeKnown", 0.4), ("Unknown", 0.1)):
        for seed in (0, 1):
            run = {}
            for stop in ("early_stop", "convergence"):
                run[f"{stop}/test/acc/all"] = level + 0.01 * seed
                run |= {f"{stop}/test/acc/{c}": level + 0.02 * i for i, c in enumerate(CATEGORIES)}
            correct = rng.uniform(size=200) < level
            predictions = pl.DataFrame({"qid": qids, "checkpoint": "early_stop", "ood": False, "correct": correct})
            children.append(ChildRun(f"{mixture}{seed}", f"{mixture}_seed{seed}", mixture, "single_category", seed,
                                     None, run, {}, predictions=predictions))
        for stop in ("early_stop", "convergence"):
            p = 1.0 if mixture == "MaybeKnown" else 0.001
            metrics |= {f"significance/{stop}/{mixture}/p": p / 3, f"significance/{stop}/{mixture}/p_holm": p,
                        f"significance/{stop}/{mixture}/p_holm_Unknown": 0.5}
    mixtures = pl.DataFrame({"mixture": ["HighlyKnown", "MaybeKnown", "Unknown"], "kind": "single_category"})
    tags = {"best/early_stop": "MaybeKnown", "best/convergence": "MaybeKnown", "best/early_stop/chosen_on": "dev",
            "best/convergence/chosen_on": "dev"}
    return ModelRun("e", "run1", "toy", 1000, "world-test", tags, metrics, children, mixtures, categories)


def test_table_2_has_the_paper_s_category_columns_and_p_true_is_ranked_only_on_evidence(tmp_path):
    from benchmark.report.select import single_category_table

    model = _hand_made_model()
    model.label = "toy"
    rows, columns, cells = single_category_table([model])
    assert rows == ["HighlyKnown", "MaybeKnown", "Unknown"]
    assert [c[2] for c in columns[:5]] == ["all", "HighlyKnown", "MaybeKnown", "WeaklyKnown", "Unknown"]
    mean, low, high, p, best = cells[("Unknown", ("toy", "early_stop", "WeaklyKnown"))]
    assert mean == pytest.approx(0.14) and low == high == pytest.approx(0.14) and not best  # both seeds alike
    assert cells[("Unknown", ("toy", "early_stop", "all"))][3] == 0.001  # the Holm-adjusted p, not the raw one
    assert cells[("Unknown", ("toy", "early_stop", "Unknown"))][3] == 0.5
    assert cells[("MaybeKnown", ("toy", "convergence", "all"))][4]  # the best, chosen on dev
    page = Path(build_report([model], tmp_path)["index"]).read_text()
    for stop in ("EARLY_STOP", "CONVERGENCE"):
        for group in ("all", *CATEGORIES):
            assert f"toy EARLY_STOP {group}</th>" in page and f"toy {stop} {group}</th>" in page, (stop, group)
    assert "chosen on dev questions, tested on test questions" in page and "Holm-adjusted" in page
    result = p_true_results(model)["early_stop"]
    assert not result["separates"] and result["verdict"] == "not ranked"
    assert "P(True) does not separate Known from Unknown questions here" in page
    assert "finds the less-known facts" not in page  # no winner named from two means
