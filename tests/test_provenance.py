import json
import subprocess

from ftcot.config import load_params
from ftcot.provenance import code_digest, git_commit, run_metadata, safe_params
from ftcot.redaction import url_without_credentials
from ftcot.teacher.backends import teacher_identity


def test_credentials_in_a_url_are_masked():
    assert url_without_credentials("http://user:s3cret@host:8000/v1") == "http://***@host:8000/v1"
    assert url_without_credentials("https://api.example.com/v1") == "https://api.example.com/v1"
    assert url_without_credentials(None) is None


def test_teacher_identity_and_params_never_carry_a_secret():
    dump = load_params().model_dump(mode="json")
    dump["teacher"] |= {"backend": "openai", "model": "gpt-x", "base_url": "http://me:s3cret@127.0.0.1:8000/v1"}
    identity = teacher_identity(dump["teacher"])
    assert identity == {
        "backend": "openai",
        "model": "gpt-x",
        "api": "chat",
        "base_url": "http://***@127.0.0.1:8000/v1",
    }
    assert "s3cret" not in json.dumps(safe_params(dump))
    assert safe_params(dump)["teacher"]["api_key_env"] == "OPENAI_API_KEY"  # the variable's name only


def test_code_digest_follows_content_not_place(tmp_path):
    for root in (tmp_path / "a", tmp_path / "b"):
        (root / "ftcot" / "__pycache__").mkdir(parents=True)
        (root / "ftcot" / "answers.py").write_text("x = 1\n")
        (root / "dvc.yaml").write_text("stages: {}\n")
    (tmp_path / "b" / "ftcot" / "__pycache__" / "x.cpython-311.pyc").write_bytes(b"\0")  # not code
    (tmp_path / "b" / "ftcot" / "testing").mkdir()
    (tmp_path / "b" / "ftcot" / "testing" / "fake.py").write_text("y = 1\n")  # a test helper: not the product
    assert code_digest(tmp_path / "a") == code_digest(tmp_path / "b")
    (tmp_path / "b" / "ftcot" / "answers.py").write_text("x = 2\n")
    assert code_digest(tmp_path / "a") != code_digest(tmp_path / "b")


def test_commit_and_uncommitted_code_changes(tmp_path):
    assert git_commit(tmp_path) == {"commit": None, "code_changed": None}  # no repository
    env = {"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@x", "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@x"}
    (tmp_path / "ftcot").mkdir()
    (tmp_path / "ftcot" / "answers.py").write_text("a = 1\n")
    for cmd in (["git", "init", "-q"], ["git", "add", "-A"], ["git", "commit", "-qm", "x"]):
        subprocess.run(cmd, cwd=tmp_path, check=True, env={**env, "PATH": "/usr/bin:/bin"})
    clean = git_commit(tmp_path)
    assert len(clean["commit"]) == 40 and clean["code_changed"] is False
    (tmp_path / "notes.txt").write_text("not code")
    assert git_commit(tmp_path)["code_changed"] is False
    (tmp_path / "ftcot" / "answers.py").write_text("a = 2\n")
    assert git_commit(tmp_path) == {"commit": clean["commit"], "code_changed": True}


def test_run_metadata_has_every_part(tmp_path):
    dump = load_params().model_dump(mode="json")
    run = run_metadata(tmp_path, dump, {"coin_flip/ft_cot/seed0": "cpu", "coin_flip/vanilla/seed0": "cpu"})
    assert set(run) == {"code", "params", "seeds", "packages", "devices", "teacher"}
    assert run["devices"] == ["cpu"] and run["seeds"] == dump["seeds"]
    assert run["packages"]["torch"] and run["packages"]["python"].startswith("3.")
    assert run_metadata(tmp_path, dump, {}) == run_metadata(tmp_path, dump, {})  # no clock, no host


def test_the_reports_teacher_label_names_a_replay_and_what_it_replays():
    from ftcot.config import TeacherParams
    from ftcot.provenance import teacher_label

    def label(**kw) -> str:
        return teacher_label(TeacherParams(**kw).model_dump(mode="json"))

    assert label() == "oracle"
    assert label(backend="openai", model="gpt-4o-mini") == "gpt-4o-mini"
    # teacher.model left at its default: never "oracle" for a replay
    assert label(backend="replay", replay={"format": "kojima"}) == (
        "text-davinci-002, replayed from Kojima et al.'s zero-shot-CoT logs"
    )
    assert label(backend="replay") == "replayed from replay/"
    assert label(backend="replay", model="text-davinci-002", replay={"format": "reasoning_teacher", "dir": "rt"}) == (
        "text-davinci-002, replayed from reasoning-teacher's completions (zs_cot)"
    )
