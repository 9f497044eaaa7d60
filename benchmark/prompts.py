"""Every prompt the benchmark shows a model, in one place (DESIGN.md §1.1 and §1.4).

- SliCK few-shot prompt (base model, no chat template): k exemplars "Q: <q>\\nA: <a>\\n", then "Q: <q>\\nA:".
- Fine-tuning and test prompt: "Answer the following question. <q>\\nA:"; the completion is " <answer>\\n".
  The loss applies to the completion only (answer tokens and the newline terminator), never to the prompt.
- P(True) prompt, from Kadavath et al. as used by the paper.
The answer a model gives is its generated text up to the first newline.
"""

from __future__ import annotations

from collections.abc import Sequence

TERMINATOR = "\n"
FINETUNE_INSTRUCTION = "Answer the following question."


def exemplar_block(exemplars: Sequence[tuple[str, str]]) -> str:
    return "".join(f"Q: {q}\nA: {a}\n" for q, a in exemplars)


def few_shot_prompt(exemplars: Sequence[tuple[str, str]], question: str) -> str:
    return f"{exemplar_block(exemplars)}Q: {question}\nA:"


def finetune_prompt(question: str) -> str:
    return f"{FINETUNE_INSTRUCTION} {question}\nA:"


def completion(answer: str) -> str:
    """What follows a prompt: the answer after one space, then the terminator."""
    return f" {answer}{TERMINATOR}"


def p_true_prompt(question: str, proposed_answer: str) -> str:
    return (f"Question: {question}\nProposed Answer: {proposed_answer}\n"
            "Is the proposed answer:\n (A) True\n (B) False\nThe proposed answer is:")
