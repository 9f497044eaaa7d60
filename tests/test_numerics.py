"""One answer at any thread count and ISA cap: the pinned numerics hold in fresh processes, whatever their environment says.

Each check runs in a subprocess, because what decides the bits (ATEN_CPU_CAPABILITY, MKL_CBWR, ONEDNN_MAX_CPU_ISA)
is read once when torch starts. "A simulated AVX2-only CPU" is the environment that caps every library at AVX2
(what an AVX2-only machine gives natively); "another CPU's paths" sets variables that, unpinned, make this machine
take other code paths (no vectorisation in ATen, MKL's automatic branch, oneDNN at SSE4.1), so a test here can see
a difference the pin must remove even on a CPU whose native paths are AVX2 already. The opt-out run under the same
variables must differ: it shows these tests can fail.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from benchmark import pipeline
from benchmark.numerics import OPT_OUT, PINNED
from benchmark.suite import load_suite
from benchmark.tracking import Tracker
from tests.stores import own_cache

REPO = Path(__file__).resolve().parent.parent
PROBE = REPO / "tests" / "numerics_probe.py"
SMOKE = REPO / "suites" / "smoke.yaml"
SIMULATED_AVX2 = {"ATEN_CPU_CAPABILITY": "avx2", "MKL_ENABLE_INSTRUCTIONS": "AVX2", "ONEDNN_MAX_CPU_ISA": "AVX2"}
OTHER_PATHS = {"ATEN_CPU_CAPABILITY": "default", "MKL_CBWR": "AUTO", "ONEDNN_MAX_CPU_ISA": "SSE41",
               "MKL_ENABLE_INSTRUCTIONS": "SSE4_2"}


def _environment(cache: Path, **extra: str) -> dict[str, str]:
    """This process's environment without anything that pins or unpins numerics, plus ``extra``."""
    drop = {*PINNED, *SIMULATED_AVX2, *OTHER_PATHS, OPT_OUT, "SLICK_BENCH_THREADS"}
    env = {k: v for k, v in os.environ.items() if k not in drop}
    return {**env, "SLICK_BENCH_CACHE": str(cache), "HF_HUB_OFFLINE": "1", **extra}


def _python(code_or_file: list[str], env: dict[str, str], timeout: float = 3600) -> str:
    done = subprocess.run([sys.executable, *code_or_file], env=env, capture_output=True, text=True, timeout=timeout,
                          cwd=REPO)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


TAGS = ("import benchmark, json, torch\nfrom benchmark.numerics import environment_tags\n"
        "print(json.dumps(environment_tags(['float32'], 'cpu')))")


def test_the_pin_overrides_what_the_environment_says_and_the_opt_out_leaves_it(tmp_path):
    pinned = json.loads(_python(["-c", TAGS], _environment(tmp_path, **OTHER_PATHS)))
    assert pinned["numerics.pinned"] == "true"
    assert pinned["numerics.aten_capability"] == "AVX2"
    assert pinned["numerics.mkl_cbwr"] in ("COMPATIBLE,STRICT", "")  # '' only on a torch without MKL
    assert pinned["numerics.reproducible"].startswith("bitwise reproducible")
    native = json.loads(_python(["-c", TAGS], _environment(tmp_path, **OTHER_PATHS, **{OPT_OUT: "1"})))
    assert native["numerics.pinned"] == "false"
    assert native["numerics.aten_capability"] == "DEFAULT"
    assert native["numerics.reproducible"].startswith("not bitwise reproducible")


def test_pretraining_and_fine_tuning_give_the_same_weights_at_any_thread_count_and_on_other_cpus(tmp_path):
    """The test world's model pretrained (1 epoch) and fine-tuned with dropout (2 epochs), by sha256 of the
    weights: natively at 1 thread, on a simulated AVX2-only CPU at 2 threads, and under another CPU's paths at 2
    threads. Unpinned, the other paths give other weights."""
    runs = {"native, 1 thread": (1, {}), "simulated AVX2-only CPU, 2 threads": (2, SIMULATED_AVX2),
            "another CPU's paths, 2 threads": (2, OTHER_PATHS),
            "another CPU's paths, unpinned": (2, {**OTHER_PATHS, OPT_OUT: "1"})}

    def probe(name: str) -> dict:
        threads, extra = runs[name]
        folder = tmp_path / name.replace(" ", "_").replace(",", "").replace("'", "")
        out = _python([str(PROBE), str(threads), str(folder / "run")], _environment(folder / "cache", **extra))
        return json.loads(out.strip().splitlines()[-1])

    with ThreadPoolExecutor(2) as pool:
        results = dict(zip(runs, pool.map(probe, runs), strict=True))
    reference = results["native, 1 thread"]
    assert reference["threads"] == 1 and results["simulated AVX2-only CPU, 2 threads"]["threads"] == 2
    for name in list(runs)[1:3]:
        assert results[name]["pretrained"] == reference["pretrained"], name
        assert results[name]["fine_tuned"] == reference["fine_tuned"], name
        assert results[name]["history"] == reference["history"], name
    unpinned = results["another CPU's paths, unpinned"]
    assert unpinned["pretrained"] != reference["pretrained"]  # the environment does change the bits, unpinned


def _child_metrics(tracker: Tracker, document: dict) -> dict[str, dict[str, float]]:
    return {v["name"]: {k: x for k, x in tracker.latest_metrics(v["run_id"]).items() if not k.startswith("time/")}
            for v in document["variants"]}


def _parent_metrics(tracker: Tracker, document: dict) -> dict[str, float]:
    return {k: v for k, v in tracker.latest_metrics(document["parent_run_id"]).items()
            if not k.startswith(("time/", "slick/seconds", "slick/questions_per_s"))}


def _differences(got: dict[str, dict[str, float]], expected: dict[str, dict[str, float]]) -> dict:
    """{run: {metric: (got, expected)}} for every metric that is not the same number (NaN equals NaN)."""
    out = {}
    for run in got.keys() | expected.keys():
        a, b = got.get(run, {}), expected.get(run, {})
        differing = {k: (a.get(k), b.get(k)) for k in a.keys() | b.keys()
                     if not (a.get(k) == b.get(k) or (a.get(k) != a.get(k) and b.get(k) != b.get(k)))}
        if differing:
            out[run] = differing
    return out


def test_the_smoke_suite_gives_the_same_metrics_natively_and_on_a_simulated_avx2_cpu(tmp_path, monkeypatch):
    """The CLI in a fresh process on a simulated AVX2-only CPU (with another CPU's MKL branch on top): SliCK, every
    variant and the analysis computed there, against this process's run."""
    suite = load_suite(SMOKE, ["tracking.experiment=numerics-native"])
    native = pipeline.run_suite(suite, SMOKE, log=lambda _: None)
    native_tracker = Tracker("numerics-native")

    # The world and its model come from this session's cache (pretraining under a simulated CPU is the test above);
    # SliCK and every variant are computed in the other process.
    cache = own_cache(tmp_path / "cache", Path(os.environ["SLICK_BENCH_CACHE"]), stages=("world", "world-model"))
    store = f"sqlite:///{tmp_path / 'mlflow.db'}"
    env = _environment(cache, **SIMULATED_AVX2, MKL_CBWR="AUTO", MLFLOW_TRACKING_URI=store)
    out = _python(["-m", "benchmark", "run", str(SMOKE), "--json", "--no-report", "--set",
                   "tracking.experiment=numerics-simulated"], env)
    simulated = json.loads(out)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", store)
    simulated_tracker = Tracker("numerics-simulated")

    assert _differences(_child_metrics(simulated_tracker, simulated), _child_metrics(native_tracker, native)) == {}
    assert _differences({"parent": _parent_metrics(simulated_tracker, simulated)},
                        {"parent": _parent_metrics(native_tracker, native)}) == {}
    tags = simulated_tracker.client.get_run(simulated["parent_run_id"]).data.tags
    assert tags["numerics.pinned"] == "true" and tags["numerics.aten_capability"] == "AVX2"


@pytest.mark.parametrize("dropout", [0.0, 0.1])
def test_attention_gradients_do_not_depend_on_the_thread_count(dropout):
    """With dropout, PyTorch's attention falls back to a softmax whose CPU backward rounds by thread piece (an
    8x4x30x30 softmax: other gradients at 1 and 2 threads); the thread-invariant attention must not."""
    code = f"""
import benchmark, hashlib, sys, torch
from transformers import GPT2Config, GPT2LMHeadModel
from benchmark.numerics import set_threads
from benchmark.thread_invariant import make_thread_invariant
digests = []
for threads in (1, 2):
    set_threads(threads)
    torch.manual_seed(0)
    config = GPT2Config(vocab_size=300, n_positions=64, n_embd=64, n_layer=2, n_head=4, resid_pdrop={dropout},
                        embd_pdrop={dropout}, attn_pdrop={dropout})
    model = make_thread_invariant(GPT2LMHeadModel(config)).train()
    ids = torch.randint(0, 300, (8, 30)); mask = torch.ones(8, 30, dtype=torch.long); mask[:4, 20:] = 0
    torch.manual_seed(1)
    model(input_ids=ids, attention_mask=mask, labels=ids.masked_fill(mask == 0, -100)).loss.backward()
    digest = hashlib.sha256()
    for _, p in sorted(model.named_parameters()):
        digest.update(p.grad.numpy().tobytes())
    digests.append(digest.hexdigest())
print(digests[0] == digests[1])
"""
    assert _python(["-c", code], _environment(Path("/nonexistent"))).strip().endswith("True")
