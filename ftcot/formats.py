"""The paper's fine-tuning format (Ho et al., 2023, section 3).

Fine-tune-CoT: prompt ``{question} ###``, target `` {rationale} --> {answer}`` + EOS.
Vanilla:       prompt ``{question} ###``, target `` {answer}`` + EOS.
Bump ``FORMAT_VERSION`` on any change.
"""

from __future__ import annotations

FORMAT_VERSION = 1
PROMPT_SEPARATOR = " ###"
ANSWER_SEPARATOR = " --> "
VARIANTS = ("ft_cot", "vanilla")


def student_prompt(question: str) -> str:
    return f"{question.strip()}{PROMPT_SEPARATOR}"


def student_target(variant: str, answer: str, rationale: str | None = None) -> str:
    """The completion the student learns (without EOS, which the tokenizer side appends)."""
    if variant == "ft_cot":
        if not rationale:
            raise ValueError("a Fine-tune-CoT example needs a rationale")
        return f" {rationale.strip()}{ANSWER_SEPARATOR}{answer.strip()}"
    if variant == "vanilla":
        return f" {answer.strip()}"
    raise ValueError(f"unknown variant {variant!r}; known: {list(VARIANTS)}")


def answer_mode(variant: str) -> str:
    """How ``ftcot.answers.extract_answer`` reads this variant's completions."""
    return {"ft_cot": "student", "vanilla": "direct"}[variant]
