"""evaluate.engine: the hf engine in the process, or vLLM's server started and stopped by the stage.
Without a GPU, vLLM's command is played by ftcot.testing.fake_vllm (its arguments, its OpenAI API,
its own decoding through transformers); the real one's agreement with hf is measured by
benchmarks/gpu.py where a GPU is lent."""

import functools
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from test_evaluate_stage import TINY, project, records, run_stage, write_jsonl

from ftcot.config import StudentParams
from ftcot.evaluation.engines import HF, VLLM, VLLM_ENV, EngineUnavailable, check_engine, open_generator
from ftcot.evaluation.prompting import STOP, run_prompting
from ftcot.student.formats import answer_end, student_prompt
from ftcot.student.training import finetune

FAKE_VLLM = f"{sys.executable} -m ftcot.testing.fake_vllm"


def fake_vllm_alive() -> bool:
    found = subprocess.run(["pgrep", "-f", "ftcot.testing.fake_vllm"], capture_output=True, text=True)
    return bool(found.stdout.strip())


@pytest.fixture(scope="module")
def student(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("student") / "m"
    p = StudentParams(tiny={**TINY, "n_embd": 64}, epochs=10, learning_rate=1e-2, warmup_ratio=0.0, max_length=64)
    finetune(records(16), [], "ft_cot", p, seed=0, output_dir=folder)
    return folder


def lora_params(base: Path, r: int = 12) -> StudentParams:
    return StudentParams(
        model=str(base), tuning="lora", lora={"r": r}, epochs=8, learning_rate=2e-2, warmup_ratio=0.0, max_length=64
    )


@pytest.fixture(scope="module")
def lora_student(student, tmp_path_factory) -> Path:
    """A LoRA student over ``student`` as its pretrained base, taught the opposite answers, so that
    the base alone and the base with the adapter answer differently. Rank 12: vLLM serves it in
    its 16 slot."""
    folder = tmp_path_factory.mktemp("lora") / "m"
    flipped = [{**r, "answer": {"yes": "no", "no": "yes"}[r["answer"]]} for r in records(16)]
    flipped = [{**r, "rationale": f"The colour {r['question'][:-1].lower()} means {r['answer']}."} for r in flipped]
    finetune(flipped, [], "ft_cot", lora_params(student), seed=0, output_dir=folder)
    return folder


def test_vllm_is_refused_clearly_where_it_is_not_installed(monkeypatch, tmp_path):
    monkeypatch.setenv(VLLM_ENV, str(tmp_path / "nowhere" / "vllm"))
    with pytest.raises(
        EngineUnavailable, match=r"evaluate\.engine: vllm needs vLLM, and FTCOT_VLLM='.*' names no exec"
    ):
        check_engine(VLLM)
    monkeypatch.delenv(VLLM_ENV)
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(EngineUnavailable, match=r"no `vllm` on the PATH and FTCOT_VLLM unset: install vLLM in an env"):
        check_engine(VLLM)
    check_engine(HF)  # needs nothing more


def test_the_check_stage_stops_a_vllm_run_before_any_student_is_trained(tmp_path):
    project(tmp_path, evaluate={"engine": VLLM})
    env = {**os.environ, VLLM_ENV: str(tmp_path / "no-vllm-here")}
    done = run_stage(tmp_path, "check", "--out", "checked", env=env)
    assert done.returncode == 2 and "evaluate.engine: vllm needs vLLM" in done.stderr
    assert not (tmp_path / "checked").exists()


def hf_greedy(model: Path, test: list[dict]) -> list[dict]:
    """The hf engine on ``model`` (merged, for a LoRA student) and the test's prompts, in this process."""
    with open_generator(HF, str(model), "fp32", 8, what="--model") as generator:
        prompts = [student_prompt(ex["question"]) for ex in test]
        return generator.greedy(prompts, 24, ends=functools.partial(answer_end, "ft_cot"))


def test_the_evaluate_stage_on_vllm_serves_the_lora_adapter_agrees_with_hf_and_stops_its_server(
    student, lora_student, tmp_path
):
    test = records(12, rationale=False)
    write_jsonl(tmp_path / "test.jsonl", test)
    project(
        tmp_path,
        student={"model": str(student), "tuning": "lora"},
        evaluate={"engine": VLLM, "batch_size": 8, "max_new_tokens": 24, "samples": 2},
    )
    args = ["--variant", "ft_cot", "--seed", "0", "--model", str(lora_student), "--test", "test.jsonl"]
    env = {**os.environ, VLLM_ENV: FAKE_VLLM}
    done = run_stage(tmp_path, "evaluate", *args, "--predictions", "p.jsonl", "--metrics", "m.json", env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    # the base served with the adapter as a LoRA module, in vLLM's rank slot above 12
    adapter = (lora_student / "adapter").resolve()
    assert f"serve {student} " in done.stderr and f"--lora-modules student={adapter} --max-lora-rank 16" in done.stderr
    assert json.loads((tmp_path / "m.json").read_text())["engine"] == VLLM
    vllm = [json.loads(line) for line in (tmp_path / "p.jsonl").read_text().splitlines()]
    hf, base_alone = hf_greedy(lora_student, test), hf_greedy(student, test)
    assert [p["id"] for p in vllm] == [ex["id"] for ex in test]
    agree = sum(a["text"] == b["generated"] for a, b in zip(hf, vllm, strict=True)) / len(hf)
    assert agree >= 0.98, [(a["text"], b["generated"]) for a, b in zip(hf, vllm, strict=True)]
    # ...which the base without the adapter would not: the adapter was applied
    assert [b["text"] for b in base_alone] != [p["generated"] for p in vllm]
    assert [p["truncated"] for p in vllm] == [g["truncated"] for g in hf]
    assert all(len(p["samples"]) == 2 for p in vllm)  # self-consistency's samples, n per prompt
    assert not fake_vllm_alive()  # the stage stopped the server it started


def test_a_lora_student_whose_base_is_not_student_model_is_refused_before_a_server_starts(
    lora_student, tmp_path, monkeypatch
):
    monkeypatch.setenv(VLLM_ENV, FAKE_VLLM)
    other = tmp_path / "other-base"
    other.mkdir()
    refused = r"its LoRA adapter was trained over 'm', but student.model is '.*other-base'"
    with pytest.raises(EngineUnavailable, match=refused):
        with open_generator(VLLM, str(lora_student), "fp32", 8, what="--model", base=str(other)):
            pass
    assert not fake_vllm_alive()


def test_vllm_lora_rank_slots():
    from ftcot.evaluation.vllm_server import lora_rank_slot

    assert [lora_rank_slot(r) for r in (1, 2, 8, 9, 16, 64, 300, 512)] == [1, 8, 8, 16, 16, 64, 320, 512]
    with pytest.raises(EngineUnavailable, match="serves LoRA ranks up to 512, not 600"):
        lora_rank_slot(600)


def test_a_server_that_fails_to_start_stops_the_stage_with_the_end_of_its_log(student, tmp_path):
    write_jsonl(tmp_path / "test.jsonl", records(2, rationale=False))
    project(tmp_path, evaluate={"engine": VLLM})
    env = {**os.environ, VLLM_ENV: FAKE_VLLM, "FAKE_VLLM_FAIL": "1"}
    args = ["--variant", "ft_cot", "--seed", "0", "--model", str(student), "--test", "test.jsonl"]
    done = run_stage(tmp_path, "evaluate", *args, "--predictions", "p.jsonl", "--metrics", "m.json", env=env)
    assert done.returncode == 2
    assert "vllm: the server exited with code 1 before it was ready" in done.stderr
    assert "the model could not be loaded (FAKE_VLLM_FAIL)" in done.stderr
    assert not (tmp_path / "p.jsonl").exists()


def test_a_bad_startup_wait_is_refused_before_a_server_starts(student, monkeypatch):
    monkeypatch.setenv(VLLM_ENV, FAKE_VLLM)
    for bad in ("soon", "0", "-5"):
        monkeypatch.setenv("FTCOT_VLLM_STARTUP_SECONDS", bad)
        with pytest.raises(EngineUnavailable, match=r"FTCOT_VLLM_STARTUP_SECONDS must be a number of seconds above 0"):
            with open_generator(VLLM, str(student), "fp32", 8, what="--model"):
                pass
    assert not fake_vllm_alive()


def test_vllm_serves_decoder_only_students(monkeypatch, tmp_path):
    from transformers import AutoTokenizer, T5Config, T5ForConditionalGeneration

    folder = tmp_path / "t5"
    T5ForConditionalGeneration(
        T5Config(vocab_size=100, d_model=16, d_ff=32, d_kv=8, num_layers=1, num_heads=2)
    ).save_pretrained(folder)
    monkeypatch.setenv(VLLM_ENV, FAKE_VLLM)
    monkeypatch.setattr(AutoTokenizer, "from_pretrained", lambda *a, **k: object())
    with pytest.raises(
        EngineUnavailable, match=r"vllm serves decoder-only students, and --model = .* is an encoder-decoder"
    ):
        with open_generator(VLLM, str(folder), "fp32", 8, what="--model"):
            pass


def test_prompting_generates_through_whichever_engine_it_is_given():
    calls = []

    class Recording:
        encoder_decoder = False

        def greedy(self, prompts, max_new_tokens, desc="generate", stop=(), ends=None):
            calls.append((desc, max_new_tokens, tuple(stop), len(prompts)))
            return [{"text": " yes", "generated_tokens": 1, "truncated": False} for _ in prompts]

    test = records(3, rationale=False)
    out = run_prompting("zero_shot_cot", Recording(), test, 20)
    assert [c[0] for c in calls] == ["zero-shot-CoT", "answers"] and all(c[2] == STOP for c in calls)
    assert len(out) == 3 and all("yes" in o["text"] for o in out)
