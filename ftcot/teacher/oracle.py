"""The oracle teacher: a programmatic stand-in for an LLM teacher on the synthetic tasks.

It reads the question of each request (its metadata, not its prompt) and writes a correct
step-by-step rationale, its wording varied by sample index (so diversity > 1 yields distinct
rationales). A seeded share
``error_rate`` of rationales contains one wrong step and so reaches a wrong answer, which gives
the filter stage real work. It answers the second (answer) step by reading the rationale's
conclusion, as an LLM would. It is for offline runs and tests only: it says nothing about how
well a real teacher reasons.
"""

from __future__ import annotations

import hashlib
import random
import re
from collections.abc import Sequence

from ftcot.errors import FtcotError
from ftcot.teacher.backends import ORACLE
from ftcot.teacher.base import Completion, CompletionRequest, RequestFailure, ResultCallback

ORACLE_VERSION = 1

_COIN_RE = re.compile(r"A coin is heads up\. (.*) Is the coin still heads up\?")
_COIN_STEP_RE = re.compile(r"(\w+) (flips|does not flip) the coin\.")
_LETTERS_RE = re.compile(r'Take the last letters of each words in "([^"]+)" and concatenate them\.')

COIN_OPENINGS = ("The coin starts heads up.", "At the start, the coin is heads up.", "Initially the coin shows heads.")
COIN_FLIP = (
    "{p} flips the coin, so it is now {s} up.",
    "After {p} flips it, the coin is {s} up.",
    "{p} flips it: {s} up.",
)
COIN_KEEP = (
    "{p} does not flip the coin, so it stays {s} up.",
    "{p} leaves the coin alone, so it is still {s} up.",
    "{p} does not flip it: still {s} up.",
)
COIN_ENDINGS = (
    "The coin ends {s} up, so {verdict}.",
    "In the end it shows {s}, so {verdict}.",
    "Finally the coin is {s} up, which means {verdict}.",
)
LETTER_OPENINGS = ("The words are {words}.", "We look at each word: {words}.", "There are four words: {words}.")
LETTER_STEP = ('The last letter of "{w}" is "{c}".', '"{w}" ends with "{c}".', 'The word "{w}" ends in "{c}".')
LETTER_ENDINGS = ('Concatenating them gives "{a}".', 'Putting them together gives "{a}".', 'Joined, they make "{a}".')

_VERDICT_RE = re.compile(r"it is (still|no longer) heads up\.\s*$")
_LETTERS_ANSWER_RE = re.compile(r'"([a-z]*)"\.\s*$')


class UnsupportedQuestion(FtcotError, ValueError):
    """The oracle can only answer the synthetic tasks."""


def _uniform(*parts: object) -> float:
    digest = hashlib.sha256(":".join(str(p) for p in parts).encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def _coin_rationale(actions: str, rng: random.Random, wrong_step: int | None) -> str:
    steps = _COIN_STEP_RE.findall(actions)
    heads = True
    sentences = [rng.choice(COIN_OPENINGS)]
    for i, (person, verb) in enumerate(steps):
        flipped = verb == "flips"
        if i == wrong_step:
            flipped = not flipped  # the injected mistake: a flip misread
        heads ^= flipped
        side = "heads" if heads else "tails"
        template = rng.choice(COIN_FLIP if verb == "flips" else COIN_KEEP)
        sentences.append(template.format(p=person, s=side))
    verdict = "it is still heads up" if heads else "it is no longer heads up"
    sentences.append(rng.choice(COIN_ENDINGS).format(s="heads" if heads else "tails", verdict=verdict))
    return " ".join(sentences)


def _letters_rationale(words: list[str], rng: random.Random, wrong_step: int | None) -> str:
    letters = []
    for i, word in enumerate(words):
        # The injected mistake: the second-to-last letter taken instead of the last.
        letters.append((word[-2] if i == wrong_step and len(word) > 1 else word[-1]).lower())
    if wrong_step is not None and letters[wrong_step] == words[wrong_step][-1].lower():
        letters[wrong_step] = "x" if letters[wrong_step] != "x" else "z"
    sentences = [rng.choice(LETTER_OPENINGS).format(words=", ".join(words))]
    sentences += [rng.choice(LETTER_STEP).format(w=w, c=c) for w, c in zip(words, letters, strict=True)]
    sentences.append(rng.choice(LETTER_ENDINGS).format(a="".join(letters)))
    return " ".join(sentences)


class OracleTeacher:
    """Deterministic teacher for ``coin_flip`` and ``last_letter_concatenation``."""

    backend = ORACLE

    def __init__(self, model: str = ORACLE, error_rate: float = 0.0, seed: int = 0):
        if not 0.0 <= error_rate <= 1.0:
            raise ValueError(f"teacher.oracle.error_rate must be in [0, 1], got {error_rate}")
        self.model = model
        self.error_rate = error_rate
        self.seed = seed

    @property
    def endpoint(self) -> str:
        return f"oracle:v{ORACLE_VERSION}:error_rate={self.error_rate}:seed={self.seed}"

    def complete(self, requests: Sequence[CompletionRequest], on_result: ResultCallback) -> list[RequestFailure]:
        for i, request in enumerate(requests):
            on_result(i, self._complete_one(request))
        return []

    def _complete_one(self, request: CompletionRequest) -> Completion:
        meta = request.meta
        if meta is None:
            raise UnsupportedQuestion(
                "the oracle answers requests that say their question and step (ftcot.teacher.teaching builds them)"
            )
        if meta.step == "answer":
            text = self._answer_step(meta.rationale or "")
        else:
            text = self._rationale(meta.question, request.sample_index)
        return Completion(
            text=text,
            finish_reason="stop",
            # Word counts stand in for token counts: the oracle has no tokenizer.
            prompt_tokens=len(request.prompt.split()),
            completion_tokens=len(text.split()),
        )

    def _rationale(self, question: str, sample_index: int) -> str:
        rng = random.Random(f"{question}:{sample_index}")
        wrong = _uniform(self.seed, question, sample_index) < self.error_rate
        if m := _COIN_RE.search(question):
            n_steps = len(_COIN_STEP_RE.findall(m.group(1)))
            return " " + _coin_rationale(m.group(1), rng, rng.randrange(n_steps) if wrong else None)
        if m := _LETTERS_RE.search(question):
            words = m.group(1).split()
            return " " + _letters_rationale(words, rng, rng.randrange(len(words)) if wrong else None)
        raise UnsupportedQuestion(
            f"the oracle teacher only knows coin_flip and last_letter_concatenation questions: {question[:80]!r}"
        )

    @staticmethod
    def _answer_step(rationale: str) -> str:
        # Read the rationale's conclusion, as an LLM would.
        if m := _VERDICT_RE.search(rationale):
            return " Yes." if m.group(1) == "still" else " No."
        if m := _LETTERS_ANSWER_RE.search(rationale):
            return f' "{m.group(1)}".'
        return " I cannot tell."


def from_params(params, task: str, records, cache) -> OracleTeacher:
    """The backend's row in ftcot.teacher.backends: the oracle of ``teacher.oracle``."""
    t = params.teacher
    return OracleTeacher(model=t.model, error_rate=t.oracle.error_rate, seed=params.seed)
