import os

import pytest

# Never reach a hub from tests, and keep the teacher cache of tests away from the user's.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("FTCOT_CACHE_DIR", str(tmp_path / "ftcot-cache"))


def pytest_collection_modifyitems(items):
    """The files with end-to-end tests first, the longest (test_pipeline.py) leading: under
    `make test` (`pytest -n auto --dist loadfile`) they start at once on their own workers while the
    quick files fill the others, instead of the longest file starting last. Tests keep their order
    within a file (a stable sort), so module fixtures are built once."""
    slow_files = {item.path for item in items if item.get_closest_marker("slow")}
    items.sort(key=lambda item: (item.path.name != "test_pipeline.py", item.path not in slow_files))
