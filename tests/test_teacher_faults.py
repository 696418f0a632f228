"""What the teacher does when a server answers in unexpected shapes, refuses every request, or echoes
the key: nothing wrong is cached, nothing more is sent, and the key is printed nowhere."""

import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from ftcot.config import ConfigError, parse_params
from ftcot.data.synthetic import generate_records
from ftcot.data.tasks import get_task
from ftcot.redaction import RedactingFilter, redact, register_secret
from ftcot.teacher.base import CompletionRequest, TeacherError
from ftcot.teacher.cache import CompletionCache
from ftcot.teacher.openai_compat import OpenAITeacher, SystematicFailure, parse_completion
from ftcot.teacher.teaching import TeachRunStats, resolve, teach
from ftcot.testing.fake_openai import SHAPES, FakeOpenAI

REPO = Path(__file__).resolve().parents[1]
KEY = "sk-test-echoed-by-the-server-0123456789"


@pytest.fixture(autouse=True)
def api_key(monkeypatch):
    monkeypatch.setenv("FAKE_KEY", KEY)


def questions(n=20):
    return [r for r in generate_records(get_task("coin_flip"), n, 0, 0.7) if r["split"] == "train"]


def teacher_for(server, **kw) -> OpenAITeacher:
    options = {"api_key_env": "FAKE_KEY", "concurrency": 4, "timeout": 2.0, "max_retries": 3} | kw
    return OpenAITeacher(model="fake", base_url=server.base_url, **options)


def requests(n: int) -> list[CompletionRequest]:
    return [CompletionRequest(f"Q: question {i}?\nA: Let's think step by step.", 0, 0.0, 16) for i in range(n)]


def stored_texts(cache: CompletionCache) -> list[object]:
    import sqlite3

    with sqlite3.connect(cache.path) as db:
        return [json.loads(blob)["text"] for (blob,) in db.execute("SELECT record FROM completions")]


def test_content_parts_are_joined_and_other_shapes_are_unreadable():
    body = {"choices": [{"message": {"content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]}}]}
    assert parse_completion(body, "chat").text == "ab"
    with_image = {"choices": [{"message": {"content": [{"type": "image_url"}, {"type": "text", "text": "c"}]}}]}
    assert parse_completion(with_image, "chat").text == "c"
    assert parse_completion({"choices": [{"text": None}]}, "completions").text == ""  # absent: an empty answer
    unreadable = [
        {"choices": [{"message": {"content": {"value": "x"}}}]},
        {"choices": [{"message": {"content": [{"type": "image_url"}]}}]},
        {"choices": [{"message": {"content": ["x"]}}]},
        {"choices": ["x"]},
        {"choices": []},
        {"choices": [{"message": {"content": "x"}}], "usage": [1, 2]},
        {"choices": [{"message": {"content": "x"}}], "usage": {"completion_tokens": "12"}},
        {"choices": [{"message": {"content": "x"}}], "usage": {"prompt_tokens": True}},
        {"choices": [{"message": {"content": "x"}, "finish_reason": 3}]},
        ["not", "an", "object"],
    ]
    for payload in unreadable:
        with pytest.raises(ValueError):
            parse_completion(payload, "chat")


@pytest.mark.parametrize("shape", SHAPES)
def test_a_shape_on_the_first_try_is_retried_and_only_text_is_cached(tmp_path, shape):
    with FakeOpenAI(faults=lambda identity, attempt: shape if attempt == 0 else None) as server:
        cache = CompletionCache(tmp_path)
        stats = TeachRunStats()
        got, _ = resolve(requests(6), teacher_for(server), cache, stats)
        assert stats.failed == 0 and all(isinstance(c.text, str) and c.text for c in got)
        attempts = sum(server.attempts.values())
        assert attempts == (6 if shape == "content_parts" else 12)  # readable at once, or asked again
        assert all(isinstance(t, str) for t in stored_texts(cache)) and len(cache) == 6


def test_a_server_that_only_sends_unreadable_shapes_blocks_nothing_once_fixed(tmp_path):
    broken = {"on": True}
    with FakeOpenAI(faults=lambda identity, attempt: "content_object" if broken["on"] else None) as server:
        cache = CompletionCache(tmp_path)
        with pytest.raises(TeacherError, match=r"(?s)6 of 6 teacher requests failed.*unreadable response"):
            resolve(requests(6), teacher_for(server, max_retries=1), cache, TeachRunStats())
        assert len(cache) == 0  # nothing of the wrong shape was stored
        broken["on"] = False  # the server is fixed: the next run just works
        stats = TeachRunStats()
        resolve(requests(6), teacher_for(server), cache, stats)
        assert stats.requests_sent == 6 and len(cache) == 6


@pytest.mark.parametrize(
    ("refusal", "hint"),
    [
        ("401", "environment variable FAKE_KEY (teacher.api_key_env)"),
        ("403", "environment variable FAKE_KEY (teacher.api_key_env)"),
        ("404", "check teacher.model ('fake') and teacher.api ('chat': /chat/completions)"),
        ("quota", "no quota left"),
    ],
)
def test_a_systematic_refusal_stops_after_a_handful_with_one_redacted_message(tmp_path, refusal, hint):
    with FakeOpenAI(faults=lambda identity, attempt: refusal) as server:
        teacher = teacher_for(server, max_retries=0)
        cache = CompletionCache(tmp_path)
        with pytest.raises(SystematicFailure) as err:
            resolve(requests(200), teacher, cache, TeachRunStats())
        message = str(err.value)
        sent = sum(server.attempts.values())
        assert sent <= teacher.fail_fast_after + teacher.concurrency  # not 200
        assert hint in message and "refused" in message and f"Stopped without sending the other {200 - sent}" in message
        assert any(KEY in r for r in server.refusals)  # the server did echo the key ...
        assert KEY not in message and "[redacted]" in message  # ... and it was not repeated
        assert len(cache) == 0


def test_a_stage_against_a_server_that_refuses_the_key_stops_early_and_prints_no_key(tmp_path):
    with FakeOpenAI(faults=lambda identity, attempt: "401") as server:
        params = yaml.safe_load((REPO / "params.yaml").read_text())
        params["data"]["num_questions"] = 200
        params["teacher"].update({"backend": "openai", "model": "fake", "base_url": server.base_url})
        params["teacher"].update({"api_key_env": "FAKE_KEY", "max_retries": 0, "eval_test": False})
        (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
        records = generate_records(get_task("coin_flip"), 200, 0, 0.7)
        (tmp_path / "records.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
        env = {**os.environ, "FTCOT_CACHE_DIR": str(tmp_path / "cache"), "FAKE_KEY": KEY}
        cmd = [sys.executable, str(REPO / "stages/teach.py"), "--task", "coin_flip", "--records", "records.jsonl"]
        cmd += ["--out", "t.jsonl", "--test-out", "t.test.jsonl", "--metrics", "m.json"]
        done = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True)
        assert done.returncode == 2 and "Traceback" not in done.stderr
        assert done.stderr.count("error: the teacher endpoint") == 1 and "FAKE_KEY" in done.stderr
        assert KEY not in done.stderr + done.stdout
        assert sum(server.attempts.values()) <= 5 + params["teacher"]["concurrency"]
        assert KEY not in (tmp_path / "m.run.json").read_text()


def test_credentials_in_base_url_are_refused_without_being_printed():
    url = "http://user:hunter2-secret@127.0.0.1:9/v1"
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["teacher"]["base_url"] = url
    with pytest.raises(ConfigError) as err:
        parse_params(params)
    assert "teacher.base_url: Value error, must not hold credentials" in str(err.value)
    assert "teacher.api_key_env" in str(err.value) and "hunter2" not in str(err.value)
    with pytest.raises(TeacherError) as err:
        OpenAITeacher(model="m", base_url=url, api_key_env="FAKE_KEY")
    assert "hunter2" not in str(err.value) and "http://***@127.0.0.1:9/v1" in str(err.value)


def test_the_preflight_uses_the_requests_timeout_and_transport(monkeypatch):
    import openai

    made = []
    real = openai.DefaultAioHttpClient

    def spy(*args, **kw):
        made.append(kw.get("timeout"))
        return real(*args, **kw)

    monkeypatch.setattr(openai, "DefaultAioHttpClient", spy)
    with FakeOpenAI() as server:
        teacher_for(server, timeout=7.5).preflight()
    assert made == [7.5]


def test_the_preflight_names_a_refused_key_without_printing_it():
    with FakeOpenAI() as server:
        original = server.server.RequestHandlerClass.do_GET

        def refuse(handler):
            key = handler.headers.get("Authorization", "").removeprefix("Bearer ")
            handler._json(401, {"error": {"message": f"Incorrect API key provided: {key}"}})

        server.server.RequestHandlerClass.do_GET = refuse
        try:
            with pytest.raises(TeacherError) as err:
                teacher_for(server).preflight()
        finally:
            server.server.RequestHandlerClass.do_GET = original
    assert "FAKE_KEY (teacher.api_key_env)" in str(err.value) and KEY not in str(err.value)


def test_log_records_and_tracebacks_are_redacted(caplog):
    register_secret("sk-another-secret-value")
    record = logging.LogRecord("x", logging.WARNING, __file__, 1, "server said %s", ("sk-another-secret-value!",), None)
    try:
        raise RuntimeError("boom sk-another-secret-value")
    except RuntimeError:
        record.exc_info = sys.exc_info()
    assert RedactingFilter().filter(record)
    assert record.getMessage() == "server said [redacted]!" and "sk-another" not in record.exc_text
    assert redact("a sk-another-secret-value b") == "a [redacted] b"
    # A stage's uncaught error shows its traceback, redacted.
    code = (
        "import os\nfrom ftcot.redaction import register_secret\nfrom ftcot.stage import run_stage\n"
        "register_secret(os.environ['FAKE_KEY'])\n"
        "def main():\n    raise KeyError('server said ' + os.environ['FAKE_KEY'])\nrun_stage(main)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 1 and "Traceback" in done.stderr and "KeyError" in done.stderr
    assert KEY not in done.stderr and "[redacted]" in done.stderr


def test_teach_output_of_content_parts_is_text(tmp_path):
    with FakeOpenAI(faults=lambda identity, attempt: "content_parts") as server:
        out, _ = teach(questions(6), teacher_for(server), CompletionCache(tmp_path), 1, 0.7, 64)
    assert all(isinstance(r["rationale"], str) and r["rationale"].startswith("Reasoning about") for r in out)
    assert all(r["answer_completion"] == " Yes." for r in out)
