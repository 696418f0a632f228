import json

import pytest

from ftcot.data.synthetic import generate_records
from ftcot.data.tasks import get_task
from ftcot.filtering import filter_rationales
from ftcot.teacher.base import TeacherError
from ftcot.teacher.cache import CompletionCache
from ftcot.teacher.replay import ReplayTeacher, check_coverage
from ftcot.teacher.teaching import teach


def test_replay_reproduces_recorded_outputs(tmp_path):
    records = generate_records(get_task("coin_flip"), 20, 0, 0.7)
    train = [r for r in records if r["split"] == "train"]
    lines = []
    for i, r in enumerate(train):
        for k in range(2):
            entry = {
                "sample_index": k,
                "rationale": f"Recorded reasoning {k}.",
                "answer": "Yes." if k == 0 else r["answer"],
            }
            # half by id, half by question text (with different spacing and case)
            entry |= {"question_id": r["id"]} if i % 2 else {"question": "  " + r["question"].upper()}
            lines.append(json.dumps(entry))
    path = tmp_path / "coin_flip.jsonl"
    path.write_text("\n".join(lines) + "\n")

    out, stats = teach(train, ReplayTeacher(path, records), CompletionCache(tmp_path / "c"), 2, 0.7, 64)
    assert len(out) == 2 * len(train) and stats.failed == 0
    assert {r["rationale"] for r in out} == {"Recorded reasoning 0.", "Recorded reasoning 1."}
    kept, metrics = filter_rationales(out)
    assert all(k["sample_index"] == 1 or k["answer"] == "yes" for k in kept)
    assert metrics["kept"] == len(train) + sum(r["answer"] == "yes" for r in train)


def test_replay_names_what_is_missing(tmp_path):
    records = generate_records(get_task("coin_flip"), 20, 0, 0.7)
    train = [r for r in records if r["split"] == "train"]
    path = tmp_path / "coin_flip.jsonl"
    path.write_text(
        json.dumps({"question_id": train[0]["id"], "sample_index": 0, "rationale": "r", "answer": "Yes"}) + "\n"
    )
    with pytest.raises(
        TeacherError, match=r"(?s)13 of 14 teacher requests failed.*no recorded completion in .*coin_flip\.jsonl"
    ):
        teach(train, ReplayTeacher(path, records), CompletionCache(tmp_path / "c"), 1, 0.7, 64)
    with pytest.raises(TeacherError, match="does not exist"):
        ReplayTeacher(tmp_path / "nope.jsonl", records)


def replay_file(tmp_path, lines: list[dict]):
    path = tmp_path / "coin_flip.jsonl"
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    return path


def test_a_malformed_sample_index_is_named_with_file_and_line(tmp_path):
    records = generate_records(get_task("coin_flip"), 20, 0, 0.7)
    good = {"question_id": records[0]["id"], "sample_index": 0, "rationale": "r", "answer": "Yes"}
    for bad in ("zero", -1, 1.5, True, None):
        path = replay_file(tmp_path, [good, good | {"sample_index": bad}])
        with pytest.raises(TeacherError, match=r"coin_flip\.jsonl:2: sample_index must be an integer >= 0"):
            ReplayTeacher(path, records)
    path = replay_file(tmp_path, [good, good | {"rationale": ["not", "text"]}])
    with pytest.raises(TeacherError, match=r"coin_flip\.jsonl:2: rationale must be text"):
        ReplayTeacher(path, records)


def test_the_same_sample_twice_with_other_content_is_an_error_and_an_exact_repeat_is_not(tmp_path):
    records = generate_records(get_task("coin_flip"), 20, 0, 0.7)
    by_id = {"question_id": records[0]["id"], "sample_index": 0, "rationale": "r", "answer": "Yes"}
    by_text = {"question": records[0]["question"].upper(), "sample_index": 0, "rationale": "other", "answer": "No"}
    path = replay_file(tmp_path, [by_id, by_id])
    ReplayTeacher(path, records)  # the same line twice: harmless
    path = replay_file(tmp_path, [by_id, by_text])
    with pytest.raises(TeacherError, match=r"coin_flip\.jsonl:2: sample 0 of this question is already on line 1"):
        ReplayTeacher(path, records)


def test_a_file_that_covers_none_of_the_questions_is_an_error(tmp_path):
    records = generate_records(get_task("coin_flip"), 20, 0, 0.7)
    others = generate_records(get_task("last_letter_concatenation"), 20, 0, 0.7)
    path = replay_file(
        tmp_path, [{"question": r["question"], "sample_index": 0, "rationale": "r", "answer": "ab"} for r in others]
    )
    with pytest.raises(TeacherError, match=r"coin_flip\.jsonl: none of its 20 lines is for a question of this task"):
        ReplayTeacher(path, records)
    (tmp_path / "coin_flip.jsonl").write_text('{"sample_index": 0, "rationale": "r"\n')
    with pytest.raises(TeacherError, match=r"coin_flip\.jsonl:1: not valid JSON"):
        ReplayTeacher(tmp_path / "coin_flip.jsonl", records)


def test_coverage_checks_every_sample_asked_for_not_only_the_highest(tmp_path):
    """A file that lacks sample 0 of a question but holds samples 1 and 2 does not cover it at
    diversity 3: the check names the question and the missing sample before anything is replayed
    (it used to count only the highest sample, pass, and fail later as "failed after retries")."""
    records = generate_records(get_task("coin_flip"), 20, 0, 0.7)
    train = [r for r in records if r["split"] == "train"]
    lines = [
        {"question_id": r["id"], "sample_index": k, "rationale": "r", "answer": "Yes"}
        for i, r in enumerate(train)
        for k in range(3)
        if not (i == 0 and k == 0) and not (i == 1 and k in (1, 2))
    ]
    teacher = ReplayTeacher(replay_file(tmp_path, lines), records)
    coverage = teacher.coverage(train, 3)
    assert coverage["found"] == len(train) - 2
    assert coverage["missing"] == [f"{train[0]['id']} (sample 0)", f"{train[1]['id']} (samples 1-2)"]
    assert teacher.coverage(train[2:], 3)["missing"] == []
    with pytest.raises(
        TeacherError, match=rf"answers {len(train) - 2} of the {len(train)} train questions.*\(sample 0\)"
    ):
        check_coverage(teacher, train, [], 3)


def test_a_replay_file_with_a_byte_that_is_not_utf8_is_named_with_line_and_offset(tmp_path):
    records = generate_records(get_task("coin_flip"), 20, 0, 0.7)
    good = json.dumps({"question_id": records[0]["id"], "sample_index": 0, "rationale": "r", "answer": "Yes"})
    path = tmp_path / "coin_flip.jsonl"
    path.write_bytes(good.encode() + b"\n" + good.encode().replace(b'"r"', b'"r\xff"') + b"\n")
    offset = len(good) + 1 + good.index('"r"') + 2
    with pytest.raises(
        TeacherError, match=rf"coin_flip\.jsonl:2: not UTF-8 text \(byte 0xff at byte offset {offset}\)"
    ):
        ReplayTeacher(path, records)
