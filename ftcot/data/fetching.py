"""The fetch stage's logic: a task's examples from its generator, files or Hugging Face dataset,
read with its task file's fields, split as in the paper and checked."""

from __future__ import annotations

from pathlib import Path

from ftcot.answers import get_answer_type
from ftcot.config import DataSection
from ftcot.data.readers import BadRow, iter_rows, to_example
from ftcot.data.sources import fetch_file, resolve_mirror, sha256_file, source_file
from ftcot.data.splits import build_records, split_examples
from ftcot.data.synthetic import generate_examples
from ftcot.data.tasks import FileRef, SourceSpec, Task, get_task
from ftcot.io import DataError, read_json


def _hub_rows(task: Task, ref: FileRef, override) -> list[tuple[str, object]]:
    """Rows of one split of a Hugging Face dataset (``datasets.load_dataset``: an id or a folder)."""
    import datasets

    path, name = (override.path, override.name) if override is not None else (ref.hub, ref.name)
    try:
        loaded = datasets.load_dataset(path, name)
    except Exception as err:  # datasets raises many types for a missing or unreachable dataset
        raise DataError(f"data.{task.key}.hub: could not load {path!r} ({type(err).__name__}: {err})") from None
    if ref.split not in loaded:
        raise DataError(f"data.{task.key}.hub: {path!r} has no split {ref.split!r} (has {sorted(loaded)})")
    return [(f"{path}[{ref.split}][{i}]", row) for i, row in enumerate(loaded[ref.split])]


def _local_file(task: Task, ref: FileRef) -> tuple[Path, str]:
    path = Path(ref.path)
    if not path.is_file():
        raise DataError(
            f"{task.path}: source path {ref.path!r} does not exist (paths are relative to the project's root)"
        )
    digest = sha256_file(path)
    if ref.sha256 is not None and digest != ref.sha256:
        raise DataError(f"{path}: SHA-256 {digest} does not match the {ref.sha256} pinned in {task.path}")
    return path, digest


def _source_key(task: Task, spec: SourceSpec) -> str:
    """Where ``spec`` is in its task file: ``source``, or ``sources.<name>``."""
    if task.spec.sources is None:
        return "source"
    return next(f"sources.{name}" for name, s in task.spec.sources.items() if s is spec)


def _fetch_pinned(task: Task, ref: FileRef, params: DataSection, download_dir: Path, key: str) -> tuple[Path, str]:
    """A file of a task file's ``url`` + ``sha256``; a file that cannot be had or does not match its
    checksum is an error naming the task file and the key."""
    try:
        return fetch_file(source_file(ref), resolve_mirror(params.mirror), download_dir, params.verify_checksums)
    except DataError as err:
        raise DataError(f"{err} [task file {task.path}, key {key}]") from None


# Bad records reported in one pass, at most: a file of a wholly other layout would list every row.
MAX_REPORTED_PROBLEMS = 20


def bad_records_message(problems: list[str], origin: str, task_file: Path | str) -> str:
    """One bad record: its message; several: each on a line, stopped at MAX_REPORTED_PROBLEMS."""
    if len(problems) == 1:
        return f"{problems[0]} [task file {task_file}]"
    more = " (the first ones; fix them and run again)" if len(problems) == MAX_REPORTED_PROBLEMS else ""
    listed = "\n".join(f"  {p}" for p in problems)
    return f"{len(problems)} bad records in {origin}{more} [task file {task_file}]:\n{listed}"


def read_source(
    task: Task, spec: SourceSpec, params: DataSection, seed: int, download_dir: Path, roles: list[str]
) -> tuple[dict[str, list[dict]], dict[str, str]]:
    """Examples per role, and the SHA-256 of every file read (by URL, or by local path)."""
    options = params.task_options(task.key)
    kind = get_answer_type(task.answer_type, task.answer_options)
    fields = task.fields_of(spec)
    examples: dict[str, list[dict]] = {}
    digests: dict[str, str] = {}
    for role in roles:
        ref = spec.roles[role]
        if ref.kind == "hub":
            rows = _hub_rows(task, ref, getattr(options, "hub", None))
            origin = f"{ref.hub}[{ref.split}]"
        else:
            if ref.url is not None:
                path, digest = _fetch_pinned(task, ref, params, download_dir, f"{_source_key(task, spec)}.{role}")
                digests[ref.url] = digest
            else:
                path, digest = _local_file(task, ref)
                digests[ref.path] = digest
            rows, origin = iter_rows(path, ref), str(path)
        examples[role], problems = [], []
        try:
            for i, (where, row) in enumerate(rows):
                try:
                    if isinstance(row, BadRow):
                        raise DataError(row.message)
                    examples[role].append(to_example(row, where, fields, kind, seed, i, params.max_chars))
                except DataError as err:
                    problems.append(str(err))
                    if len(problems) == MAX_REPORTED_PROBLEMS:
                        break
        except DataError as err:  # the file itself (not readable as CSV, not a list): nothing more to read
            problems.append(str(err))
        if problems:
            raise DataError(bad_records_message(problems, origin, task.path))
        if not examples[role]:
            raise DataError(f"{origin}: no records in this source ({role} of task file {task.path})")
    return examples, digests


def fetch_task(key: str, params: DataSection, seed: int, download_dir: Path) -> tuple[list[dict], dict]:
    """Normalised, split records of task ``key`` and a description of where they came from."""
    task = get_task(key, params.task_dir)
    options = params.task_options(key)
    spec = task.source(getattr(options, "source", None))
    split = task.spec.split
    if spec.generator is not None:
        examples = {"all": generate_examples(task.key, spec.generator, params.num_questions, seed)}
        origin = {"source": "generated", "num_questions": params.num_questions}
    else:
        if "all" in spec.roles:
            roles = ["all"]
        else:
            pool = getattr(options, "train_file", None) or "train"
            roles = [pool if pool in spec.roles else "train", "test"]
        examples, digests = read_source(task, spec, params, seed, download_dir, roles)
        if roles[0] not in ("all", "train"):
            examples["train"] = examples.pop(roles[0])  # the pool train questions are drawn from
        if spec.kind == "hub":
            ref = next(iter(spec.roles.values()))
            hub = getattr(options, "hub", None)
            origin = {"source": "hub", "hub": hub.path if hub is not None else ref.hub}
        else:
            origin = {"source": "files", "sha256": digests}
    train_fraction = split.train_fraction if split.train_fraction is not None else params.train_fraction
    train_sample = getattr(options, "train_size", None) if split.train_sample is not None else None
    chosen = getattr(options, "split", "ratio")
    indices = None
    if chosen != "ratio":
        indices, digest = _index_split(task, chosen, split.index_files[chosen], params, download_dir, examples)
        origin["split"] = {"name": chosen, "sha256": digest}
    parts = split_examples(examples, seed, train_fraction, train_sample, indices)
    records, counts = build_records(
        task.key,
        task.answer_type,
        parts,
        seed,
        params.max_train,
        params.max_test,
        task.answer_options,
        params.drop_test_duplicates,
    )
    return records, {"task": key, "answer_type": task.answer_type, **origin, **counts}


def _index_split(
    task: Task, name: str, ref: FileRef, params: DataSection, download_dir: Path, examples: dict
) -> tuple[tuple[list[int], list[int]], str]:
    """Train and test indices from a split file ``{train: [...], test: [...]}``, checked."""
    if ref.url is not None:
        path, digest = _fetch_pinned(task, ref, params, download_dir, f"split.index_files.{name}")
    else:
        path, digest = _local_file(task, ref)
    where = f"{path} (split {name!r} of {task.path})"
    data = read_json(path)
    n = len(examples["all"])
    if not isinstance(data, dict) or not all(isinstance(data.get(k), list) for k in ("train", "test")):
        raise DataError(f"{where}: expected {{train: [indices], test: [indices]}}")
    train, test = data["train"], data["test"]
    bad = [i for i in train + test if type(i) is not int or not 0 <= i < n]
    if bad:
        raise DataError(f"{where}: {bad[:3]} are not indices of the task's {n} questions")
    if set(train) & set(test) or len(set(train)) != len(train) or len(set(test)) != len(test):
        raise DataError(f"{where}: an index is listed twice (in train and test, or twice in one)")
    return (train, test), digest
