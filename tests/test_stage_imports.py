"""Stages that do not run a model do not import torch, transformers or peft: each stage process
starts in about a second rather than several (benchmarks/startup.py measures it)."""

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
HEAVY = ("torch", "transformers", "peft")
PROBE = """
import runpy, sys
try:
    sys.argv = [{script!r}, "--help"]
    runpy.run_path({script!r}, run_name="__main__")
except SystemExit:
    pass
print("HEAVY:", *(m for m in {heavy!r} if m in sys.modules))
"""


def heavy_imports(stage: str) -> set[str]:
    script = str(REPO / "stages" / f"{stage}.py")
    code = PROBE.format(script=script, heavy=HEAVY)
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    last = done.stdout.splitlines()[-1]
    assert last.startswith("HEAVY:")
    return set(last.split()[1:])


@pytest.mark.parametrize("stage", ["check", "fetch", "teach", "filter", "finetune_sets", "report"])
def test_stages_without_a_model_import_no_torch(stage):
    assert heavy_imports(stage) == set()


def test_the_probe_sees_what_a_model_stage_imports():
    assert {"torch", "transformers"} <= heavy_imports("evaluate")
