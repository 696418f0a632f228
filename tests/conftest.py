import fcntl
import os
from pathlib import Path

import pytest

# Never reach a hub from tests, and keep the teacher cache of tests away from the user's.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("FTCOT_CACHE_DIR", str(tmp_path / "ftcot-cache"))
    monkeypatch.setenv("FTCOT_CHECKPOINT_DIR", str(tmp_path / "checkpoints"))


@pytest.fixture(scope="session")
def shared_tmp(tmp_path_factory):
    """A folder all test processes of this run see (pytest-xdist's workers share its parent)."""
    base = tmp_path_factory.getbasetemp()
    return base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base


@pytest.fixture(scope="session")
def converted_models(shared_tmp) -> Path:
    """A models/ cache folder holding SmolLM2-135M converted from its GGUF once per test run, under
    a lock: every test that uses the real student would otherwise convert it in a cache of its own."""
    from ftcot.paths import CONVERTED_MODELS
    from ftcot.student.smollm2 import SMOLLM2, smollm2_folder

    cache = shared_tmp / "converted"
    with open(shared_tmp / "converted.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        smollm2_folder(SMOLLM2, cache)
    return cache / CONVERTED_MODELS


@pytest.fixture
def smollm2_cache(converted_models):
    """``link(cache_dir)``: a cache folder whose models/ is the run's converted SmolLM2."""
    from ftcot.paths import CONVERTED_MODELS

    def link(cache_dir: Path) -> Path:
        cache_dir.mkdir(parents=True, exist_ok=True)
        (cache_dir / CONVERTED_MODELS).symlink_to(converted_models, target_is_directory=True)
        return cache_dir

    return link


@pytest.fixture(scope="module")
def project(tmp_path_factory, shared_tmp):
    """The end-to-end modules' project (tests/test_pipeline*.py):
    a copy of their own of the tiny project, built once per test run."""
    from ftcot.testing.project import shared_tiny_project

    return shared_tiny_project(shared_tmp, tmp_path_factory.mktemp("project"))


# The longest test files first (worker-seconds on 2 cores, from `--durations`): pytest-xdist hands
# out whole files in collection order (make test: --dist loadfile --no-loadscope-reorder), so the
# long ones start at once and the short ones fill the gaps at the end. test_pipeline.py builds the
# shared tiny project that test_pipeline_experiments.py and test_pipeline_elsewhere.py copy: they
# come after enough other work for the other worker that they rarely wait for it.
LONGEST_FIRST = (
    "test_pipeline.py",
    "test_training.py",
    "test_teacher_concurrency.py",
    "test_real_server.py",
    "test_pipeline_experiments.py",
    "test_pipeline_elsewhere.py",
    "test_evaluate_stage.py",
    "test_own_task_pipeline.py",
    "test_sweep.py",
    "test_char_tokenizer.py",
    "test_engines.py",
    "test_openai_teacher.py",
    "test_gpu_benchmark.py",
    "test_lifecycle.py",
)


def pytest_collection_modifyitems(config, items):
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: each file's order kept
