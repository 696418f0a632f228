"""What produced a run: code, parameters, packages, device, seeds and the teacher's identity.

The report stage writes this into metrics/summary.json and report.md, so a copied-out report
still says where its numbers came from. Everything here is a function of the code, the params and
the installed packages, never of the clock or the host, so the same run gives the same bytes on
another machine (DVC's caching and the byte-for-byte reproduction depend on it). Secrets never
appear: the params hold only the *name* of the API key's variable, and credentials in a URL are
masked.
"""

from __future__ import annotations

import hashlib
import platform
import subprocess
from collections.abc import Iterable
from importlib import metadata
from pathlib import Path

from ftcot.redaction import url_without_credentials
from ftcot.teacher.backends import ORACLE, REPLAY, teacher_identity

# The packages whose versions change what a run computes (or how it is read back).
PACKAGES = (
    "torch",
    "transformers",
    "tokenizers",
    "peft",
    "accelerate",
    "datasets",
    "numpy",
    "scipy",
    "scikit-learn",
    "openai",
    "dvc",
)
# The code a run executes (the report stage depends on all of it; dvc.yaml cannot be a DVC dependency,
# and DVC reruns a stage whose definition in it changes). All of the package but ftcot/testing: test
# helpers are not the product, and editing one must not rewrite the report (tests/test_stage_deps.py
# holds this list to the package's folder).
CODE_PATHS = (
    "ftcot/__init__.py",
    "ftcot/answers.py",
    "ftcot/config.py",
    "ftcot/data",
    "ftcot/errors.py",
    "ftcot/evaluation",
    "ftcot/experiments.py",
    "ftcot/export.py",
    "ftcot/filtering.py",
    "ftcot/io.py",
    "ftcot/lifecycle.py",
    "ftcot/methods.py",
    "ftcot/numerics.py",
    "ftcot/paths.py",
    "ftcot/provenance.py",
    "ftcot/redaction.py",
    "ftcot/report",
    "ftcot/stage.py",
    "ftcot/student",
    "ftcot/teacher",
    "stages",
    "pyproject.toml",
)
TEST_HELPERS = "ftcot/testing"


def code_files(root: Path, paths: Iterable[str] = CODE_PATHS) -> list[Path]:
    """The code files under ``paths`` (relative to ``root``), sorted; caches and builds left out."""
    files = []
    for name in paths:
        path = root / name
        candidates = [path] if path.is_file() else sorted(path.rglob("*")) if path.is_dir() else []
        for p in candidates:
            built = p.suffix == ".pyc" or any(part == "__pycache__" or part.endswith(".egg-info") for part in p.parts)
            if p.is_file() and not built:
                files.append(p)
    return sorted(files, key=lambda p: p.relative_to(root).as_posix())


def code_digest(root: Path, paths: Iterable[str] = CODE_PATHS) -> str:
    """SHA-256 over the code files' relative paths and contents: the same code gives the same
    digest in any clone or copy, whatever its git history."""
    h = hashlib.sha256()
    for p in code_files(root, paths):
        h.update(p.relative_to(root).as_posix().encode() + b"\0" + p.read_bytes() + b"\0")
    return h.hexdigest()


def git_commit(root: Path, paths: Iterable[str] = CODE_PATHS) -> dict[str, object]:
    """``{commit, code_changed}``: the commit checked out, and whether the code differs from it
    (uncommitted edits; then the digest, not the commit, names the code). No git: nulls."""
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, check=True)
        status = subprocess.run(
            ["git", "status", "--porcelain", "--", *paths], cwd=root, capture_output=True, text=True, check=True
        )
    except (OSError, subprocess.CalledProcessError):
        return {"commit": None, "code_changed": None}
    return {"commit": head.stdout.strip(), "code_changed": bool(status.stdout.strip())}


def package_versions(names: Iterable[str] = PACKAGES) -> dict[str, str | None]:
    versions: dict[str, str | None] = {"python": platform.python_version()}
    for name in names:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


# What each replay format replays, for the report's teacher label: the model (Kojima et al.'s logs
# are text-davinci-002's whatever teacher.model says; otherwise teacher.model) and the source.
REPLAYED = {
    "kojima": ("text-davinci-002", "Kojima et al.'s zero-shot-CoT logs"),
    "reasoning_teacher": (None, "reasoning-teacher's completions ({completion_key})"),
    "ftcot": (None, "{dir}/"),
}


def teacher_label(teacher: dict) -> str:
    """The teacher as the report names it: the model, and for a replay where its outputs come from.
    A replay whose teacher.model was left at its default is not labelled as the offline oracle."""
    if teacher["backend"] != REPLAY:
        return teacher["model"]
    fixed, source = REPLAYED[teacher[REPLAY]["format"]]
    model = fixed or (teacher["model"] if teacher["model"] != ORACLE else None)
    replayed = f"replayed from {source.format(**teacher[REPLAY])}"
    return f"{model}, {replayed}" if model else replayed


def safe_params(params_dump: dict) -> dict:
    """The resolved params with credentials in ``teacher.base_url`` masked."""
    teacher = dict(params_dump["teacher"], base_url=url_without_credentials(params_dump["teacher"]["base_url"]))
    return {**params_dump, "teacher": teacher}


def run_metadata(root: Path, params_dump: dict, devices: dict[str, str]) -> dict:
    """Everything in the module docstring; ``devices``: where each student trained (from the
    finetune metrics), e.g. ``{"coin_flip/ft_cot/seed0": "cpu, portable numerics ..."}``."""
    return {
        "code": {"digest": code_digest(root), **git_commit(root)},
        "params": safe_params(params_dump),
        "seeds": params_dump["seeds"],
        "packages": package_versions(),
        "devices": sorted(set(devices.values())),
        "teacher": teacher_identity(params_dump["teacher"]),
    }
