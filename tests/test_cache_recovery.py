"""A completion store with damaged pages is repaired by the program: the damaged file is kept aside,
every record that can still be read and whose checksum holds goes into a new store, one warning
counts what was saved and lost, and the run goes on, asking again only for what was lost."""

import logging
import sqlite3
import subprocess
import sys
import time
from contextlib import closing
from pathlib import Path

import pytest

from ftcot.data.synthetic import generate_records
from ftcot.data.tasks import get_task
from ftcot.teacher.base import Completion, CompletionRequest
from ftcot.teacher.cache import CompletionCache, cache_key
from ftcot.teacher.openai_compat import OpenAITeacher
from ftcot.teacher.teaching import TeachRunStats, teach
from ftcot.testing.fake_openai import FakeOpenAI

DB = "completions.sqlite3"
PAGE = 4096  # SQLite's default page size, which the store uses


@pytest.fixture(autouse=True)
def api_key(monkeypatch):
    monkeypatch.setenv("FAKE_KEY", "sk-test-not-a-secret")


def marker(i: int) -> str:
    return f"<{i:04d}>"


def answer(i: int) -> Completion:
    """Rationales of many lengths; every 50th spills over two overflow pages. Each part of a text
    carries the record's marker, so the pages that hold it can be found in the file."""
    repeat = 600 if i % 50 == 7 else 6 + i % 40
    return Completion(f"{marker(i)} flipped, so tails. " * repeat, "stop", 10, repeat)


def request(i: int) -> CompletionRequest:
    return CompletionRequest(f"Q: does coin {i} still show heads?\nA: Let's think step by step.", 0, 0.0, 64)


def fill(directory: Path, n: int = 300) -> dict[str, tuple[int, Completion]]:
    """A store of ``n`` completions and a Batch API ledger entry of 3 requests, closed (all in the file)."""
    stored = {}
    with CompletionCache(directory) as cache:
        for i in range(n):
            key = cache_key("e", "m", request(i))
            cache.put_completion(key, "e", "m", request(i), answer(i))
            stored[key] = (i, answer(i))
        cache.batches.record(
            "batch-1", "e", "m", [(cache_key("e", "m", request(n + j)), request(n + j)) for j in range(3)]
        )
    assert not (directory / f"{DB}-wal").exists()  # checkpointed at close: the file holds everything
    return stored


def pages_of(raw: bytes, i: int) -> set[int]:
    """The pages holding record ``i``'s text (its leaf page and any overflow pages)."""
    found, at, needle = set(), raw.find(marker(i).encode()), marker(i).encode()
    while at >= 0:
        found.add(at // PAGE + 1)
        at = raw.find(needle, at + 1)
    return found


def page_of(directory: Path, target: str, raw: bytes = b"", stored: dict | None = None) -> int:
    """The page to damage: a table leaf in the middle, the table's root (interior), a leaf of its
    key index, an overflow page of a long record, or page 1 (the file header and schema)."""
    with closing(sqlite3.connect(directory / DB)) as db:
        try:
            stat = db.execute("SELECT name, pageno, pagetype FROM dbstat ORDER BY pageno").fetchall()
        except sqlite3.OperationalError:
            pytest.skip("this SQLite has no dbstat table")
    if target == "file header":
        return 1
    if target == "table interior":
        (root,) = [p for name, p, kind in stat if name == "completions" and kind == "internal"]
        return root
    if target == "overflow":
        overflow = {p for _, p, kind in stat if kind == "overflow"}
        return min(min(pages_of(raw, i) & overflow) for i, _ in stored.values() if pages_of(raw, i) & overflow)
    table = "sqlite_autoindex_completions_1" if target == "index leaf" else "completions"
    leaves = [p for name, p, kind in stat if name == table and kind == "leaf"]
    return leaves[len(leaves) // 2]


def damage(path: Path, page: int) -> bytes:
    """Overwrites the first 64 bytes of ``page`` (its header and first cell pointers); the file after."""
    with path.open("r+b") as f:
        f.seek((page - 1) * PAGE)
        f.write(b"\xa5" * 64)
    return path.read_bytes()


TARGETS = ["table leaf", "table interior", "index leaf", "overflow", "file header"]


@pytest.mark.parametrize("target", TARGETS)
def test_a_store_damaged_at_one_page_is_repaired_and_keeps_every_record_whose_pages_survived(tmp_path, caplog, target):
    stored = fill(tmp_path)
    pristine = (tmp_path / DB).read_bytes()
    page = page_of(tmp_path, target, pristine, stored)
    damaged_bytes = damage(tmp_path / DB, page)

    with caplog.at_level(logging.WARNING, logger="ftcot"):
        cache = CompletionCache(tmp_path)  # no exception
        found = cache.get_many(stored)
    assert all(found[k] == c for k, (_, c) in stored.items() if k in found)  # never a changed answer
    survivors = {k for k, (i, _) in stored.items() if page not in pages_of(pristine, i)}
    assert survivors <= found.keys() and len(survivors) >= len(stored) - 10
    if target in ("table interior", "index leaf", "file header"):
        assert found.keys() == stored.keys()  # no record was on the damaged page: all read from their own
    else:
        assert len(found) < len(stored)

    (warning,) = [r.getMessage() for r in caplog.records if "was damaged" in r.getMessage()]
    lost = len(stored) - len(found)
    assert f"{len(found)} answers were saved into a new store" in warning
    if target in ("index leaf", "file header"):  # no whole key index to count the lost by
        assert "none were found lost" in warning
    else:
        assert f", {lost} were lost and are asked again when needed" in warning
    kept = tmp_path / f"{DB}.damaged-1"
    assert f"kept as {kept}" in warning and kept.read_bytes() == damaged_bytes  # kept as it was
    assert len(cache.recoveries) == 1 and cache.recoveries[0].kept == kept

    # A new, healthy store is in place; the ledger came along unless the schema itself was hit.
    with closing(sqlite3.connect(tmp_path / DB)) as db:
        assert db.execute("PRAGMA quick_check").fetchall() == [("ok",)]
        assert db.execute("SELECT COUNT(*) FROM completions").fetchone()[0] == len(found)
    assert len(cache.batches) == (0 if target == "file header" else 1)
    if target != "file header":
        assert cache.batches.pending("e", "m", [cache_key("e", "m", request(301))]) == ["batch-1"]
    cache.close()

    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="ftcot"):
        assert len(CompletionCache(tmp_path)) == len(found)  # repaired once
    assert not caplog.records and not (tmp_path / f"{DB}.damaged-2").exists()


def test_a_damaged_file_never_goes_over_one_kept_before(tmp_path):
    stored = fill(tmp_path, 20)
    earlier = b"an earlier damaged store"
    (tmp_path / f"{DB}.damaged-1").write_bytes(earlier)
    (tmp_path / f"{DB}.damaged-2-wal").write_bytes(earlier)  # a WAL kept before takes its number too
    damaged_bytes = damage(tmp_path / DB, 1)
    cache = CompletionCache(tmp_path)
    assert set(cache.get_many(stored)) == set(stored)
    assert (tmp_path / f"{DB}.damaged-1").read_bytes() == earlier
    assert (tmp_path / f"{DB}.damaged-2-wal").read_bytes() == earlier
    assert (tmp_path / f"{DB}.damaged-3").read_bytes() == damaged_bytes


def test_damage_met_after_opening_is_repaired_and_the_lookup_answered(tmp_path, caplog):
    stored = fill(tmp_path)
    cache = CompletionCache(tmp_path)  # sound when opened
    pristine = (tmp_path / DB).read_bytes()
    page = page_of(tmp_path, "table leaf")
    damage(tmp_path / DB, page)
    with closing(sqlite3.connect(tmp_path / DB, isolation_level=None)) as other:
        other.execute("INSERT INTO owners VALUES ('someone', 1, 'host')")  # a write: the open cache rereads pages
    with caplog.at_level(logging.WARNING, logger="ftcot"):
        found = cache.get_many(stored)
    survivors = {k for k, (i, _) in stored.items() if page not in pages_of(pristine, i)}
    assert survivors <= found.keys() and len(found) < len(stored)
    assert len(cache.recoveries) == 1 and (tmp_path / f"{DB}.damaged-1").exists()
    assert sum("was damaged" in r.getMessage() for r in caplog.records) == 1
    key = cache_key("e", "m", request(999))  # and it goes on storing, in the new store
    cache.put_completion(key, "e", "m", request(999), answer(999))
    assert len(CompletionCache(tmp_path)) == len(found) + 1


def test_a_process_that_had_the_damaged_store_open_writes_into_the_new_one(tmp_path):
    stored = fill(tmp_path)
    before = CompletionCache(tmp_path)  # opened while sound: holds the file that is kept aside later
    damage(tmp_path / DB, page_of(tmp_path, "table leaf"))
    repaired = CompletionCache(tmp_path)
    assert len(repaired.recoveries) == 1
    key = cache_key("e", "m", request(999))
    before.put_completion(key, "e", "m", request(999), answer(999))  # not into the file kept aside
    assert repaired.get_completion(key) == answer(999)
    assert before.claim([key]).done.keys() == {key} and len(before) == len(repaired) < len(stored) + 1


OPENER = """
import sys, time
from ftcot.teacher.cache import CompletionCache
time.sleep(max(0.0, float(sys.argv[2]) - time.time()))
cache = CompletionCache(sys.argv[1])
print(len(cache), len(cache.recoveries))
"""


def test_processes_that_find_the_same_damage_at_once_repair_it_once(tmp_path):
    fill(tmp_path)
    damage(tmp_path / DB, page_of(tmp_path, "table leaf"))
    start = str(time.time() + 3)  # after every interpreter has started: they open together
    procs = [
        subprocess.Popen([sys.executable, "-c", OPENER, str(tmp_path), start], stdout=subprocess.PIPE, text=True)
        for _ in range(3)
    ]
    outs = [p.communicate(timeout=120)[0].split() for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0]
    assert len({n for n, _ in outs}) == 1 and sum(int(r) for _, r in outs) == 1  # all see one repair's store
    kept = sorted(p.name for p in tmp_path.iterdir() if ".damaged-" in p.name)
    assert kept and all(name.startswith(f"{DB}.damaged-1") for name in kept)


def questions(n: int) -> list[dict]:
    return [r for r in generate_records(get_task("coin_flip"), n, 0, 0.7) if r["split"] == "train"]


def test_a_run_on_a_damaged_store_asks_again_only_for_the_lost_answers(tmp_path):
    qs = questions(200)
    with FakeOpenAI() as server:

        def teacher() -> OpenAITeacher:
            return OpenAITeacher(model="fake", base_url=server.base_url, api_key_env="FAKE_KEY", concurrency=4)

        with CompletionCache(tmp_path) as cache:
            original, _ = teach(qs, teacher(), cache, 1, 0.7, 64)
        paid = sum(server.attempts.values())
        assert paid == 2 * len(qs)
        damage(tmp_path / DB, page_of(tmp_path, "table leaf"))

        cache = CompletionCache(tmp_path)
        (recovery,) = cache.recoveries
        assert recovery.exact and recovery.lost > 0 and recovery.saved + recovery.lost == paid
        stats = TeachRunStats()
        again, stats = teach(qs, teacher(), cache, 1, 0.7, 64, stats)
    assert sum(server.attempts.values()) - paid == recovery.lost == stats.requests_sent  # only the lost ones
    assert again == original
