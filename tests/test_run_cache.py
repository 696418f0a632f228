"""DVC's run-cache and the finetune launcher, with the real `dvc repro` on a tiny configuration, in
a copy of the project of their own: these tests switch branches and restore outputs, which
rewrites the .gitignore files DVC keeps beside outputs (tests/test_pipeline.py's copy is shared)."""

import json

import pytest
import yaml

from ftcot.testing.project import (
    differing,
    run,
    stages_restored,
    stages_run,
    tracked_outputs,
)

pytestmark = pytest.mark.slow


def read(root, rel: str) -> str:
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
    # DVC rewrites the .gitignore it keeps beside outputs when it restores them, in another order:
    # the report's folder dependencies then read as changed. Put them back as they were.
    gitignores = {p: p.read_bytes() for p in (root / "data").rglob(".gitignore")}
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
