"""The persistent, content-addressed store of teacher completions, shared by every run on a machine.

Every completion ever received is stored the moment it arrives, keyed by a SHA-256 of everything
that determines it (endpoint identity, model, exact prompt, sampling parameters, sample index): a
killed run loses at most the requests in flight, and a rerun asks only for what is missing.

Storage is one SQLite database in WAL mode (``completions.sqlite3``): opening it reads every page
once (``PRAGMA quick_check``, about 0.2 s per 100,000 answers), a lookup is a B-tree search, memory
is SQLite's page cache, and several processes read and append at once. Each record carries a
SHA-256 of its key and content: a record that does not match its checksum, does not decode, lacks a
field or belongs to another key is a miss — asked again, counted, and reported once with the
file's path — never a traceback and never a wrong rationale.

A damaged database file (bad pages: found by the check at open, or by an error later) is repaired
by the program, not the user: the damaged file is kept aside with its WAL as
``completions.sqlite3.damaged-<n>`` (never over an earlier one), every record that can still be read
and whose checksum holds is saved into a new store (through SQLite, probing rowid by rowid past a
damaged page, then from the bytes of every table-leaf page for records under a damaged interior
page or schema), as are the Batch API ledger and the claims, and one warning says how many answers
were saved, how many were lost (asked again when needed) and where the damaged file is. An
``flock`` on ``recovery.lock`` keeps two processes from repairing at once and keeps openers out
while the new store is moved in; a process still holding the old file notices the move before its
next write and reopens.

A cache this process may not write (a read-only mount, another user's shared cache, a folder it
cannot create) is opened read-only (SQLite ``mode=ro``, or ``immutable=1`` where not even the WAL's
index can be created) and serves every lookup; nothing is ever written to it. A run that needs an
answer it lacks stops before sending any request, saying how many are missing and how to go on.

Runs that share the cache also share the work: before asking, a run *claims* the keys it will ask
for; another run that needs a claimed key waits for its answer instead of paying for it again, and
takes the claim over if its owner died. Liveness is an ``flock`` that each claiming process holds
on ``owners/<id>.lock`` until it ends (the kernel drops it on any death, ``kill -9`` included), so
the cache must be on a local disk, as SQLite's WAL mode requires anyway.

The Batch API's submitted batches are remembered here too (:class:`BatchLedger`), with the requests
they hold, so a killed run resumes every batch it submitted and collects all of it.

A cache written by earlier versions (``completions.jsonl``, one JSON line per completion) is
imported on first open and kept beside as ``completions.jsonl.migrated`` (read in place, into
memory, where the cache is read-only).

The cache lives outside DVC's outputs on purpose (default ``~/.cache/finetune-cot/teacher``, or
``$FTCOT_CACHE_DIR/teacher``): DVC deletes a stage's outputs before rerunning it, and ``dvc exp run
--temp`` / ``--queue`` run in other folders, but answers already paid for must survive all of that.
The teach stage's output (a DVC-tracked file) records the completions each run used, so results
never depend on the cache being present.
"""

from __future__ import annotations

import errno
import fcntl
import functools
import hashlib
import json
import logging
import mmap
import os
import socket
import sqlite3
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from ftcot.paths import default_cache_dir
from ftcot.teacher.base import Completion, CompletionRequest, TeacherError, UnreadableResponse

__all__ = ["BatchLedger", "CacheError", "Claims", "CompletionCache", "Recovery", "cache_key", "default_cache_dir"]

log = logging.getLogger("ftcot")

DB_FILE = "completions.sqlite3"
LEGACY_FILE = "completions.jsonl"
# Held shared by every opener and exclusively by the process that repairs a damaged store.
RECOVERY_LOCK = "recovery.lock"
DAMAGED_SUFFIX = ".damaged-"
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
    """The cache as a whole cannot be used (read-only where answers must be stored, disk full, locked)."""


class _StoreDamaged(CacheError):
    """SQLite found damaged pages: the store is repaired (:meth:`CompletionCache._recover`) and the
    operation done again, except inside a transaction that cannot be redone."""

    def __init__(self, message: str, why: str):
        super().__init__(message)
        self.why = why


def _error_kind(err: sqlite3.Error) -> str:
    """What an SQLite error means for the cache: damaged, readonly, locked, full or other."""
    name = getattr(err, "sqlite_errorname", "") or ""
    text = str(err).lower()
    if name.startswith(("SQLITE_CORRUPT", "SQLITE_NOTADB")) or any(
        word in text for word in ("malformed", "not a database", "corrupt")
    ):
        return "damaged"
    if name.startswith("SQLITE_READONLY") or "readonly database" in text:
        return "readonly"
    if name.startswith(("SQLITE_BUSY", "SQLITE_LOCKED")) or "locked" in text or "busy" in text:
        return "locked"
    if name.startswith("SQLITE_FULL") or "full" in text:
        return "full"
    return "other"


@dataclass(frozen=True)
class Recovery:
    """What repairing a damaged store saved: answers (and batches) copied into the new store, answers
    lost (``None``: not even the table could be found), whether ``lost`` is a count or an estimate,
    and where the damaged file was kept."""

    saved: int
    lost: int | None
    exact: bool
    kept: Path
    batches: int


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


def _recovering(method: Callable) -> Callable:
    """``method`` again after the store it met damaged is repaired, or after another process moved a
    repaired store in. Not inside :meth:`CompletionCache.bulk`: half a transaction cannot be redone."""

    @functools.wraps(method)
    def run(self, *args, **kwargs):
        cache = getattr(self, "cache", self)  # a BatchLedger's methods repair their cache's store
        try:
            return method(self, *args, **kwargs)
        except _StoreDamaged as err:
            if cache._bulk_depth or cache.read_only:
                raise
            cache._recover(err.why)
        return method(self, *args, **kwargs)

    return run


class CompletionCache:
    def __init__(self, directory: str | Path, read_only: bool | None = None):
        """``read_only``: None finds out whether this process may write ``directory``; True opens
        the store read-only whatever the permissions say."""
        self.directory = Path(directory)
        self.path = self.directory / DB_FILE
        self.damaged: dict[str, str] = {}  # key -> why: records found damaged and not yet stored anew
        self.damaged_seen: set[str] = set()  # every key found damaged by this process
        self.recoveries: list[Recovery] = []  # damaged stores this process repaired
        self._owner: str | None = None
        self._owner_lock = None
        self._owner_listed = False
        self._bulk_depth = 0
        self._db: sqlite3.Connection | None = None
        self._file_id: tuple[int, int] | None = None  # (device, inode) of the store this connection has open
        self.read_only = self._may_not_write() if read_only is None else read_only
        self._db = self._open_read_only() if self.read_only else self._open()
        self.batches = BatchLedger(self)
        if self.read_only:
            self._read_legacy_in_place()
        else:
            self._migrate_legacy()

    # -- the database ---------------------------------------------------------------------------

    def _may_not_write(self) -> bool:
        """Whether this process cannot write the cache: a folder it cannot create, or a folder or
        store file it may not write (a read-only mount, another user's cache)."""
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            if err.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
                return True
            raise CacheError(f"the teacher cache folder {self.directory} cannot be created: {err}") from None
        if not os.access(self.directory, os.W_OK | os.X_OK):
            return True
        files = (self.path, self._sibling("-wal"), self._sibling("-shm"))
        return any(f.exists() and not os.access(f, os.W_OK) for f in files)

    def _sibling(self, suffix: str) -> Path:
        return self.path.with_name(self.path.name + suffix)

    def _unusable(self, err: sqlite3.Error) -> CacheError:
        text = str(err)
        kind = _error_kind(err)
        if kind == "damaged":
            if self.read_only:
                return CacheError(
                    f"the teacher cache {self.path} is read-only and could not be read ({text}). If another user "
                    "is writing it, rerun when they are done; if it is damaged, make it writable and rerun: the "
                    "run then keeps the damaged file aside and saves every answer that can still be read"
                )
            return _StoreDamaged(
                f"the teacher cache {self.path} turned out damaged ({text}); rerun: the next run repairs it", text
            )
        if kind == "readonly":
            return self.read_only_error()
        if kind == "locked":
            hint = f"another process held its write lock for over {BUSY_TIMEOUT_S:g} s; rerun when it is done"
        elif kind == "full":
            hint = "the disk is full: free space and rerun; nothing stored so far is lost"
        else:
            hint = f"check the disk and that {self.directory} is on a local file system, then rerun"
        return CacheError(f"the teacher cache {self.path} cannot be used ({text}): {hint}")

    def read_only_error(self, missing: int | None = None) -> CacheError:
        if missing is None:
            need = "this run must store answers in it"
        else:
            are = "answers this run needs are" if missing != 1 else "answer this run needs is"
            need = f"{missing} {are} not in it; nothing was sent"
        keep = (
            f" (copy the files of {self.directory} into that teacher folder first to keep the answers already in it)"
            if self.path.exists()
            else ""
        )
        return CacheError(
            f"the teacher cache at {self.directory} is read-only and {need}. Make {self.directory} (and the files "
            f"in it) writable, or set FTCOT_CACHE_DIR to a writable folder: the cache is then "
            f"$FTCOT_CACHE_DIR/teacher{keep}"
        )

    @contextmanager
    def _guard(self) -> Iterator[None]:
        try:
            yield
        except sqlite3.Error as err:
            raise self._unusable(err) from None

    @contextmanager
    def _recovery_lock(self, exclusive: bool) -> Iterator[None]:
        """Shared while opening the store, exclusive while repairing it: no process opens a store
        that is being moved aside, and two processes never repair at once."""
        with open(self.directory / RECOVERY_LOCK, "a") as f:
            fcntl.flock(f, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
            yield  # closing the file drops the lock

    def _file_identity(self) -> tuple[int, int] | None:
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            return None
        return st.st_dev, st.st_ino

    def _moved(self) -> bool:
        """Whether the store this connection has open was replaced (repaired by another process)."""
        return self._file_identity() != self._file_id

    def _connect(self) -> sqlite3.Connection:
        """A connection to the store, created or upgraded to the current schema (raises sqlite3.Error)."""
        db = self._connect_raw()
        try:
            version = db.execute("PRAGMA user_version").fetchone()[0]
            if version > SCHEMA_VERSION:
                raise self._newer(version)
            db.execute("PRAGMA journal_mode=WAL")  # readers never wait for writers
            db.execute("PRAGMA synchronous=NORMAL")  # commits survive a killed process; fsync at checkpoints
            if version < SCHEMA_VERSION:
                # Several processes may create it at once: the first takes the lock, the others find it made.
                db.execute("BEGIN IMMEDIATE")
                _create_schema(db)
                db.execute("COMMIT")
        except BaseException:
            db.close()
            raise
        return db

    def _connect_raw(self) -> sqlite3.Connection:
        db = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT_S, isolation_level=None)
        # Damaged bytes in a text column read back as undecodable text instead of raising.
        db.text_factory = lambda b: b.decode("utf-8", "surrogateescape")
        self._file_id = self._file_identity()  # sqlite3.connect made the file if there was none
        return db

    def _newer(self, version: int) -> CacheError:
        return CacheError(
            f"the teacher cache {self.path} was written by a newer finetune-cot (schema {version}): "
            "upgrade, or point FTCOT_CACHE_DIR elsewhere"
        )

    def _open(self) -> sqlite3.Connection:
        """The store, checked (``PRAGMA quick_check``: one read of every page) and repaired if damaged."""
        try:
            with self._recovery_lock(exclusive=False):
                db, why = self._connect_checked()
        except OSError as err:
            if err.errno not in (errno.EACCES, errno.EPERM, errno.EROFS):
                raise CacheError(f"the teacher cache folder {self.directory} cannot be used: {err}") from None
            self.read_only = True  # permissions the checks above could not see (an ACL, a policy)
            return self._open_read_only()
        except sqlite3.Error as err:
            if _error_kind(err) != "readonly":
                raise self._unusable(err) from None
            self.read_only = True
            return self._open_read_only()
        if why is None:
            return db
        self._db = db
        self._recover(why)
        return self._db

    def _connect_checked(self) -> tuple[sqlite3.Connection, str | None]:
        """A connection, and None or what makes the store damaged (raises sqlite3.Error for anything else)."""
        try:
            db = self._connect()
        except sqlite3.Error as err:
            if _error_kind(err) != "damaged":
                raise
            return self._connect_raw(), str(err)  # not even its header reads
        try:
            return db, _check(db)
        except sqlite3.Error as err:
            if _error_kind(err) != "damaged":
                db.close()
                raise
            return db, str(err)

    def _open_read_only(self) -> sqlite3.Connection:
        """The store opened so that nothing can be written: ``mode=ro``; ``immutable=1`` where the WAL's
        index cannot even be created (a read-only folder); an empty store in memory where there is none."""
        if not self.path.exists():
            return _empty_store()
        uri = self.path.absolute().as_uri()
        for flag in ("mode=ro", "immutable=1"):
            db = sqlite3.connect(f"{uri}?{flag}", uri=True, timeout=BUSY_TIMEOUT_S, isolation_level=None)
            db.text_factory = lambda b: b.decode("utf-8", "surrogateescape")
            try:
                version = db.execute("PRAGMA user_version").fetchone()[0]
                db.execute("PRAGMA temp_store=MEMORY")  # the old cache's lines, if any, go to memory
            except sqlite3.Error as err:
                db.close()
                if flag == "mode=ro" and _error_kind(err) in ("readonly", "other"):
                    continue  # no -shm and none may be made: read the file as it is
                raise self._unusable(err) from None
            if version > SCHEMA_VERSION:
                db.close()
                raise self._newer(version)
            if version < SCHEMA_VERSION:
                db.close()
                return _empty_store()  # made but never filled: nothing cached
            wal = self._sibling("-wal")
            if flag == "immutable=1" and wal.exists() and wal.stat().st_size:
                log.warning(
                    "%s: answers stored since its last checkpoint (in %s) cannot be read without write access "
                    "to %s; they count as missing",
                    self.path,
                    wal.name,
                    self.directory,
                )
            return db
        raise AssertionError("unreachable")  # immutable=1 either opens or raises

    def _reconnect(self, locked: bool = False) -> None:
        """Opens the store now at ``self.path`` (moved in by a repair) in place of the old one."""
        old, self._db = self._db, None
        if old is not None:
            _close_quietly(old)
        with self._guard():
            if locked:
                self._db = self._connect()
            else:
                with self._recovery_lock(exclusive=False):
                    self._db = self._connect()

    def _begin(self) -> sqlite3.Connection:
        """``BEGIN IMMEDIATE`` on the store at ``self.path``: a store another process repaired and
        moved in meanwhile is opened first, so no write goes to the file kept aside."""
        while True:
            self._db.execute("BEGIN IMMEDIATE")
            if not self._moved():
                return self._db
            _rollback_quietly(self._db)
            self._reconnect()

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """One write transaction (or a part of the enclosing :meth:`bulk` one)."""
        if self.read_only:
            raise self.read_only_error()
        if self._bulk_depth:
            with self._guard():
                yield self._db
            return
        with self._guard():
            db = self._begin()
            try:
                yield db
            except BaseException:
                _rollback_quietly(db)
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
        try:
            with self._write():
                self._bulk_depth = 1
                try:
                    yield
                finally:
                    self._bulk_depth = 0
        except _StoreDamaged as err:
            self._recover(err.why)
            raise CacheError(
                f"the teacher cache {self.path} turned out damaged while storing a collected batch; it was "
                "repaired (see the warning above). Rerun: the batch is collected again, unless its entry was lost"
            ) from None

    def close(self, release: bool = True) -> None:
        """Gives up this run's claims (``release``) and closes the store. Without ``release``
        nothing is written: the claims stay, and the next run that needs them takes them over,
        since their owner's proof of life (its lock file) is gone."""
        if getattr(self, "_db", None) is None:
            return
        try:
            if release:
                self._release(None)
                if self._owner_listed:
                    with self._write() as db:
                        db.execute("DELETE FROM owners WHERE owner = ?", (self._owner,))
        except CacheError:
            pass  # claims of a dead owner are taken over by whoever needs them
        finally:
            _close_quietly(self._db)
            self._db = None
            if self._owner_lock is not None:
                (self.directory / "owners" / f"{self._owner}.lock").unlink(missing_ok=True)
                self._owner_lock.close()
                self._owner_lock = None

    def __del__(self) -> None:
        # No write from the garbage collector: it may run while another cache on this store, in this
        # very thread, holds the write lock, and waiting for it would never end.
        self.close(release=False)

    def __enter__(self) -> CompletionCache:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- repairing a damaged store --------------------------------------------------------------

    def _recover(self, why: str) -> None:
        """Keeps the damaged store aside, saves every readable record into a new one, and goes on
        with it; where another process repaired it meanwhile, just opens its new store."""
        with self._recovery_lock(exclusive=True):
            if self._moved():
                self._reconnect(locked=True)
                return
            recovery = self._rebuild()
        self.recoveries.append(recovery)
        if recovery.lost is None:
            lost = "any others were lost (not even its tables could be read to count them)"
        else:
            lost = f"{recovery.lost} were lost and are asked again when needed"
            if not recovery.exact:
                lost = f"about {lost}" if recovery.lost else "none were found lost"
        batches = f"; {recovery.batches} submitted batches are still remembered" if recovery.batches else ""
        log.warning(
            "the teacher cache %s was damaged (%s): %d answers were saved into a new store, %s%s; the damaged file "
            "is kept as %s",
            self.path,
            why,
            recovery.saved,
            lost,
            batches,
            recovery.kept,
        )

    def _rebuild(self) -> Recovery:
        old = self._db
        self._db = None
        # Writers wait on the damaged file until the new store is in place, then see it moved.
        try:
            old.execute("BEGIN IMMEDIATE")
        except sqlite3.Error:
            pass  # too damaged to lock: then no one can write it either
        staging = self.path.with_name(f"{DB_FILE}.salvage-{uuid.uuid4().hex}")
        try:
            try:
                saved = _salvage(old, self.path, staging)
            except sqlite3.Error as err:
                raise self._unusable(err) from None  # the new store could not be written (disk full)
            kept = self._keep_aside()
            os.replace(staging, self.path)
            _sync_folder(self.directory)
        except BaseException:
            # The damaged store stays where it is: the next open tries again.
            self._db = old
            _rollback_quietly(old)
            raise
        finally:
            staging.unlink(missing_ok=True)
        _close_quietly(old)
        with self._guard():
            self._db = self._connect()
        return Recovery(saved.saved, saved.lost, saved.exact, kept, saved.batches)

    def _keep_aside(self) -> Path:
        """Moves the damaged store and its WAL to the first free ``completions.sqlite3.damaged-<n>``."""
        n = 1
        while any(Path(f"{self.path}{DAMAGED_SUFFIX}{n}{s}").exists() for s in ("", "-wal", "-shm")):
            n += 1
        kept = Path(f"{self.path}{DAMAGED_SUFFIX}{n}")
        # The WAL first: a store without its old WAL next to it is never read with a foreign one.
        for suffix in ("-wal", "-shm", ""):
            source = Path(f"{self.path}{suffix}")
            if source.exists():
                source.rename(f"{kept}{suffix}")
        return kept

    # -- completions ----------------------------------------------------------------------------

    @_recovering
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

    @_recovering
    def get_many(self, keys: Iterable[str]) -> dict[str, Completion]:
        """The valid completions among ``keys``; damaged records are left out (and noted)."""
        found: dict[str, Completion] = {}
        for key, checksum, blob in self._rows(sorted(set(keys))):
            try:
                found[key] = decode_record(key, checksum, blob)
            except DamagedRecord as err:
                self._note_damaged(key, str(err))
        return found

    @_recovering
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

    @_recovering
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
        if not self._owner_listed:  # again after a repair that could not save this row
            folder = self.directory / "owners"
            with self._write() as db:
                db.execute(
                    "INSERT OR REPLACE INTO owners VALUES (?, ?, ?)", (self._owner, os.getpid(), socket.gethostname())
                )
                # Owners that died (kill -9) leave their claims behind: cleared here once per run.
                for path in folder.glob("*.lock"):
                    if path.stem != self._owner and not self._alive(path.stem):
                        db.execute("DELETE FROM claims WHERE owner = ?", (path.stem,))
                        db.execute("DELETE FROM owners WHERE owner = ?", (path.stem,))
            self._owner_listed = True
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

    @_recovering
    def describe_owner(self, owner: str) -> str:
        with self._guard():
            row = self._db.execute("SELECT pid, host FROM owners WHERE owner = ?", (owner,)).fetchone()
        return f"pid {row[0]} on {row[1]}" if row else "a run that has ended"

    @_recovering
    def claim(self, keys: Sequence[str]) -> Claims:
        """Claims the keys of ``keys`` that are neither answered nor claimed by a live run. Claims of
        runs that died are taken over. One transaction: two runs never claim the same key.

        A read-only cache claims nothing: where all of ``keys`` are answered it says so, else it
        raises :class:`CacheError` before anything is asked for."""
        if self.read_only:
            done = self.get_many(keys)
            missing = len(set(keys) - done.keys())
            if missing:
                raise self.read_only_error(missing)
            return Claims(done=done)
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

    @_recovering
    def release_claims(self, keys: Iterable[str] | None = None) -> None:
        """Gives up this run's claims (all, or on ``keys``): a waiting run may then ask for them."""
        self._release(None if keys is None else list(keys))

    def _release(self, keys: Sequence[str] | None) -> None:
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

    def _read_legacy_in_place(self) -> None:
        """A read-only cache's old ``completions.jsonl``, served from memory beside the store (a view
        named ``completions`` over both, in SQLite's temp schema, which lives in memory)."""
        legacy = self.directory / LEGACY_FILE
        if not legacy.exists():
            return
        read = damaged = 0
        with self._guard():
            db = self._db
            db.execute("CREATE TEMP TABLE legacy (key TEXT PRIMARY KEY, checksum TEXT NOT NULL, record BLOB NOT NULL)")
            with legacy.open("rb") as f:
                for line in f:
                    try:
                        db.execute("INSERT OR IGNORE INTO temp.legacy VALUES (?, ?, ?)", _legacy_row(line))
                        read += 1
                    except DamagedRecord:
                        damaged += 1
            db.execute(
                "CREATE TEMP VIEW completions AS SELECT key, checksum, record FROM main.completions UNION ALL "
                "SELECT key, checksum, record FROM temp.legacy WHERE key NOT IN (SELECT key FROM main.completions)"
            )
        log.info(
            "teacher cache %s is read-only: %d completions of the old file %s are read in place (%d unreadable "
            "lines left out), not moved into %s",
            self.directory,
            read,
            legacy.name,
            damaged,
            self.path.name,
        )


def _create_schema(db: sqlite3.Connection) -> None:
    for statement in _SCHEMA.split(";"):
        if statement.strip():
            db.execute(statement)
    db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")


def _empty_store() -> sqlite3.Connection:
    """An empty store in memory: what a read-only cache with no store file holds."""
    db = sqlite3.connect(":memory:", isolation_level=None)
    _create_schema(db)
    return db


def _check(db: sqlite3.Connection) -> str | None:
    """None for a sound store, else what SQLite found damaged (raises sqlite3.Error where it cannot even read)."""
    rows = db.execute("PRAGMA quick_check(1)").fetchall()
    if rows == [("ok",)]:
        return None
    return " ".join(" ".join(str(r[0]) for r in rows).replace("*** in database main ***", "").split())  # one line


def _rollback_quietly(db: sqlite3.Connection) -> None:
    """Ends an open transaction; on a damaged store SQLite may have ended it already."""
    try:
        if db.in_transaction:
            db.execute("ROLLBACK")
    except sqlite3.Error:
        pass


def _close_quietly(db: sqlite3.Connection | None) -> None:
    if db is None:
        return
    try:
        _rollback_quietly(db)
        db.close()
    except sqlite3.Error:
        pass  # collected in another thread than the one that opened it: the handle ends with the process


def _sync_folder(folder: Path) -> None:
    """Makes the renames in ``folder`` durable."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


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


# -- salvaging a damaged store ------------------------------------------------------------------

_MIN_ROWID = -(2**63)


@dataclass
class _Scan:
    """How a table scan went: rowids that could not be read (each a row lost, or a gap) and
    whether the table was found at all."""

    unreadable: int = 0
    found: bool = True


def _last_rowid(db: sqlite3.Connection, table: str, seen: int) -> int:
    """The highest rowid worth probing: the table's own ``max(rowid)``, else a bound from the
    file's size (every row takes at least a few bytes of a page)."""
    try:
        last = db.execute(f"SELECT max(rowid) FROM {table}").fetchone()[0]
        if last is not None:
            return last
    except sqlite3.Error:
        pass
    try:
        pages, size = (db.execute(f"PRAGMA {p}").fetchone()[0] for p in ("page_count", "page_size"))
    except sqlite3.Error:
        pages, size = 0, 4096
    return seen + pages * (size // 64)  # a bound, not a count: rows of these tables take tens of bytes or more


def _table_rows(db: sqlite3.Connection, table: str, columns: str, scan: _Scan) -> Iterator[tuple]:
    """Every row of ``table`` that can still be read. A scan in rowid order stops at the first
    damaged page; from there, rowids are probed one by one (each lookup its own path from the root,
    so one damaged page loses only the rows on it, or under it) until one reads, and the scan goes on."""
    rest = f"SELECT rowid, {columns} FROM {table} WHERE rowid >= ? ORDER BY rowid"
    one = f"SELECT rowid, {columns} FROM {table} WHERE rowid = ?"
    start = _MIN_ROWID
    while True:
        try:
            for rowid, *row in db.execute(rest, (start,)):
                if rowid >= start:  # a damaged page may hand out a rowid out of order: never trusted to skip
                    start = rowid + 1
                yield tuple(row)
            return
        except sqlite3.Error:
            if start == _MIN_ROWID:
                try:
                    db.execute(f"SELECT 1 FROM {table} LIMIT 0").fetchall()
                except sqlite3.Error:
                    scan.found = False  # not even the table's definition reads: nothing to probe
                    return
                start = 1  # rowids SQLite assigns start at 1
        last = _last_rowid(db, table, start)
        while start <= last:
            try:
                hit = db.execute(one, (start,)).fetchone()
            except sqlite3.Error:
                scan.unreadable += 1
                start += 1
                continue
            start += 1
            if hit is not None:
                yield tuple(hit[1:])
                break  # readable again: back to scanning
        else:
            return


def _index_keys(db: sqlite3.Connection) -> tuple[set[str], bool]:
    """The keys in the completions table's key index (a B-tree of its own, often whole where the
    table is not), and whether all of it could be read: what tells how many records were lost."""
    keys: set[str] = set()
    try:
        for (key,) in db.execute("SELECT key FROM completions INDEXED BY sqlite_autoindex_completions_1"):
            keys.add(key)
    except sqlite3.Error:
        return keys, False
    return keys, True


def _valid_ledger_request(batch_id: object, key: object, blob: object) -> dict | None:
    """A batch_requests row's request identity if the row is whole (its key derives from it)."""
    if not (isinstance(batch_id, str) and isinstance(key, str) and isinstance(blob, bytes)):
        return None
    try:
        identity = json.loads(blob.decode("utf-8"))
        if not isinstance(identity, dict) or not all(isinstance(identity.get(f), str) for f in ("endpoint", "model")):
            return None
        if cache_key(identity["endpoint"], identity["model"], _request_of(identity)) != key:
            return None
    except (UnicodeDecodeError, ValueError, KeyError, TypeError):
        return None
    return identity


@dataclass
class _Saved:
    saved: int = 0
    lost: int | None = 0
    exact: bool = True
    batches: int = 0


def _salvage(src: sqlite3.Connection, path: Path, staging: Path) -> _Saved:
    """Copies every readable, whole record of the damaged store ``src`` (the file ``path``) into a
    new store at ``staging``."""
    dest = sqlite3.connect(staging, isolation_level=None)
    try:
        dest.execute("BEGIN")
        _create_schema(dest)
        out = _salvage_completions(src, path, dest)
        out.batches = _salvage_ledger(src, dest)
        _salvage_claims(src, dest)
        dest.execute("COMMIT")
    finally:
        dest.close()
    return out


def _salvage_completions(src: sqlite3.Connection, path: Path, dest: sqlite3.Connection) -> _Saved:
    saved: set[str] = set()

    def keep(key: object, checksum: object, blob: object) -> bool:
        if not isinstance(key, str) or not isinstance(checksum, str) or key in saved:
            return key in saved
        try:
            decode_record(key, checksum, blob)
        except DamagedRecord:
            return False
        dest.execute("INSERT INTO completions VALUES (?, ?, ?)", (key, checksum, blob))
        saved.add(key)
        return True

    scan = _Scan()
    failed: set[object] = set()  # keys of rows read whose checksum or content does not hold
    for key, checksum, blob in _table_rows(src, "completions", "key, checksum, record", scan):
        if not keep(key, checksum, blob):
            failed.add(key)
    indexed, whole = _index_keys(src)
    if not whole or indexed - saved:  # records under a damaged page may still be whole in the file
        for key, checksum, blob in _raw_rows(path):
            keep(key, checksum, blob)
    if whole:  # every key the store held is known: the lost ones are those not saved
        return _Saved(saved=len(saved), lost=len(indexed - saved))
    if not scan.found and not saved:
        return _Saved(lost=None, exact=False)
    return _Saved(saved=len(saved), lost=len(failed - saved) + scan.unreadable, exact=False)


def _salvage_ledger(src: sqlite3.Connection, dest: sqlite3.Connection) -> int:
    """The Batch API ledger's readable entries; a batch whose own row is lost is rebuilt from its
    requests (they name endpoint and model), and one with no request left is dropped."""
    requests: dict[str, list[tuple[str, bytes]]] = {}
    identity_of: dict[str, dict] = {}
    for batch_id, key, blob in _table_rows(src, "batch_requests", "batch_id, key, request", _Scan()):
        identity = _valid_ledger_request(batch_id, key, blob)
        if identity is not None:
            requests.setdefault(batch_id, []).append((key, blob))
            identity_of.setdefault(batch_id, identity)
    batches = {b: (i["endpoint"], i["model"]) for b, i in identity_of.items()}
    for batch_id, endpoint, model in _table_rows(src, "batches", "batch_id, endpoint, model", _Scan()):
        if batch_id in batches and isinstance(endpoint, str) and isinstance(model, str):
            batches[batch_id] = (endpoint, model)
    for batch_id, (endpoint, model) in batches.items():
        dest.execute("INSERT INTO batches VALUES (?, ?, ?)", (batch_id, endpoint, model))
        dest.executemany(
            "INSERT OR IGNORE INTO batch_requests VALUES (?, ?, ?)", ((batch_id, k, b) for k, b in requests[batch_id])
        )
    return len(batches)


def _salvage_claims(src: sqlite3.Connection, dest: sqlite3.Connection) -> None:
    """Live runs' claims, so that no one pays again for what they are asking for."""
    for key, owner in _table_rows(src, "claims", "key, owner", _Scan()):
        if isinstance(key, str) and isinstance(owner, str):
            dest.execute("INSERT OR IGNORE INTO claims VALUES (?, ?)", (key, owner))
    for owner, pid, host in _table_rows(src, "owners", "owner, pid, host", _Scan()):
        if isinstance(owner, str) and type(pid) is int and isinstance(host, str):
            dest.execute("INSERT OR IGNORE INTO owners VALUES (?, ?, ?)", (owner, pid, host))


# Records on pages that SQLite can no longer reach (under a damaged interior page, or behind a
# damaged schema) are read from the file's bytes: a table-leaf page lists its cells, and every
# completion proves itself with its checksum, so whatever is read this way is stored only if whole.

_TABLE_LEAF = 0x0D
_WAL_HEADER, _WAL_FRAME_HEADER = 32, 24


def _varint(buf: bytes, i: int) -> tuple[int, int]:
    """SQLite's variable-length integer at ``buf[i]``, and the offset after it."""
    value = 0
    for n in range(8):
        byte = buf[i + n]
        value = (value << 7) | (byte & 0x7F)
        if byte < 0x80:
            return value, i + n + 1
    return (value << 8) | buf[i + 8], i + 9


def _page_size(header: bytes, offset: int, width: int) -> int:
    """The page size written at ``header[offset:offset + width]``, or 0 where it is not one."""
    size = int.from_bytes(header[offset : offset + width], "big") if len(header) >= offset + width else 0
    size = 65536 if size == 1 else size
    return size if 512 <= size <= 65536 and not size & (size - 1) else 0


def _mapped(path: Path, stack: ExitStack) -> bytes:
    """The file's bytes, mapped rather than read: a store can be larger than memory."""
    try:
        f = stack.enter_context(path.open("rb"))
        return stack.enter_context(mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ))
    except (OSError, ValueError):
        return b""  # absent, unreadable or empty


class _RawPages:
    """The pages of a damaged store and the frames of its WAL, as bytes."""

    def __init__(self, path: Path, stack: ExitStack):
        self.main = _mapped(path, stack)
        self.wal = _mapped(path.with_name(path.name + "-wal"), stack)
        self.size = _page_size(self.main[:100], 16, 2) or _page_size(self.wal[:32], 8, 4) or 4096
        # The bytes reserved at each page's end, where the header around them is whole (bytes 21-23
        # are fixed by the format); else none, as SQLite writes by default.
        sound = self.main[21:24] == b"\x40\x20\x20" and self.main[20] < self.size // 8
        self.usable = self.size - (self.main[20] if sound else 0)
        self.frames: dict[int, int] = {}  # page number -> offset of its latest version in the WAL
        step = _WAL_FRAME_HEADER + self.size
        for at in range(_WAL_HEADER, len(self.wal) - step + 1, step):
            self.frames[int.from_bytes(self.wal[at : at + 4], "big")] = at + _WAL_FRAME_HEADER

    def page(self, number: int) -> bytes:
        """Page ``number`` as SQLite would read it: its latest WAL frame, else the file's."""
        if number in self.frames:
            at = self.frames[number]
            return self.wal[at : at + self.size]
        if not 1 <= number <= len(self.main) // self.size:
            raise ValueError(f"no page {number}")
        return self.main[(number - 1) * self.size : number * self.size]

    def all(self) -> Iterator[tuple[int, bytes]]:
        """Every version of every page: the file's, then each WAL frame's."""
        for number in range(1, len(self.main) // self.size + 1):
            yield number, self.main[(number - 1) * self.size : number * self.size]
        step = _WAL_FRAME_HEADER + self.size
        for at in range(_WAL_HEADER, len(self.wal) - step + 1, step):
            yield int.from_bytes(self.wal[at : at + 4], "big"), self.wal[at + _WAL_FRAME_HEADER : at + step]

    def payload(self, page: bytes, at: int, size: int) -> bytes:
        """A cell's ``size`` bytes of payload from ``at`` on, following its overflow pages."""
        if size > len(self.main) + len(self.wal):
            raise ValueError("a damaged payload size")
        most = self.usable - 35  # the most a table-leaf cell keeps on its page (SQLite's file format)
        if size <= most:
            local = size
        else:
            least = (self.usable - 12) * 32 // 255 - 23
            local = least + (size - least) % (self.usable - 4)
            local = local if local <= most else least
        out = bytearray(page[at : at + local])
        following = int.from_bytes(page[at + local : at + local + 4], "big")
        for _ in range(size // (self.usable - 4) + 1):
            if len(out) >= size:
                break
            overflow = self.page(following)
            following = int.from_bytes(overflow[:4], "big")
            out += overflow[4 : self.usable]
        if len(out) < size:
            raise ValueError("overflow chain too short")
        return bytes(out[:size])


def _raw_values(payload: bytes) -> list[object] | None:
    """The text and blob values of a record of three (a completions row), else None."""
    end, i = _varint(payload, 0)
    kinds = []
    while i < end:
        kind, i = _varint(payload, i)
        kinds.append(kind)
    if len(kinds) != 3 or any(k < 12 for k in kinds):
        return None
    values: list[object] = []
    at = end
    for kind in kinds:
        n = (kind - 12) // 2
        chunk = payload[at : at + n]
        if len(chunk) != n:
            return None
        values.append(chunk.decode("utf-8", "surrogateescape") if kind % 2 else chunk)
        at += n
    return values


def _raw_rows(path: Path) -> Iterator[list[object]]:
    """Every (key, checksum, record)-shaped cell on the table-leaf pages of the store at ``path``
    and of its WAL, unchecked: a page whose header or cell is damaged gives nothing or garbage."""
    with ExitStack() as stack:
        pages = _RawPages(path, stack)
        for number, page in pages.all():
            start = 100 if number == 1 else 0  # page 1 begins with the file's header
            if len(page) <= start + 8 or page[start] != _TABLE_LEAF:
                continue
            for c in range(int.from_bytes(page[start + 3 : start + 5], "big")):
                try:
                    at = int.from_bytes(page[start + 8 + 2 * c : start + 10 + 2 * c], "big")
                    size, at = _varint(page, at)
                    _, at = _varint(page, at)  # the rowid
                    values = _raw_values(pages.payload(page, at, size))
                except (IndexError, ValueError):
                    continue
                if values is not None:
                    yield values


class BatchLedger:
    """The Batch API's submitted batches and the requests in each, until they are collected."""

    def __init__(self, cache: CompletionCache):
        self.cache = cache

    @_recovering
    def record(
        self, batch_id: str, endpoint: str, model: str, requests: Sequence[tuple[str, CompletionRequest]]
    ) -> None:
        rows = [(batch_id, key, _canonical(_identity(endpoint, model, r))) for key, r in requests]
        with self.cache._write() as db:
            db.execute("INSERT OR REPLACE INTO batches VALUES (?, ?, ?)", (batch_id, endpoint, model))
            db.executemany("INSERT OR REPLACE INTO batch_requests VALUES (?, ?, ?)", rows)

    @_recovering
    def rename(self, old: str, new: str) -> None:
        """The entry of an upload (``upload:<file id>``, recorded before its batch was created)
        becomes the batch's."""
        with self.cache._write() as db:
            db.execute("UPDATE batches SET batch_id = ? WHERE batch_id = ?", (new, old))
            db.execute("UPDATE batch_requests SET batch_id = ? WHERE batch_id = ?", (new, old))

    @_recovering
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

    @_recovering
    def requests(self, batch_id: str) -> dict[str, CompletionRequest]:
        """What a batch asked: key -> request."""
        with self.cache._guard():
            rows = self.cache._db.execute(
                "SELECT key, request FROM batch_requests WHERE batch_id = ?", (batch_id,)
            ).fetchall()
        return {key: _request_of(json.loads(blob)) for key, blob in rows}

    @_recovering
    def forget(self, batch_id: str) -> None:
        with self.cache._write() as db:
            db.execute("DELETE FROM batch_requests WHERE batch_id = ?", (batch_id,))
            db.execute("DELETE FROM batches WHERE batch_id = ?", (batch_id,))

    @_recovering
    def __len__(self) -> int:
        with self.cache._guard():
            return self.cache._db.execute("SELECT COUNT(*) FROM batches").fetchone()[0]
