"""The paper's published teacher outputs as teachers: Kojima et al.'s logs and reasoning-teacher's
completions, matched to the project's questions, and the paper's own splits."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from ftcot.config import parse_params
from ftcot.data.fetching import fetch_task
from ftcot.filtering import filter_rationales, judge_rationales
from ftcot.teacher.base import TeacherError
from ftcot.teacher.cache import CompletionCache
from ftcot.teacher.published import KOJIMA_LOGS, parse_kojima_log
from ftcot.teacher.replay import replay_teacher
from ftcot.teacher.teaching import teach
from ftcot.testing.mirror import SHARED, combined_mirror

REPO = Path(__file__).resolve().parents[1]
PAPER = {
    "coin_flip": {"source": "paper"},
    "last_letter_concatenation": {"source": "paper"},
    "aqua": {"train_file": "dev"},
}


@pytest.fixture(scope="module")
def mirror(tmp_path_factory):
    return combined_mirror(tmp_path_factory.mktemp("mirror"))


def records(task, mirror, seed=0, **data):
    params = parse_params({"data": {"tasks": [task], "mirror": str(mirror), **PAPER, **data}}).data
    return fetch_task(task, params, seed, Path("/nonexistent"))


@pytest.mark.parametrize("task", sorted(KOJIMA_LOGS))
def test_kojima_logs_replayed_through_teach_and_filter_give_the_accuracy_they_print(task, mirror, tmp_path):
    recs, _ = records(task, mirror, drop_test_duplicates=False)  # every question the log answers
    log = KOJIMA_LOGS[task]
    asked = recs if log.covers == "all" else [r for r in recs if r["split"] == "test"]
    teacher = replay_teacher("kojima", "unused", task, recs, "text-davinci-002", mirror=str(mirror))
    assert teacher.coverage(asked, 1) == {"questions": len(asked), "found": len(asked), "missing": []}
    out, stats = teach(asked, teacher, CompletionCache(tmp_path), 1, 0.7, 128)
    assert stats.failed == 0 and len(out) == len(asked)
    _, metrics = filter_rationales(out)
    ours = 100 * metrics["kept"] / metrics["rationales"]
    # Numbers compared as numbers: a few answers the log's string comparison counted wrong count right.
    assert abs(ours - teacher.printed_accuracy) <= 2.0, (ours, teacher.printed_accuracy)
    with pytest.raises(TeacherError, match=r"holds at most 1 sample\(s\) per question, but diversity is 2"):
        teacher.coverage(asked, 2)


def test_a_date_question_whose_choices_the_log_lists_in_another_order_keeps_its_meaning(mirror, tmp_path):
    recs, _ = records("date_understanding", mirror)
    teacher = replay_teacher("kojima", "unused", "date_understanding", recs, "m", mirror=str(mirror))
    out, _ = teach(recs, teacher, CompletionCache(tmp_path), 1, 0.7, 128)
    blocks = parse_kojima_log(mirror / KOJIMA_LOGS["date_understanding"].mirror).blocks
    log = {b.question.split(" Answer Choices")[0]: b for b in blocks}
    renamed = 0
    for r in judge_rationales(out):
        block = log[r["question"].split(" Answer choices")[0]]
        theirs = re.match(r"\s*\(?([A-F])\b", block.answer)
        if not theirs or not r["prediction"]:
            continue
        their_text = dict(re.findall(r"\(([A-F])\) (\d\d/\d\d/\d{4})", block.question))[theirs.group(1)]
        our_text = dict(re.findall(r"\(([A-F])\) (\d\d/\d\d/\d{4})", r["question"]))[r["prediction"]]
        assert our_text == their_text  # the teacher's choice, whatever letter it has here
        renamed += r["prediction"] != theirs.group(1)
    assert renamed > 50  # the two sources shuffle the choices differently


def test_the_papers_70_30_splits_are_reasoning_teachers_saved_ones(mirror):
    for task in (
        "single_eq",
        "addsub",
        "multiarith",
        "svamp",
        "date_understanding",
        "tracking_shuffled_objects",
        "last_letter_concatenation",
        "coin_flip",
        "strategy_qa",
    ):
        saved = json.loads((SHARED / f"reasoning-teacher/data/split/{task}__default.json").read_text())
        for drop in (True, False):
            recs, info = records(task, mirror, drop_test_duplicates=drop)
            ours = {
                s: sorted(int(r["id"].rsplit("-", 1)[1]) for r in recs if r["split"] == s) for s in ("train", "test")
            }
            assert ours["test"] == saved["test"], task
            if drop:  # fetch drops the train questions that repeat a test question, and counts them
                assert len(saved["train"]) - len(ours["train"]) == info["dropped_train_duplicates_of_test"]
                assert set(ours["train"]) <= set(saved["train"])
            else:  # the paper's exact split
                assert ours["train"] == saved["train"], task
    assert records("multiarith", mirror)[1]["dropped_train_duplicates_of_test"] == 5


@pytest.mark.parametrize("task", ["multiarith", "date_understanding"])
def test_the_template_wise_split_is_a_parameter(task, mirror):
    saved = json.loads((SHARED / f"reasoning-teacher/data/split/{task}__template.json").read_text())
    recs, info = records(task, mirror, drop_test_duplicates=False, **{task: {"split": "template"}})
    ours = {s: sorted(int(r["id"].rsplit("-", 1)[1]) for r in recs if r["split"] == s) for s in ("train", "test")}
    assert ours == {"train": sorted(saved["train"]), "test": sorted(saved["test"])}
    assert info["split"]["name"] == "template"
    default, _ = records(task, mirror, drop_test_duplicates=False)
    assert {r["id"] for r in default if r["split"] == "test"} != {r["id"] for r in recs if r["split"] == "test"}


def reasoning_teacher_archive(root: Path, task: str, recs: list[dict], samples: int, model="text-davinci-002") -> Path:
    """Fixtures in the layout of reasoning-teacher's teacher_completion_data.tar.gz."""
    from ftcot.teacher.published import dataset_index

    folder = root / f"B_{model}__C_zs_cot"
    folder.mkdir(parents=True, exist_ok=True)
    data = {}
    for r in recs:
        index = dataset_index(r["id"], task)
        data[str(index)] = [
            {
                "sample_index": index,
                "completion_index": k,
                "question": r["question"].replace("Answer choices", "Answer Choices"),
                "answer": r["answer"],
                "reasoning_prompt": f"Q: {r['question']}\nA: Let's think step by step.",
                "reasoning_completion": f" Sample {k} of {r['id']}: so the answer is {r['answer']}.",
                "reasoning_finish_reason": "stop",
                "prompt": "...",
                "completion": f" {r['answer']}" if k != 1 else " nothing",
                "finish_reason": "stop",
            }
            for k in range(samples)
        ]
    path = folder / f"D_{task}.json"
    path.write_text(
        json.dumps({"metadata": {"dataset_key": task, "base_model": model, "completion_key": "zs_cot"}, "data": data})
    )
    return path


def test_reasoning_teachers_completions_with_diverse_samples(mirror, tmp_path):
    recs, _ = records("gsm8k", mirror, max_train=6, max_test=4)
    reasoning_teacher_archive(tmp_path / "archive", "gsm8k", recs, samples=3)
    teacher = replay_teacher("reasoning_teacher", tmp_path / "archive", "gsm8k", recs, "text-davinci-002")
    train = [r for r in recs if r["split"] == "train"]
    out, _ = teach(train, teacher, CompletionCache(tmp_path / "c"), 3, 0.7, 128)
    assert (
        len(out) == 18
        and out[0]["rationale"] == f"Sample 0 of {out[0]['question_id']}: so the answer is {out[0]['answer']}."
    )
    kept, _ = filter_rationales(out)
    assert {k["sample_index"] for k in kept} == {0, 2}  # sample 1 answered "nothing"
    # Test questions are matched past the train questions (reasoning-teacher numbers them after them).
    test = [r for r in recs if r["split"] == "test"]
    assert teacher.coverage(test, 1)["found"] == 4
    with pytest.raises(TeacherError, match=r"holds at most 3 sample\(s\) per question, but diversity is 4"):
        teacher.coverage(train, 4)


def test_bad_published_inputs_are_named_before_any_training(mirror, tmp_path):
    recs, _ = records("coin_flip", mirror)
    with pytest.raises(
        TeacherError, match=r"B_text-davinci-002__C_zs_cot/D_coin_flip\.json does not exist.*found folders"
    ):
        replay_teacher("reasoning_teacher", tmp_path / "empty", "coin_flip", recs, "text-davinci-002")
    path = reasoning_teacher_archive(tmp_path / "a", "coin_flip", recs, 1)
    raw = json.loads(path.read_text())
    path.write_text(json.dumps({**raw, "metadata": {"dataset_key": "addsub"}}))
    with pytest.raises(
        TeacherError, match=r"D_coin_flip\.json: its dataset_key is 'addsub', not this task's 'coin_flip'"
    ):
        replay_teacher("reasoning_teacher", tmp_path / "a", "coin_flip", recs, "text-davinci-002")
    path.write_text(json.dumps({"data": [1, 2]}))
    with pytest.raises(TeacherError, match=r"expected \{'metadata'"):
        replay_teacher("reasoning_teacher", tmp_path / "a", "coin_flip", recs, "text-davinci-002")
    twice = json.loads(json.dumps(raw))
    twice["data"]["0"].append({**twice["data"]["0"][0], "reasoning_completion": " Something else."})
    path.write_text(json.dumps(twice))
    with pytest.raises(
        TeacherError, match=r"data\['0'\]\[1\]: completion_index 0 is also data\['0'\]\[0\], with other"
    ):
        replay_teacher("reasoning_teacher", tmp_path / "a", "coin_flip", recs, "text-davinci-002")
    raw["data"]["0"][0]["question"] = "Another question entirely?"
    path.write_text(json.dumps(raw))
    with pytest.raises(TeacherError, match=r"sample_index 0 is another question than coin_flip-000"):
        replay_teacher("reasoning_teacher", tmp_path / "a", "coin_flip", recs, "text-davinci-002")
    # A log that does not parse, and the log of another task.
    bad = tmp_path / "m" / "zero_shot_cot/log"
    bad.mkdir(parents=True)
    (bad / KOJIMA_LOGS["coin_flip"].file).write_text("Namespace(direct_answer_trigger='\\nTherefore')\nnothing here\n")
    with pytest.raises(TeacherError, match=r"coin_flip_zero_shot_cot\.log: not a zero-shot-CoT log \(no '<n>st data"):
        replay_teacher("kojima", "x", "coin_flip", recs, "m", mirror=str(tmp_path / "m"), verify_checksums=False)
    with pytest.raises(Exception, match=r"SHA-256 .* does not match the pinned"):
        replay_teacher("kojima", "x", "coin_flip", recs, "m", mirror=str(tmp_path / "m"))
    (bad / KOJIMA_LOGS["coin_flip"].file).write_text((mirror / KOJIMA_LOGS["addsub"].mirror).read_text())
    with pytest.raises(TeacherError, match=r"none of its 395 questions is a question of task 'coin_flip'"):
        replay_teacher("kojima", "x", "coin_flip", recs, "m", mirror=str(tmp_path / "m"), verify_checksums=False)
    generated, _ = records("coin_flip", mirror, coin_flip={"source": "generated"})
    with pytest.raises(TeacherError, match=r"data.<task>.source: paper"):
        replay_teacher("kojima", "x", "coin_flip", generated, "m", mirror=str(mirror))
    with pytest.raises(TeacherError, match=r"no log of task 'sums'"):
        replay_teacher("kojima", "x", "sums", recs, "m", mirror=str(mirror))


def test_the_teach_stage_replays_a_log_reports_coverage_and_refuses_a_test_set_log_for_training(mirror, tmp_path):
    def stage(task, **teacher):
        params = yaml.safe_load((REPO / "params.yaml").read_text())
        params["data"].update({"tasks": [task], "mirror": str(mirror)})
        for key, options in PAPER.items():
            params["data"][key].update(options)
        params["teacher"].update({"backend": "replay", "model": "text-davinci-002", **teacher})
        (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
        recs, _ = records(task, mirror)
        (tmp_path / "r.jsonl").write_text("".join(json.dumps(r) + "\n" for r in recs))
        cmd = [sys.executable, str(REPO / "stages/teach.py"), "--task", task, "--records", "r.jsonl"]
        cmd += ["--out", "t.jsonl", "--test-out", "tt.jsonl", "--metrics", "m.json"]
        env = {**os.environ, "FTCOT_CACHE_DIR": str(tmp_path / "cache")}
        return subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True)

    done = stage("coin_flip", replay={"dir": "replay", "format": "kojima", "completion_key": "zs_cot"})
    assert done.returncode == 0, done.stderr
    metrics = json.loads((tmp_path / "m.json").read_text())
    assert metrics["replay_coverage"] == {
        "train": {"questions": 350, "found": 350},
        "test": {"questions": 150, "found": 150},
    }
    assert abs(100 * metrics["teacher_test_accuracy"] - 91.4) < 5
    done = stage("gsm8k", replay={"dir": "replay", "format": "kojima", "completion_key": "zs_cot"})
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert (
        "answers 0 of the 7473 train questions asked" in done.stderr and "cannot teach train questions" in done.stderr
    )
