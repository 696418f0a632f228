"""The accuracy-vs-diversity curve from DVC experiments (``scripts/diversity_sweep.py``).

Each point is one experiment: params ``diversity = D``, everything else as in the baseline commit.
The points are read back from ``dvc exp show --json`` so the curve is exactly what
``dvc exp show`` lists, and written to ``metrics/diversity.json`` for the report stage.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence


def _states(node) -> Iterator[dict]:
    """Every experiment state (a dict with ``data.params``) in ``dvc exp show --json`` output."""
    if isinstance(node, dict):
        data = node.get("data")
        if isinstance(data, dict) and "params" in data:
            yield node
        for value in node.values():
            yield from _states(value)
    elif isinstance(node, list):
        for value in node:
            yield from _states(value)


def _file_data(files: dict | None, path: str) -> dict:
    return ((files or {}).get(path) or {}).get("data") or {}


def diversity_points(exp_show: list, names: dict[int, str], tasks: Sequence[str]) -> list[dict]:
    """``[{task, diversity, accuracy, kept, experiment}]`` for the experiments named in ``names``
    (``{D: experiment name}``), sorted by task then D. Raises if one is missing or failed."""
    by_name = {s.get("name"): s for s in _states(exp_show) if s.get("name")}
    points = []
    for diversity, name in sorted(names.items()):
        state = by_name.get(name)
        if state is None or state.get("error"):
            raise RuntimeError(f"experiment {name} (diversity={diversity}) is missing or failed: see `dvc exp show`")
        data = state["data"]
        got = _file_data(data["params"], "params.yaml").get("diversity")
        if got != diversity:
            raise RuntimeError(f"experiment {name} ran with diversity={got}, expected {diversity}")
        for task in tasks:
            evaluation = _file_data(data.get("metrics"), f"metrics/evaluate/{task}/ft_cot.json")
            filtered = _file_data(data.get("metrics"), f"metrics/filter/{task}.json")
            if "accuracy" not in evaluation:
                raise RuntimeError(f"experiment {name} has no Fine-tune-CoT accuracy for {task}")
            points.append(
                {
                    "task": task,
                    "diversity": diversity,
                    "accuracy": evaluation["accuracy"],
                    "accuracy_ci_low": evaluation.get("accuracy_ci_low"),
                    "accuracy_ci_high": evaluation.get("accuracy_ci_high"),
                    "kept": filtered.get("kept"),
                    "experiment": name,
                }
            )
    return sorted(points, key=lambda p: (p["task"], p["diversity"]))
