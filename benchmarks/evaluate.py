"""Benchmark of the evaluate stage's batched decoding against a one-question-at-a-time loop.

    python benchmarks/evaluate.py            # writes metrics/bench_evaluate.json

Same model, same test questions (the default pipeline's coin flip and last letters), same greedy
settings, side by side in one process:

- ours: ``ftcot.evaluation.generation.generate_greedy`` — prompts sorted by length, left-padded batches of
  ``--batch-size``, KV cache, stop at EOS;
- baseline: ``model.generate`` called once per question (KV cache, stop at EOS, no padding).

The predictions must be identical (asserted). Questions per second; ``speedup`` = ours / baseline,
for SmolLM2-135M (a real pretrained model, offline) and for a tiny GPT-2 fine-tuned on Fine-tune-CoT
examples (target: >= 4x on CPU). On a GPU (when one is available) the same runs there.

With ``--student <folder> --test <test.jsonl>`` (a trained student and its task's test set, e.g.
the paper run's Coin Flip Fine-tune-CoT student in .results/paper-smollm2/coin_flip/), also
``student_paths``: the evaluate stage's decoding now against the batched decoding it replaced, on
that student and its whole test set, side by side:

- baseline: ``model.generate`` on length-sorted, left-padded batches in fp32, each batch running
  until all its sequences hit EOS or ``max_new_tokens`` (the earlier evaluate stage);
- ours: ``generate_greedy`` as the stage runs it: KV cache, the prompt's pass computing only the
  last position's logits, batches no larger than free memory holds, each sequence leaving the
  batch at its answer line (``answer_end``) or EOS, with the weights in ``student.precision`` (bf16
  where the CPU computes it natively).

Questions per second, peak resident memory of each (measured in a process of its own), and the
accuracy of each (the same within noise). Target: ``speedup`` >= 2x at no more peak memory.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import platform
import resource
import tempfile
import time
from pathlib import Path

import torch
from machine import describe_machine, in_own_process

from ftcot.config import StudentParams
from ftcot.data.synthetic import generate_records
from ftcot.data.tasks import get_task
from ftcot.evaluation.generation import _generate_padded_left, generate_greedy
from ftcot.evaluation.scoring import read_test_set, score_predictions
from ftcot.io import write_json
from ftcot.methods import FT_COT
from ftcot.numerics import compute_device, cpu_has_native_bf16
from ftcot.student.formats import answer_end, student_prompt
from ftcot.student.models import inference_dtype, load_pretrained
from ftcot.student.smollm2 import smollm2_folder
from ftcot.student.training import finetune
from ftcot.teacher.cache import CompletionCache
from ftcot.teacher.oracle import OracleTeacher
from ftcot.teacher.teaching import teach

REPO = Path(__file__).resolve().parents[1]


def questions(n_per_task: int, split: str) -> list[dict]:
    out = []
    for key in ("coin_flip", "last_letter_concatenation"):
        records = [r for r in generate_records(get_task(key), 500, 0, 0.7) if r["split"] == split]
        out += records[:n_per_task]
    return out


@torch.inference_mode()
def one_at_a_time(model, tokenizer, prompts: list[str], max_new_tokens: int) -> list[str]:
    """The baseline: the loop one writes first."""
    texts = []
    device = next(model.parameters()).device
    for prompt in prompts:
        ids = tokenizer(prompt, add_special_tokens=False, return_tensors="pt").to(device)
        out = model.generate(
            **ids,
            do_sample=False,
            max_new_tokens=max_new_tokens,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
        )
        new = out[0, ids["input_ids"].shape[1] :].tolist()
        if tokenizer.eos_token_id in new:
            new = new[: new.index(tokenizer.eos_token_id)]
        texts.append(tokenizer.decode(new, skip_special_tokens=True))
    return texts


def compare(name: str, model, tokenizer, prompts: list[str], batch_size: int, max_new_tokens: int) -> dict:
    model.eval()
    one_at_a_time(model, tokenizer, prompts[:2], 4)  # warm-up
    start = time.perf_counter()
    baseline = one_at_a_time(model, tokenizer, prompts, max_new_tokens)
    baseline_s = time.perf_counter() - start
    start = time.perf_counter()
    ours = generate_greedy(model, tokenizer, prompts, batch_size, max_new_tokens, desc=name)
    ours_s = time.perf_counter() - start
    mismatches = [i for i, (a, b) in enumerate(zip(baseline, ours, strict=True)) if a != b["text"]]
    assert not mismatches, f"{name}: batched and one-at-a-time greedy outputs differ at {mismatches[:5]}"
    n = len(prompts)
    return {
        "model": name,
        "questions": n,
        "batch_size": batch_size,
        "max_new_tokens": max_new_tokens,
        "mean_generated_tokens": round(sum(o["generated_tokens"] for o in ours) / n, 1),
        "identical_predictions": True,
        "baseline": {"seconds": round(baseline_s, 2), "questions_per_second": round(n / baseline_s, 2)},
        "ours": {"seconds": round(ours_s, 2), "questions_per_second": round(n / ours_s, 2)},
        "speedup": round(baseline_s / ours_s, 2),
    }


def tiny_student(device: str):
    """A tiny GPT-2 fine-tuned for a few epochs on oracle rationales: it writes rationales and stops."""
    train = questions(150, "train")
    with tempfile.TemporaryDirectory() as tmp:
        rationales, _ = teach(train, OracleTeacher(), CompletionCache(tmp), 1, 0.7, 128)
        examples = [{"question": r["question"], "answer": r["answer"], "rationale": r["rationale"]} for r in rationales]
        params = StudentParams(
            model="tiny-gpt2", tiny={"tokenizer": "bpe"}, epochs=4, learning_rate=3e-3, val_accuracy=False
        )
        finetune(examples, [], FT_COT, params, 0, f"{tmp}/out")
        model, tokenizer = load_pretrained(f"{tmp}/out")
    return model.to(device), tokenizer


def _decode_once(path: str, setup: dict, queue) -> None:
    """One decoding path over the whole test set, in a process of its own (its peak memory)."""
    torch.set_num_threads(os.cpu_count() or 1)
    precision = "fp32"
    if path == "ours":  # the stage's student.precision: auto
        precision = "bf16" if cpu_has_native_bf16() or torch.cuda.is_available() else "fp32"
    model, tokenizer = load_pretrained(setup["student"], dtype=inference_dtype(precision))
    model.eval()
    test = read_test_set(setup["test"])
    prompts = [student_prompt(q["question"]) for q in test]
    batch, budget = setup["batch_size"], setup["max_new_tokens"]
    start = time.perf_counter()
    if path == "baseline":
        groups = _generate_padded_left(model, tokenizer, prompts, batch, budget, "baseline")
        generations = [group[0] for group in groups]
    else:
        ends = functools.partial(answer_end, setup["variant"])
        generations = generate_greedy(model, tokenizer, prompts, batch, budget, "ours", ends=ends)
    seconds = time.perf_counter() - start
    records = score_predictions(test, generations, setup["variant"])
    queue.put(
        {
            "precision": precision,
            "seconds": round(seconds, 2),
            "questions_per_second": round(len(test) / seconds, 3),
            "accuracy": round(sum(r["correct"] for r in records) / len(records), 4),
            "mean_generated_tokens": round(sum(g["generated_tokens"] for g in generations) / len(generations), 1),
            "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        }
    )


def compare_student_paths(setup: dict) -> dict:
    out: dict = {**setup, "student": _shown(setup["student"]), "test": _shown(setup["test"])}
    out["machine"] = describe_machine()
    for path in ("baseline", "ours"):
        out[path] = in_own_process(_decode_once, path, setup)
    out["questions"] = len(read_test_set(setup["test"]))
    out["speedup"] = round(out["ours"]["questions_per_second"] / out["baseline"]["questions_per_second"], 2)
    out["memory_ratio"] = round(out["ours"]["peak_rss_mib"] / out["baseline"]["peak_rss_mib"], 3)
    out["targets"] = {"speedup": ">= 2 (questions/s)", "memory_ratio": "<= 1.0 (peak RSS)"}
    missed = []
    if out["speedup"] < 2:
        missed.append(f"speedup {out['speedup']} misses >= 2 by {round(2 - out['speedup'], 2)}")
    if out["memory_ratio"] > 1.0:
        missed.append(f"memory_ratio {out['memory_ratio']} misses <= 1.0 by {round(out['memory_ratio'] - 1, 3)}")
    out["targets_met"] = not missed
    out["missed"] = missed
    return out


def _shown(path: str) -> str:
    """A path as the report shows it: relative to the project where it is inside it."""
    resolved = Path(path).resolve()
    return str(resolved.relative_to(REPO)) if resolved.is_relative_to(REPO) else str(path)


def student_setup(args) -> dict:
    return {
        "student": args.student,
        "test": args.test,
        "variant": args.variant,
        "batch_size": args.batch_size,
        "max_new_tokens": args.student_max_new_tokens,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--questions", type=int, default=16, help="test questions per task")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--out", default="metrics/bench_evaluate.json")
    parser.add_argument("--student", help="a trained student's folder: also compare the stage's decoding paths on it")
    parser.add_argument("--test", help="its task's test set (test.jsonl of stage finetune_sets)")
    parser.add_argument("--variant", default=FT_COT)
    parser.add_argument("--student-max-new-tokens", type=int, default=128, help="as evaluate.max_new_tokens")
    parser.add_argument("--only-student", action="store_true", help="only the student comparison; keep the rest")
    args = parser.parse_args()
    if args.only_student:
        report = json.loads(Path(args.out).read_text())
        report["student_paths"] = compare_student_paths(student_setup(args))
        write_json(args.out, report)
        print(json.dumps(report["student_paths"], indent=1))
        return
    torch.manual_seed(0)
    device = compute_device()
    test = questions(args.questions, "test")
    prompts = [student_prompt(q["question"]) for q in test]

    results = {}
    model, tokenizer = tiny_student(device)
    results["tiny_gpt2_ft_cot"] = compare("tiny-gpt2", model, tokenizer, prompts, args.batch_size, args.max_new_tokens)
    model, tokenizer = load_pretrained(str(smollm2_folder("smollm2-135m")))
    model.to(device)
    results["smollm2_135m"] = compare("smollm2-135m", model, tokenizer, prompts, args.batch_size, args.max_new_tokens)
    report = {
        "machine": {
            "cores": os.cpu_count(),
            "device": torch.cuda.get_device_name() if device == "cuda" else "cpu",
            "torch_threads": torch.get_num_threads(),
            "platform": platform.platform(),
            "python": platform.python_version(),
        },
        **results,
        "speedup": min(r["speedup"] for r in results.values()),
        "speedup_definition": "min over models of: questions/s of batched generate_greedy / of a one-at-a-time loop",
    }
    if args.student:
        report["student_paths"] = compare_student_paths(student_setup(args))
    write_json(args.out, report)
    for name, r in results.items():
        print(
            f"{name}: {r['speedup']}x "
            f"({r['ours']['questions_per_second']} vs {r['baseline']['questions_per_second']} questions/s)"
        )


if __name__ == "__main__":
    main()
