"""End to end, continued: experiments and the prompting baselines in the real `dvc repro` on the
tiny configuration, in a copy of the built project of their own (tests/test_pipeline.py's tests run
beside these, in another process)."""

import json
from pathlib import Path

import pytest
import yaml

from ftcot.methods import FINETUNE_METHODS
from ftcot.testing.project import run, stages_restored, stages_run

pytestmark = pytest.mark.slow


def read(root: Path, rel: str) -> str:
    return (root / rel).read_text()


def test_experiment_with_more_diversity_reruns_from_teach(project):
    root, env, _ = project
    run(["git", "add", "-A"], root, env)
    run(["git", "commit", "-qm", "baseline results"], root, env)
    # One seed of the two: what an experiment reruns and how DVC compares it are the same for
    # each, at half the students retrained.
    exp = run(["dvc", "exp", "run", "-S", "diversity=2", "-S", "seeds=[0]"], root, env)
    # run, or restored from the run-cache where an earlier test ran the same params
    redone = stages_run(exp.stdout) | stages_restored(exp.stdout)
    assert {"teach@coin_flip", "finetune@coin_flip-ft_cot-0", "finetune@last_letter_concatenation-ft_cot-0"} <= redone
    assert "fetch@coin_flip" not in redone and not any(stage.endswith("-1") for stage in redone)
    assert not any("vanilla" in stage for stage in redone if stage.startswith("finetune@"))  # its set is the same
    assert len(read(root, "data/teach/coin_flip.jsonl").splitlines()) == 42
    shown = json.loads(run(["dvc", "exp", "show", "--json"], root, env).stdout)
    assert len(json.dumps(shown)) > 0 and "diversity" in json.dumps(shown)
    # Every stage's figures are metrics; the headline file alone compares task by task and method
    # by method, numbers only.
    everything = json.loads(run(["dvc", "metrics", "diff", "--json"], root, env).stdout)
    assert {"metrics/headline.json", "metrics/teach/coin_flip.json", "metrics/filter/coin_flip.json"} <= set(everything)
    assert "metrics/fetch/coin_flip.json" not in everything  # unchanged: not shown without --all
    headline = ["dvc", "metrics", "diff", "--json", "--all", "--targets", "metrics/headline.json"]
    diff = json.loads(run(headline, root, env).stdout)
    assert list(diff) == ["metrics/headline.json"]
    rows = diff["metrics/headline.json"]
    assert "coin_flip.ft_cot.accuracy" in rows and "coin_flip.teacher.kept_rate" in rows
    # The sd over seeds is the baseline's only: one seed has none.
    gone = {k for k, v in rows.items() if v.get("new") is None}
    tasks = ("coin_flip", "last_letter_concatenation")
    assert gone == {f"{t}.{m}.accuracy_sd" for t in tasks for m in FINETUNE_METHODS}
    assert all(isinstance(v["new"], int | float) for k, v in rows.items() if k not in gone)
    # 2 tasks x (teacher: 4 numbers; 2 methods: 4 each; their votes: 4 each), and the baseline's sds
    assert len(rows) == 2 * (4 + 2 * 4 + 2 * 4) + len(gone)
    plots = json.loads(run(["dvc", "plots", "diff", "HEAD", "--json"], root, env).stdout)["data"]
    (bars,) = plots["report/accuracy.json"]
    assert sorted(bars["revisions"]) == sorted(["workspace", "HEAD"])  # the experiment against the baseline
    assert {row["rev"] for row in bars["content"]["data"]["values"]} == {"workspace", "HEAD"}


def test_prompting_baseline_runs_as_a_dvc_stage(project, smollm2_cache):
    root, env, _ = project
    if not (Path(env["FTCOT_CACHE_DIR"]) / "models").exists():
        smollm2_cache(Path(env["FTCOT_CACHE_DIR"]))
    original = read(root, "params.yaml")
    params = yaml.safe_load(original)
    params["student"]["model"] = "smollm2-135m"
    params["methods"]["prompting"] = ["zero_shot", "few_shot_cot"]
    (root / "params.yaml").write_text(yaml.safe_dump(params))
    gitignore = root / "data/evaluate/coin_flip/.gitignore"  # DVC writes one for the new output
    kept = gitignore.read_bytes() if gitignore.exists() else None
    outputs = [root / "data/evaluate/coin_flip/zero_shot.jsonl", root / "metrics/evaluate/coin_flip/zero_shot.json"]
    try:
        stages = run(["dvc", "stage", "list", "--name-only"], root, env).stdout.split()
        assert {"prompt@coin_flip-zero_shot", "prompt@last_letter_concatenation-few_shot_cot"} <= set(stages)
        done = run(["dvc", "repro", "--single-item", "prompt@coin_flip-zero_shot"], root, env)
        m = json.loads(outputs[1].read_text())  # no training seed
    finally:
        # The baseline's outputs sit in the folders the report reads: leave the project as the
        # tests that follow expect it, up to date (test_a_fresh_clone_pulls_... checks).
        (root / "params.yaml").write_text(original)
        for path in [*outputs, gitignore]:
            path.unlink(missing_ok=True)
        if kept is not None:
            gitignore.write_bytes(kept)
    assert "Running stage 'prompt@coin_flip-zero_shot'" in done.stdout
    assert m["n"] == 9 and m["model"] == "smollm2-135m" and m["method"] == "zero_shot"
