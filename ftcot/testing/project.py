"""A throwaway copy of the project in which the real `dvc repro` runs (tests and benchmarks)."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
# What a run needs: the pipeline, its code and its configuration; not the committed results.
COPIED = [
    "dvc.yaml",
    "params.yaml",
    "pyproject.toml",
    "stages",
    "ftcot",
    "replay",
    "tasks",
    "scripts",
    ".dvc/config",
    ".dvcignore",
]
# Outputs that say what a run cost or where it ran, not what it computed: never compared.
UNCOMPARED_SUFFIXES = (".run.json",)


def copy_project(root: Path, params_text: str | None = None) -> Path:
    """Copies the pipeline into ``root`` (a git repository with one commit), with ``params_text``
    as its params.yaml, and no sweep yet."""
    for name in COPIED:
        src, dst = REPO / name, root / name
        dst.parent.mkdir(parents=True, exist_ok=True)
        if src.is_dir():
            shutil.copytree(src, dst, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
        else:
            shutil.copy2(src, dst)
    if params_text is not None:
        (root / "params.yaml").write_text(params_text)
    (root / "metrics").mkdir(exist_ok=True)
    (root / "metrics/sweeps").mkdir(exist_ok=True)
    (root / "metrics/sweeps/README.md").write_text("Sweeps of scripts/sweep.py.\n")
    (root / ".gitignore").write_text(".teacher-cache-*\n__pycache__/\ndvc_plots/\n")
    env = project_env(root)
    for cmd in (["git", "init", "-q"], ["git", "add", "-A"], ["git", "commit", "-qm", "project"]):
        run(cmd, root, env)
    return root


def project_env(root: Path, **extra: str) -> dict[str, str]:
    return {
        **os.environ,
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
        "FTCOT_CACHE_DIR": str(root / ".teacher-cache-1"),
        "HF_HUB_OFFLINE": "1",
        "HF_DATASETS_OFFLINE": "1",
        "GIT_AUTHOR_NAME": "t",
        "GIT_AUTHOR_EMAIL": "t@example.com",
        "GIT_COMMITTER_NAME": "t",
        "GIT_COMMITTER_EMAIL": "t@example.com",
        # Fixed dates: copies of the same files get the same commit, which the report records.
        "GIT_AUTHOR_DATE": "2000-01-01T00:00:00+00:00",
        "GIT_COMMITTER_DATE": "2000-01-01T00:00:00+00:00",
        **extra,
    }


def run(cmd: list[str], cwd: Path, env: dict, check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    if check and proc.returncode != 0:
        raise AssertionError(f"{cmd} failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}")
    return proc


def tracked_outputs(root: Path) -> dict[str, str]:
    """SHA-256 of every file a run writes (dvc.lock, data, models, metrics, curves, report)."""
    files = [root / "dvc.lock"]
    for folder in ("data", "models", "metrics", "curves", "report"):
        files += [p for p in (root / folder).rglob("*") if p.is_file()]
    return {
        p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(files)
        if not p.name.endswith(UNCOMPARED_SUFFIXES) and p.name != ".gitignore"
    }


def differing(a: dict[str, str], b: dict[str, str]) -> list[str]:
    return sorted(k for k in a.keys() | b.keys() if a.get(k) != b.get(k))


# Another machine, as far as one machine can pretend: the variables make ATen and MKL pick other
# kernels than this CPU's best (as on a CPU without AVX-512), and taskset leaves one core, so the
# libraries' default thread counts change too. What each changes is measured by
# benchmarks/reproducibility.py.
SIMULATED_CPUS: dict[str, dict] = {
    "this-cpu": {"prefix": [], "env": {}},
    "avx2-1-core": {
        "prefix": ["taskset", "-c", "0"] if shutil.which("taskset") else [],
        "env": {
            "ATEN_CPU_CAPABILITY": "avx2",
            "MKL_ENABLE_INSTRUCTIONS": "AVX2",
            "ONEDNN_MAX_CPU_ISA": "AVX2",
            "OMP_NUM_THREADS": "1",
            "MKL_NUM_THREADS": "1",
        },
    },
}


def tiny_params() -> dict:
    """The repository's params.yaml made tiny for end-to-end tests: 30 questions, one seed, a
    one-layer student, one epoch. (How seeds combine is tests/test_report.py's; that a second seed
    trains a second student, and only that, tests/test_pipeline.py's test_adding_a_seed_...)"""
    import yaml

    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["data"]["num_questions"] = 30
    params["seeds"] = [0]
    params["student"].update(
        {
            "tiny": {**params["student"]["tiny"], "n_layer": 1, "n_head": 2, "n_embd": 32, "vocab_size": 300},
            "epochs": 1,
            "batch_size": 8,
            "max_length": 128,
        }
    )
    params["evaluate"].update({"batch_size": 16, "max_new_tokens": 24, "samples": 2})
    params["teacher"].update({"eval_test": True, "prices": {"oracle": {"prompt": 1.0, "completion": 2.0}}})
    return params


def stages_run(out: str) -> set[str]:
    """The stages a `dvc repro` output says it ran."""
    return {line.split("'")[1] for line in out.splitlines() if line.startswith("Running stage '")}


def stages_restored(out: str) -> set[str]:
    """The stages a `dvc repro` output says it restored from the run-cache."""
    return {line.split("'")[1] for line in out.splitlines() if "is cached - skipping run" in line}


def tiny_project(root: Path) -> tuple[Path, dict, subprocess.CompletedProcess]:
    """A copy of the project in ``root`` on :func:`tiny_params`, after its first `dvc repro`:
    (root, its environment, that run)."""
    import yaml

    root = copy_project(root, yaml.safe_dump(tiny_params(), sort_keys=False))
    env = project_env(root)
    return root, env, run(["dvc", "repro"], root, env)


def shared_tiny_project(shared: Path, dest: Path) -> tuple[Path, dict, subprocess.CompletedProcess]:
    """:func:`tiny_project`, built once in ``shared`` (a folder every test process sees) and copied
    to ``dest``: the test modules that each need a built project of their own pay for one
    `dvc repro` between them, not one each. (dest, its environment, the first run)."""
    import fcntl
    import json

    shared.mkdir(parents=True, exist_ok=True)
    built, first_run = shared / "tiny-project", shared / "tiny-project.first-run.json"
    with open(shared / "tiny-project.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # the first process builds it; the others wait, then copy
        if not first_run.is_file():
            shutil.rmtree(built, ignore_errors=True)
            built.mkdir()
            _, _, first = tiny_project(built)
            fields = ("args", "returncode", "stdout", "stderr")
            first_run.write_text(json.dumps({name: getattr(first, name) for name in fields}))
    # Not DVC's own temporary files (its locks and state): the copy is another project.
    skip_dvc_tmp = lambda folder, names: ["tmp"] if Path(folder) == built / ".dvc" else []  # noqa: E731
    shutil.copytree(built, dest, symlinks=True, ignore=skip_dvc_tmp, dirs_exist_ok=True)
    return dest, project_env(dest), subprocess.CompletedProcess(**json.loads(first_run.read_text()))
