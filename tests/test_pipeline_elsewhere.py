"""End to end, continued on the same built tiny project, in a copy of their own: the run elsewhere
(another CPU, a fresh clone pulling from a remote), bad params, the export. A module of its own so
that these run beside tests/test_pipeline.py's on the other worker."""

import json
import shutil
import sys

import pytest
import yaml
from test_pipeline import read

from ftcot.testing.project import SIMULATED_CPUS, differing, project_env, run, stages_run, tracked_outputs

pytestmark = pytest.mark.slow


def test_a_forced_rerun_elsewhere_on_another_cpu_with_a_cold_cache_is_byte_identical(project, tmp_path):
    """The run copied to another folder and forced to run again where the libraries would pick other
    kernels (no AVX-512, MKL's AVX2 path), on one core, with an empty teacher cache: every tracked
    output, dvc.lock (every output's md5, models included) among them, is the same. One task's chain
    to one student stands for the rest (the same stages, other data): the whole pipeline on one
    core would take minutes."""
    root, _, _ = project
    other = tmp_path / "other"
    shutil.copytree(root, other, symlinks=True, ignore=shutil.ignore_patterns(".teacher-cache-*"))
    simulated = SIMULATED_CPUS["avx2-1-core"]
    env = project_env(other, **simulated["env"], FTCOT_CACHE_DIR=str(other / ".teacher-cache-cold"))
    forced = run([*simulated["prefix"], "dvc", "repro", "--force", "evaluate@coin_flip-ft_cot-0"], other, env)
    assert stages_run(forced.stdout) == {
        "check",
        *(f"{stage}@coin_flip" for stage in ("fetch", "teach", "filter", "finetune_sets")),
        *(f"{stage}@coin_flip-ft_cot-0" for stage in ("finetune", "evaluate")),
    }
    mine, theirs = tracked_outputs(root), tracked_outputs(other)
    assert len(mine) > 40 and "models/coin_flip/ft_cot/seed0/model.safetensors" in mine
    assert not differing(mine, theirs)
    assert json.loads(read(other, "metrics/teach/coin_flip.run.json"))["requests_sent"] > 0  # the cold cache


def test_a_misspelt_or_mistyped_param_stops_repro_even_when_nothing_changed(project):
    root, env, _ = project
    original = read(root, "params.yaml")
    params = yaml.safe_load(original)
    bad = {
        "teacher.tempreature": lambda p: p["teacher"].update(tempreature=0.5),
        "foo": lambda p: p.update(foo=1),
        "diversity": lambda p: p.update(diversity=True),
    }
    try:
        for key, edit in bad.items():
            edited = yaml.safe_load(original)
            edit(edited)
            (root / "params.yaml").write_text(yaml.safe_dump(edited))
            proc = run(["dvc", "repro"], root, env, check=False)
            assert proc.returncode != 0, key
            assert f"{key}: " in proc.stderr + proc.stdout, (key, proc.stderr[-2000:])
            assert "Running stage 'check'" in proc.stdout and "Running stage 'fetch" not in proc.stdout
        (root / "params.yaml").write_text(original)
        exp = run(["dvc", "exp", "run", "-S", "+teacher.tempreature=0.5"], root, env, check=False)
        assert exp.returncode != 0 and "teacher.tempreature: unknown key" in exp.stderr + exp.stdout
        assert "Running stage 'fetch" not in exp.stdout
        (root / "params.yaml").write_text(yaml.safe_dump(params))  # valid again, reformatted
        again = run(["dvc", "repro"], root, env)
        assert "Running stage 'check'" in again.stdout
        assert [line for line in again.stdout.splitlines() if line.startswith("Running stage")] == [
            "Running stage 'check':"
        ]  # its output did not change: nothing downstream reruns
    finally:
        (root / "params.yaml").write_text(original)
        run(["dvc", "repro"], root, env)


def test_export_writes_a_model_card_and_a_loadable_rationale_dataset(project, tmp_path):
    import datasets
    from transformers import AutoModelForCausalLM

    root, env, _ = project
    cmd = [sys.executable, "scripts/export.py", "--task", "coin_flip", "--seed", "0", "--out", str(tmp_path)]
    done = run(cmd, root, env)
    assert "wrote" in done.stdout
    model = tmp_path / "coin_flip-ft_cot-seed0"
    card = (model / "README.md").read_text()
    accuracy = json.loads(read(root, "metrics/evaluate/coin_flip/ft_cot/seed0.json"))
    assert card.startswith("---\nbase_model: tiny-llama\n")
    assert f"({accuracy['correct']} of {accuracy['n']} test questions), 95% Wilson interval" in card
    assert AutoModelForCausalLM.from_pretrained(model).num_parameters() > 0
    # A cache of its own: datasets' shared cache may hold an earlier export from the same path.
    loaded = datasets.load_dataset(str(tmp_path / "coin_flip-rationales"), cache_dir=str(tmp_path / "hf"))
    rows = loaded["train"]
    kept = read(root, "data/filter/coin_flip.jsonl").splitlines()
    assert rows.num_rows == len(kept) and set(rows.column_names) >= {"question", "rationale", "answer"}
    refused = run([*cmd[:3], "gsm8k"], root, env, check=False)
    assert refused.returncode == 2 and "not in data.tasks" in refused.stderr


def test_a_fresh_clone_pulls_every_output_from_a_remote_without_running_a_stage(project, tmp_path):
    """docs/sharing.md, Sharing results: `dvc push` to a remote (here a local folder), and a teammate's
    clone gets every output with `dvc pull`, byte for byte, with nothing to rerun."""
    root, env, _ = project
    assert "Data and pipelines are up to date" in run(["dvc", "status"], root, env).stdout  # what is shared
    remote = tmp_path / "remote"
    run(["dvc", "remote", "add", "-d", "-f", "shared", str(remote)], root, env)
    run(["dvc", "push", "--run-cache"], root, env)
    run(["git", "add", "-A"], root, env)
    run(["git", "commit", "-qm", "results and the remote", "--allow-empty"], root, env)
    clone = tmp_path / "clone"
    run(["git", "clone", "-q", str(root), str(clone)], tmp_path, env)
    clone_env = project_env(clone)
    pulled = run(["dvc", "pull", "--run-cache"], clone, clone_env)
    assert "Running stage" not in pulled.stdout
    assert (clone / "models/coin_flip/ft_cot/seed0").is_dir()
    pulled_files = tracked_outputs(clone)
    # The root also holds files of outputs no longer in its pipeline (earlier tests' experiments):
    # the clone has what dvc.lock names (dvc status below), byte for byte.
    assert differing({k: v for k, v in tracked_outputs(root).items() if k in pulled_files}, pulled_files) == []
    assert "Data and pipelines are up to date" in run(["dvc", "status"], clone, clone_env).stdout
    assert any((clone / ".dvc/cache/runs").iterdir())  # the run-cache came too: repro restores what was run
