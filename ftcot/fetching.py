"""The fetch stage's logic: a task's examples from generator, files or Hub, split and checked."""

from __future__ import annotations

from pathlib import Path

from ftcot.config import DataParams, HubParams
from ftcot.io import DataError
from ftcot.loaders import HUB_RECORD_READERS, READERS, read_bigbench_choice
from ftcot.sources import SOURCE_FILES, fetch_file, resolve_mirror
from ftcot.tasks import Task, build_records, generate_examples, get_task, split_examples


def _task_options(params: DataParams, key: str):
    return getattr(params, key, None)


def read_task_file(task: Task, path: Path, seed: int) -> list[dict]:
    if task.reader == "bigbench":
        return read_bigbench_choice(path, shuffle_seed=seed if task.shuffle_choices else None)
    return READERS[task.reader](path)


def read_hub(task: Task, hub: HubParams | None) -> dict[str, list[dict]]:
    """Examples per split role from ``datasets.load_dataset`` (a Hub id or a local folder)."""
    import datasets

    if task.hub is None or task.key not in HUB_RECORD_READERS:
        raise DataError(f"task {task.key!r} has no Hub source; use data.{task.key}.source: files")
    path, name, train_split, test_split = task.hub
    if hub is not None:
        path, name = hub.path, hub.name
    try:
        loaded = datasets.load_dataset(path, name)
    except Exception as err:  # datasets raises many types for a missing or unreachable dataset
        raise DataError(f"data.{task.key}.hub: could not load {path!r} ({type(err).__name__}: {err})") from None
    parse = HUB_RECORD_READERS[task.key]
    out = {}
    for role, split in (("train", train_split), ("test", test_split)):
        if split not in loaded:
            raise DataError(f"data.{task.key}.hub: {path!r} has no split {split!r} (has {sorted(loaded)})")
        out[role] = [parse(row, f"{path}[{split}][{i}]") for i, row in enumerate(loaded[split])]
    return out


def fetch_task(key: str, params: DataParams, seed: int, download_dir: Path) -> tuple[list[dict], dict]:
    """Normalised, split records of task ``key`` and a description of where they came from."""
    task = get_task(key)
    options = _task_options(params, key)
    source = getattr(options, "source", "files")
    files: dict[str, str] = {}
    if task.generate is not None and source == "generated":
        examples = {"all": generate_examples(task, params.num_questions, seed)}
        origin = {"source": "generated", "num_questions": params.num_questions}
    elif source == "hub":
        examples = read_hub(task, options.hub)
        origin = {"source": "hub", "hub": (options.hub.path if options.hub else task.hub[0])}
    else:
        mirror = resolve_mirror(params.mirror)
        roles = dict(task.files)
        if task.split == "aqua":
            # The train pool is train.json (paper) or, as a documented reduced source, dev.json.
            roles = {"train": roles[options.train_file], "test": roles["test"]}
        examples = {}
        for role, file_key in roles.items():
            path, digest = fetch_file(file_key, mirror, download_dir, verify=params.verify_checksums)
            examples[role] = read_task_file(task, path, seed)
            files[SOURCE_FILES[file_key].url] = digest
        origin = {"source": "files", "sha256": files}
    aqua_size = params.aqua.train_size
    split = split_examples(task, examples, seed, params.train_fraction, aqua_train_size=aqua_size)
    records, counts = build_records(task, split, seed, params.max_train, params.max_test)
    return records, {"task": key, "answer_type": task.answer_type, **origin, **counts}
