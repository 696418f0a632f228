"""One name per thing, written once: each method name in ftcot/methods.py, each teacher backend
in ftcot/teacher/backends.py, each output path in ftcot/paths.py. Everywhere else in the product's
code (ftcot/, stages/, scripts/, benchmarks/) the code refers to the table; a test that finds the
literal again names the file and line."""

import ast
from pathlib import Path

from ftcot import paths
from ftcot.methods import METHODS
from ftcot.provenance import PACKAGES
from ftcot.teacher.backends import BACKENDS

REPO = Path(__file__).resolve().parents[1]
FOLDERS = ("ftcot", "stages", "scripts", "benchmarks")


def string_literals(skip: set[str]) -> list[tuple[str, int, str]]:
    """(file, line, value) of every string constant in the product's code, but in ``skip`` and the
    test helpers of ftcot/testing."""
    found = []
    for folder in FOLDERS:
        for path in sorted((REPO / folder).rglob("*.py")):
            rel = path.relative_to(REPO).as_posix()
            if rel in skip or rel.startswith("ftcot/testing/"):
                continue
            for node in ast.walk(ast.parse(path.read_text(), rel)):
                if isinstance(node, ast.Constant) and isinstance(node.value, str):
                    found.append((rel, node.lineno, node.value))
    return found


def test_method_names_are_written_only_in_their_table():
    again = [f"{f}:{line}: {v!r}" for f, line, v in string_literals({"ftcot/methods.py"}) if v in METHODS]
    assert not again, "method names outside ftcot/methods.py (use its constants or METHODS):\n" + "\n".join(again)


def test_teacher_backend_names_are_written_only_in_their_table():
    # Not the same thing by the same word: the openai package, whose version provenance records.
    skip = {"ftcot/teacher/backends.py"}
    package = {("ftcot/provenance.py", name) for name in PACKAGES}
    again = [f"{f}:{line}: {v!r}" for f, line, v in string_literals(skip) if v in BACKENDS and (f, v) not in package]
    assert not again, "backend names outside ftcot/teacher/backends.py (use its constants):\n" + "\n".join(again)


def test_output_paths_are_written_only_in_paths_py():
    # The folder of each output template (data/teach, metrics/evaluate, models, ...): a path
    # inside it, or the folder itself where it has two parts. (A bare "models" or "curves/" also
    # names a cache folder or a key prefix of the report's figures.)
    folders = {t.split("{")[0].rstrip("/") for t in paths.TEMPLATES} - {""}

    def names_one(value: str) -> bool:
        inside = any(value.startswith(f + "/") and value != f + "/" for f in folders)
        return inside or (value in folders and "/" in value)

    again = [f"{f}:{line}: {v!r}" for f, line, v in string_literals({"ftcot/paths.py"}) if names_one(v)]
    assert not again, "output paths outside ftcot/paths.py (use its names):\n" + "\n".join(again)


def test_the_scan_reads_the_code():
    # Guards against a scan that silently reads nothing: the tables themselves hold the literals.
    found = string_literals(set())
    assert {v for f, _, v in found if f == "ftcot/methods.py"} >= set(METHODS)
    assert paths.SUMMARY in {v for f, _, v in found if f == "ftcot/paths.py"}
    assert {v for f, _, v in found if f == "ftcot/teacher/backends.py"} >= set(BACKENDS)
    assert len({f for f, _, _ in found}) > 40
