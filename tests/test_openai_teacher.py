"""The OpenAI-compatible teacher against real HTTP servers on 127.0.0.1 (the fault-injecting stand-in)."""

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from ftcot.data.synthetic import generate_records
from ftcot.data.tasks import get_task
from ftcot.teacher.base import CompletionRequest, TeacherError
from ftcot.teacher.cache import CompletionCache
from ftcot.teacher.openai_compat import OpenAITeacher
from ftcot.teacher.teaching import TeachRunStats, resolve, teach
from ftcot.testing.fake_openai import FAULTS, FakeOpenAI

REPO = Path(__file__).resolve().parents[1]


def questions(n=30):
    return [r for r in generate_records(get_task("coin_flip"), n, 0, 0.7) if r["split"] == "train"]


def cache_lines(cache: CompletionCache) -> list[str]:
    """Every stored record's key, read from the database file itself."""
    with sqlite3.connect(cache.path) as db:
        return [row[0] for row in db.execute("SELECT key FROM completions")]


def cache_bytes(directory: Path) -> bytes:
    """The cache's files as they are on disk (the database and its write-ahead log)."""
    return b"".join(p.read_bytes() for p in sorted(directory.glob("completions.sqlite3*")))


def every_fault_once(identity: str, attempt: int) -> str | None:
    """Each request meets one kind of fault (or none) on its first try, then succeeds."""
    kind = int(identity, 16) % (len(FAULTS) + 1)
    return FAULTS[kind] if attempt == 0 and kind < len(FAULTS) else None


@pytest.fixture(autouse=True)
def api_key(monkeypatch):
    monkeypatch.setenv("FAKE_KEY", "sk-test-not-a-secret")


def teacher_for(server, **kw) -> OpenAITeacher:
    options = {"api_key_env": "FAKE_KEY", "concurrency": 8, "timeout": 1.0, "max_retries": 4} | kw
    return OpenAITeacher(model="fake", base_url=server.base_url, **options)


@pytest.mark.parametrize("api", ["chat", "completions"])
def test_every_completion_is_cached_exactly_once_despite_faults(tmp_path, api):
    with FakeOpenAI(faults=every_fault_once, slow_seconds=1.5) as server:
        cache = CompletionCache(tmp_path)
        stats = TeachRunStats()
        qs = questions()
        out, stats = teach(qs, teacher_for(server, api=api), cache, 2, 0.7, 64, stats)
        n = 2 * 2 * len(qs)  # two samples, two steps each
        assert len(out) == 2 * len(qs) and stats.requests_sent == n and stats.failed == 0
        keys = cache_lines(cache)
        assert len(keys) == n == len(set(keys))  # each completion stored once
        assert all(c == 1 for c in server.successes.values()) and sum(server.successes.values()) >= n - 8
        assert {every_fault_once(i, 0) for i in server.attempts} >= set(FAULTS)  # every fault was met
        assert all(r["answer_completion"] == " Yes." for r in out)

        # Samples of the same prompt are distinct even though the server ignores n.
        assert len({r["rationale"] for r in out if r["question_id"] == qs[0]["id"]}) == 2

        before = sum(server.attempts.values())
        again, stats2 = teach(qs, teacher_for(server, api=api), cache, 2, 0.7, 64)
        assert again == out and stats2.requests_sent == 0 and sum(server.attempts.values()) == before


def test_raising_diversity_sends_only_new_samples(tmp_path):
    with FakeOpenAI() as server:
        cache = CompletionCache(tmp_path)
        qs = questions()
        teach(qs, teacher_for(server), cache, 4, 0.7, 64)
        before = sum(server.attempts.values())
        _, stats = teach(qs, teacher_for(server), cache, 8, 0.7, 64)
        assert stats.requests_sent == 4 * 2 * len(qs) == sum(server.attempts.values()) - before


def test_endpoint_is_part_of_the_key(tmp_path):
    cache = CompletionCache(tmp_path)
    with FakeOpenAI() as a, FakeOpenAI() as b:
        teach(questions(10), teacher_for(a), cache, 1, 0.7, 64)
        _, stats = teach(questions(10), teacher_for(b), cache, 1, 0.7, 64)
        assert stats.requests_sent > 0 and sum(b.attempts.values()) == stats.requests_sent


def test_persistent_failures_are_listed_and_successes_kept(tmp_path):
    doomed = set()

    def always_500_for_some(identity, attempt):
        if int(identity, 16) % 4 == 0:
            doomed.add(identity)
            return "500"
        return None

    with FakeOpenAI(faults=always_500_for_some) as server:
        cache = CompletionCache(tmp_path)
        requests = [CompletionRequest(f"Q: question {i}?\nA: Let's think step by step.", 0, 0.0, 32) for i in range(40)]
        with pytest.raises(TeacherError, match=r"(?s)teacher requests failed after retries.*HTTP 500") as err:
            # A generous timeout: on a loaded machine a 1 s one can expire on an answer the server sent, and
            # the attempts counted would then be the timeouts', not the 500s' this test is about.
            resolve(requests, teacher_for(server, max_retries=1, timeout=30.0), cache, TeachRunStats())
        n_failed = int(str(err.value).split(" of ")[0])
        assert n_failed == len(doomed) > 0
        assert len(cache) == 40 - n_failed  # everything that succeeded is cached
        assert all(server.attempts[i] == 2 for i in doomed)  # bounded: 1 try + 1 retry


def test_missing_key_and_unreachable_endpoint_fail_before_any_request(tmp_path, monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    with pytest.raises(TeacherError, match=r"OPENAI_API_KEY \(teacher\.api_key_env\) is not set"):
        OpenAITeacher(model="m", base_url="http://127.0.0.1:9/v1")
    teacher = OpenAITeacher(model="m", base_url="http://127.0.0.1:9/v1", api_key_env="FAKE_KEY", max_retries=0)
    requests = [CompletionRequest("Q: x?\nA: Let's think step by step.", 0, 0.0, 8)]
    with pytest.raises(TeacherError, match=r"http://127\.0\.0\.1:9/v1 \(teacher\.base_url\) is unreachable"):
        resolve(requests, teacher, CompletionCache(tmp_path), TeachRunStats())


def test_empty_and_refused_responses_are_recorded_not_fatal(tmp_path):
    def empty(prompt, body):
        return ""

    with FakeOpenAI(answer=empty) as server:
        out, stats = teach(questions(10), teacher_for(server), CompletionCache(tmp_path), 1, 0.7, 64)
        assert stats.failed == 0 and all(r["rationale"] == "" for r in out)


def test_reasoning_content_is_kept_as_the_rationale(tmp_path):
    with FakeOpenAI() as server:
        original = server.completion_body

        def with_reasoning(body, chat):
            reply = original(body, chat)
            reply["choices"][0]["message"]["reasoning_content"] = "First, think hard."
            return reply

        server.completion_body = with_reasoning
        out, _ = teach(questions(6), teacher_for(server), CompletionCache(tmp_path), 1, 0.7, 64)
        assert {r["rationale"] for r in out} == {"First, think hard."}


def test_batch_mode_submits_polls_collects_and_resumes(tmp_path):
    with FakeOpenAI(batch_polls_before_done=2) as server:
        cache = CompletionCache(tmp_path / "cache")
        teacher = teacher_for(server, batch=True, batch_poll_seconds=0.05, batch_ledger=cache.batches)
        qs = questions(20)
        out, stats = teach(qs, teacher, cache, 2, 0.7, 64)
        assert stats.requests_sent == 2 * 2 * len(qs) and len(cache) == stats.requests_sent
        assert server.uploads == 2 and len(server.batches) == 2  # one batch per step
        assert len(cache.batches) == 0  # nothing pending
        again, stats = teach(qs, teacher, cache, 2, 0.7, 64)
        assert again == out and stats.requests_sent == 0 and server.uploads == 2


def write_stage_project(root: Path, base_url: str, n_questions: int, concurrency: int) -> None:
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["data"]["num_questions"] = n_questions
    params["diversity"] = 2
    params["teacher"].update(
        {
            "backend": "openai",
            "model": "fake",
            "base_url": base_url,
            "api_key_env": "FAKE_KEY",
            "concurrency": concurrency,
            "eval_test": False,  # train questions only: the counts below
        }
    )
    (root / "params.yaml").write_text(yaml.safe_dump(params))
    records = generate_records(get_task("coin_flip"), n_questions, 0, 0.7)
    (root / "records.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))


def test_kill_9_mid_run_loses_at_most_the_requests_in_flight(tmp_path):
    concurrency = 4
    with FakeOpenAI(latency=0.05) as server:
        write_stage_project(tmp_path, server.base_url, 200, concurrency)  # 140 train x 2 samples x 2 steps
        env = {**os.environ, "FTCOT_CACHE_DIR": str(tmp_path / "cache"), "FAKE_KEY": "sk-test"}
        cmd = [sys.executable, str(REPO / "stages/teach.py"), "--task", "coin_flip", "--records", "records.jsonl"]
        cmd += ["--out", "t.jsonl", "--test-out", "t.test.jsonl", "--metrics", "m.json"]
        proc = subprocess.Popen(cmd, cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.time() + 60
        while sum(server.successes.values()) < 100 and time.time() < deadline:
            time.sleep(0.02)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        answered_before_kill = sum(server.successes.values())
        assert 0 < answered_before_kill < 560 and not (tmp_path / "t.jsonl").exists()

        done = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True)
        assert done.returncode == 0, done.stderr
        assert len((tmp_path / "t.jsonl").read_text().splitlines()) == 280
        cache = CompletionCache(tmp_path / "cache" / "teacher")
        assert len(cache) == 560
        # Server-side: every request answered once, except at most those in flight at the kill.
        assert sum(server.successes.values()) <= 560 + concurrency
        assert sum(c > 1 for c in server.successes.values()) <= concurrency
        run = json.loads((tmp_path / "m.run.json").read_text())
        assert run["cache_hits"] >= answered_before_kill - concurrency
        metrics = json.loads((tmp_path / "m.json").read_text())
        assert metrics["completions"] == 560 and metrics["prompt_tokens"] > 0
        assert "sk-test" not in (tmp_path / "t.jsonl").read_text() + json.dumps(metrics)
        assert b"sk-test" not in cache_bytes(tmp_path / "cache" / "teacher")
        # Quiet: no line per HTTP request from the client library, one line per result of ours.
        assert "HTTP Request" not in done.stderr and "coin_flip: this run sent" in done.stderr
