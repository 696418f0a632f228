"""The paper's teacher outputs that are public, read as replay files: what a user needs to reproduce
Fine-tune-CoT's tables without paying a teacher.

- Kojima et al.'s zero-shot-CoT logs (github.com/kojima-takeshi188/zero_shot_cot, ``log/``):
  text-davinci-002's greedy rationale and answer step for every question of the nine tasks split
  70/30 (train and test) and for the test sets of GSM8K, AQuA and CommonsenseQA. Downloaded from
  their public URL, pinned by SHA-256, or read from ``data.mirror`` (``zero_shot_cot/log/...``).
- reasoning-teacher's ``teacher_completion_data.tar.gz`` (the paper's own code, MIT): the archive,
  extracted into ``teacher.replay.dir``, holds ``B_<model>__C_<completion_key>/D_<task>.json``
  with the diverse samples. It lives on cloud storage (docs/paper-results.md says where), so it is not
  downloaded.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from ftcot.io import DataError, read_text
from ftcot.teacher.base import TeacherError

KOJIMA_LOG_URL = "https://raw.githubusercontent.com/kojima-takeshi188/zero_shot_cot/main/log/"


@dataclass(frozen=True)
class KojimaLog:
    name: str
    """The log's name upstream: ``log/<name>_zero_shot_cot.log``."""
    sha256: str
    covers: Literal["all", "test"]
    """Which questions it answers, in the dataset file's order: all of them, or the test set."""

    @property
    def file(self) -> str:
        return f"{self.name}_zero_shot_cot.log"

    @property
    def url(self) -> str:
        return KOJIMA_LOG_URL + self.file

    @property
    def mirror(self) -> str:
        return f"zero_shot_cot/log/{self.file}"


KOJIMA_LOGS: dict[str, KojimaLog] = {
    "addsub": KojimaLog("addsub", "5a35a7d04ad18f17a5918ba9f456ef85598ffb4ab340d40abd510b316ec65ce4", "all"),
    "aqua": KojimaLog("aqua", "743315681523f6c459bb9dee0d106e1bbf813059bb0ecc3a75a9bbf8917766ad", "test"),
    "coin_flip": KojimaLog("coin_flip", "6c5cd500498686106fad37b8ce85bed2bd26a790b6b1aaa8bec382a0d1103048", "all"),
    "commonsense_qa": KojimaLog(
        "commonsensqa", "f8027dc6f4c85045ad7567dc71a9b5a4d69fb75af7cdf08ef809fcea617a2757", "test"
    ),
    "date_understanding": KojimaLog(
        "date_understanding", "14090fec37b29d4b7053f6ccc8d3865b8ffd949d9d2f21ae71c55f145cb087c8", "all"
    ),
    "gsm8k": KojimaLog("gsm8k", "cfb2d43b29762ca5fb09856899a6f6595c7deda6ff73c5e8a3becb8d791c54c4", "test"),
    "last_letter_concatenation": KojimaLog(
        "last_letters", "31e13b33aed4f1c8a920b10914fb31bc0965089afc714d0e72cf78a2f17387b5", "all"
    ),
    "multiarith": KojimaLog("multiarith", "e2e3416d5f376b84513847b0ed2ac40fcfbe424b8279a18f0b6c980ff75fa351", "all"),
    "tracking_shuffled_objects": KojimaLog(
        "shuffled_objects", "1bb4b95719d37b0cde221fa6d7fe40ab0aeb894d87973f48c6e1675b25301aa5", "all"
    ),
    "single_eq": KojimaLog("singleeq", "51bbcb0c0fcc8f5696cd4cd74d89e46d7e5d9ff8fb2e639c1664254a2ecde251", "all"),
    "strategy_qa": KojimaLog("strategyqa", "9268254c7c2d86a96b0346d64f5b782440b17ded142589d160ebb39e53fde5c9", "all"),
    "svamp": KojimaLog("svamp", "37043ef358b75e108860746c533d0c9be0f307ec3373959524778f1b8af5a75a", "all"),
}

# reasoning-teacher numbers a dataset's questions in one sequence: for the tasks with an official
# split, the train source first, then the test one. The test questions start at these indices.
REASONING_TEACHER_TEST_OFFSET = {"gsm8k": 7473, "commonsense_qa": 9741, "aqua": 97467}


@dataclass(frozen=True)
class LogBlock:
    number: int
    """1-based, in the log's order."""
    question: str
    rationale: str
    answer: str
    """The answer step: the text after the answer trigger."""


@dataclass(frozen=True)
class ParsedLog:
    trigger: str
    blocks: list[LogBlock]
    accuracy: float | None
    """The accuracy the log prints (a percentage), by its own string comparison."""


_BLOCK = re.compile(
    r"^(\d+)\w\w data\n1_th_sampling\nQ: (.*?)\nA: Let's think step by step\.(.*?)\npred_before :.*?\nGT :[^\n]*\n",
    re.DOTALL | re.MULTILINE,
)
_TRIGGER = re.compile(r"direct_answer_trigger='((?:[^'\\]|\\.)*)'")


def parse_kojima_log(path: Path) -> ParsedLog:
    """The blocks of a zero-shot-CoT log; a log that does not parse is an error naming it."""
    try:
        text = read_text(path)
    except DataError as err:
        raise TeacherError(f"{err} (not a zero-shot-CoT log)") from None
    header = _TRIGGER.search(text[:5000])
    if header is None:
        raise TeacherError(f"{path}: not a zero-shot-CoT log (no Namespace(... direct_answer_trigger=...) header)")
    trigger = header.group(1).encode().decode("unicode_escape").strip()
    blocks = []
    for m in _BLOCK.finditer(text):
        body = m.group(3)
        if trigger not in body:
            raise TeacherError(f"{path}: block {m.group(1)} has no answer trigger {trigger!r}")
        rationale, answer = body.rsplit(trigger, 1)
        blocks.append(LogBlock(int(m.group(1)), m.group(2), rationale, answer))
    if not blocks:
        raise TeacherError(f"{path}: not a zero-shot-CoT log (no '<n>st data ... GT :' blocks)")
    numbers = [b.number for b in blocks]
    if numbers != list(range(1, len(blocks) + 1)):
        gap = next(i + 1 for i, n in enumerate(numbers) if n != i + 1)
        raise TeacherError(f"{path}: block {gap} does not parse (blocks must be numbered 1, 2, 3...)")
    found = re.findall(r"^accuracy : ([\d.]+)$", text, re.MULTILINE)
    return ParsedLog(trigger, blocks, float(found[-1]) if found else None)


def question_stem(text: str) -> str:
    """A question as two sources agree on it: letters and digits only, the choices left out (their
    format and, for Date Understanding, their order differ between sources), and without the
    "Which choice is true ?" that Kojima et al. append to BIG-bench's questions."""
    stem = re.split(r"answer choices", text, maxsplit=1, flags=re.IGNORECASE)[0]
    stem = re.sub(r"[^0-9a-z]", "", stem.lower())
    return stem.removesuffix("whichchoiceistrue")


def choices_of(text: str) -> dict[str, str]:
    """``{letter: choice}`` of a question's ``Answer choices: (A) x, (B) y`` (either source's format)."""
    parts = re.split(r"answer choices:?", text, maxsplit=1, flags=re.IGNORECASE)
    if len(parts) < 2:
        return {}
    found = re.findall(r"\(([A-J])\)\s*(.*?)(?=,?\s*\([A-J]\)|$)", parts[1].strip(), re.DOTALL)
    return {letter: re.sub(r"[^0-9a-z]", "", choice.lower()) for letter, choice in found}


def letter_map(theirs: str, ours: str) -> dict[str, str]:
    """Their choice letters -> ours, by choice text; empty when the choices are in the same order."""
    a, b = choices_of(theirs), choices_of(ours)
    by_text = {text: letter for letter, text in b.items()}
    mapping = {letter: by_text[text] for letter, text in a.items() if text in by_text}
    return {} if all(k == v for k, v in mapping.items()) else mapping


def remap_letters(text: str, mapping: dict[str, str], bracketed_only: bool) -> str:
    """``text`` with choice letters renamed (``(C)`` -> ``(A)``); in an answer step also bare letters."""
    if not mapping:
        return text
    pattern = r"\(([A-J])\)" if bracketed_only else r"\b([A-J])\b"
    wrap = "({})" if bracketed_only else "{}"
    return re.sub(pattern, lambda m: wrap.format(mapping.get(m.group(1), m.group(1))), text)


def dataset_index(record_id: str, task: str) -> int | None:
    """A record's index in reasoning-teacher's numbering: ``<task>-12`` -> 12 (one source, split by
    ratio), ``<task>-train-12`` -> 12, ``<task>-test-3`` -> the test offset + 3 (None without one)."""
    rest = record_id[len(task) + 1 :]
    if rest.isdigit():
        return int(rest)
    kind, _, number = rest.partition("-")
    if not number.isdigit():
        return None
    if kind == "train":
        return int(number)
    offset = REASONING_TEACHER_TEST_OFFSET.get(task)
    return None if offset is None else offset + int(number)


REASONING_TEACHER_FIELDS = ("sample_index", "completion_index", "reasoning_completion", "completion")


def read_reasoning_teacher(path: Path, task: str) -> list[dict]:
    """The completions of one ``D_<task>.json``, checked: a file of another layout or dataset is an
    error naming it."""
    try:
        data = json.loads(read_text(path))
    except DataError as err:
        raise TeacherError(f"{err} (not a reasoning-teacher completion file)") from None
    except json.JSONDecodeError as err:
        raise TeacherError(f"{path}:{err.lineno}: not a reasoning-teacher completion file ({err.msg})") from None
    if not isinstance(data, dict) or not isinstance(data.get("data"), dict):
        raise TeacherError(f"{path}: expected {{'metadata': {{...}}, 'data': {{'<sample_index>': [...]}}}}")
    key = (data.get("metadata") or {}).get("dataset_key")
    if key is not None and key != task:
        raise TeacherError(f"{path}: its dataset_key is {key!r}, not this task's {task!r}")
    out = []
    seen: dict[tuple[int, int], tuple[int, tuple[str, str]]] = {}
    for index, samples in data["data"].items():
        if not isinstance(samples, list):
            raise TeacherError(f"{path}: data[{index!r}] is not a list of completions")
        for j, entry in enumerate(samples):
            where = f"{path}: data[{index!r}][{j}]"
            if not isinstance(entry, dict) or any(f not in entry for f in REASONING_TEACHER_FIELDS):
                raise TeacherError(f"{where} lacks one of {list(REASONING_TEACHER_FIELDS)}")
            if type(entry["sample_index"]) is not int or type(entry["completion_index"]) is not int:
                raise TeacherError(f"{where}: sample_index and completion_index must be integers")
            if str(entry["sample_index"]) != index:
                raise TeacherError(f"{where}: sample_index {entry['sample_index']} is filed under {index!r}")
            if not isinstance(entry["reasoning_completion"], str) or not isinstance(entry["completion"], str):
                raise TeacherError(f"{where}: reasoning_completion and completion must be text")
            content = (entry["reasoning_completion"], entry["completion"])
            first = seen.setdefault((entry["sample_index"], entry["completion_index"]), (j, content))
            if first[1] != content:
                raise TeacherError(
                    f"{where}: completion_index {entry['completion_index']} is also data[{index!r}][{first[0]}], "
                    "with other content: keep one of them"
                )
            if first[0] == j:  # an exact repeat is harmless
                out.append(entry)
    return out


def reasoning_teacher_file(root: Path, model: str, completion_key: str, task: str) -> Path:
    path = root / f"B_{model}__C_{completion_key}" / f"D_{task}.json"
    if not path.is_file():
        folders = sorted(p.name for p in root.iterdir() if p.is_dir()) if root.is_dir() else []
        raise TeacherError(
            f"{path} does not exist: teacher.replay.dir must hold reasoning-teacher's "
            f"B_<teacher.model>__C_<teacher.replay.completion_key>/D_<task>.json (found folders: {folders[:6]})"
        )
    return path


def samples_per_question(entries: Sequence[tuple[str, int]]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for question_id, sample in entries:
        counts[question_id] = max(counts.get(question_id, 0), sample + 1)
    return counts
