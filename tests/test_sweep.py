"""A recorded diversity sweep is shown only beside the run it describes."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from ftcot.config import leaf_keys, load_params
from ftcot.report.document import render_markdown
from ftcot.report.sweep import (
    SweepError,
    flatten,
    grid_points,
    parse_grid,
    point_slug,
    set_args,
    stale_reason,
    sweep_fingerprint,
    sweep_points,
    sweep_stale_reason,
)

REPO = Path(__file__).resolve().parents[1]


def current() -> dict:
    return load_params(REPO / "params.yaml").model_dump(mode="json")


def recorded(params: dict, accuracy: float = 0.6) -> dict:
    points = [
        {"task": "coin_flip", "diversity": d, "accuracy": a, "kept": 3 * d, "experiment": f"div{d}-abc1234"}
        for d, a in ((1, accuracy), (8, 0.9))
    ]
    return {"commit": "abc1234", "params": sweep_fingerprint(params), "points": points}


def test_fingerprint_leaves_out_the_sweep_axis_the_report_and_operational_keys():
    fingerprint = sweep_fingerprint(current())
    assert "student.learning_rate" in fingerprint and "teacher.oracle.error_rate" in fingerprint
    assert not [k for k in fingerprint if k.startswith(("diversity", "report."))]
    assert "teacher.concurrency" not in fingerprint
    assert flatten({"a": {"b": 1, "c": []}, "d": {}}) == {"a.b": 1, "a.c": [], "d": {}}


def test_a_sweep_of_this_configuration_is_shown():
    params = current()
    assert stale_reason(recorded(params), params, {"coin_flip": 0.6}, 1) is None
    params_d8 = params | {"diversity": 8}  # the run at another point of the same sweep
    assert stale_reason(recorded(params), params_d8, {"coin_flip": 0.9}, 8) is None


def test_a_sweep_of_other_parameters_is_left_out_with_the_keys_that_differ():
    params = current()
    other = json.loads(json.dumps(params))
    other["student"]["model"] = "smollm2-135m"
    reason = stale_reason(recorded(other), params, {"coin_flip": 0.6}, 1)
    assert reason == "it ran with other parameters: student.model ('smollm2-135m' there, 'tiny-llama' here)"


def test_a_sweep_that_contradicts_the_headline_is_left_out():
    params = current()
    reason = stale_reason(recorded(params, accuracy=0.5), params, {"coin_flip": 0.6}, 1)
    assert reason.startswith("its D=1 point for coin_flip (50.0%) is not this run's Fine-tune-CoT accuracy (60.0%)")


def test_a_sweep_without_provenance_is_left_out():
    reason = stale_reason({"points": recorded(current())["points"]}, current(), {"coin_flip": 0.6}, 1)
    assert reason == "it does not record the parameters it ran with (an older format)"


def test_report_says_why_a_sweep_is_left_out():
    summary = {"teacher": "t", "student": "s", "diversity": 1, "tasks": {}}
    md = render_markdown(summary, {}, {}, {}, [], sweep_note="The recorded sweep is left out: because.")
    assert "The recorded sweep is left out: because." in md and "| Task | D |" not in md


def test_collect_only_without_experiments_ends_in_a_message(tmp_path):
    # Outside a DVC project (and with no experiments), dvc fails: one line, exit 1, no traceback.
    script = REPO / "scripts" / "diversity_sweep.py"
    (tmp_path / "params.yaml").write_text((REPO / "params.yaml").read_text())
    subprocess.run(["git", "init", "-q"], cwd=tmp_path, check=True)
    env = {"PATH": f"{Path(sys.executable).parent}:/usr/bin:/bin", "HOME": str(tmp_path)}
    proc = subprocess.run(
        [sys.executable, str(script), "--collect-only"], cwd=tmp_path, capture_output=True, text=True, env=env
    )
    assert proc.returncode == 1
    assert "error: run this in the project's git repository, with params.yaml committed" in proc.stderr
    assert "Traceback" not in proc.stderr
    subprocess.run(["git", "add", "params.yaml"], cwd=tmp_path, check=True)
    identity = ["-c", "user.name=t", "-c", "user.email=t@example.com"]
    subprocess.run(["git", *identity, "commit", "-qm", "p"], cwd=tmp_path, check=True)
    proc = subprocess.run(
        [sys.executable, str(script), "--collect-only"], cwd=tmp_path, capture_output=True, text=True, env=env
    )
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert "error: `dvc exp show --json` failed" in proc.stderr  # not a DVC project: dvc says why above


# ---- any parameter grid (scripts/sweep.py) ------------------------------------------------------


def test_a_grid_of_any_parameters():
    grid = parse_grid(["diversity=1,2", "data.max_train=50,all", "seeds=[0,1],[2]"], leaf_keys())
    assert grid == {"diversity": [1, 2], "data.max_train": [50, None], "seeds": [[0, 1], [2]]}
    points = grid_points(grid)
    assert len(points) == 8 and points[0] == {"diversity": 1, "data.max_train": 50, "seeds": [0, 1]}
    assert point_slug({"diversity": 8, "data.max_train": None}) == "8-all"
    assert set_args({"data.max_train": None, "filter.keep": "all"}) == [
        "-S",
        "data.max_train=null",
        "-S",
        'filter.keep="all"',
    ]
    with pytest.raises(SweepError, match=r"'max_train' is no parameter \(did you mean data.max_train\?\)"):
        parse_grid(["max_train=1"], leaf_keys())
    with pytest.raises(SweepError, match="write key=value1,value2"):
        parse_grid(["diversity"], leaf_keys())
    with pytest.raises(SweepError, match="nothing to sweep"):
        parse_grid([], leaf_keys())


def state(name: str, params: dict, accuracy: float) -> dict:
    headline = {
        "coin_flip": {
            "ft_cot": {"accuracy": accuracy, "accuracy_ci_low": 0.1, "accuracy_ci_high": 0.9},
            "teacher": {"test_accuracy": 0.8, "kept": 3, "kept_rate": 0.5},
        }
    }
    return {
        "rev": "x",
        "name": name,
        "data": {"params": {"params.yaml": {"data": params}}, "metrics": {"metrics/headline.json": {"data": headline}}},
    }


def test_sweep_points_are_read_back_from_dvc_exp_show_and_checked():
    shown = [
        {
            "experiments": [
                {"revs": [state("keep-all-abc", {"filter": {"keep": "all"}}, 0.6)]},
                {"revs": [state("keep-correct-abc", {"filter": {"keep": "correct"}}, 0.9)]},
            ]
        }
    ]
    names = {"keep-correct-abc": {"filter.keep": "correct"}, "keep-all-abc": {"filter.keep": "all"}}
    points = sweep_points(shown, names, ["coin_flip"])
    assert [(p["values"]["filter.keep"], p["method"], p["accuracy"]) for p in points] == [
        ("correct", "ft_cot", 0.9),
        ("correct", "teacher", 0.8),
        ("all", "ft_cot", 0.6),
        ("all", "teacher", 0.8),
    ]
    with pytest.raises(SweepError, match=r"ran with filter.keep='all', expected 'correct'"):
        sweep_points(shown, {"keep-all-abc": {"filter.keep": "correct"}}, ["coin_flip"])
    with pytest.raises(SweepError, match="missing or failed"):
        sweep_points(shown, {"nope": {"filter.keep": "all"}}, ["coin_flip"])


def test_a_recorded_sweep_is_shown_only_beside_a_run_of_its_parameters():
    params = current()
    record = {
        "name": "keep",
        "keys": ["filter.keep"],
        "commit": "abc",
        "regenerate": "python scripts/sweep.py",
        "params": sweep_fingerprint(params, ("filter.keep",)),
        "points": [
            {
                "task": "coin_flip",
                "method": "ft_cot",
                "values": {"filter.keep": "all"},
                "accuracy": 0.5,
                "accuracy_ci_low": 0.4,
                "accuracy_ci_high": 0.6,
                "experiment": "keep-all-abc",
            }
        ],
    }
    assert sweep_stale_reason(record, params) is None
    assert sweep_stale_reason(record, json.loads(json.dumps(params)) | {"filter": {"keep": "all"}}) is None  # its axis
    other = json.loads(json.dumps(params))
    other["student"]["epochs"] = 1.0
    assert sweep_stale_reason(record, other).startswith("it ran with other parameters: student.epochs")
    summary = {"teacher": "t", "student": "s", "diversity": 1, "tasks": {}}
    md = render_markdown(summary, {}, {}, {"sweep/keep": "sweep_keep.png"}, [], None, [record])
    assert "### keep" in md and "| coin_flip | Student: Fine-tune-CoT | all | 50.0 [40.0, 60.0] |" in md
    assert "![Sweep keep](sweep_keep.png)" in md


def test_a_bad_grid_or_point_ends_the_sweep_script_in_one_line_before_any_experiment(tmp_path):
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    env = {"PATH": f"{Path(sys.executable).parent}:/usr/bin:/bin", "HOME": str(tmp_path)}

    def sweep(*sets: str) -> subprocess.CompletedProcess:
        cmd = [sys.executable, str(REPO / "scripts" / "sweep.py"), *(a for s in sets for a in ("--set", s))]
        return subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, env=env)

    for sets, message in (
        (["max_train=1"], "error: --set 'max_train=1': 'max_train' is no parameter (did you mean data.max_train?)"),
        (["filter.keep=correct,some"], "error: the point {'filter.keep': 'some'} is not a valid configuration"),
        (["diversity=0"], "error: the point {'diversity': 0} is not a valid configuration"),
    ):
        proc = sweep(*sets)
        assert proc.returncode == 1 and message in proc.stderr and "Traceback" not in proc.stderr
        assert "+ dvc" not in proc.stderr  # nothing queued, nothing run
