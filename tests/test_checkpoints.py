"""Which checkpoint a resumed finetune uses, and which checkpoint folders are removed (no training here)."""

import json
import logging
import os
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from ftcot.student.checkpoints import (
    CheckpointsInUseError,
    checkpoint_folder,
    claimed,
    last_complete_checkpoint,
    remove_stale_checkpoints,
)

REPO = Path(__file__).resolve().parents[1]


def fake_checkpoint(folder, weights="model.safetensors"):
    folder.mkdir(parents=True)
    (folder / "trainer_state.json").write_text(json.dumps({"global_step": int(folder.name.rsplit("-", 1)[1])}))
    save_file({"w": torch.ones(64)}, str(folder / weights))
    torch.save({"state": torch.zeros(64)}, folder / "optimizer.pt")
    return folder


def truncate(path, cut=10):
    path.write_bytes(path.read_bytes()[:-cut])


def test_the_newest_complete_checkpoint_is_resumed_and_newer_incomplete_ones_removed(tmp_path, caplog):
    good = fake_checkpoint(tmp_path / "checkpoint-2")
    fake_checkpoint(tmp_path / "checkpoint-3", weights="adapter_model.safetensors")  # LoRA
    truncate(fake_checkpoint(tmp_path / "checkpoint-4") / "optimizer.pt")
    (fake_checkpoint(tmp_path / "checkpoint-6") / "trainer_state.json").unlink()
    (fake_checkpoint(tmp_path / "checkpoint-8") / "trainer_state.json").write_text('{"global_st')
    truncate(fake_checkpoint(tmp_path / "checkpoint-10") / "model.safetensors")
    (fake_checkpoint(tmp_path / "checkpoint-12") / "model.safetensors").unlink()
    with caplog.at_level(logging.WARNING, logger="ftcot"):
        assert last_complete_checkpoint(tmp_path, remove_incomplete=False) == tmp_path / "checkpoint-3"
        assert len(list(tmp_path.glob("checkpoint-*"))) == 7  # checked only
        (tmp_path / "checkpoint-3" / "adapter_model.safetensors").unlink()
        assert last_complete_checkpoint(tmp_path) == good
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint-2"]
    messages = "\n".join(r.getMessage() for r in caplog.records)
    for step, problem in [
        (4, "optimizer.pt unreadable"),
        (6, "trainer_state.json unreadable"),
        (8, "trainer_state.json unreadable"),
        (10, "model.safetensors unreadable"),
        (12, "no *.safetensors weights"),
    ]:
        assert f"checkpoint-{step} is incomplete, skipping it: {problem}" in messages
    assert "resuming from checkpoint-2, the newest complete checkpoint" in messages


def test_without_a_complete_checkpoint_training_starts_over(tmp_path, caplog):
    assert last_complete_checkpoint(tmp_path) is None and not caplog.records  # nothing to resume, nothing to say
    truncate(fake_checkpoint(tmp_path / "checkpoint-3") / "model.safetensors", cut=1)
    with caplog.at_level(logging.WARNING, logger="ftcot"):
        assert last_complete_checkpoint(tmp_path) is None
    assert not (tmp_path / "checkpoint-3").exists()
    assert "no complete checkpoint" in caplog.text and "training starts over" in caplog.text


def test_stale_checkpoint_folders_of_the_same_task_variant_and_seed_are_removed_unless_in_use(caplog):
    current = checkpoint_folder("coin_flip", "ft_cot", 0, "a" * 16)
    stale = fake_checkpoint(checkpoint_folder("coin_flip", "ft_cot", 0, "b" * 16) / "checkpoint-3").parent
    busy = fake_checkpoint(checkpoint_folder("coin_flip", "ft_cot", 0, "c" * 16) / "checkpoint-3").parent
    other_variant = fake_checkpoint(checkpoint_folder("coin_flip", "vanilla", 0, "b" * 16) / "checkpoint-3").parent
    other_task = fake_checkpoint(checkpoint_folder("coin_flip-ft_cot", "ft_cot", 0, "b" * 16) / "checkpoint-3").parent
    other_seed = fake_checkpoint(checkpoint_folder("coin_flip", "ft_cot", 1, "b" * 16) / "checkpoint-3").parent
    other_seed_prefix = fake_checkpoint(checkpoint_folder("coin_flip", "ft_cot", 10, "b" * 16) / "checkpoint-3").parent
    not_a_key = fake_checkpoint(current.with_name("coin_flip-ft_cot-seed0-notakey") / "checkpoint-3").parent
    orphan_lock = current.with_name(
        f"coin_flip-ft_cot-seed0-{'d' * 16}.lock"
    )  # its run was killed before any checkpoint
    orphan_lock.touch()
    fake_checkpoint(current / "checkpoint-3")
    with caplog.at_level(logging.INFO, logger="ftcot"), claimed(busy), claimed(current):
        removed = remove_stale_checkpoints(current)
        assert removed == [stale, orphan_lock.with_suffix("")]
        assert current.with_name(current.name + ".lock").exists()  # held while the run lasts
    assert not stale.exists() and not stale.with_name(stale.name + ".lock").exists() and not orphan_lock.exists()
    for kept in (current, busy, other_variant, other_task, other_seed, other_seed_prefix, not_a_key):
        assert (kept / "checkpoint-3" / "model.safetensors").exists()
    assert f"keeping {busy}: in use by another process" in caplog.text
    assert not current.with_name(current.name + ".lock").exists()  # released and removed at the end
    # Once its process is gone, the folder that was in use is stale too.
    assert remove_stale_checkpoints(current) == [busy]


def test_a_folder_in_use_cannot_be_claimed_twice_and_the_error_names_the_holder_and_the_way_out():
    folder = checkpoint_folder("coin_flip", "ft_cot", 0, "a" * 16)
    with claimed(folder):
        with pytest.raises(CheckpointsInUseError) as err:
            with claimed(folder):
                pass
    assert f"in use by process {os.getpid()}" in str(err.value)
    assert "FTCOT_CHECKPOINT_DIR=" in str(err.value)
    with claimed(folder):  # free again
        pass


def test_each_project_keeps_its_own_checkpoints(tmp_path, monkeypatch):
    """Two clones on one machine training the same configuration do not share a folder (nor its
    lock): the checkpoints live in the project that trains, unless FTCOT_CHECKPOINT_DIR says where."""
    monkeypatch.delenv("FTCOT_CHECKPOINT_DIR")
    folders = []
    for clone in ("clone-a", "clone-b"):
        (tmp_path / clone).mkdir()
        monkeypatch.chdir(tmp_path / clone)
        folders.append(checkpoint_folder("coin_flip", "ft_cot", 0, "a" * 16))
    assert folders[0] == tmp_path / "clone-a/.checkpoints/coin_flip-ft_cot-seed0-aaaaaaaaaaaaaaaa"
    assert folders[1].parent == tmp_path / "clone-b/.checkpoints"
    with claimed(folders[0]):
        with claimed(folders[1]):  # no collision
            pass
    monkeypatch.setenv("FTCOT_CHECKPOINT_DIR", str(tmp_path / "elsewhere"))
    assert checkpoint_folder("coin_flip", "ft_cot", 0, "a" * 16).parent == tmp_path / "elsewhere"
    ignored = (REPO / ".gitignore").read_text().splitlines() + (REPO / ".dvcignore").read_text().splitlines()
    assert "/.checkpoints/" in ignored and ".checkpoints/" in ignored


def test_checkpoints_of_other_training_code_are_not_resumed(tmp_path, monkeypatch):
    """The checkpoint key covers the training code: after a change to it, a rerun starts afresh
    instead of resuming what the old code began."""
    from ftcot.config import StudentParams
    from ftcot.student import training

    for rel in training.TRAINING_CODE:
        source = REPO / rel
        target = tmp_path / rel
        if source.is_dir():
            shutil.copytree(source, target, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(source, target)
    before = training.training_code_digest(tmp_path)
    assert before == training.training_code_digest(REPO)  # the same code in another folder
    with (tmp_path / "ftcot/student/training.py").open("a") as f:
        f.write("\n# a change\n")
    assert training.training_code_digest(tmp_path) != before
    args = (StudentParams(), 0, "ft_cot", [{"question": "q"}], [])
    key = training.checkpoint_key(*args)
    monkeypatch.setattr(training, "training_code_digest", lambda: "other code")
    assert training.checkpoint_key(*args) != key
