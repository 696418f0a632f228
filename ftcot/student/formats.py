"""The paper's fine-tuning format (Ho et al., 2023, section 3).

Fine-tune-CoT: prompt ``{question} ###``, target `` {rationale} --> {answer}`` + EOS.
Vanilla:       prompt ``{question} ###``, target `` {answer}`` + EOS.
Encoder-decoder students: input ``{question}``, target ``{rationale} --> {answer}`` (or
``{answer}``) + EOS.
Bump ``FORMAT_VERSION`` on any change.
"""

from __future__ import annotations

from ftcot.methods import FINETUNE_METHODS, FT_COT, VANILLA

FORMAT_VERSION = 1
PROMPT_SEPARATOR = " ###"
ANSWER_SEPARATOR = " --> "


def student_prompt(question: str, encoder_decoder: bool = False) -> str:
    """Decoders continue ``{question} ###``; an encoder reads the question alone."""
    return question.strip() if encoder_decoder else f"{question.strip()}{PROMPT_SEPARATOR}"


def student_target(variant: str, answer: str, rationale: str | None = None, encoder_decoder: bool = False) -> str:
    """The completion the student learns (without EOS, which the tokenizer side appends).
    A decoder's target starts with a space (it continues the prompt); a decoder of an
    encoder-decoder model starts afresh."""
    if variant == FT_COT:
        if not rationale:
            raise ValueError("a Fine-tune-CoT example needs a rationale")
        target = f"{rationale.strip()}{ANSWER_SEPARATOR}{answer.strip()}"
    elif variant == VANILLA:
        target = answer.strip()
    else:
        raise ValueError(f"unknown variant {variant!r}; known: {list(FINETUNE_METHODS)}")
    return target if encoder_decoder else f" {target}"


def answer_end(variant: str, text: str) -> int | None:
    """Where a student's completion has said its answer: the end of the line that holds it (the
    line after `` --> `` for Fine-tune-CoT; the first non-empty line for vanilla), or None while it
    has not. Decoding stops there instead of at ``max_new_tokens`` when a student does not emit
    EOS: the answer is read from that line either way (:func:`ftcot.answers.extract_answer`)."""
    start = 0
    if variant == FT_COT:
        marker = ANSWER_SEPARATOR.strip()
        if marker not in text:
            return None
        start = text.index(marker) + len(marker)
    rest = text[start:]
    content = len(rest) - len(rest.lstrip())  # the answer's first character
    newline = rest.find("\n", content)
    return None if newline < 0 or content == len(rest) else start + newline
