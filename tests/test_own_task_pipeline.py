"""A task of one's own, end to end: a task file and a JSONL data file in tasks/, the replay teacher,
the real `dvc repro` to the report, and what an edit of either file reruns. Its own file, so that it
runs beside tests/test_pipeline.py's (pytest-xdist keeps a file's tests on one worker)."""

import json

import pytest
import yaml
from test_pipeline import read, tiny_params  # tests/ is on the path, as pytest puts it

from ftcot.testing.project import copy_project, project_env, run

pytestmark = pytest.mark.slow


CAPITALS = """
description: Capitals of made-up countries.
answer_type: text
source:
  all: {path: tasks/data/capitals.jsonl}
fields:
  question: {template: "What is the capital of {country}?"}
  answer: capital
"""


def test_a_task_of_your_own_runs_from_a_jsonl_file_to_the_report(tmp_path):
    """No code: a task file, a JSONL file and recorded teacher outputs (the replay backend)."""
    countries = [(f"Land{i}", f"Town{i}") for i in range(40)]
    params = tiny_params()
    params["seeds"] = [0]
    params["data"]["tasks"] = ["capitals"]
    params["teacher"].update({"backend": "replay", "model": "recorded"})
    params["evaluate"]["samples"] = 0
    params["methods"]["finetune"] = ["ft_cot"]  # the task is the point here, not the comparison
    root = copy_project(tmp_path / "project", yaml.safe_dump(params, sort_keys=False))
    (root / "tasks/capitals.yaml").write_text(CAPITALS)
    (root / "tasks/data").mkdir(parents=True, exist_ok=True)
    lines = [json.dumps({"country": c, "capital": t}) for c, t in countries]
    (root / "tasks/data/capitals.jsonl").write_text("\n".join(lines) + "\n")
    # The teacher: right for three questions in four, its answer step a short text.
    replay = [
        {
            "question": f"What is the capital of {c}?",
            "sample_index": 0,
            "rationale": f"{c} is a country. Its capital is {t if i % 4 else 'Nowhere'}.",
            "answer": f" {t if i % 4 else 'Nowhere'}.",
        }
        for i, (c, t) in enumerate(countries)
    ]
    (root / "replay/capitals.jsonl").write_text("".join(json.dumps(r) + "\n" for r in replay))
    env = project_env(root)
    run(["git", "add", "-A"], root, env)
    run(["git", "commit", "-qm", "a task of my own"], root, env)
    run(["dvc", "repro"], root, env)

    fetched = [json.loads(line) for line in read(root, "data/fetch/capitals.jsonl").splitlines()]
    by_id = {r["id"]: r for r in fetched}
    assert len(fetched) == 40 and by_id["capitals-00"]["question"] == "What is the capital of Land0?"
    assert {r["answer_type"] for r in fetched} == {"text"}
    kept = json.loads(read(root, "metrics/filter/capitals.json"))
    assert kept["rationales"] == 28 and 0.6 < kept["kept_rate"] < 0.9  # the wrong quarter is dropped
    headline_metrics = json.loads(read(root, "metrics/headline.json"))
    assert {"ft_cot", "teacher"} <= set(headline_metrics["capitals"])
    assert headline_metrics["capitals"]["teacher"]["test_accuracy"] == pytest.approx(
        sum(1 for i, r in enumerate(fetched) if r["split"] == "test" and int(r["id"].split("-")[1]) % 4) / 12
    )
    report_md = read(root, "report/report.md")
    assert "capitals" in report_md and "Fine-tune-CoT" in report_md

    # The task file is a dependency: editing it reruns check and fetch, and nothing whose inputs stay the same.
    (root / "tasks/capitals.yaml").write_text(CAPITALS.replace("made-up countries", "invented countries"))
    status = run(["dvc", "status", "--json"], root, env).stdout
    changed = set(json.loads(status))
    assert {"check", "fetch@capitals"} <= changed and not any(s.startswith(("teach", "finetune")) for s in changed)
    again = run(["dvc", "repro"], root, env)
    assert "Running stage 'fetch@capitals'" in again.stdout and "Running stage 'teach@capitals'" not in again.stdout

    # So is its data file (inside data.task_dir): one line edited reruns fetch, and then what reads its records.
    lines[39] = json.dumps({"country": "Land39", "capital": "Newtown39"})
    (root / "tasks/data/capitals.jsonl").write_text("\n".join(lines) + "\n")
    changed = set(json.loads(run(["dvc", "status", "--json"], root, env).stdout))
    assert changed == {"check", "fetch@capitals"}
    run(["dvc", "repro", "fetch@capitals"], root, env)
    assert "Newtown39" in read(root, "data/fetch/capitals.jsonl")
    changed = set(json.loads(run(["dvc", "status", "--json"], root, env).stdout))
    assert changed == {"teach@capitals", "finetune_sets@capitals"}  # and, once they run, what follows from them
