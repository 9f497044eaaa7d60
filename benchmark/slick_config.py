"""The suite's ``slick:`` section: how SliCK categorises (docs/method.md §1). Torch-free, so ``validate`` stays fast.

Defaults are the paper's. ``backend`` chooses what generates (``benchmark/backends``); ``estimator`` whether the
categories come from generated answers and drawn samples (the paper's) or from one teacher-forced pass per prompt.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from benchmark.backends import BACKENDS, BackendName


class VLLMEngineConfig(BaseModel):
    """vLLM's engine (``slick.vllm``): how much of the GPUs it takes and how it batches. These settle memory and
    speed; they are recorded with the table (the run's ``slick.*`` tags), not part of its cache key: vLLM's own
    batching already makes its categories agree with another run's statistically, not sample for sample."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    tensor_parallel_size: int = Field(1, ge=1, description="GPUs one vLLM engine spans (an 8B model fits on one "
                                      "80 GB GPU; a SliCK shard then asks for this many GPUs)")
    max_model_len: int | None = Field(None, ge=16, description="longest prompt + answer in tokens; null = the "
                                      "model's own (128k for Llama 3.1, which reserves KV cache for it: 1024 is "
                                      "plenty for 4-shot prompts)")
    gpu_memory_utilization: float = Field(0.9, gt=0, le=1, description="share of each GPU's memory vLLM may take")
    max_num_seqs: int | None = Field(None, ge=1, description="sequences batched at once; null = vLLM's default")
    enforce_eager: bool = Field(False, description="skip graph capture and compilation: a faster start, slower "
                                "steps (worth it for short runs and on CPU)")


class SliCKConfig(BaseModel):
    """The suite's ``slick:`` section. Defaults are the paper's (docs/method.md §1)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    n_prompts: int = Field(10, ge=1, description="different few-shot prompts per relation (N_ex)")
    k_shot: int = Field(4, ge=1, description="exemplars per prompt, drawn from the relation's dev split")
    n_samples: int = Field(16, ge=1, description="temperature samples per prompt")
    # Finite and at most 10: logits / T underflows long before inf or 1e308, and no sampler is meant to run there.
    temperature: float = Field(0.5, gt=0, le=10, allow_inf_nan=False,
                               description="sampling temperature for P_Correct(T>0) (0 < T <= 10)")
    top_k: int = Field(40, ge=0, description="sample among the k most likely tokens (0 = all)")
    max_new_tokens: int | None = Field(
        None, ge=1, description="longest answer generated, in tokens; answers end at the first newline. null = per "
        "relation, its longest gold answer plus 2 tokens: the rule evaluation cuts answers by, so SliCK and the "
        "fine-tuned model's test get the same room (a fixed number can cut a right answer short)")
    exhaustive: bool = Field(False, description="draw every sample even where it cannot change the category, "
                                                "so p_correct_sampled is known for every question")
    # The choices and their descriptions are the registry's (``benchmark.backends.BACKENDS``).
    backend: BackendName = Field("engine", description=BACKENDS.described())
    estimator: Literal["sampled", "exact"] = Field(
        "sampled", description="sampled: the paper's, from generated answers and drawn samples; exact: one "
                               "teacher-forced pass per prompt gives the greedy verdict and the chance q that one "
                               "sample equals the gold answer (token-exact, a lower bound; engine backend only)")
    batch_size: Literal["auto"] | int = Field(
        "auto", description="rows per forward pass ('auto' picks by device); does not change results")
    splits: list[Literal["train", "dev", "test"]] = Field(
        default_factory=lambda: ["train", "dev", "test"], min_length=1, description="splits to categorise")
    ood_exemplars: Literal["dev", "test", "skip"] = Field(
        "dev", description="where the out-of-distribution relations' exemplars come from: dev = their own dev split, "
                           "as for every other relation (the release and the embedded world ship one; a relation "
                           "without one is an error naming its file); test = their own test split, the questions "
                           "being categorised (a question is never its own exemplar; only when a source has no OOD "
                           "dev split); skip = OOD questions are not categorised")
    p_true: bool = Field(True, description="also compute the P(True) baseline score for every question")
    limit: int | None = Field(None, ge=1, description="categorise at most this many questions of each relation in "
                              "each split, the first in file order (a quick look at a large source: `--limit N`); "
                              "exemplars still come from the whole dev split. null = every question")
    vllm: VLLMEngineConfig = Field(default_factory=VLLMEngineConfig, description="vLLM engine settings "
                                   "(backend vllm only)")

    @model_validator(mode="after")
    def _exact_needs_the_engine(self) -> SliCKConfig:
        if self.estimator == "exact" and self.backend != "engine":
            raise ValueError(f"estimator 'exact' runs on the engine only; backend '{self.backend}' samples")
        return self

    def limit_tags(self) -> dict[str, str]:
        """The run tag that records ``limit`` (none without one): a run on fewer questions says so."""
        return {"limit": f"{self.limit} questions per relation and split"} if self.limit else {}

    def cache_fields(self) -> dict:
        # Without ``limit`` while it is unset: cache entries written before the key existed keep their keys.
        return self.model_dump(exclude={"batch_size", "vllm", *(() if self.limit else ("limit",))})
