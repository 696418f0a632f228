"""The completion cache against a hostile disk: damaged records, damaged files, old files, several
processes, and runs that claim the same answers."""

import json
import logging
import os
import sqlite3
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from ftcot.data.synthetic import generate_records
from ftcot.data.tasks import get_task
from ftcot.teacher.base import Completion, CompletionRequest
from ftcot.teacher.cache import CacheError, CompletionCache, cache_key, encode_record, record_checksum
from ftcot.teacher.teaching import TeachRunStats, resolve, teach
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


def test_a_file_that_is_not_a_database_is_one_clear_error(tmp_path):
    (tmp_path / "completions.sqlite3").write_bytes(b"\xff" * 4096)
    with pytest.raises(CacheError, match=r"teacher cache .*completions\.sqlite3 cannot be used .*Move it aside"):
        CompletionCache(tmp_path)


def test_the_old_jsonl_cache_with_damaged_lines_is_moved_in(tmp_path, caplog):
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
    (tmp_path / "completions.jsonl").write_bytes(b"".join(lines))
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
