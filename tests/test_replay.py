import json

import pytest

from ftcot.filtering import filter_rationales
from ftcot.tasks import generate_records, get_task
from ftcot.teachers import CompletionCache
from ftcot.teachers.base import TeacherError
from ftcot.teachers.replay import ReplayTeacher
from ftcot.teaching import teach


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
