"""End to end: the real `dvc repro` on a tiny configuration, in a temporary copy of the repo."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
COPIED = ["dvc.yaml", "params.yaml", "stages", "ftcot", "replay", ".dvc/config", ".dvcignore"]

pytestmark = pytest.mark.slow


def tiny_params() -> dict:
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["data"]["num_questions"] = 30
    params["student"].update(
        {
            "tiny": {"n_layer": 1, "n_head": 2, "n_embd": 32, "vocab_size": 300},
            "epochs": 1,
            "batch_size": 8,
            "max_length": 128,
        }
    )
    params["evaluate"].update({"batch_size": 16, "max_new_tokens": 24})
    params["teacher"].update({"eval_test": True, "prices": {"oracle": {"prompt": 1.0, "completion": 2.0}}})
    return params


def run(cmd: list[str], cwd: Path, env: dict, check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    if check and proc.returncode != 0:
        raise AssertionError(f"{cmd} failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}")
    return proc


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    root = tmp_path_factory.mktemp("project")
    for name in COPIED:
        src, dst = REPO / name, root / name
        dst.parent.mkdir(parents=True, exist_ok=True)
        if src.is_dir():
            shutil.copytree(src, dst, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(src, dst)
    (root / "params.yaml").write_text(yaml.safe_dump(tiny_params(), sort_keys=False))
    env = {
        **os.environ,
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
        "FTCOT_CACHE_DIR": str(root / ".teacher-cache-1"),
        "HF_HUB_OFFLINE": "1",
        "HF_DATASETS_OFFLINE": "1",
        "GIT_AUTHOR_NAME": "t",
        "GIT_AUTHOR_EMAIL": "t@example.com",
        "GIT_COMMITTER_NAME": "t",
        "GIT_COMMITTER_EMAIL": "t@example.com",
    }
    (root / ".gitignore").write_text(".teacher-cache-*\n")
    run(["git", "init", "-q"], root, env)
    run(["git", "add", "-A"], root, env)
    run(["git", "commit", "-qm", "tiny"], root, env)
    first = run(["dvc", "repro"], root, env)
    return root, env, first


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
            m = json.loads(read(root, f"metrics/evaluate/{task}/{variant}.json"))
            assert m["n"] == 9 and 0.0 <= m["accuracy"] <= 1.0
            assert (root / f"models/{task}/{variant}/model.safetensors").exists()
            assert len(read(root, f"data/evaluate/{task}/{variant}.jsonl").splitlines()) == 9
    summary = json.loads(read(root, "metrics/summary.json"))
    assert set(summary["tasks"]) == {"coin_flip", "last_letter_concatenation"}
    report = read(root, "report/report.md")
    assert "| coin_flip |" in report and "## Fine-tune-CoT student outputs on test questions: coin_flip" in report
    assert (root / "report/accuracy.png").read_bytes().startswith(b"\x89PNG")
    assert "Running stage 'finetune@coin_flip-ft_cot'" in first.stdout


def test_second_repro_runs_nothing(project):
    root, env, _ = project
    again = run(["dvc", "repro"], root, env)
    assert "Running stage" not in again.stdout
    assert "Data and pipelines are up to date" in run(["dvc", "status"], root, env).stdout


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
    assert "finetune@coin_flip-ft_cot" in changed and "evaluate@coin_flip-vanilla" in changed
    assert not {s for s in changed if s.startswith(("fetch@", "teach@", "filter@", "split@"))}


def test_forced_rerun_with_cold_cache_is_byte_identical(project):
    root, env, _ = project

    def tracked_metrics() -> dict:  # *.run.json say what a run cost, which depends on the cache
        return {p: p.read_bytes() for p in sorted((root / "metrics").rglob("*.json")) if ".run." not in p.name}

    before = tracked_metrics()
    lock = read(root, "dvc.lock")
    cold = {**env, "FTCOT_CACHE_DIR": str(root / ".teacher-cache-2")}
    run(["dvc", "repro", "--force"], root, cold)
    assert read(root, "dvc.lock") == lock  # every output's md5, models included
    assert tracked_metrics() == before
    assert json.loads(read(root, "metrics/teach/coin_flip.run.json"))["requests_sent"] > 0  # the cold cache


def test_experiment_with_more_diversity_reruns_from_teach(project):
    root, env, _ = project
    run(["git", "add", "-A"], root, env)
    run(["git", "commit", "-qm", "baseline results"], root, env)
    exp = run(["dvc", "exp", "run", "-S", "diversity=2"], root, env)
    assert "Running stage 'teach@coin_flip'" in exp.stdout
    assert "Running stage 'finetune@coin_flip-ft_cot'" in exp.stdout
    assert "Running stage 'fetch@coin_flip'" not in exp.stdout
    assert len(read(root, "data/teach/coin_flip.jsonl").splitlines()) == 42
    shown = json.loads(run(["dvc", "exp", "show", "--json"], root, env).stdout)
    assert len(json.dumps(shown)) > 0 and "diversity" in json.dumps(shown)
    diff = json.loads(run(["dvc", "metrics", "diff", "--json", "--all"], root, env).stdout)
    assert "metrics/evaluate/coin_flip/ft_cot.json" in diff
    assert "accuracy" in diff["metrics/evaluate/coin_flip/ft_cot.json"]
    assert diff["metrics/teach/coin_flip.json"]["rationales"]["new"] == 42


def test_bad_params_stop_before_any_work(project):
    root, env, _ = project
    params = yaml.safe_load(read(root, "params.yaml"))
    params["teacher"]["backend"] = "nonsense"
    (root / "params.yaml").write_text(yaml.safe_dump(params))
    proc = run(["dvc", "repro", "--force", "--single-item", "teach@coin_flip"], root, env, check=False)
    assert proc.returncode != 0
    assert "teacher.backend" in proc.stderr + proc.stdout
