"""The replay teacher: teacher outputs read from files of recorded completions, to share them
between people and to reproduce published ones without paying again (``teacher.replay.format``).

- ``ftcot``: one JSON object per line, ``{"question_id" | "question", "sample_index", "rationale",
  "answer"}``, where ``answer`` is the answer step's text (e.g. ``"18"`` or ``" The answer is
  18."``) read with the task's answer rules. Lines are matched to questions by id, or else by
  question text.
- ``kojima``: Kojima et al.'s zero-shot-CoT log of the task (:mod:`ftcot.teacher.published`):
  its blocks follow the dataset file's order, so block ``i`` is the question of index ``i`` (of
  the test set, for logs of test sets only); each match is checked on the question's text, and
  choice letters are renamed where the log lists the choices in another order.
- ``reasoning_teacher``: the paper's own ``D_<task>.json``, matched by ``sample_index`` (checked on
  the question's text) or else by text; ``completion_index`` is the sample.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from pathlib import Path

from ftcot.answers import answer_type_of
from ftcot.data.sources import SourceFile, fetch_file, resolve_mirror, sha256_file
from ftcot.data.splits import normalize_question
from ftcot.io import DataError, read_jsonl
from ftcot.paths import DOWNLOADS, cache_folder
from ftcot.teacher.backends import REPLAY
from ftcot.teacher.base import Completion, CompletionRequest, RequestFailure, ResultCallback, TeacherError
from ftcot.teacher.published import (
    KOJIMA_LOGS,
    dataset_index,
    letter_map,
    parse_kojima_log,
    question_stem,
    read_reasoning_teacher,
    reasoning_teacher_file,
    remap_letters,
)

log = logging.getLogger("ftcot")


class ReplayTeacher:
    backend = REPLAY

    def __init__(self, path: str | Path, records: Sequence[dict], model: str = REPLAY):
        """The ``ftcot`` format: ``path`` is ``<teacher.replay.dir>/<task>.jsonl``."""
        self.path = Path(path)
        if not self.path.is_file():
            raise TeacherError(f"teacher.backend is replay, but {self.path} does not exist")
        self.model = model
        self._digest = sha256_file(self.path)
        self._identity = self._digest
        text_of = {r["id"]: r["question"] for r in records}
        asked = {normalize_question(r["question"]) for r in records}
        self._entries: dict[tuple[str, int], dict] = {}
        line_of: dict[tuple[str, int], int] = {}
        lines = 0
        try:
            entries = read_jsonl(self.path, required=("sample_index", "rationale", "answer"))
        except DataError as err:
            raise TeacherError(str(err)) from None
        for lineno, entry in enumerate(entries, 1):
            lines += 1
            where = f"{self.path}:{lineno}"
            sample = entry["sample_index"]
            if type(sample) is not int or sample < 0:
                raise TeacherError(f"{where}: sample_index must be an integer >= 0, got {json.dumps(sample)[:40]}")
            for name in ("rationale", "answer"):
                if not isinstance(entry[name], str | int | float) or isinstance(entry[name], bool):
                    raise TeacherError(f"{where}: {name} must be text, got a {type(entry[name]).__name__}")
            if "question_id" in entry:
                if entry["question_id"] not in text_of:
                    continue  # a question of another split or task: not asked here
                question = text_of[entry["question_id"]]
            elif "question" in entry:
                if not isinstance(entry["question"], str):
                    raise TeacherError(f"{where}: question must be text, got a {type(entry['question']).__name__}")
                question = entry["question"]
            else:
                raise TeacherError(f"{where}: needs 'question_id' or 'question'")
            key = (normalize_question(question), sample)
            content = (str(entry["rationale"]), str(entry["answer"]))
            if key in self._entries:
                earlier = self._entries[key]
                if (str(earlier["rationale"]), str(earlier["answer"])) != content:
                    raise TeacherError(
                        f"{where}: sample {sample} of this question is already on line {line_of[key]} with another "
                        "rationale or answer: keep one of them"
                    )
                continue  # the same line twice: harmless
            self._entries[key] = {"rationale": content[0], "answer": content[1]}
            line_of[key] = lineno
        covered = {q for q, _ in self._entries} & asked
        if not covered:
            raise TeacherError(
                f"{self.path}: none of its {lines} lines is for a question of this task (matched by question_id, or "
                "by question text ignoring case and spacing): is it the file of another task?"
            )

    @classmethod
    def _from_entries(cls, path: Path, identity: str, model: str, entries: dict) -> ReplayTeacher:
        teacher = cls.__new__(cls)
        teacher.path, teacher.model, teacher._identity, teacher._entries = path, model, identity, entries
        return teacher

    @classmethod
    def from_kojima_log(cls, path: Path, task: str, records: Sequence[dict], model: str) -> ReplayTeacher:
        """Kojima et al.'s log of ``task``, matched to the records by question text (letters and
        digits, the choices aside: :func:`ftcot.teacher.published.question_stem`); a question asked
        twice in the dataset takes the log's blocks of that text in order. Choice letters are renamed
        where the log lists a question's choices in another order than the record."""
        parsed = parse_kojima_log(path)
        blocks: dict[str, list] = {}
        for block in parsed.blocks:
            blocks.setdefault(question_stem(block.question), []).append(block)
        taken: dict[str, int] = {}
        entries: dict[tuple[str, int], dict] = {}
        for record in sorted(records, key=lambda r: r["id"]):
            stem = question_stem(record["question"])
            same = blocks.get(stem, [])
            if not same:
                continue  # a question the log does not answer (a train question of a test-set log)
            block = same[min(taken.get(stem, 0), len(same) - 1)]
            taken[stem] = taken.get(stem, 0) + 1
            rename = letter_map(block.question, record["question"]) if answer_type_of(record).labels else {}
            entries[(normalize_question(record["question"]), 0)] = {
                "rationale": remap_letters(block.rationale, rename, bracketed_only=True),
                "answer": remap_letters(block.answer, rename, bracketed_only=False),
            }
        if not entries:
            raise TeacherError(
                f"{path}: none of its {len(parsed.blocks)} questions is a question of task {task!r}: is it the log "
                "of another task, or the task built from another source (Coin Flip and Last Letters need "
                "data.<task>.source: paper)?"
            )
        teacher = cls._from_entries(path, f"kojima:{sha256_file(path)}", model, entries)
        teacher.printed_accuracy = parsed.accuracy
        return teacher

    @classmethod
    def from_reasoning_teacher(cls, path: Path, task: str, records: Sequence[dict], model: str) -> ReplayTeacher:
        """reasoning-teacher's ``D_<task>.json``: by ``sample_index`` where the record's id gives
        its index (checked on the text), else by the question's text."""
        completions = read_reasoning_teacher(path, task)
        by_index: dict[int, list[dict]] = {}
        by_stem: dict[str, list[dict]] = {}
        for entry in completions:
            by_index.setdefault(entry["sample_index"], []).append(entry)
            if isinstance(entry.get("question"), str):
                by_stem.setdefault(question_stem(entry["question"]), []).append(entry)
        entries: dict[tuple[str, int], dict] = {}
        for record in records:
            index = dataset_index(record["id"], task)
            found = by_index.get(index, []) if index is not None else []
            stem = question_stem(record["question"])
            if found and isinstance(found[0].get("question"), str) and question_stem(found[0]["question"]) != stem:
                raise TeacherError(
                    f"{path}: sample_index {index} is another question than {record['id']} "
                    f"({found[0]['question'][:60]!r}): is it the file of another dataset?"
                )
            for entry in found or by_stem.get(stem, []):
                key = (normalize_question(record["question"]), entry["completion_index"])
                entries[key] = {"rationale": entry["reasoning_completion"], "answer": entry["completion"]}
        if not entries:
            raise TeacherError(f"{path}: none of its {len(completions)} completions is for a question asked here")
        return cls._from_entries(path, f"reasoning-teacher:{sha256_file(path)}", model, entries)

    def coverage(self, records: Sequence[dict], diversity: int) -> dict:
        """How many of the asked questions (``records``, samples ``0 .. diversity - 1`` each) the file
        answers in full, and which it does not, with the samples each lacks; asking for more samples
        than it holds for any question is an error."""
        held: dict[str, set[int]] = {}
        for question, sample in self._entries:
            held.setdefault(question, set()).add(sample)
        samples = [held.get(normalize_question(r["question"]), set()) for r in records]
        most = max((max(s) + 1 for s in samples if s), default=0)
        if any(samples) and diversity > most:
            raise TeacherError(
                f"{self.path} holds at most {most} sample(s) per question, but diversity is {diversity}: "
                "lower diversity, or replay a file with more samples"
            )
        missing = {}
        for record, have in zip(records, samples, strict=True):
            lacking = [i for i in range(diversity) if i not in have]
            if lacking:
                missing[record["id"]] = lacking
        short = [
            qid if len(lacking) == diversity else f"{qid} (sample{'s' * (len(lacking) > 1)} {_ranges(lacking)})"
            for qid, lacking in missing.items()
        ]
        return {"questions": len(records), "found": len(records) - len(missing), "missing": short}

    @property
    def endpoint(self) -> str:
        return f"replay:{self._identity}"

    def complete(self, requests: Sequence[CompletionRequest], on_result: ResultCallback) -> list[RequestFailure]:
        failures = []
        for i, request in enumerate(requests):
            meta = request.meta
            if meta is None:
                failures.append(RequestFailure(i, "a replayed request must say its question (ftcot.teacher.teaching)"))
                continue
            entry = self._entries.get((normalize_question(meta.question), request.sample_index))
            if entry is None:
                failures.append(RequestFailure(i, f"no recorded completion in {self.path}"))
                continue
            text = entry["answer"] if meta.step == "answer" else entry["rationale"]
            on_result(i, Completion(text=text, finish_reason=REPLAY, prompt_tokens=0, completion_tokens=0))
        return failures


def _ranges(numbers: list[int]) -> str:
    """``[0, 1, 2, 5]`` as ``0-2, 5``."""
    parts, start = [], None
    for i, n in enumerate(numbers):
        if start is None:
            start = n
        if i + 1 == len(numbers) or numbers[i + 1] != n + 1:
            parts.append(str(n) if start == n else f"{start}-{n}")
            start = None
    return ", ".join(parts)


def replay_teacher(
    fmt: str,
    folder: str | Path,
    task: str,
    records: Sequence[dict],
    model: str,
    completion_key: str = "zs_cot",
    mirror: str | None = None,
    verify_checksums: bool = True,
) -> ReplayTeacher:
    """The replay teacher of ``teacher.replay``: ``ftcot`` reads ``<folder>/<task>.jsonl``;
    ``kojima`` downloads (or reads in the mirror) Kojima et al.'s log of the task, pinned by
    SHA-256; ``reasoning_teacher`` reads ``<folder>/B_<model>__C_<completion_key>/D_<task>.json``."""
    if fmt == "ftcot":
        return ReplayTeacher(Path(folder) / f"{task}.jsonl", records, model=model)
    if fmt == "kojima":
        log = KOJIMA_LOGS.get(task)
        if log is None:
            raise TeacherError(
                f"teacher.replay.format: kojima has no log of task {task!r}: Kojima et al. published logs of "
                f"{sorted(KOJIMA_LOGS)}"
            )
        path, _ = fetch_file(
            SourceFile(log.mirror, log.url, log.sha256),
            resolve_mirror(mirror),
            cache_folder(DOWNLOADS),
            verify=verify_checksums,
        )
        return ReplayTeacher.from_kojima_log(path, task, records, model)
    if fmt == "reasoning_teacher":
        path = reasoning_teacher_file(Path(folder), model, completion_key, task)
        return ReplayTeacher.from_reasoning_teacher(path, task, records, model)
    raise TeacherError(f"teacher.replay.format must be ftcot, kojima or reasoning_teacher, got {fmt!r}")


def check_coverage(teacher: ReplayTeacher, train: Sequence[dict], test: Sequence[dict], diversity: int) -> dict:
    """How much of what is asked (``train`` at ``diversity`` samples, ``test`` greedy) the replayed
    file answers, before anything is replayed: ``{"replay_coverage": {split: {questions, found}}}``.
    A file that lacks some of it is an error listing what is missing."""
    found = {"train": teacher.coverage(train, diversity), "test": teacher.coverage(test, 1)}
    for split, c in found.items():
        log.info("replay: %s answers %d of %d %s questions", teacher.path, c["found"], c["questions"], split)
        if c["missing"]:
            more = len(c["missing"]) - 5
            shown = ", ".join(c["missing"][:5]) + (f" and {more} more" if more > 0 else "")
            raise TeacherError(
                f"{teacher.path} answers {c['found']} of the {c['questions']} {split} questions asked "
                f"(at diversity {diversity if split == 'train' else 1}); missing: {shown}. A log of test sets only "
                "(Kojima et al.'s gsm8k, aqua, commonsense_qa) cannot teach train questions."
            )
    return {"replay_coverage": {s: {"questions": c["questions"], "found": c["found"]} for s, c in found.items()}}


def from_params(params, task: str, records: Sequence[dict], cache) -> ReplayTeacher:
    """The backend's row in ftcot.teacher.backends: the replay of ``teacher.replay``."""
    t, data = params.teacher, params.data
    r = t.replay
    return replay_teacher(r.format, r.dir, task, records, t.model, r.completion_key, data.mirror, data.verify_checksums)


# The row's check before teaching: the file answers every question asked.
precheck = check_coverage
