"""The completion cache against a hostile disk: damaged records, damaged files, old files, several
processes, runs that claim the same answers, and caches this process may not write."""

import ctypes
import json
import logging
import os
import re
import sqlite3
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import yaml

from ftcot.data.synthetic import generate_records
from ftcot.data.tasks import get_task
from ftcot.teacher.base import Completion, CompletionRequest
from ftcot.teacher.cache import CacheError, CompletionCache, cache_key, encode_record, record_checksum
from ftcot.teacher.teaching import TeachRunStats, resolve, teach
from ftcot.testing.fake_openai import FakeOpenAI
from ftcot.testing.teachers import CountingTeacher, EchoTeacher

REPO = Path(__file__).resolve().parents[1]


def train(n=20):
    return [r for r in generate_records(get_task("coin_flip"), n, 0, 0.7) if r["split"] == "train"]


def request(i: int) -> CompletionRequest:
    return CompletionRequest(f"Q: question {i}?\nA: Let's think step by step.", 0, 0.0, 16)


def fill(directory: Path, n: int) -> dict[str, CompletionRequest]:
    with CompletionCache(directory) as cache:
        keys = {}
        for i in range(n):
            key = cache_key("e", "m", request(i))
            cache.put_completion(key, "e", "m", request(i), Completion(f"Reasoning number {i:04d}.", "stop", 5, 3))
            keys[key] = request(i)
    return keys


def rewrite(directory: Path, key: str, blob: bytes, checksum: str | None = None) -> None:
    """Stores ``blob`` under ``key`` as a buggy or hostile writer would (checksum: kept or given)."""
    with sqlite3.connect(directory / "completions.sqlite3") as db:
        if checksum is None:
            db.execute("UPDATE completions SET record = ? WHERE key = ?", (blob, key))
        else:
            db.execute("UPDATE completions SET record = ?, checksum = ? WHERE key = ?", (blob, checksum, key))


def stored(directory: Path, key: str) -> bytes:
    with sqlite3.connect(directory / "completions.sqlite3") as db:
        return db.execute("SELECT record FROM completions WHERE key = ?", (key,)).fetchone()[0]


def test_letters_changed_inside_the_file_are_caught_and_the_rationale_asked_again(tmp_path, caplog):
    qs = train()
    teacher = CountingTeacher()
    with CompletionCache(tmp_path) as cache:
        original, _ = teach(qs, teacher, cache, 1, 0.7, 128)
    # Change letters of one rationale in the database file itself: still valid JSON, same length.
    victim = original[0]["rationale"]
    db_file = tmp_path / "completions.sqlite3"
    raw = db_file.read_bytes()
    assert raw.count(victim.encode()) >= 1
    db_file.write_bytes(raw.replace(victim.encode(), victim.upper().encode(), 1))

    teacher.sent.clear()
    stats = TeachRunStats()
    with caplog.at_level(logging.WARNING, logger="ftcot"), CompletionCache(tmp_path) as cache:
        again, stats = teach(qs, teacher, cache, 1, 0.7, 128, stats)
    assert again == original  # never the altered rationale
    assert stats.damaged_cache_records >= 1 and len(teacher.sent) == stats.damaged_cache_records
    warnings = [r.getMessage() for r in caplog.records if "failed its check" in r.getMessage()]
    assert len(warnings) == 1 and str(db_file) in warnings[0]  # reported once, with the file


def test_a_0xff_byte_a_missing_field_a_wrong_type_or_another_keys_record_is_a_miss(tmp_path):
    keys = fill(tmp_path, 5)
    k0, k1, k2, k3, k4 = keys
    rewrite(tmp_path, k0, stored(tmp_path, k0).replace(b"Reasoning", b"Reason\xffng"))  # checksum kept: mismatch
    blob = stored(tmp_path, k1).replace(b"Reasoning", b"Reason\xffng")
    rewrite(tmp_path, k1, blob, record_checksum(k1, blob))  # a valid checksum over bytes that do not decode
    record = json.loads(stored(tmp_path, k2))
    del record["finish_reason"]
    blob = json.dumps(record).encode()
    rewrite(tmp_path, k2, blob, record_checksum(k2, blob))
    # What the old code cached from a server sending content parts: text that is not a string.
    record = json.loads(stored(tmp_path, k3)) | {"text": [{"type": "text", "text": "x"}]}
    blob = json.dumps(record).encode()
    rewrite(tmp_path, k3, blob, record_checksum(k3, blob))
    other = stored(tmp_path, k4)  # k4's whole record, filed under another key with k4's checksum
    with sqlite3.connect(tmp_path / "completions.sqlite3") as db:
        db.execute("INSERT INTO completions VALUES (?, ?, ?)", ("f" * 64, record_checksum(k4, other), other))

    cache = CompletionCache(tmp_path)
    found = cache.get_many([*keys, "f" * 64])
    assert set(found) == {k4}
    assert set(cache.damaged) == {k0, k1, k2, k3, "f" * 64}
    assert cache.damaged[k0] == "its checksum does not match its content"
    assert cache.damaged[k1] == "not valid UTF-8 JSON"
    assert cache.damaged[k2] == "missing field(s) ['finish_reason']"
    assert "not a string" in cache.damaged[k3]
    assert cache.damaged["f" * 64] == "its checksum does not match its content"
    with pytest.raises(ValueError, match="is not the cache key of this request"):
        cache.put_completion("f" * 64, "e", "m", request(9), Completion("x", "stop", 1, 1))

    # Asked again, stored anew over the damaged records, then served.
    teacher = EchoTeacher()
    stats = TeachRunStats()
    got, _ = resolve(list(keys.values()), teacher, CompletionCache(tmp_path), stats)  # a new run
    assert {r.prompt for r in teacher.sent} == {keys[k].prompt for k in (k0, k1, k2, k3)}
    assert stats.damaged_cache_records == 4 and stats.requests_sent == 4 and stats.cache_hits == 1
    assert [c.text for c in got] == [*(f"fresh Q: question {i}?" for i in range(4)), "Reasoning number 0004."]
    assert set(CompletionCache(tmp_path).get_many(keys)) == set(keys)  # stored anew, all whole


def test_a_file_that_is_not_a_database_is_kept_aside_and_a_new_store_takes_its_place(tmp_path, caplog):
    (tmp_path / "completions.sqlite3").write_bytes(b"\xff" * 4096)
    with caplog.at_level(logging.WARNING, logger="ftcot"):
        cache = CompletionCache(tmp_path)
    assert len(cache) == 0 and (tmp_path / "completions.sqlite3.damaged-1").read_bytes() == b"\xff" * 4096
    (warning,) = [r.getMessage() for r in caplog.records if "was damaged" in r.getMessage()]
    assert "file is not a database" in warning and "0 answers were saved" in warning and "damaged-1" in warning
    keys = fill(tmp_path, 2)  # the new store works
    assert set(CompletionCache(tmp_path).get_many(keys)) == set(keys)


def legacy_cache(directory: Path) -> tuple[list[str], list[bytes]]:
    """An old ``completions.jsonl`` of 4 lines (the 2nd and 3rd damaged) and a torn 5th: keys, lines."""
    good = []
    lines = []
    for i in range(4):
        r = request(i)
        key = cache_key("e", "m", r)
        blob, _ = encode_record(key, "e", "m", r, Completion(f"old {i}", "stop", 2, 2))
        lines.append(b'{"key":"' + key.encode() + b'",' + blob[1:] + b"\n")
        good.append(key)
    lines[1] = lines[1].replace(b"old 1", b"old \xff")  # not UTF-8
    lines[2] = lines[2].replace(b'"finish_reason":"stop",', b"")  # a field missing
    lines.append(b'{"key":"' + b"a" * 64 + b'","text":"torn')  # a crash mid-write
    (directory / "completions.jsonl").write_bytes(b"".join(lines))
    return good, lines


def test_the_old_jsonl_cache_with_damaged_lines_is_moved_in(tmp_path, caplog):
    good, lines = legacy_cache(tmp_path)
    with caplog.at_level(logging.INFO, logger="ftcot"):
        cache = CompletionCache(tmp_path)
    assert set(cache.get_many(good)) == {good[0], good[3]} and len(cache) == 2
    assert cache.get_completion(good[3]).text == "old 3"
    assert any(
        "2 completions moved from" in r.getMessage() and "3 unreadable lines" in r.getMessage() for r in caplog.records
    )
    assert (tmp_path / "completions.jsonl.migrated").read_bytes() == b"".join(lines)  # paid answers never deleted
    assert len(CompletionCache(tmp_path)) == 2  # moved once


APPENDER = """
import sys
import threading
from ftcot.teacher.cache import CompletionCache
from ftcot.teacher.base import CompletionRequest
from ftcot.teacher.base import Completion
from ftcot.teacher.cache import cache_key
worker, n = int(sys.argv[2]), int(sys.argv[3])
cache = CompletionCache(sys.argv[1])
for i in range(n):
    j = i if i % 2 else worker * n + i  # odd keys shared by every worker, even keys its own
    r = CompletionRequest(f"Q: {j}?", 0, 0.0, 8)
    cache.put_completion(cache_key("e", "m", r), "e", "m", r, Completion(f"answer {j} " * 20, "stop", 1, 1))
"""


def test_several_processes_append_at_once_and_every_record_stays_whole(tmp_path):
    n, workers = 400, 4
    procs = [subprocess.Popen([sys.executable, "-c", APPENDER, str(tmp_path), str(w), str(n)]) for w in range(workers)]
    assert [p.wait(timeout=120) for p in procs] == [0] * workers
    cache = CompletionCache(tmp_path)
    expected = {j for w in range(workers) for i in range(n) for j in [i if i % 2 else w * n + i]}
    keys = {cache_key("e", "m", CompletionRequest(f"Q: {j}?", 0, 0.0, 8)): j for j in expected}
    found = cache.get_many(keys)
    assert len(cache) == len(expected) == len(found) and not cache.damaged
    assert all(found[k].text == f"answer {j} " * 20 for k, j in keys.items())


def test_a_claimed_key_is_waited_for_and_taken_over_when_its_owner_gives_it_up(tmp_path):
    a, b = CompletionCache(tmp_path), CompletionCache(tmp_path)
    keys = [cache_key("e", "m", request(i)) for i in range(6)]
    first = a.claim(keys[:4])
    assert first.mine == sorted(keys[:4])
    second = b.claim(keys)
    assert sorted(second.mine) == sorted(keys[4:])
    ((owner, held),) = second.held.items()
    assert sorted(held) == sorted(keys[:4]) and f"pid {os.getpid()}" in b.describe_owner(owner)
    a.put_completion(keys[0], "e", "m", request(0), Completion("done", "stop", 1, 1))
    third = b.claim(keys[:4])
    assert set(third.done) == {keys[0]} and sorted(third.held[owner]) == sorted(keys[1:4])
    a.close()  # gives up the rest
    assert sorted(b.claim(keys[1:4]).mine) == sorted(keys[1:4])


def test_claims_of_a_run_that_died_are_taken_over(tmp_path):
    keys = [cache_key("e", "m", request(i)) for i in range(3)]
    code = (
        "import os, sys\nfrom ftcot.teacher.cache import CompletionCache\n"
        f"c = CompletionCache({str(tmp_path)!r})\nassert len(c.claim({keys!r}).mine) == 3\nos._exit(0)\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)  # dies holding its claims, as under kill -9
    with sqlite3.connect(tmp_path / "completions.sqlite3") as db:
        assert db.execute("SELECT COUNT(*) FROM claims").fetchone()[0] == 3
    claims = CompletionCache(tmp_path).claim(keys)
    assert sorted(claims.mine) == sorted(keys) and not claims.held


def test_a_run_waits_for_answers_another_run_is_asking_for(tmp_path):
    """resolve() in this process waits on claims a live process holds, and pays for none of them."""
    requests = [request(i) for i in range(5)]
    keys = [cache_key("oracle:v1:error_rate=0.0:seed=0", "oracle", r) for r in requests]
    code = f"""
import sys, time
from ftcot.teacher.cache import CompletionCache
from ftcot.teacher.base import CompletionRequest
from ftcot.teacher.base import Completion
c = CompletionCache({str(tmp_path)!r})
keys = {keys!r}
assert len(c.claim(keys).mine) == 5
print("claimed", flush=True)
sys.stdin.readline()
for i, k in enumerate(keys):
    r = CompletionRequest(f"Q: question {{i}}?\\nA: Let's think step by step.", 0, 0.0, 16)
    c.put_completion(k, "oracle:v1:error_rate=0.0:seed=0", "oracle", r, Completion(f"theirs {{i}}", "stop", 1, 1))
"""
    other = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert other.stdout.readline().strip() == "claimed"
    teacher = CountingTeacher()
    threading.Timer(1.0, lambda: (other.stdin.write("go\n"), other.stdin.flush())).start()
    stats = TeachRunStats()
    got, _ = resolve(requests, teacher, CompletionCache(tmp_path), stats)
    assert other.wait(timeout=30) == 0
    assert [c.text for c in got] == [f"theirs {i}" for i in range(5)]
    assert teacher.sent == [] and stats.requests_sent == 0 and stats.from_other_runs == 5


# -- a cache this process may not write ----------------------------------------------------------


def files_of(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder`` and its bytes, but for SQLite's shared-memory index (-shm), which
    even a read-only reader of a WAL store maps."""
    return {
        str(p.relative_to(folder)): p.read_bytes()
        for p in sorted(folder.rglob("*"))
        if p.is_file() and not p.name.endswith("-shm")
    }


def no_write_access(monkeypatch, folder: Path) -> None:
    """This process may not write ``folder`` (as a read-only mount or another user's folder would
    make it), for tests that run as root, whom permission bits do not stop."""
    real = os.access

    def access(path, mode, **kw):
        if mode & os.W_OK and Path(path).absolute().is_relative_to(folder.absolute()):
            return False
        return real(path, mode, **kw)

    monkeypatch.setattr(os, "access", access)


def assert_read_only_advice(message: str, folder: Path, missing: int) -> None:
    assert f"the teacher cache at {folder} is read-only and {missing} answers this run needs are not in it" in message
    assert "nothing was sent" in message
    assert "writable" in message and "FTCOT_CACHE_DIR" in message
    assert not re.search(r"aside|move|damaged|discard|delete|new one|start over", message, re.I)


def test_a_read_only_cache_serves_a_finished_run_and_writes_nothing(tmp_path):
    qs = train()
    with CompletionCache(tmp_path) as cache:
        original, _ = teach(qs, CountingTeacher(), cache, 1, 0.7, 128)
    before = files_of(tmp_path)
    teacher = CountingTeacher()
    cache = CompletionCache(tmp_path, read_only=True)  # SQLite's own read-only mode (mode=ro)
    again, stats = teach(qs, teacher, cache, 1, 0.7, 128)
    assert again == original and teacher.sent == [] and stats.cache_hits == 2 * len(qs)
    with pytest.raises(sqlite3.OperationalError, match="readonly"):
        cache._db.execute("DELETE FROM completions")  # SQLite itself refuses any write
    cache.close()
    assert files_of(tmp_path) == before or files_of(tmp_path) == before | {"completions.sqlite3-wal": b""}


def test_a_cache_this_process_may_not_write_serves_what_it_has_and_stops_before_asking_for_more(tmp_path, monkeypatch):
    keys = fill(tmp_path, 4)
    before = files_of(tmp_path)
    no_write_access(monkeypatch, tmp_path)
    cache = CompletionCache(tmp_path)
    teacher = EchoTeacher()
    got, _ = resolve(list(keys.values()), teacher, cache, TeachRunStats())  # a replay: nothing new needed
    assert [c.text for c in got] == [f"Reasoning number {i:04d}." for i in range(4)] and teacher.sent == []
    with pytest.raises(CacheError) as err:
        resolve([*keys.values(), request(4), request(5)], teacher, cache, TeachRunStats())
    assert teacher.sent == []  # stopped before sending anything
    assert_read_only_advice(str(err.value), tmp_path, 2)
    assert "copy the files of" in str(err.value)  # what it holds is worth keeping
    with pytest.raises(CacheError, match="read-only"):
        cache.put_completion(cache_key("e", "m", request(4)), "e", "m", request(4), Completion("x", "stop", 1, 1))
    cache.close()
    assert files_of(tmp_path) in (before, before | {"completions.sqlite3-wal": b""})  # an empty WAL at most
    assert not (tmp_path / "owners").exists()  # no claim, no owner


def test_a_cache_folder_that_cannot_be_made_is_an_empty_read_only_cache(tmp_path, monkeypatch):
    folder = tmp_path / "shared" / "teacher"
    real = Path.mkdir

    def refuse(self, *args, **kw):  # what a read-only parent folder answers
        if self.absolute().is_relative_to(tmp_path / "shared"):
            raise PermissionError(13, "Permission denied", str(self))
        return real(self, *args, **kw)

    monkeypatch.setattr(Path, "mkdir", refuse)
    cache = CompletionCache(folder)
    assert len(cache) == 0 and cache.get_many([cache_key("e", "m", request(0))]) == {}
    assert resolve([], EchoTeacher(), cache, TeachRunStats()) == ([], [])  # a run needing nothing
    teacher = EchoTeacher()
    with pytest.raises(CacheError) as err:
        resolve([request(i) for i in range(3)], teacher, cache, TeachRunStats())
    assert teacher.sent == [] and not folder.parent.exists()
    assert_read_only_advice(str(err.value), folder, 3)


def test_a_read_only_cache_reads_the_old_jsonl_cache_in_place(tmp_path):
    good, lines = legacy_cache(tmp_path)
    cache = CompletionCache(tmp_path, read_only=True)
    assert set(cache.get_many(good)) == {good[0], good[3]} and len(cache) == 2
    assert cache.claim(good[::3]).done.keys() == {good[0], good[3]}  # all there: nothing to claim, no error
    assert (tmp_path / "completions.jsonl").read_bytes() == b"".join(lines)  # neither moved nor imported
    assert not (tmp_path / "completions.sqlite3").exists() and not (tmp_path / "completions.jsonl.migrated").exists()


def error_line(stderr: str) -> str:
    (line,) = [line for line in stderr.splitlines() if line.startswith("error: ")]
    return line


def _without_permission_override() -> None:
    """In the child, before exec: root without CAP_DAC_OVERRIDE and CAP_DAC_READ_SEARCH, so that
    permission bits stop it as they stop any user (prctl PR_CAPBSET_DROP)."""
    libc = ctypes.CDLL(None, use_errno=True)
    for capability in (1, 2):
        if libc.prctl(24, capability, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_CAPBSET_DROP)")


def test_the_teach_stage_on_a_cache_in_a_read_only_folder(tmp_path):
    """Real permissions, real SQLite: the folder and files are read-only (0555/0444) for the stage."""
    cache = tmp_path / "cache"
    stage = tmp_path / "stage"
    stage.mkdir()
    records = generate_records(get_task("coin_flip"), 20, 0, 0.7)
    (stage / "records.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    cmd = [sys.executable, str(REPO / "stages/teach.py"), "--task", "coin_flip", "--records", "records.jsonl"]
    cmd += ["--out", "t.jsonl", "--test-out", "t.test.jsonl", "--metrics", "m.json"]

    def run(cache_dir: Path, diversity: int, read_only: bool) -> subprocess.CompletedProcess:
        params = yaml.safe_load((REPO / "params.yaml").read_text())
        params["data"]["num_questions"] = 20
        params["diversity"] = diversity
        params["teacher"].update({"backend": "openai", "model": "fake", "base_url": server.base_url})
        params["teacher"].update({"api_key_env": None, "eval_test": False})
        (stage / "params.yaml").write_text(yaml.safe_dump(params))
        return subprocess.run(
            cmd,
            cwd=stage,
            env={**os.environ, "FTCOT_CACHE_DIR": str(cache_dir)},
            capture_output=True,
            text=True,
            preexec_fn=_without_permission_override if read_only and root else None,
        )

    root = os.geteuid() == 0  # anyone else is stopped by the permission bits alone
    if root:
        try:
            subprocess.run([sys.executable, "-c", "pass"], preexec_fn=_without_permission_override, check=True)
        except (OSError, subprocess.SubprocessError):
            pytest.skip("root here cannot give up its permission override (prctl PR_CAPBSET_DROP)")
    with FakeOpenAI() as server:
        first = run(cache, 1, read_only=False)
        assert first.returncode == 0, first.stderr
        paid = sum(server.attempts.values())
        output = (stage / "t.jsonl").read_text()
        empty = tmp_path / "empty"
        empty.mkdir()
        folders = [cache, *(p for p in cache.rglob("*") if p.is_dir()), empty]
        for p in cache.rglob("*"):
            p.chmod(0o444 if p.is_file() else 0o555)
        for p in folders:
            p.chmod(0o555)
        try:
            before = files_of(cache)
            replay = run(cache, 1, read_only=True)  # everything it needs is there
            assert replay.returncode == 0, replay.stderr
            assert (stage / "t.jsonl").read_text() == output and sum(server.attempts.values()) == paid
            assert json.loads((stage / "m.run.json").read_text())["requests_sent"] == 0
            assert files_of(cache) == before

            more = run(cache, 2, read_only=True)  # two sampled rationales per question: not in the cache
            assert more.returncode == 2 and "Traceback" not in more.stderr
            assert sum(server.attempts.values()) == paid  # nothing was sent
            assert_read_only_advice(error_line(more.stderr), cache / "teacher", 28)  # sampled: none greedy

            none = run(empty, 1, read_only=True)  # no teacher/ folder, and none can be made
            assert none.returncode == 2 and "Traceback" not in none.stderr
            assert_read_only_advice(error_line(none.stderr), empty / "teacher", 14)
            assert not (empty / "teacher").exists() and sum(server.attempts.values()) == paid
        finally:
            for p in folders:
                p.chmod(0o755)


def test_a_cache_collected_while_another_on_its_store_writes_neither_waits_nor_keeps_its_claims(tmp_path):
    """Two caches on one store in one thread: the garbage collector may drop the first while the
    second holds the write lock. Dropping it writes nothing (waiting would never end), and its
    claims are taken over by the next run that needs them."""
    keys = [cache_key("e", "m", request(i)) for i in range(3)]
    code = f"""
import gc
from ftcot.teacher.cache import CompletionCache
keys = {keys!r}
first, second = CompletionCache({str(tmp_path)!r}), CompletionCache({str(tmp_path)!r})
assert sorted(first.claim(keys).mine) == sorted(keys)
with second._write():
    del first
    gc.collect()  # collected here, while this thread holds the store's write lock
assert sorted(second.claim(keys).mine) == sorted(keys)
print("ok")
"""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr[-2000:]
