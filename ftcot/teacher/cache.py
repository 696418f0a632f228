"""The persistent, content-addressed store of teacher completions, shared by every run on a machine.

Every completion ever received is stored the moment it arrives, keyed by a SHA-256 of everything
that determines it (endpoint identity, model, exact prompt, sampling parameters, sample index): a
killed run loses at most the requests in flight, and a rerun asks only for what is missing.

Storage is one SQLite database in WAL mode (``completions.sqlite3``): opening it reads nothing, a
lookup is a B-tree search, memory is SQLite's page cache, and several processes read and append
at once. Each record carries a SHA-256 of its key and content: a record that does not match its
checksum, does not decode, lacks a field or belongs to another key is a miss — asked again,
counted, and reported once with the file's path — never a traceback and never a wrong rationale.

Runs that share the cache also share the work: before asking, a run *claims* the keys it will ask
for; another run that needs a claimed key waits for its answer instead of paying for it again, and
takes the claim over if its owner died. Liveness is an ``flock`` that each claiming process holds
on ``owners/<id>.lock`` until it ends (the kernel drops it on any death, ``kill -9`` included), so
the cache must be on a local disk, as SQLite's WAL mode requires anyway.

The Batch API's submitted batches are remembered here too (:class:`BatchLedger`), with the requests
they hold, so a killed run resumes every batch it submitted and collects all of it.

A cache written by earlier versions (``completions.jsonl``, one JSON line per completion) is
imported on first open and kept beside as ``completions.jsonl.migrated``.

The cache lives outside DVC's outputs on purpose (default ``~/.cache/finetune-cot/teacher``, or
``$FTCOT_CACHE_DIR/teacher``): DVC deletes a stage's outputs before rerunning it, and ``dvc exp run
--temp`` / ``--queue`` run in other folders, but answers already paid for must survive all of that.
The teach stage's output (a DVC-tracked file) records the completions each run used, so results
never depend on the cache being present.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import os
import socket
import sqlite3
import uuid
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from ftcot.io import default_cache_dir
from ftcot.teacher.base import Completion, CompletionRequest, TeacherError, UnreadableResponse

__all__ = ["BatchLedger", "CacheError", "Claims", "CompletionCache", "cache_key", "default_cache_dir"]

log = logging.getLogger("ftcot")

DB_FILE = "completions.sqlite3"
LEGACY_FILE = "completions.jsonl"
SCHEMA_VERSION = 1
# A writer waits this long for another process's write to finish before giving up with a message.
BUSY_TIMEOUT_S = 300.0
_CHUNK = 500  # keys per `IN (...)` query

IDENTITY_FIELDS = ("endpoint", "model", "prompt", "temperature", "max_tokens", "sample_index")
COMPLETION_FIELDS = ("text", "finish_reason", "prompt_tokens", "completion_tokens")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS completions (key TEXT PRIMARY KEY, checksum TEXT NOT NULL, record BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS claims (key TEXT PRIMARY KEY, owner TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS claims_by_owner ON claims (owner);
CREATE TABLE IF NOT EXISTS owners (owner TEXT PRIMARY KEY, pid INTEGER NOT NULL, host TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS batches (batch_id TEXT PRIMARY KEY, endpoint TEXT NOT NULL, model TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS batch_requests (
    batch_id TEXT NOT NULL, key TEXT NOT NULL, request BLOB NOT NULL, PRIMARY KEY (batch_id, key));
CREATE INDEX IF NOT EXISTS batch_requests_by_key ON batch_requests (key);
"""


class CacheError(TeacherError):
    """The cache file as a whole cannot be used (not a database, damaged pages, disk full, locked)."""


class DamagedRecord(ValueError):
    """One stored record that fails its check; the completion is asked again."""


def _identity(endpoint: str, model: str, request: CompletionRequest) -> dict:
    return {
        "endpoint": endpoint,
        "model": model,
        "prompt": request.prompt,
        "temperature": request.temperature,
        "max_tokens": request.max_tokens,
        "sample_index": request.sample_index,
    }


def _canonical(obj: dict) -> bytes:
    return json.dumps(obj, sort_keys=True, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def cache_key(endpoint: str, model: str, request: CompletionRequest) -> str:
    return hashlib.sha256(_canonical(_identity(endpoint, model, request))).hexdigest()


def record_checksum(key: str, blob: bytes) -> str:
    """What a record proves itself with: the SHA-256 of its key and its exact bytes."""
    return hashlib.sha256(key.encode("utf-8", "surrogateescape") + b"\0" + blob).hexdigest()


def encode_record(
    key: str, endpoint: str, model: str, request: CompletionRequest, completion: Completion
) -> tuple[bytes, str]:
    record = _identity(endpoint, model, request) | {
        "text": completion.text,
        "finish_reason": completion.finish_reason,
        "prompt_tokens": completion.prompt_tokens,
        "completion_tokens": completion.completion_tokens,
    }
    blob = _canonical(record)
    return blob, record_checksum(key, blob)


def _request_of(record: dict) -> CompletionRequest:
    prompt, sample_index = record["prompt"], record["sample_index"]
    temperature, max_tokens = record["temperature"], record["max_tokens"]
    if not isinstance(prompt, str) or type(sample_index) is not int or type(max_tokens) is not int:
        raise DamagedRecord("its request fields have the wrong types")
    if type(temperature) not in (int, float):
        raise DamagedRecord("its temperature is not a number")
    return CompletionRequest(prompt, sample_index, temperature, max_tokens)


def _decode_fields(key: str, blob: bytes, check_identity: bool = False) -> Completion:
    """The completion in ``blob`` if it is a whole record; else :class:`DamagedRecord`.

    ``check_identity``: also derive the key from the record's request fields and compare (for
    records with no checksum: the old cache's lines). A checksummed record was checked at write time.
    """
    try:
        record = json.loads(blob.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        raise DamagedRecord("not valid UTF-8 JSON") from None
    if not isinstance(record, dict):
        raise DamagedRecord("not a JSON object")
    missing = [f for f in (*IDENTITY_FIELDS, *COMPLETION_FIELDS) if f not in record]
    if missing:
        raise DamagedRecord(f"missing field(s) {missing}")
    try:
        completion = Completion(**{f: record[f] for f in COMPLETION_FIELDS})
    except UnreadableResponse as err:
        raise DamagedRecord(str(err)) from None
    if check_identity:
        if not isinstance(record["endpoint"], str) or not isinstance(record["model"], str):
            raise DamagedRecord("its endpoint or model is not a string")
        if cache_key(record["endpoint"], record["model"], _request_of(record)) != key:
            raise DamagedRecord("it belongs to another request than its key")
    return completion


def decode_record(key: str, checksum: str, blob: object) -> Completion:
    if not isinstance(blob, bytes):
        raise DamagedRecord(f"stored as {type(blob).__name__}, not bytes")
    if checksum != record_checksum(key, blob):
        raise DamagedRecord("its checksum does not match its content")
    return _decode_fields(key, blob)


def _chunks(items: Sequence[str], size: int = _CHUNK) -> Iterator[Sequence[str]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _marks(n: int) -> str:
    return ",".join("?" * n)


@dataclass
class Claims:
    """The outcome of :meth:`CompletionCache.claim`: keys this run now asks for (``mine``), keys
    that live runs are asking for (``held``, per owner), and keys that turned out to be answered."""

    mine: list[str] = field(default_factory=list)
    held: dict[str, list[str]] = field(default_factory=dict)
    done: dict[str, Completion] = field(default_factory=dict)


class CompletionCache:
    def __init__(self, directory: str | Path):
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.path = self.directory / DB_FILE
        self.damaged: dict[str, str] = {}  # key -> why: records found damaged and not yet stored anew
        self.damaged_seen: set[str] = set()  # every key found damaged by this process
        self._owner: str | None = None
        self._owner_lock = None
        self._bulk_depth = 0
        self._db = self._connect()
        self.batches = BatchLedger(self)
        self._migrate_legacy()

    # -- the database ---------------------------------------------------------------------------

    def _unusable(self, err: sqlite3.Error) -> CacheError:
        text = str(err)
        if "locked" in text or "busy" in text:
            hint = f"another process held its write lock for over {BUSY_TIMEOUT_S:g} s; rerun when it is done"
        elif "full" in text:
            hint = "the disk is full: free space and rerun; nothing stored so far is lost"
        else:
            hint = (
                f"it is damaged. Move it aside (mv {self.path} {self.path}.damaged) and rerun to start a new "
                f"one; the answers in it can usually be recovered with `sqlite3 {self.path}.damaged .recover`"
            )
        return CacheError(f"the teacher cache {self.path} cannot be used ({text}): {hint}")

    @contextmanager
    def _guard(self) -> Iterator[None]:
        try:
            yield
        except sqlite3.Error as err:
            raise self._unusable(err) from None

    def _connect(self) -> sqlite3.Connection:
        with self._guard():
            db = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT_S, isolation_level=None)
            # Damaged bytes in a text column read back as undecodable text instead of raising.
            db.text_factory = lambda b: b.decode("utf-8", "surrogateescape")
            version = db.execute("PRAGMA user_version").fetchone()[0]
            if version > SCHEMA_VERSION:
                raise CacheError(
                    f"the teacher cache {self.path} was written by a newer finetune-cot (schema {version}): "
                    "upgrade, or point FTCOT_CACHE_DIR elsewhere"
                )
            db.execute("PRAGMA journal_mode=WAL")  # readers never wait for writers
            db.execute("PRAGMA synchronous=NORMAL")  # commits survive a killed process; fsync at checkpoints
            if version < SCHEMA_VERSION:
                # Several processes may create it at once: the first takes the lock, the others find it made.
                db.execute("BEGIN IMMEDIATE")
                for statement in _SCHEMA.split(";"):
                    if statement.strip():
                        db.execute(statement)
                db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
                db.execute("COMMIT")
        return db

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """One write transaction (or a part of the enclosing :meth:`bulk` one)."""
        db = self._db
        if self._bulk_depth:
            with self._guard():
                yield db
            return
        with self._guard():
            db.execute("BEGIN IMMEDIATE")
            try:
                yield db
            except BaseException:
                db.execute("ROLLBACK")
                raise
            db.execute("COMMIT")

    @contextmanager
    def bulk(self) -> Iterator[None]:
        """Many writes in one transaction: for completions that are safe elsewhere until committed
        (a collected batch stays in the ledger until then), never for live answers."""
        if self._bulk_depth:
            self._bulk_depth += 1
            try:
                yield
            finally:
                self._bulk_depth -= 1
            return
        with self._write():
            self._bulk_depth = 1
            try:
                yield
            finally:
                self._bulk_depth = 0

    def close(self) -> None:
        if getattr(self, "_db", None) is None:
            return
        try:
            self.release_claims()
            if self._owner is not None:
                with self._write() as db:
                    db.execute("DELETE FROM owners WHERE owner = ?", (self._owner,))
        except CacheError:
            pass  # claims of a dead owner are taken over by whoever needs them
        finally:
            try:
                self._db.close()
            except sqlite3.ProgrammingError:
                pass  # collected in another thread than the one that opened it: the handle ends with the process
            self._db = None
            if self._owner_lock is not None:
                (self.directory / "owners" / f"{self._owner}.lock").unlink(missing_ok=True)
                self._owner_lock.close()
                self._owner_lock = None

    def __del__(self) -> None:
        self.close()

    def __enter__(self) -> CompletionCache:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- completions ----------------------------------------------------------------------------

    def __len__(self) -> int:
        with self._guard():
            return self._db.execute("SELECT COUNT(*) FROM completions").fetchone()[0]

    def __contains__(self, key: str) -> bool:
        return self.get_completion(key) is not None

    def _rows(self, keys: Sequence[str]) -> Iterator[tuple[str, str, object]]:
        with self._guard():
            for chunk in _chunks(keys):
                yield from self._db.execute(
                    f"SELECT key, checksum, record FROM completions WHERE key IN ({_marks(len(chunk))})", chunk
                )

    def _note_damaged(self, key: str, why: str) -> None:
        if not self.damaged_seen:
            log.warning(
                "%s: a cached completion failed its check (%s) and is asked again; such records are counted "
                "(damaged_cache_records in metrics/teach/<task>.run.json) and not reported again",
                self.path,
                why,
            )
        self.damaged[key] = why
        self.damaged_seen.add(key)

    def get_many(self, keys: Iterable[str]) -> dict[str, Completion]:
        """The valid completions among ``keys``; damaged records are left out (and noted)."""
        found: dict[str, Completion] = {}
        for key, checksum, blob in self._rows(sorted(set(keys))):
            try:
                found[key] = decode_record(key, checksum, blob)
            except DamagedRecord as err:
                self._note_damaged(key, str(err))
        return found

    def get_completion(self, key: str) -> Completion | None:
        with self._guard():
            row = self._db.execute("SELECT checksum, record FROM completions WHERE key = ?", (key,)).fetchone()
        if row is None:
            return None
        try:
            return decode_record(key, *row)
        except DamagedRecord as err:
            self._note_damaged(key, str(err))
            return None

    def put_completion(
        self, key: str, endpoint: str, model: str, request: CompletionRequest, completion: Completion
    ) -> None:
        """Stores one completion (replacing a damaged record) and ends any claim on its key."""
        if key != cache_key(endpoint, model, request):
            raise ValueError(f"{key} is not the cache key of this request")  # a caller's bug, never stored
        blob, checksum = encode_record(key, endpoint, model, request, completion)
        with self._write() as db:
            db.execute(
                "INSERT OR REPLACE INTO completions (key, checksum, record) VALUES (?, ?, ?)", (key, checksum, blob)
            )
            db.execute("DELETE FROM claims WHERE key = ?", (key,))
        self.damaged.pop(key, None)

    # -- claims ---------------------------------------------------------------------------------

    def _ensure_owner(self) -> str:
        if self._owner is None:
            owner = uuid.uuid4().hex
            folder = self.directory / "owners"
            folder.mkdir(exist_ok=True)
            # Locked before it gets its name, so no one ever sees this owner's file unlocked while it lives.
            staging = folder / f".{owner}.new"
            lock = staging.open("w")
            fcntl.flock(lock, fcntl.LOCK_EX)  # held until this process ends: its proof of life
            staging.rename(folder / f"{owner}.lock")
            self._owner, self._owner_lock = owner, lock
            with self._write() as db:
                db.execute("INSERT OR REPLACE INTO owners VALUES (?, ?, ?)", (owner, os.getpid(), socket.gethostname()))
                # Owners that died (kill -9) leave their claims behind: cleared here once per run.
                for path in folder.glob("*.lock"):
                    if path.stem != owner and not self._alive(path.stem):
                        db.execute("DELETE FROM claims WHERE owner = ?", (path.stem,))
                        db.execute("DELETE FROM owners WHERE owner = ?", (path.stem,))
        return self._owner

    def _alive(self, owner: str) -> bool:
        path = self.directory / "owners" / f"{owner}.lock"
        try:
            f = path.open("r+")
        except FileNotFoundError:
            return False
        with f:
            try:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return True
            path.unlink(missing_ok=True)  # its owner is gone: so is its proof of life
            return False

    def describe_owner(self, owner: str) -> str:
        with self._guard():
            row = self._db.execute("SELECT pid, host FROM owners WHERE owner = ?", (owner,)).fetchone()
        return f"pid {row[0]} on {row[1]}" if row else "a run that has ended"

    def claim(self, keys: Sequence[str]) -> Claims:
        """Claims the keys of ``keys`` that are neither answered nor claimed by a live run. Claims of
        runs that died are taken over. One transaction: two runs never claim the same key."""
        owner = self._ensure_owner()
        claims = Claims()
        alive: dict[str, bool] = {}
        with self._write() as db:
            for chunk in _chunks(sorted(set(keys))):
                marks = _marks(len(chunk))
                for key, checksum, blob in db.execute(
                    f"SELECT key, checksum, record FROM completions WHERE key IN ({marks})", chunk
                ):
                    try:
                        claims.done[key] = decode_record(key, checksum, blob)
                    except DamagedRecord as err:
                        self._note_damaged(key, str(err))
                held = dict(db.execute(f"SELECT key, owner FROM claims WHERE key IN ({marks})", chunk).fetchall())
                for key in chunk:
                    if key in claims.done:
                        continue
                    other = held.get(key)
                    if other is not None and other != owner:
                        if other not in alive:
                            alive[other] = self._alive(other)
                            if not alive[other]:
                                db.execute("DELETE FROM claims WHERE owner = ?", (other,))
                                db.execute("DELETE FROM owners WHERE owner = ?", (other,))
                        if alive[other]:
                            claims.held.setdefault(other, []).append(key)
                            continue
                    claims.mine.append(key)
            db.executemany(
                "INSERT OR REPLACE INTO claims (key, owner) VALUES (?, ?)", ((k, owner) for k in claims.mine)
            )
        return claims

    def release_claims(self, keys: Iterable[str] | None = None) -> None:
        """Gives up this run's claims (all, or on ``keys``): a waiting run may then ask for them."""
        if self._owner is None:
            return
        with self._write() as db:
            if keys is None:
                db.execute("DELETE FROM claims WHERE owner = ?", (self._owner,))
            else:
                db.executemany("DELETE FROM claims WHERE key = ? AND owner = ?", ((k, self._owner) for k in keys))

    # -- the cache of earlier versions ----------------------------------------------------------

    def _migrate_legacy(self) -> None:
        legacy = self.directory / LEGACY_FILE
        if not legacy.exists():
            return
        imported = damaged = 0
        with self._write() as db:
            if not legacy.exists():
                return  # another process moved it in while we waited for the lock
            rows = []
            with legacy.open("rb") as f:
                for line in f:
                    try:
                        rows.append(_legacy_row(line))
                    except DamagedRecord:
                        damaged += 1  # a line torn by a crash, or damaged: its request is asked again
                        continue
                    if len(rows) >= 10_000:
                        db.executemany("INSERT OR IGNORE INTO completions VALUES (?, ?, ?)", rows)
                        imported += len(rows)
                        rows.clear()
            db.executemany("INSERT OR IGNORE INTO completions VALUES (?, ?, ?)", rows)
            imported += len(rows)
        kept = legacy.with_name(LEGACY_FILE + ".migrated")
        n = 1
        while kept.exists():
            n += 1
            kept = legacy.with_name(f"{LEGACY_FILE}.migrated.{n}")
        try:
            legacy.rename(kept)
        except FileNotFoundError:
            return  # moved by another process at the same moment: it logs the move
        log.info(
            "teacher cache: %d completions moved from %s into %s (%d unreadable lines left out); the old file is "
            "kept as %s",
            imported,
            legacy,
            self.path,
            damaged,
            kept.name,
        )


def _legacy_row(line: bytes) -> tuple[str, str, bytes]:
    """A line of the old ``completions.jsonl`` as a checked (key, checksum, record) row."""
    try:
        record = json.loads(line.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        raise DamagedRecord("not valid UTF-8 JSON") from None
    if not isinstance(record, dict) or not isinstance(record.get("key"), str):
        raise DamagedRecord("no key")
    key = record.pop("key")
    blob = _canonical(record)
    _decode_fields(key, blob, check_identity=True)
    return key, record_checksum(key, blob), blob


class BatchLedger:
    """The Batch API's submitted batches and the requests in each, until they are collected."""

    def __init__(self, cache: CompletionCache):
        self.cache = cache

    def record(
        self, batch_id: str, endpoint: str, model: str, requests: Sequence[tuple[str, CompletionRequest]]
    ) -> None:
        rows = [(batch_id, key, _canonical(_identity(endpoint, model, r))) for key, r in requests]
        with self.cache._write() as db:
            db.execute("INSERT OR REPLACE INTO batches VALUES (?, ?, ?)", (batch_id, endpoint, model))
            db.executemany("INSERT OR REPLACE INTO batch_requests VALUES (?, ?, ?)", rows)

    def rename(self, old: str, new: str) -> None:
        """The entry of an upload (``upload:<file id>``, recorded before its batch was created)
        becomes the batch's."""
        with self.cache._write() as db:
            db.execute("UPDATE batches SET batch_id = ? WHERE batch_id = ?", (new, old))
            db.execute("UPDATE batch_requests SET batch_id = ? WHERE batch_id = ?", (new, old))

    def pending(self, endpoint: str, model: str, keys: Sequence[str]) -> list[str]:
        """The uncollected batches of this endpoint and model that hold any of ``keys``."""
        found: set[str] = set()
        with self.cache._guard():
            for chunk in _chunks(sorted(set(keys))):
                found.update(
                    row[0]
                    for row in self.cache._db.execute(
                        "SELECT DISTINCT b.batch_id FROM batch_requests r JOIN batches b ON b.batch_id = r.batch_id "
                        f"WHERE b.endpoint = ? AND b.model = ? AND r.key IN ({_marks(len(chunk))})",
                        (endpoint, model, *chunk),
                    )
                )
        return sorted(found)

    def requests(self, batch_id: str) -> dict[str, CompletionRequest]:
        """What a batch asked: key -> request."""
        with self.cache._guard():
            rows = self.cache._db.execute(
                "SELECT key, request FROM batch_requests WHERE batch_id = ?", (batch_id,)
            ).fetchall()
        return {key: _request_of(json.loads(blob)) for key, blob in rows}

    def forget(self, batch_id: str) -> None:
        with self.cache._write() as db:
            db.execute("DELETE FROM batch_requests WHERE batch_id = ?", (batch_id,))
            db.execute("DELETE FROM batches WHERE batch_id = ?", (batch_id,))

    def __len__(self) -> int:
        with self.cache._guard():
            return self.cache._db.execute("SELECT COUNT(*) FROM batches").fetchone()[0]
