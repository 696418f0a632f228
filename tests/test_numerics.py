"""The stages pin CPU numerics before their first tensor operation, whatever the environment says."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

REPORT = """
import json, os, torch
from ftcot.stage import run_stage
from ftcot.numerics import pin_cpu_numerics
def main():
    print(json.dumps({"capability": torch.backends.cpu.get_cpu_capability(), "threads": torch.get_num_threads(),
                      "mkl_cbwr": os.environ.get("MKL_CBWR"), "described": pin_cpu_numerics()}))
run_stage(main)
"""


def run_python(code: str, **env: str) -> subprocess.CompletedProcess:
    base = {k: v for k, v in __import__("os").environ.items() if not k.startswith(("ATEN_", "MKL_", "OMP_", "FTCOT_N"))}
    return subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, env={**base, **env}, capture_output=True, text=True, timeout=120
    )


def test_stage_overrides_what_the_machine_would_choose():
    proc = run_python(REPORT, ATEN_CPU_CAPABILITY="default", MKL_CBWR="AUTO", OMP_NUM_THREADS="1")
    assert proc.returncode == 0, proc.stderr
    seen = json.loads(proc.stdout)
    assert seen == {
        "capability": "AVX2",
        "threads": 2,
        "mkl_cbwr": "COMPATIBLE",
        "described": "portable (ATen AVX2, MKL COMPATIBLE, 2 threads)",
    }


def test_thread_count_is_a_setting_and_is_checked():
    seen = json.loads(run_python(REPORT, FTCOT_NUM_THREADS="1").stdout)
    assert seen["threads"] == 1
    bad = run_python(REPORT, FTCOT_NUM_THREADS="many")
    assert bad.returncode == 2 and "FTCOT_NUM_THREADS must be a positive integer, got 'many'" in bad.stderr


def test_native_mode_leaves_the_environment_alone():
    seen = json.loads(run_python(REPORT, FTCOT_NUMERICS="native", ATEN_CPU_CAPABILITY="default").stdout)
    assert seen["capability"] == "DEFAULT" and seen["mkl_cbwr"] is None
    assert seen["described"].startswith("native (ATen DEFAULT")


def test_a_tensor_operation_before_the_pinning_is_an_error():
    late = """
import os, torch
torch.ones(3).sum()  # ATen picks its kernels here, from the environment as it is
from ftcot.numerics import pin_cpu_numerics
pin_cpu_numerics()
"""
    proc = run_python(late, ATEN_CPU_CAPABILITY="default")
    assert proc.returncode != 0
    assert "ATen runs its DEFAULT kernels on a CPU with AVX2: a tensor operation ran before" in proc.stderr


def test_auto_precision_is_bf16_only_where_the_hardware_does_it_and_never_for_the_default(monkeypatch):
    from ftcot import numerics
    from ftcot.student.models import student_precision

    monkeypatch.setattr(numerics, "cpu_has_native_bf16", lambda: True)
    monkeypatch.setenv("FTCOT_NUMERICS", "native")
    assert numerics.resolve_precision("auto", pretrained=True) == "bf16"
    assert student_precision("tiny-llama", "auto") == "fp32"  # trained from scratch: fp32
    monkeypatch.setenv("FTCOT_NUMERICS", "portable")
    assert numerics.resolve_precision("auto", pretrained=True) == "fp32"  # the portable promise holds
    monkeypatch.setattr(numerics, "cpu_has_native_bf16", lambda: False)
    monkeypatch.setenv("FTCOT_NUMERICS", "native")
    assert numerics.resolve_precision("auto", pretrained=True) == "fp32"  # emulated bf16 is slower
    assert numerics.resolve_precision("bf16", pretrained=False) == "bf16"  # asked for: as asked
    assert numerics.resolve_precision("fp32", pretrained=True) == "fp32"


def test_auto_precision_on_a_gpu_without_bf16_is_fp16_and_fp16_is_refused_without_a_gpu(monkeypatch):
    """A GPU before Ampere (V100, T4) has no bf16: auto gives fp16 there (a float16 student for
    evaluation, autocast with a loss scaler for training). fp16 on a CPU is an error naming the key."""
    import torch

    from ftcot import numerics
    from ftcot.student.models import StudentLoadError, inference_dtype, student_precision

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)
    assert numerics.resolve_precision("auto", pretrained=True) == "fp16"
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    assert numerics.resolve_precision("auto", pretrained=True) == "bf16"
    assert (inference_dtype("fp16"), inference_dtype("bf16"), inference_dtype("fp32")) == (
        torch.float16,
        torch.bfloat16,
        None,
    )
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(StudentLoadError, match=r"student\.precision: fp16 is for CUDA GPUs without bf16"):
        student_precision("smollm2-135m", "fp16")
