"""benchmarks/gpu.py, the device check: without a GPU it measures nothing and says so; its code
paths run on tiny shapes (--smoke), so the script is ready for when a GPU is lent."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from ftcot.evaluation.engines import VLLM_ENV

REPO = Path(__file__).resolve().parents[1]
SCRIPT = str(REPO / "benchmarks/gpu.py")


@pytest.mark.skipif(torch.cuda.is_available(), reason="the no-GPU path; on a GPU the benchmark itself runs")
def test_without_a_gpu_it_writes_nothing_and_exits_0(tmp_path):
    out = tmp_path / "bench_gpu.json"
    done = subprocess.run([sys.executable, SCRIPT, "--out", str(out)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and not out.exists()
    assert done.stdout.strip().splitlines() == [
        "benchmarks/gpu.py: no CUDA GPU on this machine; nothing measured, nothing written"
    ]


def test_its_code_paths_run_on_tiny_shapes(tmp_path):
    """Its vLLM part too, through the evaluate stage's engine, with vLLM's command played by
    ftcot.testing.fake_vllm."""
    out = tmp_path / "smoke.json"
    env = {**os.environ, VLLM_ENV: f"{sys.executable} -m ftcot.testing.fake_vllm"}
    done = subprocess.run(
        [sys.executable, SCRIPT, "--smoke", "--out", str(out)], capture_output=True, text=True, timeout=600, env=env
    )
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(out.read_text())
    for part in ("gpt2_124m_full", "smollm2_135m_lora"):
        assert report[part]["tokens_per_second"] > 0 and report[part]["achieved_tflops"] >= 0
    assert report["gpt2_124m_full"]["target_mfu"] == 0.40
    assert report["evaluation"]["hf"]["questions_per_second"] > 0
    evaluation = report["evaluation"]
    assert evaluation["vllm"]["questions_per_second"] > 0 and evaluation["target_speedup"] == 5.0
    assert evaluation["agreement"] >= 0.98  # the stand-in decodes as transformers does
    assert evaluation["vllm"]["lora_adapter"] is True  # served as the adapter over its base


def test_the_peak_table_and_flops_per_token():
    sys.path.insert(0, str(REPO / "benchmarks"))
    import gpu

    assert gpu.peak_tflops("NVIDIA H200") == 989.0 and gpu.peak_tflops("NVIDIA A100-SXM4-80GB") == 312.0
    assert gpu.peak_tflops("Some GPU") is None
    assert gpu.flops_per_token(100, 2, 8, 16, lora=False) == 600 + 12 * 2 * 8 * 16
    assert gpu.flops_per_token(100, 2, 8, 16, lora=True) == 400 + 12 * 2 * 8 * 16
