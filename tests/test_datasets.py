"""Every task of the paper, loaded from the offline mirror of the public files (../shared/datasets)."""

import functools
import http.server
import json
import os
import shutil
import threading
from pathlib import Path

import pytest

from ftcot.config import parse_params
from ftcot.data.fetching import fetch_task
from ftcot.data.sources import SOURCE_FILES, SourceFile, fetch_file
from ftcot.data.tasks import TASKS
from ftcot.io import DataError

REPO = Path(__file__).resolve().parents[1]
# The offline mirror of the paper's public files that sits beside the checkout (and in CI).
MIRROR = Path(os.environ.get("FTCOT_TEST_DATA_MIRROR", REPO.parent / "shared" / "datasets"))

# The paper's train / test sizes (Ho et al., 2023, appendix), before duplicates are dropped.
PAPER_SIZES = {
    "single_eq": (356, 152),
    "addsub": (276, 119),
    "multiarith": (420, 180),
    "gsm8k": (7473, 1319),
    "svamp": (700, 300),
    "date_understanding": (258, 111),
    "tracking_shuffled_objects": (525, 225),
    "last_letter_concatenation": (350, 150),
    "coin_flip": (350, 150),
    "commonsense_qa": (9741, 1221),
    "strategy_qa": (1603, 687),
}


def data_params(**data):
    return parse_params({"data": {"tasks": ["coin_flip"], "mirror": str(MIRROR), **data}}).data


@functools.cache
def fetched(key: str) -> tuple[list[dict], dict]:
    """Task ``key`` from the mirror, with the paper's synthetic files and, since the mirror has
    no AQuA train.json, AQuA's documented reduced source (dev.json)."""
    options = {
        "coin_flip": {"source": "paper"},
        "last_letter_concatenation": {"source": "paper"},
        "aqua": {"train_file": "dev"},
    }
    return fetch_task(key, data_params(**options), 0, Path("/nonexistent-downloads"))


def by_id(records):
    return {r["id"]: r for r in records}


def test_the_mirror_is_there():
    assert (MIRROR / "zero_shot_cot" / "dataset").is_dir(), f"expected the dataset mirror at {MIRROR}"


@pytest.mark.parametrize("key", sorted(PAPER_SIZES))
def test_split_sizes_equal_the_papers(key):
    records, info = fetched(key)
    assert (info["train_split"], info["test_split"]) == PAPER_SIZES[key]
    assert info["train"] == PAPER_SIZES[key][0] - info["dropped_train_duplicates_of_test"]
    assert sum(r["split"] == "test" for r in records) == PAPER_SIZES[key][1]
    assert {r["answer_type"] for r in records} == {TASKS[key].answer_type}
    assert all(r["question"] and r["answer"] for r in records)
    assert len({r["id"] for r in records}) == len(records)
    assert all(len(d) == 64 for d in info["sha256"].values())


@pytest.mark.parametrize("key", sorted(PAPER_SIZES))
def test_no_test_question_is_in_train(key):
    records, _ = fetched(key)
    norm = lambda s: " ".join(s.lower().split())  # noqa: E731
    test = {norm(r["question"]) for r in records if r["split"] == "test"}
    assert not [r for r in records if r["split"] == "train" and norm(r["question"]) in test]


def test_duplicates_across_splits_are_dropped_and_counted():
    assert fetched("multiarith")[1]["dropped_train_duplicates_of_test"] == 5
    assert fetched("strategy_qa")[1]["dropped_train_duplicates_of_test"] == 1
    assert fetched("gsm8k")[1]["dropped_train_duplicates_of_test"] == 0


def test_records_verbatim():
    gsm = by_id(fetched("gsm8k")[0])["gsm8k-test-0000"]
    assert gsm["question"].startswith("Janet\u2019s ducks lay 16 eggs per day.")
    assert gsm["answer"] == "18"
    assert gsm["rationale"] == (
        "Janet sells 16 - 3 - 4 = 9 duck eggs a day.\nShe makes 9 * 2 = $18 every day at the farmer\u2019s market."
    )
    assert by_id(fetched("gsm8k")[0])["gsm8k-train-0000"]["answer"] == "72"

    svamp = by_id(fetched("svamp")[0])["svamp-000"]
    assert svamp["question"] == (
        "Each pack of dvds costs 76 dollars. If there is a discount of 25 dollars on each pack "
        "How much do you have to pay to buy each pack?"
    )
    assert svamp["answer"] == "51" and svamp["split"] == "train"

    single = by_id(fetched("single_eq")[0])["single_eq-001"]
    assert single["answer"] == "26" and single["question"].startswith("There were 28 bales of hay")
    assert by_id(fetched("addsub")[0])["addsub-000"]["answer"] == "43"
    assert by_id(fetched("multiarith")[0])["multiarith-003"]["answer"] == "40"

    aqua = by_id(fetched("aqua")[0])["aqua-test-000"]
    assert aqua["question"].endswith(
        "Answer choices: (A) 5(\u221a3 + 1), (B) 6(\u221a3 + \u221a2), (C) 7(\u221a3 \u2013 1), "
        "(D) 8(\u221a3 \u2013 2), (E) None of these"
    )
    assert aqua["answer"] == "A" and aqua["rationale"].startswith("Explanation :")

    csqa = by_id(fetched("commonsense_qa")[0])["commonsense_qa-train-0000"]
    assert csqa["question"] == (
        "The sanctions against the school were a punishing blow, and they seemed to what the efforts the "
        "school had made to change? Answer choices: (A) ignore, (B) enforce, (C) authoritarian, (D) yell at, "
        "(E) avoid"
    )
    assert csqa["answer"] == "A"

    strategy = by_id(fetched("strategy_qa")[0])["strategy_qa-0001"]
    assert strategy["question"] == "Hydrogen's atomic number squared exceeds number of Spice Girls?"
    assert strategy["answer"] == "no" and strategy["rationale"].startswith("Hydrogen is the first element")

    objects = by_id(fetched("tracking_shuffled_objects")[0])["tracking_shuffled_objects-009"]
    assert objects["question"].endswith("Answer choices: (A) yellow ball., (B) purple ball., (C) blue ball.")
    assert objects["answer"] == "B"

    coin = by_id(fetched("coin_flip")[0])["coin_flip-001"]
    assert coin["question"].startswith("A coin is heads up. Lucky does not flip the coin.") and coin["answer"] == "no"
    letters = by_id(fetched("last_letter_concatenation")[0])["last_letter_concatenation-001"]
    assert letters["answer"] == "yajc"


def test_date_choices_are_shuffled_per_example_with_the_seed():
    date = by_id(fetched("date_understanding")[0])["date_understanding-001"]
    assert date["question"] == (
        "Yesterday was April 30, 2021. What is the date tomorrow in MM/DD/YYYY? Answer choices: (A) 04/11/2021, "
        "(B) 05/01/2021, (C) 03/14/2021, (D) 05/02/2021, (E) 05/02/1960, (F) 04/29/2021"
    )
    assert date["answer"] == "D"  # 05/02/2021
    letters = [r["answer"] for r in fetched("date_understanding")[0]]
    assert len(set(letters)) == 6  # the right answer moves around


def test_aqua_train_file_missing_from_the_mirror_is_named():
    with pytest.raises(DataError, match=r"has no AQuA/train\.json \(expected at .*AQuA/train\.json\)"):
        fetch_task("aqua", data_params(), 0, Path("/nonexistent"))


def test_aqua_samples_train_questions_with_the_seed(tmp_path):
    mirror = tmp_path / "mirror"
    shutil.copytree(MIRROR / "AQuA", mirror / "AQuA")
    lines = (MIRROR / "AQuA" / "test.json").read_text().splitlines()
    pool = [json.dumps({**json.loads(line), "question": f"Pool question {i}?"}) for i, line in enumerate(lines * 2)]
    (mirror / "AQuA" / "train.json").write_text("\n".join(pool) + "\n")
    params = parse_params({"data": {"tasks": ["aqua"], "mirror": str(mirror), "aqua": {"train_size": 100}}}).data
    records, info = fetch_task("aqua", params, 0, tmp_path)
    assert (info["train"], info["test"]) == (100, 254)
    again, _ = fetch_task("aqua", params, 0, tmp_path)
    assert records == again
    other, _ = fetch_task("aqua", params, 1, tmp_path)
    assert [r["id"] for r in other if r["split"] == "train"] != [r["id"] for r in records if r["split"] == "train"]
    assert parse_params({"data": {"tasks": ["aqua"]}}).data.aqua.train_size == 10000  # the paper's


def test_caps_subsample_with_the_seed():
    params = data_params(max_train=50, max_test=20)
    records, info = fetch_task("svamp", params, 0, Path("/nonexistent"))
    assert (info["train"], info["test"]) == (50, 20)
    full = {r["id"]: r for r in fetched("svamp")[0]}
    assert all(full[r["id"]] == r for r in records)
    assert records == fetch_task("svamp", params, 0, Path("/nonexistent"))[0]


def test_malformed_line_names_file_and_line(tmp_path):
    target = tmp_path / SOURCE_FILES["gsm8k/train"].path
    target.parent.mkdir(parents=True)
    good = (MIRROR / SOURCE_FILES["gsm8k/train"].path).read_text().splitlines()[:3]
    target.write_text("\n".join([good[0], good[1], '{"question": "x", "answer": "no hashes"}', "{oops"]) + "\n")
    shutil.copy(MIRROR / SOURCE_FILES["gsm8k/test"].path, target.parent / "test.jsonl")
    params = parse_params({"data": {"tasks": ["gsm8k"], "mirror": str(tmp_path), "verify_checksums": False}}).data
    with pytest.raises(DataError, match=r"train\.jsonl:3: field 'answer' has no '####'"):
        fetch_task("gsm8k", params, 0, tmp_path)
    target.write_text("\n".join([good[0], '{"question": "no answer"}']) + "\n")
    with pytest.raises(DataError, match=r"train\.jsonl:2: missing field 'answer'"):
        fetch_task("gsm8k", params, 0, tmp_path)
    target.write_text("\n".join([good[0], "{oops"]) + "\n")
    with pytest.raises(DataError, match=r"train\.jsonl:2: not valid JSON"):
        fetch_task("gsm8k", params, 0, tmp_path)


def test_every_bad_record_of_a_file_is_reported_in_one_pass_up_to_a_cap(tmp_path):
    from ftcot.data.fetching import MAX_REPORTED_PROBLEMS

    target = tmp_path / SOURCE_FILES["gsm8k/train"].path
    target.parent.mkdir(parents=True)
    good = (MIRROR / SOURCE_FILES["gsm8k/train"].path).read_text().splitlines()[:2]
    bad = ['{"question": "x", "answer": "no hashes"}', "{oops", '{"question": "no answer"}']
    target.write_text("\n".join([good[0], *bad, good[1]]) + "\n")
    shutil.copy(MIRROR / SOURCE_FILES["gsm8k/test"].path, target.parent / "test.jsonl")
    params = parse_params({"data": {"tasks": ["gsm8k"], "mirror": str(tmp_path), "verify_checksums": False}}).data
    with pytest.raises(DataError) as err:
        fetch_task("gsm8k", params, 0, tmp_path)
    lines = str(err.value).splitlines()
    assert lines[0].startswith(f"3 bad records in {target} [task file ")
    assert [line.split(": ", 1)[0] for line in lines[1:]] == [f"  {target}:{n}" for n in (2, 3, 4)]
    assert "has no '####'" in lines[1] and "not valid JSON" in lines[2] and "missing field 'answer'" in lines[3]
    target.write_text("\n".join([good[0], *["{oops"] * 30]) + "\n")  # a file of another layout
    with pytest.raises(DataError) as err:
        fetch_task("gsm8k", params, 0, tmp_path)
    lines = str(err.value).splitlines()
    assert len(lines) == 1 + MAX_REPORTED_PROBLEMS and "(the first ones; fix them and run again)" in lines[0]


def test_checksum_mismatch_is_refused(tmp_path):
    rel = SOURCE_FILES["svamp"].path
    (tmp_path / rel).parent.mkdir(parents=True)
    (tmp_path / rel).write_text((MIRROR / rel).read_text().replace("dvds", "DVDs", 1))
    with pytest.raises(DataError, match=r"SHA-256 .* does not match the pinned"):
        fetch_file("svamp", tmp_path, tmp_path / "dl")
    path, _ = fetch_file("svamp", tmp_path, tmp_path / "dl", verify=False)
    assert path == tmp_path / rel


def test_several_mirrors_are_searched_in_order(tmp_path, monkeypatch):
    """Datasets and published logs often live apart: data.mirror takes a list, $FTCOT_DATA_MIRROR
    folders separated as in PATH; a file in none of them is an error naming every place looked."""
    from ftcot.config import DataParams
    from ftcot.data.sources import resolve_mirror

    rel = SOURCE_FILES["svamp"].path
    logs, datasets = tmp_path / "logs", tmp_path / "datasets"
    logs.mkdir()
    (datasets / rel).parent.mkdir(parents=True)
    shutil.copyfile(MIRROR / rel, datasets / rel)
    path, _ = fetch_file("svamp", resolve_mirror([str(logs), str(datasets)]), tmp_path / "dl")
    assert path == datasets / rel
    monkeypatch.setenv("FTCOT_DATA_MIRROR", f"{logs}{os.pathsep}{datasets}")
    assert resolve_mirror(None) == [logs, datasets]
    assert resolve_mirror(str(logs)) == [logs]  # the param wins over the environment
    with pytest.raises(DataError, match=rf"none of the mirrors {logs}, {tmp_path / 'x'} has no {rel}"):
        fetch_file("svamp", [logs, tmp_path / "x"], tmp_path / "dl")
    assert DataParams(tasks=["svamp"], mirror=["a", "b"]).mirror == ["a", "b"]


@pytest.fixture
def mirror_server():
    """The mirror served over real HTTP on 127.0.0.1, counting requests."""
    hits: list[str] = []

    class Handler(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):
            hits.append(self.path)

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Handler, directory=str(MIRROR)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/", hits
    server.shutdown()


def test_download_verifies_and_caches(mirror_server, tmp_path, monkeypatch):
    base, hits = mirror_server
    source = SOURCE_FILES["addsub"]
    monkeypatch.setitem(SOURCE_FILES, "addsub", SourceFile(source.path, base + source.path, source.sha256))
    path, digest = fetch_file("addsub", None, tmp_path)
    assert path == tmp_path / source.path and digest == source.sha256
    fetch_file("addsub", None, tmp_path)  # cached: not downloaded again
    assert len(hits) == 1


def test_unreachable_url_is_named(tmp_path, monkeypatch):
    url = "http://127.0.0.1:9/zero_shot_cot/dataset/AddSub/AddSub.json"  # port 9: nothing listens
    monkeypatch.setitem(SOURCE_FILES, "addsub", SourceFile(SOURCE_FILES["addsub"].path, url, None))
    with pytest.raises(DataError, match=r"could not download http://127\.0\.0\.1:9/.*AddSub\.json after 1 tries"):
        fetch_file("addsub", None, tmp_path, retries=1)


def test_hub_source_through_datasets_load_dataset(tmp_path):
    folder = tmp_path / "gsm8k_local"
    folder.mkdir()
    rel = "grade-school-math/grade_school_math/data"
    (folder / "train.jsonl").write_text("".join((MIRROR / rel / "train.jsonl").read_text().splitlines(True)[:30]))
    (folder / "test.jsonl").write_text("".join((MIRROR / rel / "test.jsonl").read_text().splitlines(True)[:10]))
    params = parse_params({"data": {"tasks": ["gsm8k"], "gsm8k": {"source": "hub", "hub": {"path": str(folder)}}}})
    records, info = fetch_task("gsm8k", params.data, 0, tmp_path)
    assert info["source"] == "hub" and (info["train"], info["test"]) == (30, 10)
    files = fetched("gsm8k")[0]
    strip_id = lambda r: {k: v for k, v in r.items() if k != "id"}  # noqa: E731  (ids are padded to the size)
    hub_test = [strip_id(r) for r in records if r["split"] == "test"]
    assert hub_test == [strip_id(r) for r in files if r["split"] == "test"][:10]
    assert strip_id(records[29]) == strip_id(files[29])


def test_hub_commonsense_qa_rows_are_converted(tmp_path):
    folder = tmp_path / "csqa_local"
    folder.mkdir()
    rows = []
    for line in (MIRROR / "zero_shot_cot/dataset/CommonsenseQA/train_rand_split.jsonl").read_text().splitlines()[:5]:
        r = json.loads(line)
        choices = r["question"]["choices"]
        rows.append(
            {
                "id": r["id"],
                "question": r["question"]["stem"],
                "choices": {"label": [c["label"] for c in choices], "text": [c["text"] for c in choices]},
                "answerKey": r["answerKey"],
            }
        )
    for split in ("train", "validation"):
        (folder / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    params = parse_params(
        {"data": {"tasks": ["commonsense_qa"], "commonsense_qa": {"source": "hub", "hub": {"path": str(folder)}}}}
    )
    records, _ = fetch_task("commonsense_qa", params.data, 0, tmp_path)
    assert records[0]["question"] == fetched("commonsense_qa")[0][0]["question"]
    assert records[0]["answer"] == "A"


def test_hub_source_for_a_task_without_one_is_refused(tmp_path):
    with pytest.raises(Exception, match="svamp"):
        parse_params({"data": {"tasks": ["svamp"], "svamp": {"source": "hub"}}})


def test_fetch_stage_script(tmp_path):
    import os
    import subprocess
    import sys

    def run_fetch(task, mirror):
        env = {**os.environ, "FTCOT_DATA_MIRROR": str(mirror), "FTCOT_CACHE_DIR": str(tmp_path / "cache")}
        cmd = [sys.executable, str(REPO / "stages/fetch.py"), "--task", task, "--out", str(tmp_path / f"{task}.jsonl")]
        cmd += ["--metrics", str(tmp_path / f"{task}.json")]
        return subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True)

    ok = run_fetch("svamp", MIRROR)
    assert ok.returncode == 0, ok.stderr
    lines = (tmp_path / "svamp.jsonl").read_text().splitlines()
    assert len(lines) == 1000 and json.loads(lines[0])["id"] == "svamp-000"
    info = json.loads((tmp_path / "svamp.json").read_text())
    assert info["sha256"] == {SOURCE_FILES["svamp"].url: SOURCE_FILES["svamp"].sha256}

    bad = run_fetch("svamp", tmp_path / "empty-mirror")
    assert bad.returncode == 2
    assert "has no zero_shot_cot/dataset/SVAMP/SVAMP.json" in bad.stderr and "Traceback" not in bad.stderr
