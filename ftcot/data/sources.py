"""Where a task's files come from: their public URLs, a local mirror, or a project's own folder.

Each upstream file a task file names by URL is also named by its path in a mirror laid out like
the upstream repositories (``zero_shot_cot/dataset/...``, ``grade-school-math/grade_school_math/
data/...``, ``AQuA/...``) and pinned by SHA-256, so a download, a mirror and a cached copy are
known to hold the same bytes, and the fetch stage's output depends on nothing but its inputs.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from ftcot.data.tasks import TASKS, FileRef
from ftcot.io import DataError

MIRROR_ENV = "FTCOT_DATA_MIRROR"


@dataclass(frozen=True)
class SourceFile:
    path: str
    """Path inside a mirror, the same as in the upstream repository."""
    url: str
    sha256: str | None
    """Pinned checksum; None where no copy was at hand to pin (it is still recorded)."""


def mirror_path(ref: FileRef) -> str:
    """Where a URL's file sits in a mirror: the task file's ``mirror``, else the URL's host and path."""
    if ref.mirror:
        return ref.mirror
    parts = urlsplit(ref.url)
    return f"{parts.netloc}{parts.path}".lstrip("/")  # relative: a file:// URL has no host


def source_file(ref: FileRef) -> SourceFile:
    return SourceFile(mirror_path(ref), ref.url, ref.sha256)


def _builtin_source_files() -> dict[str, SourceFile]:
    """The upstream files of the built-in tasks, as ``<task>`` (one file) or ``<task>/<role>``."""
    files = {}
    for key, task in TASKS.items():
        for spec in task.sources.values():
            for role, ref in spec.roles.items():
                if ref.url is not None:
                    files[key if role == "all" else f"{key}/{role}"] = source_file(ref)
    return files


SOURCE_FILES: dict[str, SourceFile] = _builtin_source_files()


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def download(
    url: str,
    dest: Path,
    sha256: str | None = None,
    retries: int = 3,
    timeout: float = 60.0,
    backoff: float = 2.0,
) -> None:
    """Downloads ``url`` to ``dest``, retrying with exponential backoff. The bytes go to a temporary
    file beside ``dest`` (inside the download folder) and are moved into place only once they match
    ``sha256`` (when given): a failed or wrong download never replaces a file."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    last_error: Exception | None = None
    for attempt in range(retries):
        fd, name = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".part")
        partial = Path(name)
        try:
            digest = hashlib.sha256()
            with urllib.request.urlopen(url, timeout=timeout) as response, os.fdopen(fd, "wb") as f:
                while block := response.read(1 << 20):
                    digest.update(block)
                    f.write(block)
            if sha256 is not None and digest.hexdigest() != sha256:
                raise ChecksumMismatch(
                    f"{url}: the download's SHA-256 {digest.hexdigest()} does not match the pinned {sha256}; the file "
                    "changed upstream or the download is corrupt (nothing was written)"
                )
            partial.replace(dest)
            return
        except (urllib.error.URLError, TimeoutError, ConnectionError, OSError) as err:
            last_error = err
            if attempt + 1 < retries:
                time.sleep(backoff * 2**attempt)
        finally:
            partial.unlink(missing_ok=True)
    raise DataError(
        f"could not download {url} after {retries} tries ({last_error}). Without internet, point "
        f"data.mirror (or ${MIRROR_ENV}) at a local folder laid out like the upstream paths"
    )


class ChecksumMismatch(DataError):
    """A file's bytes are not the pinned ones."""


def _inside(folder: Path, relative: str, what: str) -> Path:
    """``folder / relative``, refused if it leaves ``folder`` (an absolute path, a ``..``). Checked on
    the path as written, not resolved: a mirror made of links to where the files really are is fine."""
    path = Path(os.path.normpath(folder / relative))
    if not path.is_relative_to(Path(os.path.normpath(folder))):
        raise DataError(f"{relative!r} leaves the {what} {folder}: refused")
    return path


def resolve_mirror(mirror: str | Sequence[str] | None) -> list[Path] | None:
    """The mirror folders, searched in order: ``data.mirror`` (one folder or a list) if set, else
    ``$FTCOT_DATA_MIRROR`` (folders separated by ``os.pathsep``, as in PATH), else None (download).
    Several folders serve datasets and published logs kept apart."""
    if mirror:
        chosen = [mirror] if isinstance(mirror, str) else list(mirror)
    else:
        chosen = [p for p in os.environ.get(MIRROR_ENV, "").split(os.pathsep) if p]
    return [Path(p).expanduser() for p in chosen] or None


def fetch_file(
    key: str | SourceFile,
    mirror: Path | Sequence[Path] | None,
    download_dir: Path,
    verify: bool = True,
    retries: int = 3,
) -> tuple[Path, str]:
    """The local path of a source file (a :class:`SourceFile`, or a key of ``SOURCE_FILES``) and
    its SHA-256, verified against the pin. ``mirror``: a folder, or folders searched in order."""
    source = SOURCE_FILES[key] if isinstance(key, str) else key
    if mirror is not None:
        folders = [mirror] if isinstance(mirror, Path) else list(mirror)
        candidates = [_inside(folder, source.path, "mirror") for folder in folders]
        found = [p for p in candidates if p.is_file()]
        if not found:
            where = ", ".join(str(p) for p in candidates)
            mirrors = "the mirror" if len(folders) == 1 else "none of the mirrors"
            raise DataError(f"{mirrors} {', '.join(map(str, folders))} has no {source.path} (expected at {where})")
        path = found[0]
    else:
        path = _inside(download_dir, source.path, "download folder")
        if not path.is_file() or (source.sha256 and sha256_file(path) != source.sha256):
            download(source.url, path, source.sha256 if verify else None, retries=retries)
    digest = sha256_file(path)
    if verify and source.sha256 and digest != source.sha256:
        raise DataError(
            f"{path}: SHA-256 {digest} does not match the pinned {source.sha256} of {source.url}; "
            "the file is corrupt or changed upstream (set data.verify_checksums: false to use it anyway)"
        )
    return path, digest
