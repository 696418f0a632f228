"""The teacher backends' table (ftcot/teacher/backends.py): every row builds its teacher from the
params, reads exactly the params it declares (stage teach's dependencies are computed from them),
and names the teacher in provenance without a secret."""

import pytest
from pydantic import BaseModel

from ftcot.config import ConfigError, TeacherParams, load_params, parse_params
from ftcot.teacher.backends import BACKENDS, OPENAI, ORACLE, REPLAY, build_teacher, precheck, teacher_identity


class Recorder:
    """The params, recording which keys are read (a section read through its keys)."""

    def __init__(self, obj, seen: set[str], path: str = ""):
        self._obj, self._seen, self._path = obj, seen, path

    def __getattr__(self, name: str):
        value = getattr(self._obj, name)
        path = f"{self._path}.{name}" if self._path else name
        if isinstance(value, BaseModel):
            return Recorder(value, self._seen, path)
        self._seen.add(path)
        return value


def covered(key: str, by: str) -> bool:
    return key == by or key.startswith(by + ".")


class FakeCache:
    batches = object()  # the Batch API's ledger, handed to the OpenAI backend


def params_for(backend: str, tmp_path):
    replay_dir = tmp_path / "replay"
    replay_dir.mkdir(exist_ok=True)
    (replay_dir / "coin_flip.jsonl").write_text("")
    return parse_params(
        {
            "data": {"tasks": ["coin_flip"]},
            "teacher": {"backend": backend, "model": "m", "api_key_env": None, "replay": {"dir": str(replay_dir)}},
        }
    )


@pytest.mark.parametrize("name", sorted(BACKENDS))
def test_each_backend_reads_exactly_the_params_its_row_declares(name, tmp_path):
    row = BACKENDS[name]
    seen: set[str] = set()
    params = Recorder(params_for(name, tmp_path), seen)
    try:
        teacher = row.load().from_params(params, "coin_flip", [], FakeCache())
    except Exception:
        teacher = None
    assert seen, f"{name}: from_params read nothing"
    undeclared = sorted(k for k in seen if not any(covered(k, d) for d in row.reads))
    assert not undeclared, f"{name} reads {undeclared}, which its row in BACKENDS does not declare"
    unread = sorted(d for d in row.reads if not any(covered(k, d) for k in seen))
    assert not unread, f"{name}'s row declares {unread}, which from_params never reads"
    if teacher is not None:
        assert teacher.backend == name


def test_build_teacher_picks_the_row_of_teacher_backend(tmp_path):
    oracle = build_teacher(params_for(ORACLE, tmp_path), "coin_flip", [], FakeCache())
    server = build_teacher(params_for(OPENAI, tmp_path), "coin_flip", [], FakeCache())
    assert (type(oracle).__name__, oracle.backend) == ("OracleTeacher", ORACLE)
    assert (type(server).__name__, server.backend, server.model) == ("OpenAITeacher", OPENAI, "m")
    assert server.batch_ledger is FakeCache.batches
    # only the paid backend is estimated and budgeted; only the replay checks its file first
    assert {n for n, b in BACKENDS.items() if b.paid} == {OPENAI}
    assert precheck(ORACLE, oracle, [], [], 1) == {}
    assert BACKENDS[REPLAY].precheck


def test_the_configs_choices_are_the_tables_rows():
    choices = TeacherParams.model_fields["backend"].annotation.__args__
    assert set(choices) == set(BACKENDS)
    with pytest.raises(ConfigError, match=r"teacher\.backend"):
        parse_params({"data": {"tasks": ["coin_flip"]}, "teacher": {"backend": "nope"}})


@pytest.mark.parametrize("name", sorted(BACKENDS))
def test_every_backend_names_its_teacher_without_a_secret(name):
    dump = load_params().model_dump(mode="json")["teacher"]
    dump |= {"backend": name, "model": "m", "base_url": "http://me:s3cret@127.0.0.1:8000/v1"}
    identity = teacher_identity(dump)
    assert identity["backend"] == name and identity["model"] == "m"
    assert "s3cret" not in repr(identity)
    assert len(identity) > 2  # the row adds what tells this teacher apart
