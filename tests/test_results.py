"""Named runs committed beside the default run (results/<name>/): their params are complete and
valid, their table is made from their summary, and docs/paper-results.md shows exactly that table."""

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

from ftcot.evaluation.scoring import accuracy_interval
from ftcot.report.results import BEGIN, END, README_BEGIN, README_END, cell, gather, readme_table, splice, table

REPO = Path(__file__).resolve().parents[1]
NAMED = sorted(p.parent.name for p in (REPO / "results").glob("*/params.yaml"))


def test_the_paper_run_is_defined():
    assert "paper-smollm2" in NAMED
    paper = json.loads((REPO / "results/paper.json").read_text())
    gpt2 = paper["rows"]["Paper: GPT-2 124M, Fine-tune-CoT"]
    assert (gpt2["coin_flip"], gpt2["last_letter_concatenation"]) == (77.33, 4.67)  # the paper's anchors


@pytest.mark.parametrize("name", NAMED)
def test_a_named_runs_params_are_valid(name):
    """Read as the driver reads them: what is there is checked; completeness is the business of
    the commit that runs them (its check stage), which may predate a key added since."""
    params = _script().run_params(REPO / "results" / name / "params.yaml")
    assert params.data.tasks


@pytest.mark.parametrize("name", NAMED)
def test_the_results_page_shows_the_table_of_each_finished_run(name):
    summary_file = REPO / "results" / name / "summary.json"
    page = (REPO / "docs/paper-results.md").read_text()
    assert _script().RESULTS_PAGE == REPO / "docs/paper-results.md"  # where `table --write-docs` writes
    if not summary_file.exists():
        assert BEGIN.format(name=name) not in page  # no table before its run has finished
        return
    paper = json.loads((REPO / "results/paper.json").read_text())["rows"]
    expected = table(json.loads(summary_file.read_text()), paper)
    assert splice(page, name, expected) == page


@pytest.mark.parametrize("name", NAMED)
def test_the_readme_shows_the_short_table_of_each_finished_run(name):
    summary_file = REPO / "results" / name / "summary.json"
    readme = (REPO / "README.md").read_text()
    assert _script().README == REPO / "README.md"  # where `table --write-docs` writes the short form
    if not summary_file.exists():
        assert README_BEGIN.format(name=name) not in readme
        return
    summary = json.loads(summary_file.read_text())
    expected = readme_table(summary, json.loads((REPO / "results/paper.json").read_text())["rows"])
    assert splice(readme, name, expected, (README_BEGIN, README_END)) == readme
    assert len(expected.splitlines()) == 2 + len(summary["tasks"])  # a row per task
    coin = next(line for line in expected.splitlines() if line.startswith("| Coin Flip |"))
    assert coin.endswith("| 60.0 / 77.3 |")  # the paper's GPT-2 124M beside it


def test_the_table_carries_accuracy_intervals_parse_rates_and_kept_rationales():
    summary = json.loads((REPO / "metrics/summary.json").read_text())  # the default run's
    ft_cot = summary["tasks"]["coin_flip"]["ft_cot"]
    assert cell(summary["tasks"]["coin_flip"], "ft_cot").startswith(f"{100 * ft_cot['accuracy']:.1f} (")
    rendered = table(summary, {"Paper: X": {"coin_flip": 77.33}})
    lines = rendered.splitlines()
    assert lines[0] == "| Method | Coin Flip | Last Letter |"
    assert any(line.startswith("| Fine-tune-CoT |") for line in lines)
    assert any(line.startswith("| Random | 50.0 |") for line in lines)
    teacher = summary["tasks"]["coin_flip"]["teacher"]
    assert f"| Kept rationales (train) | {teacher['kept']} / {teacher['rationales']} |" in rendered
    assert lines[-1] == "| Paper: X | 77.3 | — |"
    partly = {"tasks": {"t": {"ft_cot": {**ft_cot, "parse_rate": 0.8}, "random": 0.0}}}
    assert "parsed 80.0%" in cell(partly["tasks"]["t"], "ft_cot")


def test_the_teachers_interval_is_the_reports_wilson_interval_over_the_test_questions():
    summary = json.loads((REPO / "metrics/summary.json").read_text())
    task = summary["tasks"]["coin_flip"]
    n, accuracy = task["ft_cot"]["n"], task["teacher"]["test_accuracy"]
    low, high = accuracy_interval(round(accuracy * n), n)
    assert cell(task, "teacher") == f"{100 * accuracy:.1f} ({100 * low:.1f}–{100 * high:.1f})"
    assert low < accuracy < high


def test_splice_replaces_only_between_the_markers_and_needs_them():
    doc = f"a\n{BEGIN.format(name='x')}\nold\n{END.format(name='x')}\nb\n"
    assert splice(doc, "x", "new") == f"a\n{BEGIN.format(name='x')}\nnew\n{END.format(name='x')}\nb\n"
    with pytest.raises(ValueError, match="no markers for results 'y'"):
        splice(doc, "y", "new")


def test_the_script_names_a_task_the_run_does_not_have_before_running_anything():
    cmd = [sys.executable, "scripts/results.py", "run", "paper-smollm2", "--tasks", "gsm8k"]
    done = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert "--tasks ['gsm8k']: not in data.tasks of results/paper-smollm2/params.yaml" in done.stderr
    cmd = [sys.executable, "scripts/results.py", "run", "nope"]
    done = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
    assert "no results/nope/params.yaml" in done.stderr


def _script():
    """scripts/results.py as a module."""
    spec = importlib.util.spec_from_file_location("named_results", REPO / "scripts/results.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_an_unknown_commit_is_an_error_before_anything_runs():
    cmd = [sys.executable, "scripts/results.py", "run", "paper-smollm2", "--commit", "no-such-commit"]
    done = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert "no-such-commit" in done.stderr and "failed" in done.stderr


def test_each_task_runs_on_the_runs_params_with_only_that_task(tmp_path):
    text = (REPO / "results/paper-smollm2/params.yaml").read_text()
    one = tmp_path / "params.yaml"
    one.write_text(_script().task_params(text, "svamp"))
    params, full = _script().run_params(one), _script().run_params(REPO / "results/paper-smollm2/params.yaml")
    assert params.data.tasks == ["svamp"]
    assert params.model_dump(exclude={"data"}) == full.model_dump(exclude={"data"})
    assert params.data.model_dump(exclude={"tasks"}) == full.data.model_dump(exclude={"tasks"})


def test_a_task_collected_for_the_same_commit_and_params_is_not_run_again(monkeypatch):
    script = _script()
    commit = script.git("rev-parse", "HEAD")
    digest = script.params_digest(REPO / "results/paper-smollm2/params.yaml")
    collected = {
        "coin_flip": {"commit": commit, "params_sha256": digest},
        "svamp": {"commit": "0" * 40, "params_sha256": digest},
    }
    ran = []
    monkeypatch.setattr(script, "done_at", lambda name, task: collected.get(task))
    monkeypatch.setattr(script, "run_task", lambda name, task, c, d: ran.append((task, c, d)))
    monkeypatch.setattr(script, "gather_results", lambda name: None)
    script.run("paper-smollm2", ["coin_flip", "svamp", "addsub"], at="HEAD")
    assert ran == [("svamp", commit, digest), ("addsub", commit, digest)]  # svamp's was another commit's


def _task_summary(task: str, accuracy: float) -> dict:
    method = {"accuracy": accuracy, "accuracy_ci_low": accuracy - 0.1, "accuracy_ci_high": accuracy + 0.1, "n": 150}
    teacher = {"test_accuracy": 0.9, "kept": 300, "rationales": 350}
    return {"tasks": {task: {"random": 0.5, "teacher": teacher, "ft_cot": method}}, "run": {"code": {"digest": "d"}}}


def test_the_gathered_summary_keeps_the_runs_order_and_names_the_pending_tasks():
    run = {"commit": "c", "params_sha256": "p", "wall_seconds": 60.0, "numerics": "native", "machine": {"cores": 2}}
    per_task = {
        "last_letter_concatenation": (_task_summary("last_letter_concatenation", 0.2), {**run, "wall_seconds": 30.5}),
        "coin_flip": (_task_summary("coin_flip", 0.9), run),
    }
    gathered = gather(per_task, ["coin_flip", "svamp", "last_letter_concatenation"])
    assert list(gathered["tasks"]) == ["coin_flip", "last_letter_concatenation"]
    assert gathered["pending"] == ["svamp"] and gathered["wall_seconds"] == 90.5
    assert gathered["runs"]["coin_flip"]["code_digest"] == "d"
    rendered = table(gathered).splitlines()
    assert rendered[0] == "| Method | Coin Flip | Last Letter |"
    assert rendered[-1].startswith("Not run yet: SVAMP")
    assert "Not run yet" not in table({**gathered, "pending": []})


def test_a_tasks_stages_import_the_work_folders_code_not_the_checkouts(tmp_path):
    """The package is installed in editable mode from this checkout: without the work folder first
    on PYTHONPATH, a run pinned to a commit would execute whatever code the checkout holds now
    while DVC hashes the commit's files."""
    (tmp_path / "ftcot").mkdir()
    (tmp_path / "ftcot/__init__.py").write_text("")
    (tmp_path / "stages").mkdir()
    (tmp_path / "stages/probe.py").write_text("import ftcot\nprint(ftcot.__file__)\n")
    probe = [sys.executable, "stages/probe.py"]
    plain = subprocess.run(probe, cwd=tmp_path, capture_output=True, text=True, check=True).stdout.strip()
    assert plain == str(REPO / "ftcot/__init__.py")  # what a stage would import without it
    env = _script().task_env(tmp_path)
    pinned = subprocess.run(probe, cwd=tmp_path, env=env, capture_output=True, text=True, check=True).stdout.strip()
    assert pinned == str(tmp_path / "ftcot/__init__.py")
