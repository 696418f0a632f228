"""The teacher backends, a row each: the name ``teacher.backend`` takes, how the stage builds the
backend from the params, what names the teacher in a run's provenance, whether its answers cost
money (the stage estimates and budgets only those), and what it checks before it answers.

The config's choices, stage teach, provenance and the benchmarks read this table; adding a backend
is a module with its teacher class and ``from_params``, and a row here. A row names its module and
imports it only when the backend is used, so reading the table (as ftcot.config does) imports no
backend (tests/test_stage_deps.py counts the modules as imported by whoever imports
``build_teacher``).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from types import ModuleType

from ftcot.redaction import url_without_credentials

ORACLE = "oracle"
OPENAI = "openai"
REPLAY = "replay"
DEFAULT_OPENAI_URL = "https://api.openai.com/v1"
DEFAULT_REPLAY_DIR = REPLAY  # teacher.replay.dir: the folder of recorded outputs is named after the backend


@dataclass(frozen=True)
class Backend:
    name: str
    description: str
    # The module that builds it: from_params(params, task, records, cache) -> a teacher, and where
    # the row says so, precheck(teacher, train, test, diversity) -> metrics, which raises before
    # teaching where the backend cannot answer. Imported when the backend is used.
    module: str
    # The params its from_params reads (dotted; a section stands for its keys): stage teach's
    # dependencies (tests/test_teacher_backends.py holds each row to what its module reads).
    reads: tuple[str, ...]
    identity: Callable[[dict], dict]  # teacher params (dumped) -> what names the teacher beside backend and model
    paid: bool = False  # answers cost money: estimated before the first request, held to teacher.max_cost_usd
    precheck: bool = False

    def load(self) -> ModuleType:
        return importlib.import_module(self.module)


BACKENDS: dict[str, Backend] = {
    b.name: b
    for b in (
        Backend(
            ORACLE,
            "offline stand-in",
            "ftcot.teacher.oracle",
            ("seed", "teacher.model", "teacher.oracle"),
            lambda t: {"error_rate": t[ORACLE]["error_rate"]},
        ),
        Backend(
            OPENAI,
            "any OpenAI-compatible server",
            "ftcot.teacher.openai_compat",
            tuple(
                f"teacher.{key}"
                for key in "model base_url api_key_env api concurrency timeout max_retries batch batch_poll_seconds "
                "batch_max_requests batch_max_bytes batch_concurrency".split()
            ),
            lambda t: {"api": t["api"], "base_url": url_without_credentials(t["base_url"]) or DEFAULT_OPENAI_URL},
            paid=True,
        ),
        Backend(
            REPLAY,
            "recorded outputs",
            "ftcot.teacher.replay",
            ("teacher.model", "teacher.replay", "data.mirror", "data.verify_checksums"),
            lambda t: {"replay_dir": t[REPLAY]["dir"]},
            precheck=True,
        ),
    )
}
BACKEND_NAMES = tuple(BACKENDS)


def build_teacher(params, task: str, records: Sequence[dict], cache):
    """The teacher ``params.teacher.backend`` names, for ``task`` (whose ``records`` a replay
    matches its file against); ``cache``: the completion cache (the Batch API's ledger is in it)."""
    return BACKENDS[params.teacher.backend].load().from_params(params, task, records, cache)


def params_read_by_build_teacher() -> set[str]:
    """What :func:`build_teacher` may read of the params: the backend's name and every row's reads."""
    return {"teacher.backend"}.union(*(b.reads for b in BACKENDS.values()))


def precheck(backend: str, teacher, train: Sequence[dict], test: Sequence[dict], diversity: int) -> dict:
    """What the backend checks before it teaches (a replay: that its file answers every question
    asked, ``test`` included), as metrics; {} for a backend that checks nothing."""
    row = BACKENDS[backend]
    return row.load().precheck(teacher, train, test, diversity) if row.precheck else {}


def teacher_identity(teacher_params: dict) -> dict[str, object]:
    """Which teacher answered: backend, model and what its row adds (API and endpoint with
    credentials masked, a replay's folder, the oracle's error rate), never a key."""
    backend = BACKENDS[teacher_params["backend"]]
    return {"backend": backend.name, "model": teacher_params["model"], **backend.identity(teacher_params)}
