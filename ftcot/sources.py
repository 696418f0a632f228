"""Where the paper's dataset files come from: their public URLs, a local mirror, or the Hub.

Each upstream file is named by its path in a mirror laid out like the upstream repositories
(``zero_shot_cot/dataset/...``, ``grade-school-math/grade_school_math/data/...``, ``AQuA/...``)
and pinned by SHA-256, so a download, a mirror and a cached copy are known to hold the same
bytes, and the fetch stage's output depends on nothing but its parameters.
"""

from __future__ import annotations

import hashlib
import os
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from ftcot.io import DataError

MIRROR_ENV = "FTCOT_DATA_MIRROR"

KOJIMA = "https://raw.githubusercontent.com/kojima-takeshi188/zero_shot_cot/main/dataset/"
GSM8K = "https://raw.githubusercontent.com/openai/grade-school-math/master/grade_school_math/data/"
AQUA = "https://raw.githubusercontent.com/google-deepmind/AQuA/master/"


@dataclass(frozen=True)
class SourceFile:
    path: str
    """Path inside a mirror, the same as in the upstream repository."""
    url: str
    sha256: str | None
    """Pinned checksum; None where no copy was at hand to pin (it is still recorded)."""


def _kojima(rel: str, sha256: str) -> SourceFile:
    return SourceFile(f"zero_shot_cot/dataset/{rel}", KOJIMA + rel, sha256)


SOURCE_FILES: dict[str, SourceFile] = {
    "single_eq": _kojima("SingleEq/questions.json", "051507bd2b489c257057b485774a83d2710c23a4bc0f4a58e1822ae2773ef05e"),
    "addsub": _kojima("AddSub/AddSub.json", "21930fa90385c72b5a15f4b9a4dda27276b889ae9ff44285505cdd9fa0a20df8"),
    "multiarith": _kojima(
        "MultiArith/MultiArith.json", "dc9db1b6cc68b1ecc2dec830d15aaf8c9a0932aa31d5ffce88ef3628179d36f4"
    ),
    "svamp": _kojima("SVAMP/SVAMP.json", "5be77703a6d891ae476d7c082787ad361392aa02453b132516cdd5f4e7934e3e"),
    "date_understanding": _kojima(
        "Bigbench_Date/task.json", "ff716f0e399109146db3a998281c39954907b78268a9b633a95582d63847822f"
    ),
    "tracking_shuffled_objects": _kojima(
        "Bigbench_object_tracking/task.json", "74b74d3c8827c0387a3f24ee9efa7edd90b2d53af3daacb9961341af66f750a0"
    ),
    "strategy_qa": _kojima("StrategyQA/task.json", "60af9081fed20102fd8bb1e02dc7d9f12238efcba33e4c1a56b4d61cb6409803"),
    "coin_flip": _kojima(
        "coin_flip/coin_flip.json", "68cf201737a1463ef6bed5419622805a8934d92bff6a28a9dfbf83be3135ba5a"
    ),
    "last_letter_concatenation": _kojima(
        "last_letters/last_letters.json", "60e8d092d0a6423d3256e87e0c249b69aefea4cd27985082095fa4e93931fb02"
    ),
    "commonsense_qa/train": _kojima(
        "CommonsenseQA/train_rand_split.jsonl", "58ffa3c8472410e24b8c43f423d89c8a003d8284698a6ed7874355dedd09a2fb"
    ),
    "commonsense_qa/test": _kojima(
        "CommonsenseQA/dev_rand_split.jsonl", "3210497fdaae614ac085d9eb873dd7f4d49b6f965a93adadc803e1229fd8a02a"
    ),
    "gsm8k/train": SourceFile(
        "grade-school-math/grade_school_math/data/train.jsonl",
        GSM8K + "train.jsonl",
        "17f347dc51477c50d4efb83959dbb7c56297aba886e5544ee2aaed3024813465",
    ),
    "gsm8k/test": SourceFile(
        "grade-school-math/grade_school_math/data/test.jsonl",
        GSM8K + "test.jsonl",
        "3730d312f6e3440559ace48831e51066acaca737f6eabec99bccb9e4b3c39d14",
    ),
    "aqua/train": SourceFile("AQuA/train.json", AQUA + "train.json", None),
    "aqua/dev": SourceFile(
        "AQuA/dev.json", AQUA + "dev.json", "4a52301d8a49ae0b286f8e697f9c5da1b109b247b825b47b4c6de34312dceec5"
    ),
    "aqua/test": SourceFile(
        "AQuA/test.json", AQUA + "test.json", "de41581881ef95c5588c44ddc701c77fd480839241dd422a0d181262af24520c"
    ),
}


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def download(url: str, dest: Path, retries: int = 3, timeout: float = 60.0, backoff: float = 2.0) -> None:
    """Downloads ``url`` to ``dest`` atomically, retrying with exponential backoff."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    partial = dest.with_name(dest.name + ".part")
    last_error: Exception | None = None
    for attempt in range(retries):
        try:
            with urllib.request.urlopen(url, timeout=timeout) as response, partial.open("wb") as f:
                while block := response.read(1 << 20):
                    f.write(block)
            partial.replace(dest)
            return
        except (urllib.error.URLError, TimeoutError, ConnectionError, OSError) as err:
            last_error = err
            if attempt + 1 < retries:
                time.sleep(backoff * 2**attempt)
    partial.unlink(missing_ok=True)
    raise DataError(
        f"could not download {url} after {retries} tries ({last_error}). Without internet, point "
        f"data.mirror (or ${MIRROR_ENV}) at a local folder laid out like the upstream paths"
    )


def resolve_mirror(mirror: str | None) -> Path | None:
    """``data.mirror`` if set, else ``$FTCOT_DATA_MIRROR``, else None (download)."""
    chosen = mirror or os.environ.get(MIRROR_ENV)
    return Path(chosen).expanduser() if chosen else None


def fetch_file(
    key: str, mirror: Path | None, download_dir: Path, verify: bool = True, retries: int = 3
) -> tuple[Path, str]:
    """The local path of source file ``key`` and its SHA-256, verified against the pin."""
    source = SOURCE_FILES[key]
    if mirror is not None:
        path = mirror / source.path
        if not path.is_file():
            raise DataError(f"the mirror {mirror} has no {source.path} (expected at {path})")
    else:
        path = download_dir / source.path
        if not path.is_file() or (source.sha256 and sha256_file(path) != source.sha256):
            download(source.url, path, retries=retries)
    digest = sha256_file(path)
    if verify and source.sha256 and digest != source.sha256:
        raise DataError(
            f"{path}: SHA-256 {digest} does not match the pinned {source.sha256} of {source.url}; "
            "the file is corrupt or changed upstream (set data.verify_checksums: false to use it anyway)"
        )
    return path, digest
