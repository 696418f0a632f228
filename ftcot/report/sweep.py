"""Sweeps as DVC experiments, read back for the report: any parameter grid
(``scripts/sweep.py --set key=a,b`` -> ``metrics/sweeps/<name>.json``), the paper's
accuracy-against-diversity curve among them (``--set diversity=1,2,4,8``).

Each point is one experiment: the swept values, everything else as in the baseline commit. The
points are read back from ``dvc exp show --json``, so a curve is exactly what ``dvc exp show``
lists, and each file records the parameters its experiments ran with, so the report shows it only
beside a run of the same configuration.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import re
from collections.abc import Iterator, Sequence

import yaml

from ftcot import paths
from ftcot.config import OPERATIONAL_KEYS
from ftcot.errors import FtcotError
from ftcot.io import load_yaml


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


def _by_name(exp_show: list) -> dict[str, dict]:
    """The experiment states of ``dvc exp show --json`` by name. A name can be listed twice: a point that failed (its
    queue entry stays, as failed) and then ran again; its result is the one that did not fail."""
    by_name: dict[str, dict] = {}
    for state in _states(exp_show):
        name = state.get("name")
        if name and (name not in by_name or by_name[name].get("error")):
            by_name[name] = state
    return by_name


# The pipeline's one DVC metrics file (stage report), which `dvc exp show --json` carries.
HEADLINE = paths.HEADLINE


def _file_data(files: dict | None, path: str) -> dict:
    return ((files or {}).get(path) or {}).get("data") or {}


# A section that never changes a sweep point: the report only draws.
NOT_IN_FINGERPRINT = ("report",)


def flatten(obj: object, prefix: str = "") -> dict[str, object]:
    """``{"a": {"b": 1}}`` -> ``{"a.b": 1}``; lists and empty mappings are values."""
    if isinstance(obj, dict) and obj:
        flat: dict[str, object] = {}
        for key, value in obj.items():
            flat |= flatten(value, f"{prefix}{key}.")
        return flat
    return {prefix.rstrip("."): obj}


def sweep_fingerprint(params_dump: dict, left_out: Sequence[str] = ()) -> dict[str, object]:
    """The parameters a sweep point depends on, flattened (``params.model_dump(mode="json")`` in),
    without the keys or sections ``left_out`` (the sweep's own axes) and ``report``, which only draws."""
    left_out = (*left_out, *NOT_IN_FINGERPRINT)
    return {
        k: v
        for k, v in flatten(params_dump).items()
        if k.split(".")[0] not in left_out and k not in left_out and k not in OPERATIONAL_KEYS
    }


# ---- any parameter grid (scripts/sweep.py) ------------------------------------------------------

NULL_WORDS = ("all", "null", "none")


class SweepError(FtcotError, ValueError):
    """A sweep that cannot be run or read back: a bad --set, a missing or failed experiment."""


def parse_value(text: str) -> object:
    """One value of ``--set key=a,b``: YAML (``8``, ``0.5``, ``1e-3``, ``true``, ``[0,1]``); ``all`` /
    ``null`` / ``none`` mean null (e.g. ``data.max_train=all``: no cap)."""
    if text.strip().lower() in NULL_WORDS:
        return None
    try:
        return load_yaml(text)
    except yaml.YAMLError as err:
        raise SweepError(f"{text!r} is not a value ({err})") from None


def parse_grid(sets: Sequence[str], known_keys: Sequence[str]) -> dict[str, list]:
    """``["diversity=1,2", "data.max_train=50,all"]`` -> ``{"diversity": [1, 2], "data.max_train": [50, None]}``."""
    grid: dict[str, list] = {}
    for item in sets:
        key, sep, values = item.partition("=")
        key = key.strip()
        if not sep or not values.strip():
            raise SweepError(f"--set {item!r}: write key=value1,value2,...")
        if key not in known_keys:
            close = [k for k in known_keys if k.split(".")[-1] == key.split(".")[-1]]
            raise SweepError(
                f"--set {item!r}: {key!r} is no parameter" + (f" (did you mean {close[0]}?)" if close else "")
            )
        if key in grid:
            raise SweepError(f"--set {key} is given twice")
        grid[key] = [parse_value(v) for v in _split_values(values)]
    if not grid:
        raise SweepError("nothing to sweep: give at least one --set key=values")
    return grid


def _split_values(text: str) -> list[str]:
    """Values split at commas outside brackets (``seeds=[0,1],[2,3]``)."""
    values, depth, current = [], 0, ""
    for ch in text:
        depth += ch in "[{"
        depth -= ch in "]}"
        if ch == "," and depth == 0:
            values.append(current)
            current = ""
        else:
            current += ch
    return [*values, current]


def grid_points(grid: dict[str, list]) -> list[dict[str, object]]:
    """Every combination, the last key varying fastest."""
    keys = list(grid)
    return [dict(zip(keys, combo, strict=True)) for combo in itertools.product(*(grid[k] for k in keys))]


def point_slug(point: dict[str, object]) -> str:
    """A point as a piece of an experiment name: ``8``, ``8-50``, ``all``."""
    parts = ["all" if v is None else json.dumps(v, separators=(",", ":")) for v in point.values()]
    slug = "-".join(re.sub(r"[^A-Za-z0-9.]+", "_", part).strip("_") for part in parts)
    if len(slug) > 40:
        slug = hashlib.sha256(slug.encode()).hexdigest()[:10]
    return slug


def set_args(point: dict[str, object]) -> list[str]:
    """``dvc exp run -S`` arguments for a point (values as YAML, null for None)."""
    out = []
    for key, value in point.items():
        out += ["-S", f"{key}={'null' if value is None else json.dumps(value)}"]
    return out


def _dotted(params: dict, key: str) -> object:
    for part in key.split("."):
        if not isinstance(params, dict) or part not in params:
            return "<missing>"
        params = params[part]
    return params


def sweep_points(exp_show: list, names: dict[str, dict], tasks: Sequence[str]) -> list[dict]:
    """``[{task, method, values, accuracy, accuracy_ci_low, accuracy_ci_high, experiment}]`` for the
    experiments of ``names`` (``{experiment name: point}``), every method the headline holds (the
    fine-tuned students and the teacher's test accuracy). Raises if one is missing, failed, or ran
    with other values than its point's."""
    by_name = _by_name(exp_show)
    points = []
    for name, point in names.items():
        state = by_name.get(name)
        if state is None or state.get("error"):
            raise SweepError(f"experiment {name} ({point}) is missing or failed: see `dvc exp show`")
        params = _file_data(state["data"]["params"], "params.yaml")
        for key, value in point.items():
            if _dotted(params, key) != value:
                raise SweepError(f"experiment {name} ran with {key}={_dotted(params, key)!r}, expected {value!r}")
        metrics = _file_data(state["data"].get("metrics"), HEADLINE)
        for task in tasks:
            if task not in metrics:
                raise SweepError(f"experiment {name} has no results for task {task}")
            for method, m in metrics[task].items():
                accuracy = m.get("accuracy", m.get("test_accuracy"))
                if accuracy is None:
                    continue
                points.append(
                    {
                        "task": task,
                        "method": method,
                        "values": point,
                        "accuracy": accuracy,
                        "accuracy_ci_low": m.get("accuracy_ci_low"),
                        "accuracy_ci_high": m.get("accuracy_ci_high"),
                        "experiment": name,
                    }
                )
    return points


def sweep_stale_reason(recorded: dict, params_dump: dict, headline: dict | None = None) -> str | None:
    """Why a recorded sweep (``metrics/sweeps/<name>.json``) does not describe this run, or None.

    A sweep made with other parameters than this run's (all but its swept keys and ``report``) is
    someone else's curve. With ``headline`` (this run's metrics/headline.json): a point at this
    run's own values whose accuracy differs from this run's was made by other code or data. Either
    would contradict the table above it.
    """
    if "params" not in recorded or "keys" not in recorded:
        return "it does not record the parameters it ran with"
    ours = {k: v for k, v in sweep_fingerprint(params_dump, ()).items() if k not in recorded["keys"]}
    theirs = {k: v for k, v in recorded["params"].items() if k not in recorded["keys"]}
    changed = sorted(k for k in ours.keys() | theirs.keys() if ours.get(k) != theirs.get(k))
    if changed:
        shown = ", ".join(f"{k} ({theirs.get(k)!r} there, {ours.get(k)!r} here)" for k in changed[:4])
        return f"it ran with other parameters: {shown}" + (f" and {len(changed) - 4} more" if len(changed) > 4 else "")
    for point in recorded.get("points", []) if headline else ():
        if any(_dotted(params_dump, k) != v for k, v in point["values"].items()):
            continue  # another point of the sweep than this run
        ours_m = headline.get(point["task"], {}).get(point["method"], {})
        accuracy = ours_m.get("accuracy", ours_m.get("test_accuracy"))
        if accuracy is not None and accuracy != point["accuracy"]:
            at = ", ".join(f"{k}={v!r}" for k, v in point["values"].items())
            return (
                f"its point at {at} for {point['task']} / {point['method']} ({100 * point['accuracy']:.1f}%) "
                f"is not this run's accuracy ({100 * accuracy:.1f}%): it was made by other code or data"
            )
    return None
