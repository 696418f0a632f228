"""A recorded diversity sweep is shown only beside the run it describes."""

import json
import subprocess
import sys
from pathlib import Path

from ftcot.config import load_params
from ftcot.report.document import render_markdown
from ftcot.report.sweep import flatten, stale_reason, sweep_fingerprint

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
