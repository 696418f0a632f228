"""Zero-shot-CoT prompts (Kojima et al., 2022), as the paper's teacher uses them.

Step 1 asks for a rationale; step 2 repeats it and asks for the answer with the trigger of the
answer type (``ftcot.answers.ANSWER_TYPES``, or the task file's own). Bump ``PROMPT_VERSION``
on any change: it is recorded with every teacher output.
"""

from __future__ import annotations

from ftcot.answers import AnswerType, get_answer_type

PROMPT_VERSION = "zero-shot-cot-v1"
REASONING_TRIGGER = "Let's think step by step."


def rationale_prompt(question: str) -> str:
    return f"Q: {question}\nA: {REASONING_TRIGGER}"


def answer_prompt(question: str, rationale: str, answer_type: str | AnswerType) -> str:
    """Step 2: the question, the rationale and the answer type's trigger (``ftcot.answers``)."""
    return f"{rationale_prompt(question)} {rationale.strip()}\n{get_answer_type(answer_type).trigger}"
