import os

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
