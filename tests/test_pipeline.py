"""End to end: the real `dvc repro` on a tiny configuration, in a temporary copy of the repo."""

import json
import shutil
import sys
from pathlib import Path

import pytest
import yaml

from ftcot.testing.project import (
    project_env,
    run,
    stages_run,
    tiny_params,
)

REPO = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.slow


def read(root: Path, rel: str) -> str:
    return (root / rel).read_text()


def test_repro_builds_every_output(project):
    root, _, first = project
    for task in ("coin_flip", "last_letter_concatenation"):
        assert len(read(root, f"data/fetch/{task}.jsonl").splitlines()) == 30
        assert len(read(root, f"data/teach/{task}.jsonl").splitlines()) == 21  # 70% of 30, diversity 1
        teach = json.loads(read(root, f"metrics/teach/{task}.json"))
        assert teach["teacher_test_n"] == 9 and 0.5 <= teach["teacher_test_accuracy"] <= 1.0  # oracle, 20% errors
        cost = (teach["prompt_tokens"] * 1.0 + teach["completion_tokens"] * 2.0) / 1e6
        assert teach["estimated_cost_usd"] == round(cost, 6)
        run = json.loads(read(root, f"metrics/teach/{task}.run.json"))
        assert run["requests_sent"] == 2 * (21 + 9) and run["cache_hits"] == 0
        for variant in ("ft_cot", "vanilla"):
            for seed in (0,):
                m = json.loads(read(root, f"metrics/evaluate/{task}/{variant}/seed{seed}.json"))
                assert m["n"] == 9 and 0.0 <= m["accuracy"] <= 1.0 and m["seed"] == seed
                assert m["accuracy_ci_low"] <= m["accuracy"] <= m["accuracy_ci_high"]
                assert m["self_consistency"]["samples"] == 2 and "flexible_accuracy" in m
                assert (root / f"models/{task}/{variant}/seed{seed}/model.safetensors").exists()
                assert len(read(root, f"data/evaluate/{task}/{variant}/seed{seed}.jsonl").splitlines()) == 9
                trained = json.loads(read(root, f"metrics/finetune/{task}/{variant}/seed{seed}.json"))
                assert trained["seed"] == seed and trained["device"].startswith("cpu, portable numerics")
    summary = json.loads(read(root, "metrics/summary.json"))
    assert set(summary["tasks"]) == {"coin_flip", "last_letter_concatenation"}
    row = summary["tasks"]["coin_flip"]
    assert row["random"] == 0.5 and row["teacher"]["test_accuracy"] == teach_coin_flip(root)
    seed0 = json.loads(read(root, "metrics/evaluate/coin_flip/ft_cot/seed0.json"))["accuracy"]
    assert row["ft_cot"]["accuracy"] == seed0 and row["ft_cot"]["num_seeds"] == 1
    assert row["ft_cot"]["accuracy_sd"] is None  # one seed has no spread (several: tests/test_report.py)
    # What produced the run, and never a secret.
    run_info = summary["run"]
    assert run_info["seeds"] == [0] and run_info["params"]["student"] == tiny_params()["student"]
    assert len(run_info["code"]["digest"]) == 64 and run_info["code"]["code_changed"] is False
    assert run_info["packages"]["torch"] and run_info["teacher"] == {
        "backend": "oracle",
        "model": "oracle",
        "error_rate": 0.2,
    }
    assert run_info["devices"] == ["cpu, portable numerics (AVX2 kernels, 2 threads)"]
    # The compact metrics: numbers only, one entry per task and method.
    headline = json.loads(read(root, "metrics/headline.json"))
    assert headline["coin_flip"]["ft_cot"]["accuracy"] == row["ft_cot"]["accuracy"]
    assert set(headline["coin_flip"]) == {
        "teacher",
        "ft_cot",
        "vanilla",
        "ft_cot_self_consistency",
        "vanilla_self_consistency",
    }
    report = read(root, "report/report.md")
    assert "## What produced this report" in report
    assert run_info["code"]["commit"][:12] in report
    assert "| Method | coin_flip | last_letter_concatenation |" in report
    assert "| Student: Fine-tune-CoT + self-consistency (2 samples) |" in report
    assert (
        "## Fine-tune-CoT student on test questions: coin_flip" in report
        and "*dropped by the filter, wrong answer*" in report
    )
    for png in ("accuracy.png", "curves_coin_flip.png", "curves_last_letter_concatenation.png"):
        assert (root / "report" / png).read_bytes().startswith(b"\x89PNG")
        assert f"]({png})" in report
    page = read(root, "report/report.html")
    assert page.count('src="data:image/png;base64,') == 3 and "<script" not in page
    assert "Running stage 'finetune@coin_flip-ft_cot-0'" in first.stdout


def read_bytes(root: Path, rel: str) -> bytes:
    return (root / rel).read_bytes()


def teach_coin_flip(root: Path) -> float:
    return json.loads(read(root, "metrics/teach/coin_flip.json"))["teacher_test_accuracy"]


def test_dvc_plots_show_finds_the_declared_plots(project):
    root, env, _ = project
    proc = run(["dvc", "plots", "show", "--json"], root, env)
    assert "failed to load" not in proc.stderr and "WARNING" not in proc.stderr  # every declared plot exists
    shown = json.loads(proc.stdout)
    names = set(shown.get("data", shown))
    assert "report/accuracy.json" in names and "report/accuracy.png" in names
    assert any(n.startswith("curves/coin_flip/ft_cot/seed0/plots/metrics") for n in names)


def test_second_repro_runs_nothing(project):
    root, env, _ = project
    again = run(["dvc", "repro"], root, env)
    assert "Running stage" not in again.stdout
    assert "Data and pipelines are up to date" in run(["dvc", "status"], root, env).stdout


def test_code_and_replay_folder_edits_rerun_exactly_the_stages_that_use_them(project):
    root, env, _ = project

    def changed_after(path: str, edit) -> set[str]:
        original = read(root, path)
        edit(root / path)
        try:
            return set(json.loads(run(["dvc", "status", "--json"], root, env).stdout))
        finally:
            (root / path).write_text(original)

    def append(p: Path) -> None:
        p.write_text(p.read_text() + "\n# edited\n")

    # The zero-shot-CoT prompts: only the teacher asks with them (and the report digests all code).
    prompts = changed_after("ftcot/teacher/prompts.py", append)
    assert {"teach@coin_flip", "teach@last_letter_concatenation", "report"} <= prompts
    assert not {s for s in prompts if s.startswith(("check", "fetch@", "filter@", "finetune_sets@", "finetune@"))}
    # The answer types (rules, triggers): every stage that reads or scores answers, the teacher's included.
    answers = changed_after("ftcot/answers.py", append)
    assert {
        "fetch@coin_flip",
        "teach@coin_flip",
        "filter@coin_flip",
        "finetune@coin_flip-ft_cot-0",
        "report",
    } <= answers
    # The report's rendering retrains nothing.
    assert changed_after("ftcot/report/document.py", append) == {"report"}
    # Another replay folder is another teacher input.
    replay = changed_after("params.yaml", lambda p: p.write_text(p.read_text().replace("dir: replay", "dir: stages")))
    assert {"teach@coin_flip", "teach@last_letter_concatenation"} <= replay
    assert not {s for s in replay if s.startswith(("fetch@", "finetune_sets@", "finetune@"))}


def test_adding_a_seed_trains_only_that_seed(project, tmp_path):
    root, env, _ = project
    original = read(root, "params.yaml")
    params = yaml.safe_load(original)
    params["seeds"] = [0, 1]
    (root / "params.yaml").write_text(yaml.safe_dump(params))
    try:
        changed = set(json.loads(run(["dvc", "status", "--json"], root, env).stdout))
    finally:
        (root / "params.yaml").write_text(original)
    students = {s for s in changed if s.startswith(("finetune@", "evaluate@"))}
    assert students == {
        f"{stage}@{task}-{variant}-1"
        for stage in ("finetune", "evaluate")
        for task in ("coin_flip", "last_letter_concatenation")
        for variant in ("ft_cot", "vanilla")
    }
    assert changed - students == {"check", "report"}
    # One of them trained, in a copy of the project: the seed reaches the stage, so a second seed
    # is a second student, and the first one's stages stay as they were.
    other = tmp_path / "other"
    shutil.copytree(root, other, symlinks=True)
    (other / "params.yaml").write_text(yaml.safe_dump(params))
    done = run(["dvc", "repro", "evaluate@coin_flip-ft_cot-1"], other, project_env(other))
    assert stages_run(done.stdout) == {"check", "finetune@coin_flip-ft_cot-1", "evaluate@coin_flip-ft_cot-1"}
    student = "models/coin_flip/ft_cot/seed{}/model.safetensors"
    assert read_bytes(other, student.format(1)) != read_bytes(root, student.format(0))
    assert json.loads(read(other, "metrics/evaluate/coin_flip/ft_cot/seed1.json"))["seed"] == 1


def test_student_or_evaluation_changes_never_touch_the_teacher(project):
    root, env, _ = project
    original = read(root, "params.yaml")
    params = yaml.safe_load(original)
    params["student"]["epochs"] = 2
    params["evaluate"]["max_new_tokens"] = 16
    (root / "params.yaml").write_text(yaml.safe_dump(params))
    try:
        changed = set(json.loads(run(["dvc", "status", "--json"], root, env).stdout))
    finally:
        (root / "params.yaml").write_text(original)
    assert "finetune@coin_flip-ft_cot-0" in changed and "evaluate@coin_flip-vanilla-0" in changed
    assert not {s for s in changed if s.startswith(("fetch@", "teach@", "filter@", "finetune_sets@"))}


def test_report_refuses_predictions_that_do_not_match_the_test_set(project):
    root, env, _ = project
    path = root / "data/evaluate/coin_flip/vanilla/seed0.jsonl"
    original = path.read_text()
    lines = original.splitlines(keepends=True)
    path.write_text("".join(lines[1:]))  # one test question lost
    summary = read(root, "metrics/summary.json")
    try:
        proc = run([sys.executable, "stages/report.py"], root, env, check=False)
    finally:
        path.write_text(original)
    assert proc.returncode == 2
    assert (
        "data/evaluate/coin_flip/vanilla/seed0.jsonl: prediction ids do not match the test set ids: 1 missing"
        in proc.stderr
    )
    assert read(root, "metrics/summary.json") == summary  # stopped before writing anything


def test_bad_params_stop_before_any_work(project):
    root, env, _ = project
    original = read(root, "params.yaml")
    params = yaml.safe_load(original)
    params["teacher"]["backend"] = "nonsense"
    (root / "params.yaml").write_text(yaml.safe_dump(params))
    outputs = ["data/teach/coin_flip.jsonl", "data/teach/coin_flip.test.jsonl", "metrics/teach/coin_flip.json"]
    saved = {name: (root / name).read_bytes() for name in outputs}
    try:
        proc = run(["dvc", "repro", "--force", "--single-item", "teach@coin_flip"], root, env, check=False)
    finally:
        (root / "params.yaml").write_text(original)
        # DVC removes a stage's outputs before it runs the command: put them back for the tests
        # that follow (the stage stopped before asking anything; the answers are in the cache).
        for name, content in saved.items():
            (root / name).write_bytes(content)
    assert proc.returncode != 0
    assert "teacher.backend" in proc.stderr + proc.stdout
