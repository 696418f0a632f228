"""The accuracy-vs-diversity curve from DVC experiments (``scripts/diversity_sweep.py``).

Each point is one experiment: params ``diversity = D``, everything else as in the baseline commit.
The points are read back from ``dvc exp show --json`` so the curve is exactly what
``dvc exp show`` lists, and written to ``metrics/diversity.json`` for the report stage.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

from ftcot import paths
from ftcot.config import OPERATIONAL_KEYS


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


# The pipeline's one DVC metrics file (stage report), which `dvc exp show --json` carries.
HEADLINE = paths.HEADLINE


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
        metrics = _file_data(data.get("metrics"), HEADLINE)
        for task in tasks:
            evaluation = metrics.get(task, {}).get("ft_cot", {})
            teacher = metrics.get(task, {}).get("teacher", {})
            if "accuracy" not in evaluation:
                raise RuntimeError(f"experiment {name} has no Fine-tune-CoT accuracy for {task}")
            points.append(
                {
                    "task": task,
                    "diversity": diversity,
                    "accuracy": evaluation["accuracy"],
                    "accuracy_ci_low": evaluation.get("accuracy_ci_low"),
                    "accuracy_ci_high": evaluation.get("accuracy_ci_high"),
                    "kept": teacher.get("kept"),
                    "experiment": name,
                }
            )
    return sorted(points, key=lambda p: (p["task"], p["diversity"]))


# Sections that do not change a sweep point: diversity is the sweep's own axis, report only draws.
NOT_IN_FINGERPRINT = ("diversity", "report")


def flatten(obj: object, prefix: str = "") -> dict[str, object]:
    """``{"a": {"b": 1}}`` -> ``{"a.b": 1}``; lists and empty mappings are values."""
    if isinstance(obj, dict) and obj:
        flat: dict[str, object] = {}
        for key, value in obj.items():
            flat |= flatten(value, f"{prefix}{key}.")
        return flat
    return {prefix.rstrip("."): obj}


def sweep_fingerprint(params_dump: dict) -> dict[str, object]:
    """The parameters a sweep point depends on, flattened (``params.model_dump(mode="json")`` in)."""
    return {
        k: v
        for k, v in flatten(params_dump).items()
        if k.split(".")[0] not in NOT_IN_FINGERPRINT and k not in OPERATIONAL_KEYS
    }


def stale_reason(recorded: dict, params_dump: dict, headline: dict[str, float], diversity: int) -> str | None:
    """Why a recorded sweep (``metrics/diversity.json``) does not describe this run, or None.

    ``headline``: this run's Fine-tune-CoT accuracy per task. A sweep recorded with other
    parameters is someone else's curve; one whose point at this run's D disagrees with this run's
    accuracy was made by other code or data. Either would contradict the table above it.
    """
    if "params" not in recorded:
        return "it does not record the parameters it ran with (an older format)"
    ours, theirs = sweep_fingerprint(params_dump), recorded["params"]
    changed = sorted(k for k in ours.keys() | theirs.keys() if ours.get(k) != theirs.get(k))
    if changed:
        shown = ", ".join(f"{k} ({theirs.get(k)!r} there, {ours.get(k)!r} here)" for k in changed[:4])
        return f"it ran with other parameters: {shown}" + (f" and {len(changed) - 4} more" if len(changed) > 4 else "")
    for point in recorded.get("points", []):
        task = point["task"]
        if point["diversity"] == diversity and task in headline and point["accuracy"] != headline[task]:
            return (
                f"its D={diversity} point for {task} ({100 * point['accuracy']:.1f}%) is not this run's "
                f"Fine-tune-CoT accuracy ({100 * headline[task]:.1f}%): it was made by other code or data"
            )
    return None
