"""Hostile and careless inputs on the data side: a task file's paths stay inside their folders and
are watched by DVC, downloads replace nothing until their checksum holds, and every malformed
byte, row or record is named with its file and line before any teacher request is paid."""

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import pytest

from ftcot.config import ConfigError, load_params, parse_params
from ftcot.data.fetching import fetch_task
from ftcot.data.tasks import TaskFileError
from ftcot.io import DataError

REPO = Path(__file__).resolve().parents[1]
SUMS = "".join(json.dumps({"q": f"What is {i} plus {i + 1}?", "a": str(2 * i + 1)}) + "\n" for i in range(40))
TASK = """
answer_type: number
source:
  all: {path: PATH}
fields: {question: q, answer: a}
"""


def project(root: Path, task: str, files: dict[str, str | bytes]) -> Path:
    (root / "tasks").mkdir(parents=True, exist_ok=True)
    (root / "tasks/mine.yaml").write_text(task)
    for name, content in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content.encode() if isinstance(content, str) else content)
    return root


def fetch(**data):
    params = parse_params({"data": {"tasks": ["mine"], **data}}).data
    return fetch_task("mine", params, 0, Path("/nonexistent"))


# -- 1. a task's local data files are watched (inside data.task_dir) or pinned ------------------


def test_a_data_file_outside_the_task_folder_must_be_pinned_and_the_error_gives_the_pin(tmp_path, monkeypatch):
    monkeypatch.chdir(project(tmp_path, TASK.replace("PATH", "data/mine.jsonl"), {"data/mine.jsonl": SUMS}))
    digest = hashlib.sha256(SUMS.encode()).hexdigest()
    with pytest.raises(
        ConfigError,
        match=rf"tasks/mine\.yaml: source\.all\.path 'data/mine\.jsonl' is outside "
        rf"data\.task_dir \(tasks/\).*sha256: '{digest}'",
    ):
        fetch()
    pinned = TASK.replace("PATH", f"data/mine.jsonl, sha256: '{digest}'")
    (tmp_path / "tasks/mine.yaml").write_text(pinned)
    records, info = fetch()
    assert len(records) == 40 and info["sha256"] == {"data/mine.jsonl": digest}
    (tmp_path / "data/mine.jsonl").write_text(SUMS.replace("What is 0", "What is zero"))  # edited: not stale
    with pytest.raises(DataError, match=r"data/mine\.jsonl: SHA-256 .* does not match .* pinned in tasks/mine\.yaml"):
        fetch()


# -- 3. nothing is written or read outside the folder a path is relative to --------------------


@pytest.mark.parametrize("mirror", ["../../../../home/someone/.bashrc", "/home/someone/.bashrc", "a/../../b"])
def test_a_mirror_path_that_leaves_the_mirror_is_a_task_file_error(tmp_path, monkeypatch, mirror):
    task = TASK.replace("PATH", "x").replace(
        "{path: x}", f"{{url: 'https://example.org/s.jsonl', sha256: null, mirror: '{mirror}'}}"
    )
    monkeypatch.chdir(project(tmp_path, task, {}))
    with pytest.raises(
        TaskFileError, match=r"(?s)tasks/mine\.yaml: .*source\.all.*must be a relative path inside the mirror"
    ):
        parse_params({"data": {"tasks": ["coin_flip"]}})


@pytest.mark.parametrize("path", ["../../../etc/passwd", "/etc/passwd"])
def test_a_path_outside_the_project_is_refused_unless_allowed_and_pinned(tmp_path, monkeypatch, path):
    root = project(tmp_path / "p", TASK.replace("PATH", path).replace("{path:", "{format: jsonl, path:"), {})
    monkeypatch.chdir(root)
    with pytest.raises(ConfigError, match=rf"source\.all\.path '{path}' is outside the project.*allow_outside_paths"):
        fetch()
    with pytest.raises(ConfigError, match=r"outside data\.task_dir"):  # allowed, but not pinned
        fetch(allow_outside_paths=True)


def test_a_download_goes_to_a_temporary_file_and_is_moved_in_only_when_its_checksum_holds(tmp_path, monkeypatch):
    served = tmp_path / "served/sums.jsonl"
    served.parent.mkdir()
    served.write_text(SUMS)
    url = served.as_uri()  # urllib reads file:// URLs as it reads https:// ones
    cache = tmp_path / "cache"
    dest = cache / served.relative_to("/")  # the URL's host (none) and path
    dest.parent.mkdir(parents=True)
    dest.write_text("an earlier, healthy copy\n")
    task = TASK.replace("{path: PATH}", f"{{url: '{url}', sha256: '{'0' * 64}'}}")
    monkeypatch.chdir(project(tmp_path / "p", task, {}))
    params = parse_params({"data": {"tasks": ["mine"]}}).data
    with pytest.raises(
        DataError, match=r"the download's SHA-256 .* does not match the pinned 0{64}.*nothing was written"
    ):
        fetch_task("mine", params, 0, cache)
    assert dest.read_text() == "an earlier, healthy copy\n"  # not replaced
    assert [p.name for p in dest.parent.iterdir()] == [dest.name]  # no temporary file left behind
    good = task.replace("0" * 64, hashlib.sha256(SUMS.encode()).hexdigest())
    (tmp_path / "p/tasks/mine.yaml").write_text(good)
    records, _ = fetch_task("mine", parse_params({"data": {"tasks": ["mine"]}}).data, 0, cache)
    assert len(records) == 40 and dest.read_text() == SUMS


# -- 4. CSV rows that do not fit their header -------------------------------------------------

CSV_TASK = """
answer_type: text
source:
  all: {path: tasks/data/cities.csv}
fields:
  question: {template: "What is the capital of {country}?"}
  answer: capital
"""
CITIES = "".join(f"Land{i},Town{i}\n" for i in range(20))


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (
            "country,capital\nLand1,Town1\nWhat is the capital of Land2, also called Alias2?,Town2\nLand3,Town3\n",
            r"cities\.csv:3: 3 fields, but the header has 2 \(country, capital\)",
        ),
        ("country,capital\nLand1\nLand3,Town3\n", r"cities\.csv:2: 1 fields, but the header has 2"),
        ('country,capital\nLand1,Town1\n"Land2,Town2\nLand3,Town3\nLand4,Town4\n', r"cities\.csv:3: .*never closed"),
        (b"country,capital\nLand1,Town1\nLand2,Town2\nLand\xe93,Town3\n", r"cities\.csv:4: not UTF-8 text \(byte 0xe9"),
    ],
)
def test_a_csv_row_that_does_not_fit_is_named_at_its_own_line(tmp_path, monkeypatch, content, message):
    monkeypatch.chdir(project(tmp_path, CSV_TASK, {"tasks/data/cities.csv": content}))
    with pytest.raises(DataError, match=message):
        fetch()


def test_a_csv_file_with_a_byte_order_mark_is_read(tmp_path, monkeypatch):
    files = {"tasks/data/cities.csv": b"\xef\xbb\xbf" + ("country,capital\n" + CITIES).encode()}
    monkeypatch.chdir(project(tmp_path, CSV_TASK, files))
    records, _ = fetch()
    assert len(records) == 20 and any(r["question"] == "What is the capital of Land0?" for r in records)


# -- 5. a byte that is not UTF-8, in any user file ----------------------------------------------


@pytest.mark.parametrize("name", ["tasks/data/mine.jsonl", "tasks/data/mine.json"])
def test_a_byte_that_is_not_utf8_is_named_with_file_line_and_offset(tmp_path, monkeypatch, name):
    content = (SUMS if name.endswith("jsonl") else json.dumps([{"q": "x?", "a": "1"}], indent=1)).encode()
    lines = content.split(b"\n")
    lines[2] = lines[2].replace(b"?", b"?\xff", 1) if b"?" in lines[2] else lines[2] + b"\xff"
    bad = b"\n".join(lines)
    offset = bad.index(b"\xff")
    monkeypatch.chdir(project(tmp_path, TASK.replace("PATH", name), {name: bad}))
    with pytest.raises(DataError, match=rf"mine\.jsonl?:3: not UTF-8 text \(byte 0xff at byte offset {offset}\)"):
        fetch()


def test_a_task_file_and_params_yaml_with_a_bad_byte_are_named(tmp_path, monkeypatch):
    monkeypatch.chdir(project(tmp_path, "answer_type: number\n# caf\xe9\n".encode("latin-1").decode("latin-1"), {}))
    (tmp_path / "tasks/mine.yaml").write_bytes(b"answer_type: number\n# caf\xe9\n")
    with pytest.raises(TaskFileError, match=r"tasks/mine\.yaml:2: not UTF-8 text \(byte 0xe9 at byte offset 25\)"):
        parse_params({"data": {"tasks": ["coin_flip"]}})
    (tmp_path / "tasks/mine.yaml").unlink()
    (tmp_path / "params.yaml").write_bytes((REPO / "params.yaml").read_bytes() + b"# \xff\n")
    with pytest.raises(ConfigError, match=r"params\.yaml:\d+: not UTF-8 text \(byte 0xff"):
        load_params(tmp_path / "params.yaml")


# -- 8. numbers as people write them, answers that can be scored ------------------------------


def test_a_tolerance_written_1e_3_is_a_number(tmp_path, monkeypatch):
    monkeypatch.chdir(
        project(
            tmp_path, TASK.replace("PATH", "tasks/data/s.jsonl") + "tolerance: 1e-3\n", {"tasks/data/s.jsonl": SUMS}
        )
    )
    records, _ = fetch()
    assert records[0]["answer_options"] == {"tolerance": 0.001}


def test_a_text_answer_that_the_rules_read_as_nothing_is_an_error_naming_the_record(tmp_path, monkeypatch):
    rows = "".join(json.dumps({"q": f"Question {i}?", "a": "A" if i == 7 else f"word{i}"}) + "\n" for i in range(20))
    task = TASK.replace("number", "text").replace("PATH", "tasks/data/w.jsonl")
    monkeypatch.chdir(project(tmp_path, task, {"tasks/data/w.jsonl": rows}))
    with pytest.raises(DataError, match=r"w\.jsonl:8: answer 'A' is empty once read by answer type text's rules"):
        fetch()


# -- 9. a field far too long to be a question -------------------------------------------------


def test_a_question_beyond_data_max_chars_stops_fetch_naming_the_record(tmp_path, monkeypatch):
    rows = SUMS.splitlines()
    rows[5] = json.dumps({"q": "x" * 100_001, "a": "1"})
    monkeypatch.chdir(
        project(tmp_path, TASK.replace("PATH", "tasks/data/s.jsonl"), {"tasks/data/s.jsonl": "\n".join(rows)})
    )
    with pytest.raises(DataError, match=r"s\.jsonl:6: the question is 100,001 characters long, over data\.max_chars"):
        fetch()
    assert len(fetch(max_chars=200_000)[0]) == 40


def test_no_stage_ends_in_a_traceback_on_a_bad_byte(tmp_path):
    """The fetch stage itself, as dvc runs it: one line naming the file and line, exit 2."""
    project(tmp_path, CSV_TASK, {"tasks/data/cities.csv": b"country,capital\nLand\xe91,Town1\n"})
    (tmp_path / "params.yaml").write_text(
        (REPO / "params.yaml").read_text().replace("[coin_flip, last_letter_concatenation]", "[mine]")
    )
    cmd = [sys.executable, str(REPO / "stages/fetch.py"), "--task", "mine", "--out", "f.jsonl", "--metrics", "m.json"]
    done = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert "tasks/data/cities.csv:2: not UTF-8 text (byte 0xe9 at byte offset 20)" in done.stderr
