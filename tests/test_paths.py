"""Output paths are said once: ftcot/paths.py and dvc.yaml name the same files."""

import re
from pathlib import Path

from ftcot import paths

REPO = Path(__file__).resolve().parents[1]


def dvc_form(template: str) -> re.Pattern:
    """``data/fetch/{task}.jsonl`` -> a regex matching ``data/fetch/${item}.jsonl`` and the like."""
    parts = re.split(r"\{[a-z_]+\}", template)
    return re.compile(r"(?:\$\{[a-z_.]+\}|[a-z_]+(?:/seed\$\{[a-z_.]+\})?)".join(re.escape(p) for p in parts))


def test_every_path_of_paths_py_is_in_dvc_yaml():
    dvc_yaml = (REPO / "dvc.yaml").read_text()
    missing = [t for t in paths.TEMPLATES if not dvc_form(t).search(dvc_yaml)]
    assert not missing, f"ftcot/paths.py names paths that dvc.yaml does not: {missing}"


def test_evaluation_runs_and_paths():
    assert paths.evaluation_run("ft_cot", 2) == "ft_cot/seed2" and paths.evaluation_run("zero_shot") == "zero_shot"
    run = paths.evaluation_run("vanilla", 0)
    assert paths.path(paths.PREDICTIONS, "/p", task="coin_flip", run=run) == Path(
        "/p/data/evaluate/coin_flip/vanilla/seed0.jsonl"
    )
    # dvc.yaml's evaluate stage writes exactly there for a fine-tuned student
    assert "data/evaluate/${item.task}/${item.variant}/seed${item.seed}.jsonl" in (REPO / "dvc.yaml").read_text()
