"""Tasks as data: the built-in task files give the records of the code they replaced, a project's
own task needs no code, and a bad task file stops with a message naming the file and the key."""

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from ftcot.answers import extract_answer, is_correct
from ftcot.config import ConfigError, parse_params
from ftcot.data.fetching import fetch_task
from ftcot.data.tasks import TASKS, TaskFileError
from ftcot.io import DataError, dumps_line

REPO = Path(__file__).resolve().parents[1]
MIRROR = Path(os.environ.get("FTCOT_TEST_DATA_MIRROR", REPO.parent / "shared" / "datasets"))
# Digests of the records (and the fetch metrics) that the code before task files produced, for
# the twelve tasks and the options that change them.
REFERENCE = json.loads((REPO / "tests/data/builtin_tasks_reference.json").read_text())
PAPER = {
    "coin_flip": {"source": "paper"},
    "last_letter_concatenation": {"source": "paper"},
    "aqua": {"train_file": "dev"},
}
VARIANTS = {
    **{f"{t}/seed0": (t, 0, {}) for t in TASKS},
    **{f"{t}/seed1": (t, 1, {}) for t in ("single_eq", "date_understanding", "strategy_qa", "coin_flip", "aqua")},
    **{f"{t}/generated": (t, 0, {t: {"source": "generated"}}) for t in ("coin_flip", "last_letter_concatenation")},
    **{
        f"{t}/generated-seed3-n40": (t, 3, {"num_questions": 40, t: {"source": "generated"}})
        for t in ("coin_flip", "last_letter_concatenation")
    },
    "aqua/dev-train_size-100": ("aqua", 0, {"aqua": {"train_file": "dev", "train_size": 100}}),
    "gsm8k/caps-50-20": ("gsm8k", 0, {"max_train": 50, "max_test": 20}),
    "svamp/train_fraction-0.6": ("svamp", 0, {"train_fraction": 0.6}),
    "commonsense_qa/caps-30-10-seed2": ("commonsense_qa", 2, {"max_train": 30, "max_test": 10}),
}


def test_the_reference_covers_every_variant():
    assert set(VARIANTS) == set(REFERENCE) and len(TASKS) == 12


@pytest.mark.parametrize("name", sorted(VARIANTS))
def test_builtin_task_files_give_the_records_of_the_code_they_replaced(name):
    task, seed, data = VARIANTS[name]
    params = parse_params({"data": {"tasks": [task], "mirror": str(MIRROR), **PAPER, **data}}).data
    records, info = fetch_task(task, params, seed, Path("/nonexistent"))
    blob = "".join(dumps_line(r) + "\n" for r in records).encode()
    assert {"records_sha256": hashlib.sha256(blob).hexdigest(), "n": len(records), "info": info} == REFERENCE[name]


def project(tmp_path: Path, task_files: dict[str, str], data_files: dict[str, str]) -> Path:
    """A project folder with task files in tasks/ and data files; the tests run from inside it."""
    (tmp_path / "tasks").mkdir()
    for name, text in task_files.items():
        (tmp_path / "tasks" / name).write_text(text)
    for name, text in data_files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    return tmp_path


def fetch(task: str, seed: int = 0, **data):
    params = parse_params({"data": {"tasks": [task], **data}}).data
    return fetch_task(task, params, seed, Path("/nonexistent"))


SUMS = "".join(json.dumps({"q": f"What is {i} plus {i + 1}?", "a": str(2 * i + 1)}) + "\n" for i in range(40))


def test_a_jsonl_file_split_by_ratio_needs_no_code(tmp_path, monkeypatch):
    monkeypatch.chdir(project(tmp_path, {"sums.yaml": SUMS_TASK}, {"tasks/data/sums.jsonl": SUMS}))
    records, info = fetch("sums")
    assert (info["train"], info["test"], info["source"]) == (28, 12, "files")
    assert info["sha256"] == {"tasks/data/sums.jsonl": hashlib.sha256(SUMS.encode()).hexdigest()}
    first = next(r for r in records if r["id"] == "sums-00")
    assert first == {
        "id": "sums-00",
        "task": "sums",
        "question": "What is 0 plus 1?",
        "answer": "1",
        "answer_type": "number",
        "split": first["split"],
        "rationale": None,
    }
    assert records == fetch("sums")[0] and records != fetch("sums", seed=1)[0]


SUMS_TASK = """
description: Sums of two numbers.
answer_type: number
source:
  all: {path: tasks/data/sums.jsonl}
fields:
  question: q
  answer: a
"""


def test_an_official_split_with_choices_a_trigger_and_a_rationale(tmp_path, monkeypatch):
    task = """
answer_type: choice_A-D
trigger: "So the answer, A to D, is"
source:
  train: {path: tasks/data/train.jsonl}
  test: {path: tasks/data/test.jsonl}
fields:
  question: question
  choices: options
  answer: answer
  rationale: why
"""

    def rows(numbers):
        return "".join(
            json.dumps(
                {
                    "question": f"Which is the capital of country {i}?",
                    "options": [f"Town {i}", f"City {i}", f"Village {i}", f"Port {i}"],
                    "answer": "ABCD"[i % 4],
                    "why": f" Because {i}. ",
                }
            )
            + "\n"
            for i in numbers
        )

    data = {"tasks/data/train.jsonl": rows(range(8)), "tasks/data/test.jsonl": rows(range(8, 11))}
    monkeypatch.chdir(project(tmp_path, {"capitals.yaml": task}, data))
    records, info = fetch("capitals")
    assert (info["train"], info["test"]) == (8, 3)
    first = next(r for r in records if r["id"] == "capitals-train-0")
    assert first["question"] == (
        "Which is the capital of country 0? Answer choices: (A) Town 0, (B) City 0, (C) Village 0, (D) Port 0"
    )
    assert first["answer"] == "A" and first["rationale"] == "Because 0."
    assert first["answer_options"] == {"trigger": "So the answer, A to D, is"}  # travels with the records
    assert [r["id"] for r in records if r["split"] == "test"] == [
        "capitals-test-0",
        "capitals-test-1",
        "capitals-test-2",
    ]


def test_csv_rows_and_a_template(tmp_path, monkeypatch):
    task = """
answer_type: text
source:
  all: {path: tasks/data/cities.csv}
fields:
  question: {template: "What is the capital of {country}?"}
  answer: capital
"""
    csv_text = "country,capital\n" + "".join(f"Land {i},The City of {i}\n" for i in range(20))
    monkeypatch.chdir(project(tmp_path, {"cities.yaml": task}, {"tasks/data/cities.csv": csv_text}))
    records, _ = fetch("cities")
    land0 = next(r for r in records if r["id"] == "cities-00")
    assert land0["question"] == "What is the capital of Land 0?" and land0["answer"] == "The City of 0"
    said = extract_answer(" the city of 0.\nIt is a port.", "text", "teacher")
    assert said == "city of 0" and is_correct(said, land0["answer"], "text")  # case, articles, punctuation ignored


def write_task(tmp_path, text: str, data: dict[str, str] | None = None, name: str = "mine.yaml") -> None:
    project(tmp_path, {name: text}, data or {"tasks/data/sums.jsonl": SUMS})


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            SUMS_TASK.replace("answer_type: number", "answer_type: colour"),
            r"answer_type: .*unknown answer type 'colour'",
        ),
        (SUMS_TASK + "colour: red\n", r"colour: unknown key"),
        (SUMS_TASK.replace("  answer: a\n", ""), r"fields: .*'answer' is missing"),
        (
            SUMS_TASK.replace("{path: tasks/data/sums.jsonl}", "{url: https://example.org/s.jsonl}"),
            r"a url needs its sha256",
        ),
        (SUMS_TASK.replace("{path: tasks/data/sums.jsonl}", "{path: tasks/data/sums.txt}"), r"cannot tell the format"),
        (SUMS_TASK + "tolerance: 0.1\n", None),  # valid: a tolerance for numbers
        (SUMS_TASK.replace("number", "text") + "tolerance: 0.1\n", r"'tolerance' is for numbers"),
        (SUMS_TASK.replace("question: q", "question: {field: q, pattern: '('}"), r"pattern: not a valid regex"),
        ("answer_type: [", r"not valid YAML"),
    ],
)
def test_a_bad_task_file_is_an_error_naming_the_file_and_the_key(tmp_path, monkeypatch, text, message):
    write_task(tmp_path, text)
    monkeypatch.chdir(tmp_path)
    if message is None:
        assert parse_params({"data": {"tasks": ["mine"]}}).data.tasks == ["mine"]
        return
    with pytest.raises(TaskFileError, match=rf"(?s)tasks/mine\.yaml: .*{message}"):
        parse_params({"data": {"tasks": ["coin_flip"]}})  # any run stops: the folder holds a broken file


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ('{"q": "x?", "a": "1"}\n{"a": "2"}\n', r"sums\.jsonl:2: missing field 'q' \(fields\.question\)"),
        ("", r"tasks/data/sums\.jsonl: no records in this source \(all of task file tasks/mine\.yaml\)"),
        ('{"q": "x?", "a": "one"}\n', r"sums\.jsonl:1: answer 'one' is not a number \(number\)"),
        ('{"q": "x?", "a": "1"}\n{oops\n', r"sums\.jsonl:2: not valid JSON"),
    ],
)
def test_a_record_that_does_not_fit_stops_fetch_naming_file_line_and_task_file(tmp_path, monkeypatch, data, message):
    write_task(tmp_path, SUMS_TASK, {"tasks/data/sums.jsonl": data})
    monkeypatch.chdir(tmp_path)
    with pytest.raises(DataError, match=message) as err:
        fetch("mine")
    assert "tasks/mine.yaml" in str(err.value)


def test_a_checksum_that_does_not_match_and_choices_the_type_cannot_hold(tmp_path, monkeypatch):
    pinned = SUMS_TASK.replace(
        "{path: tasks/data/sums.jsonl}", "{path: tasks/data/sums.jsonl, sha256: '" + "0" * 64 + "'}"
    )
    write_task(tmp_path, pinned)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(DataError, match=r"sums\.jsonl: SHA-256 .* does not match the 0{64} pinned in tasks/mine\.yaml"):
        fetch("mine")
    five = json.dumps({"q": "Pick one.", "o": ["a", "b", "c", "d", "e"], "a": "B"}) + "\n"
    three = """
answer_type: choice_A-C
source: {all: {path: tasks/data/pick.jsonl}}
fields: {question: q, choices: o, answer: a}
"""
    (tmp_path / "tasks/mine.yaml").write_text(three)
    (tmp_path / "tasks/data/pick.jsonl").write_text(five * 20)
    with pytest.raises(
        DataError, match=r"pick\.jsonl:1: 5 choices, but answer type choice_A-C holds 3 choices \(A-C\)"
    ):
        fetch("mine")
    (tmp_path / "tasks/data/pick.jsonl").write_text(five.replace('"B"', '"F"') * 20)
    (tmp_path / "tasks/mine.yaml").write_text(three.replace("choice_A-C", "choice_A-E"))
    with pytest.raises(DataError, match=r"answer 'F' is not one of the choice letters A, B, C, D, E"):
        fetch("mine")


def test_a_downloaded_source_whose_checksum_does_not_match_names_the_task_file_and_key(tmp_path, monkeypatch):
    url = "https://example.org/data/sums.jsonl"
    pinned = SUMS_TASK.replace("{path: tasks/data/sums.jsonl}", "{url: " + url + ", sha256: '" + "0" * 64 + "'}")
    write_task(tmp_path, pinned, {"mirror/example.org/data/sums.jsonl": SUMS})
    monkeypatch.chdir(tmp_path)
    named = r"\[task file tasks/mine\.yaml, key source\.all\]"
    with pytest.raises(DataError, match=r"sums\.jsonl: SHA-256 .* does not match the pinned 0{64}.*" + named):
        fetch("mine", mirror=str(tmp_path / "mirror"))
    with pytest.raises(DataError, match=r"has no example\.org/data/sums\.jsonl.*" + named):
        fetch("mine", mirror=str(tmp_path))  # the mirror lacks it
    records, _ = fetch("mine", mirror=str(tmp_path / "mirror"), verify_checksums=False)
    assert len(records) == 40


def test_a_project_task_may_not_take_a_built_in_name(tmp_path, monkeypatch):
    write_task(tmp_path, SUMS_TASK, name="gsm8k.yaml")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(TaskFileError, match=r"tasks/gsm8k\.yaml: 'gsm8k' is a built-in task"):
        parse_params({"data": {"tasks": ["coin_flip"]}})


def test_an_unknown_task_lists_the_projects_own(tmp_path, monkeypatch):
    write_task(tmp_path, SUMS_TASK)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError, match=r"data\.tasks: .*unknown task\(s\) \['mien'\].*'mine'"):
        parse_params({"data": {"tasks": ["mien"]}})


def test_a_task_with_several_sources_gets_its_own_params_section(tmp_path, monkeypatch):
    task = SUMS_TASK.replace(
        "source:\n  all: {path: tasks/data/sums.jsonl}\n",
        "sources:\n  small: {all: {path: tasks/data/sums.jsonl}}\n  large: {all: {path: tasks/data/more.jsonl}}\n",
    )
    write_task(tmp_path, task, {"tasks/data/sums.jsonl": SUMS, "tasks/data/more.jsonl": SUMS * 2})
    monkeypatch.chdir(tmp_path)
    assert fetch("mine")[1]["train"] == 28  # the first source is the default
    with pytest.raises(ConfigError, match=r"data\.mine\.source: Input should be 'small' or 'large'"):
        parse_params({"data": {"tasks": ["mine"], "mine": {"source": "huge"}}})
    _, large = fetch("mine", mine={"source": "large"})
    assert list(large["sha256"]) == ["tasks/data/more.jsonl"]
    assert large["dropped_train_duplicates_of_test"] > 0  # every question twice: train copies of test ones go


def test_the_fetch_stage_stops_on_a_bad_record_with_one_message(tmp_path):
    write_task(tmp_path, SUMS_TASK, {"tasks/data/sums.jsonl": '{"q": "x?"}\n'})
    (tmp_path / "params.yaml").write_text(
        (REPO / "params.yaml").read_text().replace("[coin_flip, last_letter_concatenation]", "[mine]")
    )
    cmd = [sys.executable, str(REPO / "stages/fetch.py"), "--task", "mine", "--out", "f.jsonl", "--metrics", "m.json"]
    done = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert (
        "error: tasks/data/sums.jsonl:1: missing field 'a' (fields.answer) [task file tasks/mine.yaml]" in done.stderr
    )
