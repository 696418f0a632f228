"""Zero-shot-CoT prompts (Kojima et al., 2022), as the paper's teacher uses them.

Step 1 asks for a rationale; step 2 repeats it and asks for the answer with a trigger that
depends on the answer type. Bump ``PROMPT_VERSION`` on any change: it is recorded with every
teacher output.
"""

from __future__ import annotations

PROMPT_VERSION = "zero-shot-cot-v1"
REASONING_TRIGGER = "Let's think step by step."

ANSWER_TRIGGERS: dict[str, str] = {
    "number": "Therefore, the answer (arabic numerals) is",
    "choice_A-E": "Therefore, among A through E, the answer is",
    "choice_A-F": "Therefore, among A through F, the answer is",
    "choice_A-C": "Therefore, among A through C, the answer is",
    "yes_no": "Therefore, the answer (Yes or No) is",
    "letters": "Therefore, the answer is",
}


def rationale_prompt(question: str) -> str:
    return f"Q: {question}\nA: {REASONING_TRIGGER}"


def answer_prompt(question: str, rationale: str, answer_type: str) -> str:
    try:
        trigger = ANSWER_TRIGGERS[answer_type]
    except KeyError:
        raise KeyError(f"no answer trigger for answer type {answer_type!r}") from None
    return f"{rationale_prompt(question)} {rationale.strip()}\n{trigger}"
