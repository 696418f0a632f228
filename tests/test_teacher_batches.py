"""The Batch API at scale: steps split under the API's limits, submitted under a concurrency limit,
and every submitted batch resumed by the next run after a kill."""

import inspect
import os
import signal
import subprocess
import sys
import threading
import time

import pytest

from ftcot.teacher.base import CompletionRequest, TeacherError
from ftcot.teacher.cache import CompletionCache, cache_key
from ftcot.teacher.openai_compat import BATCH_MAX_REQUESTS, OpenAITeacher, split_batches
from ftcot.teacher.teaching import TeachRunStats, resolve
from ftcot.testing.fake_openai import FakeOpenAI, request_identity


@pytest.fixture(autouse=True)
def api_key(monkeypatch):
    monkeypatch.setenv("FAKE_KEY", "sk-test-not-a-secret")


def requests(n: int, tag: str = "q") -> list[CompletionRequest]:
    return [CompletionRequest(f"Q: {tag} {i}?\nA: Let's think step by step.", 0, 0.0, 8) for i in range(n)]


def batch_teacher(server, cache, **kw) -> OpenAITeacher:
    options = {"api_key_env": "FAKE_KEY", "batch": True, "batch_poll_seconds": 0.05, "batch_ledger": cache.batches}
    return OpenAITeacher(model="fake", base_url=server.base_url, **(options | kw))


def batch_sizes(server: FakeOpenAI) -> list[int]:
    return [len(server.files[b["input_file_id"]].splitlines()) for b in server.batches.values()]


def test_split_batches_respects_both_limits():
    lines = [(str(i), b"x" * (10 + i % 3)) for i in range(100)]
    for max_requests, max_bytes in ((7, 10**6), (1000, 100), (5, 40)):
        batches = split_batches(lines, max_requests, max_bytes)
        assert [item for batch in batches for item in batch] == lines  # all, in order, once
        assert all(len(b) <= max_requests and sum(len(x) + 1 for _, x in b) <= max_bytes for b in batches)
    with pytest.raises(TeacherError, match=r"over teacher\.batch_max_bytes"):
        split_batches([("k", b"x" * 100)], 10, 50)


def test_requests_over_the_limit_go_in_batches_of_at_most_the_limit_and_all_are_collected(tmp_path):
    # OpenAI's limit is 50,000 requests per batch (the default); 1,200 requests under a limit of 500
    # take the same path in a second, where 120,000 under the real one took half a minute.
    assert inspect.signature(OpenAITeacher).parameters["batch_max_requests"].default == BATCH_MAX_REQUESTS == 50_000
    with FakeOpenAI() as server:
        cache = CompletionCache(tmp_path)
        stats = TeachRunStats()
        teacher = batch_teacher(server, cache, batch_max_requests=500)
        got, _ = resolve(requests(1_200), teacher, cache, stats, desc="batch")
        assert sorted(batch_sizes(server)) == [200, 500, 500]
        assert stats.requests_sent == 1_200 == len(cache) and len(got) == 1_200
        assert all(c.text for c in got) and len(cache.batches) == 0  # nothing left pending
        assert sum(server.successes.values()) == 1_200 == len(server.successes)


def test_a_step_is_split_by_bytes_and_batches_run_under_the_concurrency_limit(tmp_path):
    with FakeOpenAI(batch_polls_before_done=3) as server:
        cache = CompletionCache(tmp_path)
        teacher = batch_teacher(server, cache, batch_max_bytes=20_000, batch_concurrency=2)
        in_flight, peak = [0], [0]
        original = server._create_batch, server._finish_batch

        def create(body):
            in_flight[0] += 1
            peak[0] = max(peak[0], in_flight[0])
            return original[0](body)

        def finish(batch):
            in_flight[0] -= 1
            return original[1](batch)

        server._create_batch, server._finish_batch = create, finish
        stats = TeachRunStats()
        resolve(requests(300), teacher, cache, stats)
        assert len(server.batches) > 3 and all(
            len(server.files[b["input_file_id"]]) <= 20_000 for b in server.batches.values()
        )
        assert peak[0] == 2 and stats.requests_sent == 300 == len(cache)


RUNNER = """
import sys
from ftcot.teacher.cache import CompletionCache
from ftcot.teacher.base import CompletionRequest
from ftcot.teacher.openai_compat import OpenAITeacher
from ftcot.teacher.teaching import TeachRunStats, resolve
cache = CompletionCache(sys.argv[2])
teacher = OpenAITeacher("fake", base_url=sys.argv[1], api_key_env="FAKE_KEY", batch=True, batch_poll_seconds=0.05,
                        batch_max_requests=500, batch_concurrency=2, batch_ledger=cache.batches)
reqs = [CompletionRequest(f"Q: k {i}?\\nA: Let's think step by step.", 0, 0.0, 8) for i in range(1200)]
resolve(reqs, teacher, cache, TeachRunStats())
"""


def test_a_run_killed_while_its_batches_are_in_progress_resumes_every_one_of_them(tmp_path):
    hold = threading.Event()
    with FakeOpenAI(hold_batches=hold) as server:
        proc = subprocess.Popen([sys.executable, "-c", RUNNER, server.base_url, str(tmp_path)], env=os.environ.copy())
        deadline = time.time() + 60
        while len(server.batches) < 2 and time.time() < deadline:
            time.sleep(0.05)
        time.sleep(0.5)  # the ledger is written right after the batch is created
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        assert len(server.batches) == 2 and server.uploads == 2  # the third waited for a free slot
        cache = CompletionCache(tmp_path)
        assert len(cache.batches) == 2 and len(cache) == 0  # remembered, not collected

        hold.set()
        teacher = batch_teacher(server, cache, batch_max_requests=500, batch_concurrency=2)
        stats = TeachRunStats()
        got, _ = resolve(requests(1200, "k"), teacher, cache, stats)
        assert server.uploads == 3 and len(server.batches) == 3  # the two resumed, only the last one submitted
        assert stats.requests_sent == 1200 == len(cache) and len(cache.batches) == 0
        assert all(count == 1 for count in server.successes.values()) and len(server.successes) == 1200
        assert all(c.text.startswith(" Reasoning about") for c in got)


def test_answers_of_a_resumed_batch_that_this_run_does_not_need_are_kept(tmp_path):
    hold = threading.Event()
    with FakeOpenAI(hold_batches=hold) as server:
        cache = CompletionCache(tmp_path)
        teacher = batch_teacher(server, cache, batch_max_requests=100)
        # A run that asked for 100 requests died after submitting; the next one needs only 10 of them.
        earlier = requests(100)
        asked = [
            (teacher._batch_line(k, r), k, r) for r in earlier for k in [cache_key(teacher.endpoint, teacher.model, r)]
        ]
        uploaded = server._upload(
            "multipart/form-data; boundary=b",
            b'--b\r\nContent-Disposition: form-data; name="file"; filename="r.jsonl"\r\n\r\n'
            + b"\n".join(line for line, _, _ in asked)
            + b"\n\r\n--b--\r\n",
        )
        batch = server._create_batch({"input_file_id": uploaded["id"], "endpoint": "/v1/chat/completions"})
        cache.batches.record(batch["id"], teacher.endpoint, teacher.model, [(k, r) for _, k, r in asked])
        hold.set()
        stats = TeachRunStats()
        resolve(earlier[:10], teacher, cache, stats)
        assert server.uploads == 1 and stats.requests_sent == 10
        assert len(cache) == 100 and len(cache.batches) == 0  # the other 90 paid answers are stored too
        assert all(server.successes[request_identity(teacher._body(r))] == 1 for r in earlier)


def test_a_run_killed_between_creating_a_batch_and_recording_it_finds_that_batch_again(tmp_path, monkeypatch):
    """The upload is recorded before its batch is created, so the next run looks the batch up by its
    input file (the Batch API's list) instead of creating, and paying for, a second one."""
    from ftcot.teacher.cache import BatchLedger

    with FakeOpenAI() as server:
        cache = CompletionCache(tmp_path)
        original = BatchLedger.rename
        one_at_a_time = {"batch_max_requests": 100, "batch_concurrency": 1}
        teacher = batch_teacher(server, cache, **one_at_a_time)

        def die(self, old, new):  # the process dies right after batches.create returned
            raise KeyboardInterrupt

        monkeypatch.setattr(BatchLedger, "rename", die)
        with pytest.raises(KeyboardInterrupt):
            resolve(requests(300), teacher, cache, TeachRunStats())
        keys = [cache_key(teacher.endpoint, teacher.model, r) for r in requests(300)]
        # Created on the server; in the ledger only as its upload.
        assert len(server.batches) == 1 and len(cache) == 0
        assert cache.batches.pending(teacher.endpoint, teacher.model, keys) == ["upload:file-0"]
        monkeypatch.setattr(BatchLedger, "rename", original)

        stats = TeachRunStats()
        got, _ = resolve(requests(300), batch_teacher(server, cache, **one_at_a_time), cache, stats)
        assert len(server.batches) == 3 and server.uploads == 3  # batch-1 found again, not created twice
        assert len(cache) == 300 == len(got) and len(cache.batches) == 0
        assert all(count == 1 for count in server.successes.values()) and len(server.successes) == 300


def test_an_upload_that_was_never_made_into_a_batch_is_created_once_by_the_next_run(tmp_path):
    with FakeOpenAI() as server:
        cache = CompletionCache(tmp_path)
        teacher = batch_teacher(server, cache)
        asked = [(cache_key(teacher.endpoint, teacher.model, r), r) for r in requests(20)]
        body = b"\n".join(teacher._batch_line(k, r) for k, r in asked) + b"\n"
        uploaded = server._upload(
            "multipart/form-data; boundary=b",
            b'--b\r\nContent-Disposition: form-data; name="file"; filename="r.jsonl"\r\n\r\n' + body + b"\r\n--b--\r\n",
        )
        cache.batches.record(f"upload:{uploaded['id']}", teacher.endpoint, teacher.model, asked)  # killed here
        got, _ = resolve(requests(20), teacher, cache, TeachRunStats())
        assert server.uploads == 1 and len(server.batches) == 1  # the file uploaded before is the batch's
        assert len(got) == 20 == len(cache) and len(cache.batches) == 0


def test_a_refused_key_stops_the_batches_not_yet_uploaded_and_is_not_printed(tmp_path):
    with FakeOpenAI(refuse_batch_key=True) as server:
        cache = CompletionCache(tmp_path)
        teacher = batch_teacher(server, cache, batch_max_requests=10, batch_concurrency=1)
        with pytest.raises(TeacherError, match=r"HTTP 401.*FAKE_KEY") as err:
            resolve(requests(200), teacher, cache, TeachRunStats())
        assert server.upload_attempts == 1  # not 20: the other batches were never uploaded
        assert "sk-test-not-a-secret" not in str(err.value) and server.refusals  # the server echoed it
        assert len(server.batches) == 0 and len(cache.batches) == 0
