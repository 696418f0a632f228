"""End to end, continued: DVC's run-cache, the finetune launcher, experiments and the prompting
baselines in the real `dvc repro` on the tiny configuration, in a copy of the built project of
their own (tests/test_pipeline.py's tests run beside these, in another process). In this order:
the run-cache test's diversity=2 run of coin_flip's chain is what the experiment then restores
instead of running it again; it switches branches and restores outputs, which rewrites the
.gitignore files DVC keeps beside outputs, and puts them back."""

import json
from pathlib import Path

import pytest
import yaml

from ftcot.testing.project import differing, run, stages_restored, stages_run, tracked_outputs

pytestmark = pytest.mark.slow


def read(root: Path, rel: str) -> str:
    return (root / rel).read_text()


def test_a_param_changed_and_changed_back_or_committed_on_a_branch_restores_from_the_run_cache(project):
    """Every stage from teach to evaluate comes back from DVC's run-cache: no question asked of the
    teacher, no student trained, the same bytes (`check` reruns: its output is git's; every other
    stage is declared so that DVC keeps its run, see tests/test_stage_deps.py). One student's chain,
    reproduced by target, stands for all: the declarations are the same for every stage."""
    root, env, _ = project
    original = read(root, "params.yaml")
    before = tracked_outputs(root)
    lock_text = read(root, "dvc.lock")
    lock_before = yaml.safe_load(lock_text)["stages"]
    # DVC rewrites the .gitignore it keeps beside outputs when it restores them, in another order
    # (the report's folder dependencies then read as changed), and stages them (core.autostage),
    # so that going back to the first branch with `checkout -f` deletes them. Put them back as they were.
    gitignores = {p: p.read_bytes() for p in root.rglob(".gitignore") if p.relative_to(root).parts[0] != ".git"}
    experiment = yaml.safe_load(original)
    experiment["diversity"] = 2  # reruns the chain from the teacher on
    experiment_text = yaml.safe_dump(experiment, sort_keys=False)
    target = ["dvc", "repro", "evaluate@coin_flip-ft_cot-0"]
    chain = {
        "teach@coin_flip",
        "filter@coin_flip",
        "finetune_sets@coin_flip",
        "finetune@coin_flip-ft_cot-0",
        "evaluate@coin_flip-ft_cot-0",
    }
    home = run(["git", "rev-parse", "--abbrev-ref", "HEAD"], root, env).stdout.strip()
    try:
        (root / "params.yaml").write_text(experiment_text)
        assert stages_run(run(target, root, env).stdout) == chain | {"check"}
        after_experiment = tracked_outputs(root)
        assert after_experiment["data/teach/coin_flip.jsonl"] != before["data/teach/coin_flip.jsonl"]

        (root / "params.yaml").write_text(original)  # changed back
        back = run(target, root, env).stdout
        assert stages_run(back) == {"check"} and stages_restored(back) == chain
        assert differing(before, tracked_outputs(root)) == []

        # The experiment's params committed on a branch: its outputs come back the same way.
        run(["git", "checkout", "-qb", "more-diversity"], root, env)
        (root / "params.yaml").write_text(experiment_text)
        run(["git", "commit", "-qm", "diversity 2", "params.yaml"], root, env)
        branch = run(target, root, env).stdout
        assert stages_run(branch) == {"check"} and stages_restored(branch) == chain
        assert differing(after_experiment, tracked_outputs(root)) == []
    finally:
        run(["git", "checkout", "-q", "-f", home], root, env)
        (root / "params.yaml").write_text(original)
        run(target, root, env)
    assert [p for p in differing(before, tracked_outputs(root)) if p != "dvc.lock"] == []
    lock = yaml.safe_load(read(root, "dvc.lock"))["stages"]
    assert {name for name in lock if lock[name] != lock_before.get(name)} == set()
    (root / "dvc.lock").write_text(lock_text)  # the same entries; DVC may have written them in another order
    for p, content in gitignores.items():
        p.write_bytes(content)
    status = run(["dvc", "status", "--json"], root, env).stdout
    assert json.loads(status) == {}, status


def test_finetune_launched_as_two_processes_through_dvc_repro(project):
    """launch.finetune puts torchrun (DDP, gloo on a CPU) into the stage's command: dvc repro trains
    with two processes; set back, the one-process model comes back from the run-cache."""
    root, env, _ = project
    original = read(root, "params.yaml")
    before = tracked_outputs(root)
    params = yaml.safe_load(original)
    params["launch"]["finetune"] = "torchrun --standalone --nproc_per_node 2"
    target = ["dvc", "repro", "finetune@coin_flip-ft_cot-0"]
    try:
        (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
        ran = run(target, root, env).stdout
        assert "> torchrun --standalone --nproc_per_node 2 stages/finetune.py --task coin_flip" in ran
        assert stages_run(ran) == {"check", "finetune@coin_flip-ft_cot-0"}
        assert (root / "models/coin_flip/ft_cot/seed0/model.safetensors").is_file()
    finally:
        (root / "params.yaml").write_text(original)
        back = run(target, root, env).stdout
    assert stages_restored(back) == {"finetune@coin_flip-ft_cot-0"}
    assert differing(before, tracked_outputs(root)) == []
    status = run(["dvc", "status", "--json"], root, env).stdout
    assert json.loads(status) == {}, status


def test_experiment_with_more_diversity_reruns_from_teach(project):
    root, env, _ = project
    run(["git", "add", "-A"], root, env)
    run(["git", "commit", "-qm", "baseline results"], root, env)
    exp = run(["dvc", "exp", "run", "-S", "diversity=2"], root, env)
    # run, or restored from the run-cache where an earlier test ran the same params
    redone = stages_run(exp.stdout) | stages_restored(exp.stdout)
    assert {"teach@coin_flip", "finetune@coin_flip-ft_cot-0", "finetune@last_letter_concatenation-ft_cot-0"} <= redone
    assert "fetch@coin_flip" not in redone
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
    assert all(isinstance(v["new"], int | float) and isinstance(v["old"], int | float) for v in rows.values())
    # 2 tasks x (teacher: 4 numbers; 2 methods: 4 each; their votes: 4 each); one seed: no sd
    assert len(rows) == 2 * (4 + 2 * 4 + 2 * 4) and not any(k.endswith("accuracy_sd") for k in rows)
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
