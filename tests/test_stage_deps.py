"""dvc.yaml is complete: each stage lists the code it runs and the parameters it reads.

A stage's code is the closure of its script's project imports (module-level and inside functions,
found with ``ast``), plus the package data those modules read, plus the modules imported by name:
the teacher backends' modules and the generation engines', which
``ftcot.teacher.backends.build_teacher`` and ``ftcot.evaluation.engines.open_generator`` import
for whoever imports them. A file in that closure that is not
covered by the stage's ``deps`` (the file itself or a folder above it) would let an edit leave
stale results that ``dvc status`` calls up to date. Parameters are found the same way: the
attribute chains read from ``load_params()``'s result in the stage script (``params.teacher.model``,
through aliases such as ``t = params.teacher``).
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest
import yaml

from ftcot.config import OPERATIONAL_KEYS, Params, leaf_keys
from ftcot.evaluation.engines import GENERATORS
from ftcot.teacher.backends import BACKENDS, params_read_by_build_teacher

REPO = Path(__file__).resolve().parents[1]
PACKAGE = "ftcot"
# Package data read through importlib.resources: the module that reads it -> the file or folder.
RESOURCES = {"ftcot/data/synthetic.py": "ftcot/data/first_names.txt"}
# The task files: every stage's load_params validates data.tasks against them, but only `check`
# (which stops a run on a bad one) and `fetch` (which reads them) depend on them; the other stages'
# outputs depend on a task only through the records fetch wrote.
TASK_FILES = ("ftcot/data/builtin_tasks", "${data.task_dir}")
TASK_FILE_STAGES = {"check", "fetch"}
# Stages that record a digest of all the code (ftcot.provenance) and so depend on all of it.
FINGERPRINTING = {"report"}
PYDANTIC_METHODS = {"model_dump", "model_dump_json", "model_copy"}
# Functions that import modules by name (importlib): (module, function) -> the modules. Importing
# the function counts as importing them.
IMPORTS_BY_NAME = {
    ("ftcot.teacher.backends", "build_teacher"): {b.module for b in BACKENDS.values()},
    ("ftcot.evaluation.engines", "open_generator"): {module for module, _ in GENERATORS.values()},
}
# Library functions handed the whole params that declare what they read of it (held to it by
# their own tests): a call reads that, not every section.
DECLARED_READS = {"build_teacher": params_read_by_build_teacher()}


def stages() -> dict[str, dict]:
    return yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]


def body(stage: dict) -> dict:
    return stage.get("do", stage)  # foreach stages keep their definition under `do`


def script_of(stage: dict) -> str:
    (script,) = re.findall(r"stages/\w+\.py", body(stage)["cmd"])
    return script


def module_file(module: str) -> Path | None:
    path = REPO.joinpath(*module.split("."))
    if (path / "__init__.py").exists():
        return path / "__init__.py"
    return path.with_suffix(".py") if path.with_suffix(".py").exists() else None


def imported_modules(path: Path) -> set[str]:
    """Every module named by an import anywhere in the file (``from a import b`` names ``a`` and
    ``a.b``, which may be a submodule)."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: resolve against the file's package
                package = path.relative_to(REPO).parent.parts
                package = package[: len(package) - node.level + 1]
                base = ".".join([*package, *([node.module] if node.module else [])])
            names.add(base)
            names |= {f"{base}.{alias.name}" for alias in node.names}
            for alias in node.names:
                names |= IMPORTS_BY_NAME.get((base, alias.name), set())
    return names


def code_closure(script: str) -> set[str]:
    """The project files a script runs: itself, every project module it imports transitively
    (with the packages' ``__init__.py`` that importing a submodule executes), their package data."""
    seen: set[Path] = set()
    todo = [REPO / script]
    while todo:
        path = todo.pop()
        if path in seen:
            continue
        seen.add(path)
        for module in imported_modules(path):
            parts = module.split(".")
            if parts[0] != PACKAGE:
                continue
            for i in range(1, len(parts) + 1):
                found = module_file(".".join(parts[:i]))
                if found is not None and found not in seen:
                    todo.append(found)
    files = {p.relative_to(REPO).as_posix() for p in seen}
    return files | {RESOURCES[f] for f in files if f in RESOURCES}


def covers(dep: str, path: str, sep: str = "/") -> bool:
    """``dep`` is ``path`` or a folder (a section, with ``sep="."``) above it."""
    dep = dep.rstrip(sep)
    return path == dep or path.startswith(dep + sep)


def code_deps(stage: dict) -> list[str]:
    return [
        d for d in body(stage).get("deps", []) if d in ("stages", PACKAGE) or d.startswith(("stages/", f"{PACKAGE}/"))
    ]


@pytest.mark.parametrize("name", sorted(stages()))
def test_stage_deps_cover_the_code_it_runs(name):
    stage = stages()[name]
    closure = code_closure(script_of(stage))
    deps = code_deps(stage)
    uncovered = sorted(f for f in closure if not any(covers(d, f) for d in deps))
    assert not uncovered, f"stage {name}: {uncovered} are imported but not among its deps"


@pytest.mark.parametrize("name", sorted(stages()))
def test_stage_deps_list_no_code_it_does_not_run(name):
    """Minimal: a change to the report's rendering must not retrain a student."""
    stage = stages()[name]
    if name in FINGERPRINTING:
        return  # checked by test_fingerprinting_stages_depend_on_all_the_code
    closure = code_closure(script_of(stage))
    for dep in code_deps(stage):
        path = REPO / dep
        files = [p.relative_to(REPO).as_posix() for p in path.rglob("*.py")] if path.is_dir() else [dep]
        if dep in closure:  # a resource folder, or a file
            continue
        extra = [f for f in files if f not in closure]
        assert not extra, f"stage {name}: deps {dep} covers {extra}, which the stage never imports"


def test_the_code_digest_covers_the_whole_package_but_its_test_helpers():
    from ftcot.provenance import CODE_PATHS, TEST_HELPERS

    package = {
        f"ftcot/{p.name}"
        for p in (REPO / "ftcot").iterdir()
        if p.name != "__pycache__" and not p.name.endswith(".egg-info")
    }
    assert set(CODE_PATHS) == package - {TEST_HELPERS} | {"stages", "pyproject.toml"}


def test_fingerprinting_stages_depend_on_all_the_code():
    from ftcot.provenance import CODE_PATHS

    for name in FINGERPRINTING:
        deps = body(stages()[name])["deps"]
        assert set(CODE_PATHS) <= set(deps), name
        assert not [d for d in code_deps(stages()[name]) if d not in CODE_PATHS], name


def test_check_and_fetch_depend_on_the_task_files_and_no_other_stage_does():
    for name, stage in stages().items():
        deps = body(stage).get("deps", [])
        for task_files in TASK_FILES:
            listed = any(covers(d, task_files) for d in deps)
            if name not in FINGERPRINTING:  # those depend on all of the package, task files included
                assert listed == (name in TASK_FILE_STAGES), (name, task_files)


def test_every_local_file_a_task_file_names_is_a_dependency_of_fetch_or_pinned(tmp_path):
    """fetch (and check, which reads them) depend on data.task_dir as a folder: a data file inside it
    is watched; the params check refuses one elsewhere unless a sha256 pin makes a change an error."""
    from ftcot.data.tasks import check_local_paths, parse_task_file

    for name in TASK_FILE_STAGES:
        assert "${data.task_dir}" in body(stages()[name])["deps"], name
    task = """
answer_type: number
sources:
  inside: {all: {path: tasks/data/a.jsonl}}
  pinned: {all: {path: data/b.jsonl, sha256: '%s'}}
  loose: {all: {path: data/c.jsonl}}
fields: {question: q, answer: a}
split: {index_files: {mine: {path: splits/i.json}}}
""" % ("0" * 64)
    problems = check_local_paths(parse_task_file(task, "tasks/t.yaml", "t"), "tasks", False, root=tmp_path)
    assert len(problems) == 2
    assert "sources.loose.all.path 'data/c.jsonl' is outside data.task_dir" in problems[0]
    assert "split.index_files.mine.path 'splits/i.json' is outside data.task_dir" in problems[1]


def test_closure_follows_imports_inside_functions():
    # stages/teach.py imports the replay and OpenAI backends inside a function.
    closure = code_closure("stages/teach.py")
    assert {"ftcot/teacher/replay.py", "ftcot/teacher/openai_compat.py", "ftcot/__init__.py"} <= closure
    # ... and the answer types (with their triggers) that the filter reads the teacher's answer with.
    assert "ftcot/answers.py" in code_closure("stages/filter.py")


# ---- parameters -------------------------------------------------------------------------------


def _parents(tree: ast.AST) -> dict[ast.AST, ast.AST]:
    return {child: node for node in ast.walk(tree) for child in ast.iter_child_nodes(node)}


def _chain(node: ast.AST) -> tuple[str, list[str]] | None:
    """``a.b.c`` -> ("a", ["b", "c"])."""
    attrs = []
    while isinstance(node, ast.Attribute):
        attrs.append(node.attr)
        node = node.value
    return (node.id, attrs[::-1]) if isinstance(node, ast.Name) else None


def _used_bare(tree: ast.AST, parents: dict, assign: ast.Assign) -> bool:
    """Whether the names ``assign`` binds are used other than as ``name.attribute``
    (``k = params.report.num_samples`` then ``k`` is a read of the value)."""
    names = {t.id for t in assign.targets if isinstance(t, ast.Name)}
    loads = [n for n in ast.walk(tree) if isinstance(n, ast.Name) and n.id in names and isinstance(n.ctx, ast.Load)]
    return any(not isinstance(parents.get(n), ast.Attribute) for n in loads)


def params_read(script: str) -> set[str]:
    """Dotted parameter keys a stage script reads ('' is the whole file)."""
    tree = ast.parse((REPO / script).read_text())
    parents = _parents(tree)
    local_functions = {n.name for n in ast.walk(tree) if isinstance(n, ast.FunctionDef)}
    aliases: dict[str, str] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef) and any(a.arg == "params" for a in node.args.args):
            aliases["params"] = ""  # the whole params, handed to a helper of the script
        if isinstance(node, ast.Assign) and isinstance(node.value, ast.Call):
            if getattr(node.value.func, "id", None) == "load_params":
                aliases |= {t.id: "" for t in node.targets if isinstance(t, ast.Name)}
    changed = True
    while changed:  # `t = params.teacher`, then `o = t.oracle`...
        changed = False
        for node in ast.walk(tree):
            if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
                chain = _chain(node.value)
                if chain and chain[0] in aliases and node.targets[0].id not in aliases:
                    aliases[node.targets[0].id] = ".".join(filter(None, [aliases[chain[0]], *chain[1]]))
                    changed = True
    reads: set[str] = set()
    for node in ast.walk(tree):
        parent = parents.get(node)
        if isinstance(node, ast.Attribute) and not isinstance(parent, ast.Attribute):
            chain = _chain(node)
            if not chain or chain[0] not in aliases:
                continue
            if isinstance(parent, ast.Assign) and parent.value is node and not _used_bare(tree, parents, parent):
                continue  # an alias of a section, read through its own uses (`t.model`)
            attrs = [a for a in chain[1] if a not in PYDANTIC_METHODS]
            reads.add(".".join(filter(None, [aliases[chain[0]], *attrs])))
        elif isinstance(node, ast.Name) and node.id in aliases and isinstance(parent, ast.Call) and node in parent.args:
            function = getattr(parent.func, "id", None)
            if function in DECLARED_READS and aliases[node.id] == "":
                reads |= DECLARED_READS[function]
            elif function not in local_functions:
                reads.add(aliases[node.id])  # handed whole to library code
    return reads


def listed_params(stage: dict) -> list[str]:
    listed = []
    for entry in body(stage).get("params", []):
        listed += list(entry) if isinstance(entry, dict) else [entry]
    return listed


def overlaps(a: str, b: str) -> bool:
    return covers(a, b, ".") or covers(b, a, ".")


@pytest.mark.parametrize("name", sorted(stages()))
def test_stage_params_cover_what_it_reads(name):
    stage = stages()[name]
    read = params_read(script_of(stage)) - OPERATIONAL_KEYS
    listed = listed_params(stage)
    if "" in read:  # the whole of params (e.g. model_dump()): every section must be listed
        read = (read - {""}) | set(Params.model_fields)
    uncovered = sorted(k for k in read if not any(covers(p, k, ".") for p in listed))
    assert not uncovered, f"stage {name} reads {uncovered} but dvc.yaml does not list them among its params"
    unread = sorted(p for p in listed if not any(overlaps(p, k) for k in read))
    assert not unread, f"stage {name} lists params {unread} that it never reads (needless reruns)"


def test_params_reader_sees_aliases_and_branches():
    read = params_read("stages/teach.py")
    assert {"teacher.replay", "teacher.oracle", "teacher.base_url", "seed", "diversity"} <= read  # build_teacher's
    assert "teacher.concurrency" in read  # read, and deliberately not a dependency (OPERATIONAL_KEYS)


def test_operational_keys_are_real_keys_and_not_dependencies():
    assert OPERATIONAL_KEYS <= set(leaf_keys())
    listed = listed_params(stages()["teach"])
    assert not [k for k in OPERATIONAL_KEYS if any(overlaps(p, k) for p in listed)]


def test_every_stage_runs_after_the_params_check():
    for name, stage in stages().items():
        if name != "check":
            assert "data/params.checked" in body(stage)["deps"], name
    check = stages()["check"]
    assert "params.yaml" in check["deps"] and "data/params.checked" in str(check["outs"])


def test_every_uncached_output_but_check_and_report_is_a_metric_or_plot():
    """DVC saves no run-cache entry for a stage with an uncached output that is neither a metric nor
    a plot (dvc/stage/__init__.py, `run`): each stage's figures are metrics, so every stage but check
    and report (git's files: the checked params, the report) can be restored from the run-cache."""
    without_run_cache = {
        name
        for name, stage in stages().items()
        for entry in body(stage).get("outs", [])
        if isinstance(entry, dict) and any(opts.get("cache") is False for opts in entry.values())
    }
    assert without_run_cache == {"check", "report"}
    headline = [
        path
        for name, stage in stages().items()
        for entry in body(stage).get("metrics", [])
        for path in (entry if isinstance(entry, dict) else {entry: {}})
        if name == "report"
    ]
    assert headline == ["metrics/headline.json"]  # the compact one: `dvc metrics diff --targets`
    assert body(stages()["report"])["outs"][1] == {"metrics/summary.json": {"cache": False}}
