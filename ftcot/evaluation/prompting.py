"""The pretrained student prompted before fine-tuning: the paper's zero-shot, zero-shot-CoT and
few-shot-CoT baselines (formats in :mod:`ftcot.methods`)."""

from __future__ import annotations

import random
from collections.abc import Sequence

from ftcot.answers import answer_type_of
from ftcot.errors import FtcotError
from ftcot.evaluation.engines import Generator
from ftcot.methods import FEW_SHOT_COT, PROMPTING_METHODS, ZERO_SHOT, ZERO_SHOT_COT, get_method
from ftcot.teacher.prompts import answer_prompt, rationale_prompt

# A base model carries on with the next made-up question: stop there.
STOP = ("\nQ:", "\n\nQ:")
ANSWER_MAX_NEW_TOKENS = 16  # Kojima et al.'s answer step is short


class PromptingError(FtcotError, ValueError):
    """A prompting baseline cannot be built (e.g. no worked examples for few-shot-CoT)."""


def zero_shot_prompt(ex: dict) -> str:
    return f"Q: {ex['question'].strip()}\nA: {answer_type_of(ex).trigger}"


def select_exemplars(kept_train: Sequence[dict], k: int, seed: int) -> list[dict]:
    """``k`` worked examples for few-shot-CoT: kept teacher rationales of ``k`` distinct train
    questions, chosen by a seeded shuffle (the first sample of each question)."""
    first = {}
    for ex in sorted(kept_train, key=lambda e: (e["question_id"], e["id"])):
        first.setdefault(ex["question_id"], ex)
    if len(first) < k:
        raise PromptingError(f"few-shot-CoT needs {k} worked examples, but only {len(first)} train questions kept one")
    chosen = sorted(first)
    random.Random(seed).shuffle(chosen)
    return [first[q] for q in chosen[:k]]


def worked_example(ex: dict) -> str:
    """``Q: ...\\nA: <rationale> Therefore, the answer ... is <answer>.``"""
    trigger = answer_type_of(ex).trigger
    return f"{rationale_prompt(ex['question'])} {ex['rationale'].strip()} {trigger} {ex['answer']}."


def few_shot_cot_prompt(exemplars: Sequence[dict], question: str) -> str:
    shots = "\n\n".join(worked_example(ex) for ex in exemplars)
    return f"{shots}\n\n{rationale_prompt(question)}"


def run_prompting(
    method: str,
    generator: Generator,
    test: Sequence[dict],
    max_new_tokens: int,
    exemplars: Sequence[dict] = (),
) -> list[dict]:
    """Greedy generations (``text``, ``generated_tokens``, ``truncated``) of one prompting
    baseline, in the test set's order, ready for :func:`ftcot.evaluation.scoring.score_predictions`."""
    prompter = PROMPTERS.get(method)
    if prompter is None:
        raise PromptingError(f"unknown prompting method {method!r}; known: {', '.join(PROMPTING_METHODS)}")
    if get_method(method).exemplars and not exemplars:
        raise PromptingError(f"{get_method(method).name} needs worked examples")
    return prompter(generator, test, max_new_tokens, exemplars)


def _zero_shot(generator, test, max_new_tokens, exemplars) -> list[dict]:
    prompts = [zero_shot_prompt(ex) for ex in test]
    return generator.greedy(prompts, ANSWER_MAX_NEW_TOKENS, "zero-shot", STOP)


def _few_shot_cot(generator, test, max_new_tokens, exemplars) -> list[dict]:
    prompts = [few_shot_cot_prompt(exemplars, ex["question"]) for ex in test]
    return generator.greedy(prompts, max_new_tokens, "few-shot-CoT", STOP)


def _zero_shot_cot(generator, test, max_new_tokens, exemplars) -> list[dict]:
    # Two steps (Kojima et al.): the rationale, then the answer given that rationale.
    prompts = [rationale_prompt(ex["question"]) for ex in test]
    rationales = generator.greedy(prompts, max_new_tokens, "zero-shot-CoT", STOP)
    answer_prompts = [
        answer_prompt(ex["question"], r["text"], answer_type_of(ex)) for ex, r in zip(test, rationales, strict=True)
    ]
    answers = generator.greedy(answer_prompts, ANSWER_MAX_NEW_TOKENS, "answers", STOP)
    return [
        {
            "text": f"{r['text'].strip()}\n{answer_type_of(ex).trigger}{a['text']}",
            "generated_tokens": r["generated_tokens"] + a["generated_tokens"],
            "truncated": r["truncated"],
        }
        for ex, r, a in zip(test, rationales, answers, strict=True)
    ]


# How each prompting method of ftcot.methods generates (tests/test_evaluate_stage.py holds the keys
# to the table's prompting methods).
PROMPTERS = {ZERO_SHOT: _zero_shot, ZERO_SHOT_COT: _zero_shot_cot, FEW_SHOT_COT: _few_shot_cot}
