"""Runs that share a teacher cache pay once per distinct request: two teach stages at once, an
orphaned stage beside its rerun, and a diversity sweep of two experiments at a time."""

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import yaml

from ftcot.data.synthetic import generate_records
from ftcot.data.tasks import get_task
from ftcot.testing.fake_openai import FakeOpenAI
from ftcot.testing.project import copy_project, project_env, run

REPO = Path(__file__).resolve().parents[1]


def stage_folder(root: Path, base_url: str, diversity: int, n_questions: int = 60) -> Path:
    """A folder in which stages/teach.py runs against ``base_url`` (train questions only)."""
    root.mkdir(parents=True, exist_ok=True)
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["data"]["num_questions"] = n_questions
    params["diversity"] = diversity
    params["teacher"].update(
        {"backend": "openai", "model": "fake", "base_url": base_url, "api_key_env": None, "concurrency": 4}
    )
    params["teacher"]["eval_test"] = False
    (root / "params.yaml").write_text(yaml.safe_dump(params))
    records = generate_records(get_task("coin_flip"), n_questions, 0, 0.7)
    (root / "records.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    return root


def teach_cmd() -> list[str]:
    cmd = [sys.executable, str(REPO / "stages/teach.py"), "--task", "coin_flip", "--records", "records.jsonl"]
    return [*cmd, "--out", "t.jsonl", "--test-out", "t.test.jsonl", "--metrics", "m.json"]


def start(folder: Path, cache: Path) -> subprocess.Popen:
    env = {**os.environ, "FTCOT_CACHE_DIR": str(cache)}
    return subprocess.Popen(teach_cmd(), cwd=folder, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def distinct_requests(server: FakeOpenAI) -> int:
    return len(server.attempts)


def test_two_teach_stages_at_once_pay_once_per_distinct_request(tmp_path):
    with FakeOpenAI(latency=0.02) as server:
        a = start(stage_folder(tmp_path / "d2", server.base_url, 2), tmp_path / "cache")
        b = start(stage_folder(tmp_path / "d3", server.base_url, 3), tmp_path / "cache")
        outs = [p.communicate(timeout=300) for p in (a, b)]
        assert [a.returncode, b.returncode] == [0, 0], outs
        # 42 train questions: samples 0-1 shared by both runs, sample 2 only D=3's; two steps each.
        assert distinct_requests(server) == 42 * 3 * 2
        assert sum(server.successes.values()) == distinct_requests(server)  # every one paid once
        runs = [json.loads((tmp_path / d / "m.run.json").read_text()) for d in ("d2", "d3")]
        assert sum(r["requests_sent"] for r in runs) == 42 * 3 * 2
        assert sum(r["from_other_runs"] for r in runs) > 0  # one run waited for the other's answers
        assert len((tmp_path / "d2/t.jsonl").read_text().splitlines()) == 84
        assert len((tmp_path / "d3/t.jsonl").read_text().splitlines()) == 126


def test_an_orphaned_stage_beside_its_rerun_pays_once_and_a_killed_one_is_taken_over(tmp_path):
    concurrency = 4
    with FakeOpenAI(latency=0.1) as server:
        folder = stage_folder(tmp_path / "p", server.base_url, 2, n_questions=100)  # 70 x 2 samples x 2 steps
        orphan = start(folder, tmp_path / "cache")
        deadline = time.time() + 120
        while sum(server.successes.values()) < 10 and time.time() < deadline:
            time.sleep(0.02)
        rerun = start(folder, tmp_path / "cache")  # the same stage again, while the first still runs
        lines = []
        reader = threading.Thread(target=lambda: lines.extend(rerun.stderr), daemon=True)
        reader.start()
        while not any("waiting for them instead of paying twice" in line for line in lines) and time.time() < deadline:
            time.sleep(0.02)
        waited_at = sum(server.successes.values())
        while sum(server.successes.values()) < waited_at + 20 and time.time() < deadline:
            time.sleep(0.02)
        orphan.send_signal(signal.SIGKILL)  # dies holding claims: the rerun takes them over
        orphan.wait()
        assert rerun.wait(timeout=300) == 0, "".join(lines)
        reader.join(timeout=10)
        assert len((folder / "t.jsonl").read_text().splitlines()) == 140
        assert distinct_requests(server) == 280
        # Paid once each, except at most the requests in flight when the orphan was killed.
        assert sum(server.successes.values()) <= 280 + concurrency
        assert sum(c > 1 for c in server.successes.values()) <= concurrency
        run_info = json.loads((folder / "m.run.json").read_text())
        assert run_info["from_other_runs"] >= 20 - concurrency  # waited for, while the orphan lived
        assert 0 < run_info["requests_sent"] < 280  # and took over the rest


def test_a_cache_file_that_is_not_a_database_is_kept_aside_and_the_stage_goes_on(tmp_path):
    folder = stage_folder(tmp_path / "p", "http://127.0.0.1:9/v1", 1, n_questions=10)
    (tmp_path / "cache/teacher").mkdir(parents=True)
    (tmp_path / "cache/teacher/completions.sqlite3").write_bytes(b"\x00garbage" * 1000)
    done = subprocess.run(
        teach_cmd(), cwd=folder, env={**os.environ, "FTCOT_CACHE_DIR": str(tmp_path / "cache")}, capture_output=True
    )
    stderr = done.stderr.decode()
    assert done.returncode == 2 and "Traceback" not in stderr
    assert stderr.count("was damaged") == 1 and "kept as" in stderr and "Move it aside" not in stderr
    assert "error: the teacher endpoint" in stderr  # past the cache, on to the (unreachable) teacher
    assert (tmp_path / "cache/teacher/completions.sqlite3.damaged-1").read_bytes() == b"\x00garbage" * 1000


@pytest.mark.slow
def test_a_sweep_of_two_experiments_at_a_time_pays_the_teacher_once_and_reuses_them(tmp_path):
    with FakeOpenAI() as server:
        params = yaml.safe_load((REPO / "params.yaml").read_text())
        params["data"].update({"tasks": ["coin_flip"], "num_questions": 20})
        params["teacher"].update({"backend": "openai", "model": "fake", "base_url": server.base_url})
        params["teacher"].update({"api_key_env": None, "concurrency": 2})
        params["student"].update(
            {
                "tiny": {**params["student"]["tiny"], "n_layer": 1, "n_head": 2, "n_embd": 32},
                "epochs": 1,
                "max_length": 96,
            }
        )
        params["evaluate"].update({"max_new_tokens": 16})
        params["methods"]["finetune"] = ["ft_cot"]
        root = copy_project(tmp_path / "project", yaml.safe_dump(params, sort_keys=False))
        env = project_env(root)
        sweep = [sys.executable, "scripts/sweep.py", "--set", "diversity=2,3", "--jobs", "2"]
        run(sweep, root, env)
        record = json.loads((root / "metrics/sweeps/diversity.json").read_text())
        assert record["keys"] == ["diversity"] and "diversity" not in record["params"]
        ft_cot = [p for p in record["points"] if p["method"] == "ft_cot"]
        assert [p["values"] for p in ft_cot] == [{"diversity": 2}, {"diversity": 3}]
        report = (root / "report/report.md").read_text()
        assert "### diversity" in report and (root / "report/sweep_diversity.png").read_bytes().startswith(b"\x89PNG")
        # 14 train questions x 3 samples (D=2 and 3 share samples 0-1), 6 test questions, and the workspace's
        # own greedy D=1 run that the sweep's `dvc repro report` makes; two steps each: every distinct request
        # answered once, although both experiments asked at the same time.
        assert distinct_requests(server) == (14 * 3 + 14 + 6) * 2
        assert sum(server.successes.values()) == distinct_requests(server)
        # Again: the experiments of this commit exist, nothing is queued or asked, the same points come back.
        again = run(sweep, root, env)
        assert "exp run --queue" not in again.stderr and sum(server.successes.values()) == distinct_requests(server)
        assert json.loads((root / "metrics/sweeps/diversity.json").read_text()) == record
