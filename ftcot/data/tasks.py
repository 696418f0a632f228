"""Tasks as data: one YAML file per task, the built-in twelve inside the package and a project's own
in its task folder (``data.task_dir``, default ``tasks/``).

A task file says what the answers are (``answer_type``, see :mod:`ftcot.answers`), where the
questions come from (``source``: local files, URLs pinned by SHA-256, Hugging Face datasets, or a
built-in generator; per split, or one source split by ratio), and how a record becomes a question,
an answer and, optionally, choices and a reference rationale (``fields``). A file that does not
follow this schema is an error that names the file and the key, raised when the parameters are
loaded: before any stage does any work. docs/tasks.md ("Your own task") documents every key.

The paper's twelve tasks are such files (``ftcot/data/builtin_tasks/``); a test holds their
records to those of the code they replaced.
"""

from __future__ import annotations

import functools
import hashlib
import re
from dataclasses import dataclass
from importlib import resources
from pathlib import Path, PurePosixPath
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from ftcot.answers import ANSWER_TYPES
from ftcot.errors import FtcotError
from ftcot.io import DataError, load_yaml, read_text

BUILTIN_DIR = "builtin_tasks"
DEFAULT_TASK_DIR = "tasks"
GENERATORS = ("coin_flip", "last_letter_concatenation")
_KEY = re.compile(r"[a-z][a-z0-9_]*")


class TaskFileError(FtcotError, ValueError):
    """A task file that does not follow the schema, or names something that does not exist."""


class UnknownTask(FtcotError, KeyError):
    """No task of that name."""

    def __str__(self) -> str:  # KeyError would show the message quoted
        return str(self.args[0])


class _Spec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


class TextField(_Spec):
    """A text built from a record: one field, or a template of fields, optionally cut and cleaned."""

    field: str | None = Field(None, description="Path of the field: dots for nesting, numbers for list items.")
    template: str | None = Field(None, description="Fields in braces, e.g. '{Body} {Question}'; each is stripped.")
    pattern: str | None = Field(None, description="Regex: the text is its group 1 (or the whole match).")
    expected: str | None = Field(None, description="What the pattern looks for, said when a record lacks it.")
    remove: str | None = Field(None, description="Regex whose matches are removed.")

    @model_validator(mode="after")
    def _one_origin(self) -> TextField:
        if (self.field is None) == (self.template is None):
            raise ValueError("give exactly one of 'field' and 'template'")
        for name in ("pattern", "remove"):
            _check_regex(getattr(self, name), name)
        return self


class AnswerField(_Spec):
    """The answer: a text field, or the key of a mapping of candidates to scores that scores 1."""

    field: str | None = None
    template: str | None = None
    pattern: str | None = None
    expected: str | None = None
    remove: str | None = None
    scores: str | None = Field(None, description="Path of a mapping answer -> score; the one scored 1 is the answer.")

    @model_validator(mode="after")
    def _one_origin(self) -> AnswerField:
        if sum(x is not None for x in (self.field, self.template, self.scores)) != 1:
            raise ValueError("give exactly one of 'field', 'template' and 'scores'")
        for name in ("pattern", "remove"):
            _check_regex(getattr(self, name), name)
        return self


class ChoicesField(_Spec):
    """Answer choices, rendered into the question as the paper does: ``... Answer choices: (A) x, (B) y``."""

    field: str | None = Field(None, description="A list of choices: strings, or objects (see text, label).")
    text: str | None = Field(None, description="In each choice object: the path of its text.")
    label: str | None = Field(None, description="In each choice object: its label (must be A, B, C... in order).")
    texts: str | None = Field(None, description="A list of choice texts (with labels: parallel lists).")
    labels: str | None = Field(None, description="A list of labels beside texts (must be A, B, C... in order).")
    scores: str | None = Field(None, description="A mapping choice -> score; the choice scored 1 is the answer.")
    strip: str | None = Field(None, description="Regex removed once from the start of each choice, e.g. '^[A-E]\\)'.")
    shuffle: bool = Field(False, description="Shuffle the choices of each record (seeded by `seed` and its index).")

    @model_validator(mode="after")
    def _one_origin(self) -> ChoicesField:
        if sum(x is not None for x in (self.field, self.texts, self.scores)) != 1:
            raise ValueError("give exactly one of 'field', 'texts' and 'scores'")
        if self.labels is not None and self.texts is None:
            raise ValueError("'labels' goes with 'texts'")
        if (self.text is not None or self.label is not None) and self.field is None:
            raise ValueError("'text' and 'label' describe the objects of 'field'")
        _check_regex(self.strip, "strip")
        return self


class Fields(_Spec):
    """How a record of the source becomes a question, an answer, choices and a reference rationale."""

    question: str | TextField
    answer: str | AnswerField | None = Field(None, description="Omitted only when choices come with scores.")
    choices: str | ChoicesField | None = None
    rationale: str | TextField | None = Field(None, description="The dataset's own worked solution, if any.")

    @model_validator(mode="after")
    def _answer_given(self) -> Fields:
        by_scores = isinstance(self.choices, ChoicesField) and self.choices.scores is not None
        if self.answer is None and not by_scores:
            raise ValueError("'answer' is missing (only choices with 'scores' give the answer themselves)")
        if self.answer is not None and by_scores:
            raise ValueError("choices with 'scores' give the answer: leave 'answer' out")
        return self


class FileRef(_Spec):
    """Where one split's records are: a local file, a URL pinned by SHA-256, or a Hugging Face dataset."""

    path: str | None = Field(None, description="A local file, relative to the project's root.")
    url: str | None = Field(None, description="Downloaded once to $FTCOT_CACHE_DIR/datasets (or read in data.mirror).")
    sha256: str | None = Field(None, description="The URL's pinned SHA-256 (required with url; null: unpinned).")
    mirror: str | None = Field(None, description="The file's path inside data.mirror (default: the URL's path).")
    hub: str | None = Field(None, description="A Hugging Face dataset id (or a local folder): datasets.load_dataset.")
    name: str | None = Field(None, description="The Hugging Face dataset's configuration.")
    split: str | None = Field(None, description="The Hugging Face dataset's split.")
    format: Literal["jsonl", "json", "csv"] | None = Field(None, description="Default: from the file's extension.")
    records: str | None = Field(None, description="JSON files: the path of the list of records, e.g. 'examples'.")

    @model_validator(mode="after")
    def _one_origin(self) -> FileRef:
        origins = [k for k in ("path", "url", "hub") if getattr(self, k) is not None]
        if len(origins) != 1:
            raise ValueError("give exactly one of 'path', 'url' and 'hub'")
        if self.url is not None:
            if "sha256" not in self.model_fields_set:
                raise ValueError("a url needs its sha256 (null, to leave it unpinned)")
            if self.sha256 is not None and not re.fullmatch(r"[0-9a-f]{64}", self.sha256):
                raise ValueError("sha256 must be 64 lower-case hex digits")
        if self.mirror is not None and not _confined(self.mirror):
            raise ValueError(
                f"mirror {self.mirror!r} must be a relative path inside the mirror (no '..', not absolute)"
            )
        if self.hub is not None and self.split is None:
            raise ValueError("a Hugging Face source needs its 'split'")
        if self.hub is None and (self.name is not None or self.split is not None):
            raise ValueError("'name' and 'split' belong to a 'hub' source")
        if self.format is None and self.hub is None:
            suffix = Path(self.path or self.url.split("?")[0]).suffix.lstrip(".")
            if suffix not in ("jsonl", "json", "csv"):
                raise ValueError(f"cannot tell the format from {suffix!r}: set format (jsonl, json or csv)")
        return self

    @property
    def kind(self) -> Literal["files", "hub"]:
        return "hub" if self.hub is not None else "files"

    @property
    def file_format(self) -> str:
        return self.format or Path(self.path or (self.url or "").split("?")[0]).suffix.lstrip(".")


class SourceSpec(_Spec):
    """One way to get the task's questions: per split (train, test: the official split), one file
    (all: split by ratio), a pool to sample train questions from (dev), or a generator."""

    description: str = Field("", description="What this source is, for data.<task>.source's documentation.")
    all: FileRef | None = None
    train: FileRef | None = None
    test: FileRef | None = None
    dev: FileRef | None = None
    generator: Literal["coin_flip", "last_letter_concatenation"] | None = Field(
        None, description="Built-in generator of synthetic questions (data.num_questions of them)."
    )
    fields: Fields | None = Field(None, description="This source's own field mapping (default: the task's).")

    @model_validator(mode="after")
    def _roles(self) -> SourceSpec:
        if self.generator is not None:
            if any(getattr(self, r) is not None for r in ("all", "train", "test", "dev")) or self.fields:
                raise ValueError("a generator source has no files and no fields")
            return self
        if self.all is not None and (self.train or self.test):
            raise ValueError("give 'all' (split by ratio) or 'train' and 'test' (the official split), not both")
        if self.all is None and (self.train is None or self.test is None):
            raise ValueError("give 'all' (one source, split by ratio) or both 'train' and 'test'")
        return self

    @property
    def roles(self) -> dict[str, FileRef]:
        return {r: getattr(self, r) for r in ("all", "train", "dev", "test") if getattr(self, r) is not None}

    @property
    def kind(self) -> Literal["generated", "files", "hub"]:
        if self.generator is not None:
            return "generated"
        kinds = {ref.kind for ref in self.roles.values()}
        return "hub" if kinds == {"hub"} else "files"


class SplitSpec(_Spec):
    train_fraction: float | None = Field(None, gt=0.0, lt=1.0, description="Default: data.train_fraction.")
    train_sample: int | None = Field(
        None, ge=1, description="Official splits: this many train questions are sampled (seeded) from the pool."
    )
    train_pools: list[str] | None = Field(
        None, min_length=1, description="Roles the train questions may be sampled from (the first is the default)."
    )
    index_files: dict[str, FileRef] | None = Field(
        None,
        description="Named splits of an 'all' source given as files {train: [indices], test: [indices]} "
        "(e.g. reasoning-teacher's template-wise splits), chosen by data.<task>.split (default: ratio).",
    )

    @field_validator("index_files")
    @classmethod
    def _not_ratio(cls, files: dict | None) -> dict | None:
        if files and "ratio" in files:
            raise ValueError("'ratio' is the split by train_fraction: give the index split another name")
        return files


class TaskSpec(_Spec):
    """The whole of a task file."""

    description: str = ""
    answer_type: str
    trigger: str | None = Field(None, description="Zero-shot-CoT answer trigger, if not the answer type's.")
    tolerance: float | None = Field(None, ge=0.0, description="Numbers: relative tolerance, if not the type's 1e-6.")
    source: SourceSpec | None = None
    sources: dict[str, SourceSpec] | None = Field(
        None, description="Named alternatives, chosen by data.<task>.source (the first is the default)."
    )
    fields: Fields | None = None
    split: SplitSpec = SplitSpec()

    @field_validator("answer_type")
    @classmethod
    def _known_type(cls, name: str) -> str:
        if name not in ANSWER_TYPES:
            raise ValueError(f"unknown answer type {name!r}; known: {', '.join(sorted(ANSWER_TYPES))}")
        return name

    @model_validator(mode="after")
    def _consistent(self) -> TaskSpec:
        if (self.source is None) == (self.sources is None):
            raise ValueError("give exactly one of 'source' and 'sources'")
        for name, spec in self.named_sources.items():
            if spec.generator is None and spec.fields is None and self.fields is None:
                raise ValueError(f"source {name!r} needs 'fields' (here or at the top of the file)")
        if self.tolerance is not None and ANSWER_TYPES[self.answer_type].compare == "exact":
            raise ValueError(f"'tolerance' is for numbers, not answer type {self.answer_type!r}")
        if self.split.train_sample is not None or self.split.train_pools is not None:
            for name, spec in self.named_sources.items():
                if spec.all is not None:
                    raise ValueError(f"train_sample and train_pools need train/test sources, but {name!r} has 'all'")
        if self.split.index_files:
            for name, spec in self.named_sources.items():
                if spec.all is None and spec.generator is None:
                    raise ValueError(f"split.index_files index one 'all' source, but source {name!r} has train/test")
        for pool in self.split.train_pools or ():
            if pool not in ("train", "dev"):
                raise ValueError(f"split.train_pools: {pool!r} is not a role (train, dev)")
        return self

    @property
    def named_sources(self) -> dict[str, SourceSpec]:
        return self.sources if self.sources is not None else {"files": self.source}


@dataclass(frozen=True)
class Task:
    """A task loaded from its file."""

    key: str
    path: str
    """The task file (``<builtin>/...`` for the package's own)."""
    spec: TaskSpec
    builtin: bool

    @property
    def answer_type(self) -> str:
        return self.spec.answer_type

    @property
    def answer_options(self) -> dict | None:
        """What the task changes of its answer type; carried by its records (absent when nothing)."""
        options = {k: getattr(self.spec, k) for k in ("trigger", "tolerance") if getattr(self.spec, k) is not None}
        return options or None

    @property
    def sources(self) -> dict[str, SourceSpec]:
        return self.spec.named_sources

    def source(self, name: str | None) -> SourceSpec:
        sources = self.sources
        return sources[name] if name is not None else next(iter(sources.values()))

    @property
    def generator(self) -> str | None:
        """The generator of the default source, if it is one (the synthetic tasks)."""
        return self.source(None).generator

    def fields_of(self, source: SourceSpec) -> Fields:
        return source.fields or self.spec.fields

    @property
    def has_hub(self) -> bool:
        return any(spec.kind == "hub" for spec in self.sources.values())

    @property
    def default_hub(self) -> tuple[str, str | None] | None:
        for spec in self.sources.values():
            if spec.kind == "hub":
                ref = next(iter(spec.roles.values()))
                return ref.hub, ref.name
        return None


def _confined(path: str) -> bool:
    """Whether ``path`` stays inside the folder it is relative to, whatever that folder is."""
    pure = PurePosixPath(path.replace("\\", "/"))
    return bool(path) and not pure.is_absolute() and ".." not in pure.parts and not re.match(r"[A-Za-z]:", path)


def local_files(task: Task) -> list[tuple[str, FileRef]]:
    """Every local file the task file names, with its key: ``source.all``, ``sources.<name>.train``,
    ``split.index_files.<name>``."""
    refs = []
    for name, spec in task.sources.items():
        prefix = "source" if task.spec.source is not None else f"sources.{name}"
        refs += [(f"{prefix}.{role}", ref) for role, ref in spec.roles.items() if ref.path is not None]
    for name, ref in (task.spec.split.index_files or {}).items():
        if ref.path is not None:
            refs.append((f"split.index_files.{name}", ref))
    return refs


def check_local_paths(task: Task, task_dir: str | Path, allow_outside: bool, root: Path | None = None) -> list[str]:
    """What is wrong with the local paths of a task file, one line each (empty: nothing).

    A path is relative to the project's root. The fetch stage depends on ``data.task_dir`` as a
    folder, so a file inside it is watched by DVC: edit it and fetch reruns. A file elsewhere is
    not, so it must be pinned by ``sha256`` (a changed file then stops fetch instead of going
    stale). A file outside the project is refused unless ``data.allow_outside_paths`` says so.
    """
    root = (root or Path.cwd()).resolve()
    watched = (root / task_dir).resolve()
    problems = []
    for key, ref in local_files(task):
        where = f"{task.path}: {key}.path {ref.path!r}"
        resolved = (root / ref.path).resolve()
        inside_project = resolved.is_relative_to(root)
        if not inside_project and not allow_outside:
            problems.append(
                f"{where} is outside the project: move the file into {task_dir}/, or set "
                "data.allow_outside_paths: true and pin it with sha256"
            )
        elif not resolved.is_relative_to(watched) and ref.sha256 is None:
            pin = f"sha256: '{_sha256(resolved)}'" if resolved.is_file() else "sha256: <its SHA-256>"
            problems.append(
                f"{where} is outside data.task_dir ({task_dir}/), the folder the fetch stage depends on, so DVC "
                f"would not see it change: move it into {task_dir}/ (e.g. {task_dir}/data/{Path(ref.path).name}) "
                f"or pin it ({pin})"
            )
    return problems


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _check_regex(pattern: str | None, name: str) -> None:
    if pattern is not None:
        try:
            re.compile(pattern)
        except re.error as err:
            raise ValueError(f"{name}: not a valid regex ({err})") from None


def _format_error(where: str, err: ValidationError) -> str:
    lines = [f"{where}: not a valid task file:"]
    for e in err.errors():
        key = ".".join(str(p) for p in e["loc"] if not str(p).startswith(("function-after", "union["))) or "(top)"
        message = "unknown key (see docs/tasks.md, 'Your own task')" if e["type"] == "extra_forbidden" else e["msg"]
        if e["type"] == "string_type" and isinstance(e.get("input"), int | float):
            message += " (YAML read a number: put it in quotes)"
        lines.append(f"  {key}: {message}")
    return "\n".join(dict.fromkeys(lines))


def parse_task_file(text: str, where: str, key: str, builtin: bool = False) -> Task:
    """A task from the text of its file; errors name ``where`` (the file) and the key."""
    if not _KEY.fullmatch(key):
        raise TaskFileError(f"{where}: the file name must be a task key (lower case, digits, _): {key!r}")
    try:
        raw = load_yaml(text)
    except yaml.YAMLError as err:
        raise TaskFileError(f"{where}: not valid YAML: {err}") from None
    if not isinstance(raw, dict):
        raise TaskFileError(f"{where}: expected a mapping of keys (answer_type, source, fields...)")
    try:
        spec = TaskSpec.model_validate(raw)
    except ValidationError as err:
        raise TaskFileError(_format_error(where, err)) from None
    return Task(key, where, spec, builtin)


def load_builtin_tasks() -> dict[str, Task]:
    folder = resources.files("ftcot.data").joinpath(BUILTIN_DIR)
    tasks = {}
    for entry in sorted(folder.iterdir(), key=lambda e: e.name):
        if entry.name.endswith(".yaml"):
            key = entry.name.removesuffix(".yaml")
            tasks[key] = parse_task_file(entry.read_text(), f"ftcot/data/{BUILTIN_DIR}/{entry.name}", key, builtin=True)
    return tasks


TASKS: dict[str, Task] = load_builtin_tasks()


@functools.cache
def _project_tasks(folder: str, shown_as: str, stamp: tuple) -> dict[str, Task]:
    tasks = {}
    for path in sorted(Path(folder).glob("*.yaml")):
        key = path.stem
        where = str(Path(shown_as) / path.name)  # as the user wrote the folder: tasks/mine.yaml
        if key in TASKS:
            raise TaskFileError(f"{where}: {key!r} is a built-in task: give your task another name")
        try:
            text = read_text(path)
        except DataError as err:
            raise TaskFileError(str(err).replace(str(path), where, 1)) from None
        tasks[key] = parse_task_file(text, where, key)
    return tasks


def load_tasks(task_dir: str | Path | None = DEFAULT_TASK_DIR) -> dict[str, Task]:
    """The built-in tasks and those of ``task_dir`` (a project's own; a missing folder has none)."""
    if task_dir is None or not Path(task_dir).is_dir():
        return dict(TASKS)
    folder = Path(task_dir)
    stamp = tuple((p.name, p.stat().st_mtime_ns, p.stat().st_size) for p in sorted(folder.glob("*.yaml")))
    return {**TASKS, **_project_tasks(str(folder.resolve()), str(folder), stamp)}


def get_task(key: str, task_dir: str | Path | None = DEFAULT_TASK_DIR) -> Task:
    tasks = load_tasks(task_dir)
    try:
        return tasks[key]
    except KeyError:
        raise UnknownTask(f"unknown task {key!r}; known tasks: {sorted(tasks)}") from None
