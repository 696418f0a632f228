"""The rows of the paper's table, declared as data.

Fine-tuned students (stage finetune, then evaluate):
- ``ft_cot``: Fine-tune-CoT, trained on ``question ### rationale --> answer``; with
  ``diversity`` > 1 it is the paper's diverse reasoning.
- ``vanilla``: trained on ``question ### answer``.

The pretrained student before fine-tuning (stage prompt), Kojima et al.'s formats:
- ``zero_shot``: ``Q: {question}\\nA: {answer trigger}``, the answer read from the continuation.
- ``zero_shot_cot``: ``Q: {question}\\nA: Let's think step by step.``, then the answer trigger.
- ``few_shot_cot``: k worked examples (kept teacher rationales of train questions) before the
  question; the answer is read after the answer trigger the examples end with.

``mode`` is how :func:`ftcot.answers.extract_answer` reads a completion strictly.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal


@dataclass(frozen=True)
class Method:
    name: str
    kind: Literal["finetune", "prompting"]
    mode: Literal["student", "direct", "teacher", "cot"]
    exemplars: bool = False  # prompted with worked examples (kept teacher rationales of train questions)


# Each name is written here only (tests/test_one_name.py): elsewhere the code says FT_COT, not the string.
ZERO_SHOT, ZERO_SHOT_COT, FEW_SHOT_COT = "zero_shot", "zero_shot_cot", "few_shot_cot"
VANILLA, FT_COT = "vanilla", "ft_cot"

METHODS: dict[str, Method] = {
    ZERO_SHOT: Method("Zero-shot", "prompting", "teacher"),
    ZERO_SHOT_COT: Method("Zero-shot-CoT", "prompting", "cot"),
    FEW_SHOT_COT: Method("Few-shot-CoT", "prompting", "cot", exemplars=True),
    VANILLA: Method("Vanilla fine-tuning", "finetune", "direct"),
    FT_COT: Method("Fine-tune-CoT", "finetune", "student"),
}
FINETUNE_METHODS = tuple(k for k, m in METHODS.items() if m.kind == "finetune")
PROMPTING_METHODS = tuple(k for k, m in METHODS.items() if m.kind == "prompting")


def get_method(key: str) -> Method:
    try:
        return METHODS[key]
    except KeyError:
        raise KeyError(f"unknown method {key!r}; known: {sorted(METHODS)}") from None
