"""The command line (``benchmark/cli/``): the real parser and real commands on small inputs."""

from __future__ import annotations

import argparse
import json
import os
import signal
import time

import pytest

from benchmark import cli
from benchmark.cli.parser import build_parser
from benchmark.cli.run import shortcut_overrides
from benchmark.cli.terminal import progress_lines
from benchmark.errors import BenchmarkError
from benchmark.suite import load_suite
from tests.stores import REPO, SMOKE
from tests.test_bad_input import cli_error


def command_paths(parser: argparse.ArgumentParser, path: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    """Every command and subcommand of ``parser``: ``()``, ``("run",)``, ``("world", "build")``, ..."""
    found = [path]
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                found += command_paths(sub, (*path, name))
    return found


COMMANDS = command_paths(build_parser())


def test_the_parser_knows_every_command():
    assert {p[0] for p in COMMANDS if p} == {"run", "validate", "categorize", "ls", "world", "bench", "data",
                                            "report", "compare", "export", "train-step", "ui"}
    assert {p for p in COMMANDS if len(p) == 2} >= {("world", "build"), ("world", "pretrain"), ("world", "probe"),
                                                    ("bench", "slick"), ("bench", "train"), ("bench", "numerics")}


@pytest.mark.parametrize("path", COMMANDS, ids=lambda p: " ".join(p) or "(top)")
def test_every_command_has_a_help_that_exits_0(path, capsys):
    with pytest.raises(SystemExit) as exit_:
        cli.main([*path, "--help"])
    assert exit_.value.code == 0
    assert capsys.readouterr().out.startswith(f"usage: {' '.join(['python -m benchmark', *path])}")


@pytest.mark.parametrize(("argv", "meant"), [(["rnu"], "run"), (["categorise"], "categorize"),
                                              (["world", "biuld"], "build"), (["bench", "slik"], "slick"),
                                              (["run", "x.yaml", "--executor", "rey"], "ray")])
def test_a_mistyped_command_or_choice_gets_a_did_you_mean(argv, meant, capsys):
    with pytest.raises(SystemExit) as exit_:
        cli.main(argv)
    assert exit_.value.code == 2
    assert f"invalid choice: '{argv[-1]}'" in (err := capsys.readouterr().err) and f"did you mean '{meant}'?" in err


def test_a_name_close_to_no_command_gets_the_list_alone(capsys):
    with pytest.raises(SystemExit):
        cli.main(["xyzzy"])
    err = capsys.readouterr().err
    assert "(choose from 'run', 'validate'," in err and "did you mean" not in err


@pytest.mark.parametrize(("argv", "line"), [
    (["validate", str(SMOKE), "--set", "model=toy-gtp"], "model: unknown base model 'toy-gtp'; did you mean 'toy-gpt'?"),
    (["validate", str(SMOKE), "--set", "knowledge_source=wrold-test"], "did you mean 'world-test'?"),
    (["categorize", str(SMOKE), "--model", "toy-gtp"], "unknown base model 'toy-gtp'; did you mean 'toy-gpt'?"),
    (["validate", str(SMOKE), "--set", "train.epoch=3"], "train.epoch: unknown key; did you mean 'epochs'?"),
])
def test_a_mistyped_component_or_key_gets_a_did_you_mean(argv, line, capsys):
    assert line in cli_error(capsys, *argv)


def test_a_benchmark_error_is_one_line_and_exit_code_2_and_debug_shows_it_whole(tmp_path, capsys, monkeypatch):
    # --debug sets it for worker processes; monkeypatch records it as unset first, so it is unset again after.
    monkeypatch.setenv("SLICK_BENCH_DEBUG", "")
    monkeypatch.delenv("SLICK_BENCH_DEBUG")
    missing = tmp_path / "no-such-suite.yaml"
    assert cli_error(capsys, "validate", str(missing)) == f"error: {missing}: suite file not found"
    with pytest.raises(BenchmarkError, match="suite file not found"):
        cli.main(["--debug", "validate", str(missing)])
    (tmp_path / "unknown_sweep.yaml").write_text("name: x\n")
    typo = tmp_path / "unknwn_sweep.yaml"
    assert cli_error(capsys, "validate", str(typo)) == (f"error: {typo}: suite file not found; did you mean "
                                                         f"'{tmp_path / 'unknown_sweep.yaml'}'?")


def test_ctrl_c_exits_130_and_sigterm_during_run_128_plus_its_number(monkeypatch, capsys):
    def interrupted(args):
        raise KeyboardInterrupt

    def terminated(args):
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(5)  # the handler raises KeyboardInterrupt here, long before this ends

    before = signal.getsignal(signal.SIGTERM)
    monkeypatch.setattr("benchmark.cli.parser.cmd_ls", interrupted)
    assert cli.main(["ls"]) == 130
    assert capsys.readouterr().err.strip() == "interrupted"
    monkeypatch.setattr("benchmark.cli.parser.cmd_run", terminated)
    assert cli.main(["run", str(SMOKE)]) == 128 + signal.SIGTERM
    assert "interrupted (SIGTERM); open runs are marked KILLED" in " ".join(capsys.readouterr().err.split())
    assert signal.getsignal(signal.SIGTERM) is before  # the handler is put back


def parsed(*argv: str) -> argparse.Namespace:
    return build_parser().parse_args(list(argv))


def test_shortcut_flags_are_the_suite_keys_they_stand_for_after_the_set_ones():
    assert shortcut_overrides(parsed("run", "s.yaml")) == []
    assert shortcut_overrides(parsed("run", "s.yaml", "--set", "train.epochs=2")) == ["train.epochs=2"]
    # --model names one model (quoted: YAML reads hf:org/name as the string it is) and empties a ladder.
    assert shortcut_overrides(parsed("run", "s.yaml", "--model", "hf:org/name")) == ['model="hf:org/name"', "models=[]"]
    assert shortcut_overrides(parsed("run", "s.yaml", "--limit", "5")) == ["slick.limit=5"]
    assert shortcut_overrides(parsed("categorize", "s.yaml", "--set", "slick.limit=9", "--model", "toy-gpt",
                                     "--limit", "3")) == ["slick.limit=9", 'model="toy-gpt"', "models=[]",
                                                          "slick.limit=3"]
    # categorize --source takes --model as the model itself, not as a suite key.
    source = parsed("categorize", "--source", "q.jsonl", "--model", "toy-gpt", "--limit", "3")
    assert shortcut_overrides(source, model=False) == ["slick.limit=3"]


def test_shortcut_flags_set_the_suite_they_mean():
    ladder = REPO / "suites" / "model_ladder.yaml"
    assert load_suite(ladder).models  # a ladder ...
    suite = load_suite(ladder, shortcut_overrides(parsed("run", str(ladder), "--model", "toy-gpt-test-xs",
                                                         "--limit", "3")))
    assert (suite.model, suite.models, suite.slick.limit) == ("toy-gpt-test-xs", [], 3)  # ... becomes one model
    suite = load_suite(SMOKE, shortcut_overrides(parsed("run", str(SMOKE), "--set", "slick.limit=9", "--limit", "2")))
    assert suite.slick.limit == 2  # the flag comes after, so over, --set


def test_progress_off_a_terminal_is_a_line_now_and_then_with_the_time_left():
    lines, now = [], [0.0]
    update = progress_lines(lines.append, every=30, clock=lambda: now[0])
    for epoch, at in enumerate((0, 10, 20, 40, 50, 90), start=0):
        now[0] = at
        update("epochs, all variants", epoch, 5)
    # The first call, then one at most every 30 s, and the last; the time left at the pace so far.
    assert lines == ["epochs, all variants: 0/5 (0:00:00 so far)",
                     "epochs, all variants: 3/5 (0:00:40 so far, about 0:00:27 to go)",
                     "epochs, all variants: 5/5 (0:01:30 so far)"]


# -- the commands folded in from the side command lines of components/world and benchmark/perf ------------------
def test_world_build_writes_a_world_into_a_folder(tmp_path, capsys):
    out = tmp_path / "world"
    assert cli.main(["world", "build", "--size", "test", "--seed", "1", "--out", str(out), "--json"]) == 0
    document = json.loads(capsys.readouterr().out)
    assert (document["path"], document["size"], document["seed"]) == (str(out.resolve()), "test", 1)
    assert (out / "corpus.jsonl").is_file() and (out / "exposures.csv").is_file() and document["facts"] > 0


def test_world_pretrain_trains_the_worlds_model_into_a_folder_with_its_settings(tmp_path, capsys, monkeypatch):
    from transformers import AutoConfig, AutoTokenizer

    monkeypatch.setenv("SLICK_BENCH_THREADS", "1")
    out = tmp_path / "model"
    argv = ["world", "pretrain", "--size", "test", "--out", str(out), "--set", "layers=1", "--set", "width=16",
            "--set", "heads=2", "--set", "epochs=1", "--set", "warmup_steps=2", "--json"]
    assert cli.main(argv) == 0
    document = json.loads(capsys.readouterr().out)
    assert document["path"] == str(out.resolve()) and document["steps"] > 0 and document["threads"] == 1
    config = AutoConfig.from_pretrained(out)
    assert (config.n_layer, config.n_embd, config.n_head) == (1, 16, 2)
    assert len(AutoTokenizer.from_pretrained(out)) == document["vocabulary"]


@pytest.mark.parametrize(("setting", "line"), [("epoch=1", "epoch: unknown key; did you mean 'epochs'?"),
                                               ("epochs=x", "epochs: Input should be a valid number"),
                                               ("epochs", "--set epochs: expected KEY=VALUE")])
def test_world_pretrain_checks_its_settings_before_any_work(setting, line, tmp_path, capsys):
    out = tmp_path / "model"
    assert line in cli_error(capsys, "world", "pretrain", "--size", "test", "--out", str(out), "--set", setting)
    assert not out.exists()


def test_bench_train_hands_its_sizes_to_the_benchmark(monkeypatch, capsys):
    seen = {}

    def bench_train(**kwargs):
        seen.update(kwargs)
        return {"ratio": 1.0}

    monkeypatch.setattr("benchmark.perf.train.bench_train", bench_train)
    argv = ["bench", "train", "--model", "toy-gpt-test", "--threads", "2", "--steps", "7", "--train-size", "32",
            "--dev-size", "4", "--test-size", "5", "--json"]
    assert cli.main(argv) == 0
    assert json.loads(capsys.readouterr().out) == {"ratio": 1.0}
    assert seen == {"model": "toy-gpt-test", "threads": 2, "steps": 7, "train_size": 32, "dev_size": 4,
                    "test_size": 5}
    assert cli.main(["bench", "train"]) == 0  # the defaults are the benchmark's own
    assert seen == {"model": "toy-gpt", "threads": 1, "steps": 40, "train_size": 200, "dev_size": None,
                    "test_size": None}
