"""Benchmark of the finetune stage's training against a naive baseline, side by side.

    python benchmarks/finetune.py           # writes metrics/bench_finetune.json

Both train the same model from the same initial weights on the same Fine-tune-CoT examples (coin
flip and last letters, as the default pipeline makes them), with the same batch size and number
of steps, through the transformers ``Trainer``:

- ours: ``ftcot.student.training.train_student`` — dynamic padding, length-grouped batches;
- baseline: every batch padded to ``student.max_length``, random order, no length grouping.

Throughput is real (non-padding) tokens per second; ``speedup`` = ours / baseline, for the tiny
GPT-2 student and for SmolLM2-135M with LoRA (target: >= 1.3x on CPU).

Then ``smollm2_135m_lora_precision``: our training of SmolLM2-135M with LoRA as the paper run has it
(all linear layers, batch 8), in fp32 and in bf16 (``student.precision``: for LoRA, the frozen base
in bf16 under autocast, the adapters and optimizer in fp32), each run in a process of its own so
that its peak resident memory is its own; the same examples, initial weights and steps, fp32 and
bf16 taking turns for ``--rounds`` rounds (a machine that gets busier weighs on both alike).
``speedup`` there is the median bf16 tokens/s over the median fp32 (target: >= 1.5x on a CPU with
AVX-512 BF16 or AMX, at no more peak memory), beside the final training loss of each.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import tempfile
import time
from pathlib import Path

import torch
from machine import describe_machine, in_own_process
from transformers import DataCollatorForSeq2Seq, Trainer, TrainingArguments

from ftcot.config import StudentParams
from ftcot.data.synthetic import generate_records
from ftcot.data.tasks import get_task
from ftcot.io import write_json
from ftcot.methods import FT_COT
from ftcot.student.formats import student_prompt, student_target
from ftcot.student.models import load_student, wrap_lora
from ftcot.student.training import build_dataset, train_student
from ftcot.teacher.cache import CompletionCache
from ftcot.teacher.oracle import OracleTeacher
from ftcot.teacher.teaching import teach

REPO = Path(__file__).resolve().parents[1]


def examples(n_per_task: int) -> list[dict]:
    """Fine-tune-CoT examples with oracle rationales from both synthetic tasks."""
    out = []
    with tempfile.TemporaryDirectory() as tmp:
        for key in ("coin_flip", "last_letter_concatenation"):
            records = [r for r in generate_records(get_task(key), n_per_task * 2, 0, 0.7) if r["split"] == "train"]
            rationales, _ = teach(records[:n_per_task], OracleTeacher(), CompletionCache(tmp), 1, 0.7, 128)
            out += [{"question": r["question"], "answer": r["answer"], "rationale": r["rationale"]} for r in rationales]
    return out


def naive_train(model, tokenizer, train_ds, params: StudentParams, seed: int) -> None:
    """The baseline: pad every batch to max_length, random sampling."""
    collator = DataCollatorForSeq2Seq(
        tokenizer, padding="max_length", max_length=params.max_length, label_pad_token_id=-100
    )
    with tempfile.TemporaryDirectory() as scratch:
        args = TrainingArguments(
            output_dir=scratch,
            num_train_epochs=params.epochs,
            per_device_train_batch_size=params.batch_size,
            learning_rate=params.learning_rate,
            save_strategy="no",
            report_to="none",
            seed=seed,
            logging_steps=1000,
            dataloader_pin_memory=False,
            disable_tqdm=True,
        )
        Trainer(model=model, args=args, train_dataset=train_ds, data_collator=collator).train()


def compare(params: StudentParams, data: list[dict], seed: int = 0) -> dict:
    texts = [student_prompt(e["question"]) + student_target(FT_COT, e["answer"], e["rationale"]) for e in data]
    timings = {}
    for name in ("baseline", "ours"):
        model, tokenizer = load_student(params, seed, corpus=texts)  # same initial weights for both
        if params.tuning == "lora":
            model = wrap_lora(model, params)
        train_ds, _ = build_dataset(data, FT_COT, tokenizer, params.max_length)
        real_tokens = sum(len(x) for x in train_ds["input_ids"]) * params.epochs
        start = time.perf_counter()
        if name == "ours":
            train_student(model, tokenizer, train_ds, train_ds.select([]), params, seed)
        else:
            naive_train(model, tokenizer, train_ds, params, seed)
        seconds = time.perf_counter() - start
        timings[name] = {"seconds": round(seconds, 2), "real_tokens_per_second": round(real_tokens / seconds, 1)}
    return {
        "model": params.model,
        "tuning": params.tuning,
        "examples": len(data),
        "batch_size": params.batch_size,
        "epochs": params.epochs,
        "max_length": params.max_length,
        **timings,
        "speedup": round(timings["ours"]["real_tokens_per_second"] / timings["baseline"]["real_tokens_per_second"], 2),
    }


def _train_once(params: StudentParams, data: list[dict], seed: int, queue) -> None:
    torch.set_num_threads(os.cpu_count() or 1)
    model, tokenizer = load_student(params, seed)
    model = wrap_lora(model, params)
    train_ds, _ = build_dataset(data, FT_COT, tokenizer, params.max_length)
    real_tokens = sum(len(x) for x in train_ds["input_ids"]) * params.epochs
    start = time.perf_counter()
    _, state = train_student(model, tokenizer, train_ds, train_ds.select([]), params, seed)
    seconds = time.perf_counter() - start
    losses = [row["loss"] for row in state.log_history if "loss" in row]
    queue.put(
        {
            "seconds": round(seconds, 2),
            "real_tokens_per_second": round(real_tokens / seconds, 1),
            "final_train_loss": round(losses[-1], 4) if losses else None,
            "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        }
    )


def compare_precision(params: StudentParams, data: list[dict], rounds: int, seed: int = 0) -> dict:
    """fp32 against bf16, taking turns, each run in a fresh process (peak memory is per process)."""
    runs: dict[str, list[dict]] = {"fp32": [], "bf16": []}
    for _ in range(rounds):
        for precision in runs:
            variant = params.model_copy(update={"precision": precision})
            runs[precision].append(in_own_process(_train_once, variant, data, seed))
    out: dict = {"model": params.model, "tuning": params.tuning, "examples": len(data), "batch_size": params.batch_size}
    for precision, results in runs.items():
        out[precision] = {
            "real_tokens_per_second": statistics.median(r["real_tokens_per_second"] for r in results),
            "final_train_loss": results[0]["final_train_loss"],  # the same in every round
            "peak_rss_mib": max(r["peak_rss_mib"] for r in results),
            "runs": results,
        }
    out["speedup"] = round(out["bf16"]["real_tokens_per_second"] / out["fp32"]["real_tokens_per_second"], 2)
    out["memory_ratio"] = round(out["bf16"]["peak_rss_mib"] / out["fp32"]["peak_rss_mib"], 3)
    out["targets"] = {"speedup": ">= 1.5 (bf16 over fp32 tokens/s)", "memory_ratio": "<= 1.0 (peak RSS)"}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default=str(REPO / "metrics" / "bench_finetune.json"))
    parser.add_argument("--skip-smollm2", action="store_true")
    parser.add_argument("--rounds", type=int, default=2, help="fp32/bf16 turns of the precision comparison")
    parser.add_argument("--only-precision", action="store_true", help="only the fp32/bf16 comparison; keep the rest")
    args = parser.parse_args()

    out = Path(args.out)
    results: dict = json.loads(out.read_text()) if args.only_precision and out.exists() else {}
    if not args.only_precision:
        # The tiny GPT-2 with BPE, as measured when this benchmark was written (not the current default student).
        tiny = StudentParams.model_validate(
            {
                "model": "tiny-gpt2",
                "tiny": {"tokenizer": "bpe"},
                "epochs": 1,
                "batch_size": 16,
                "max_length": 256,
                "learning_rate": 3e-3,
            }
        )
        results["tiny_gpt2_full"] = compare(tiny, examples(160))
        if not args.skip_smollm2:
            smollm2 = StudentParams.model_validate(
                {
                    "model": "smollm2-135m",
                    "tuning": "lora",
                    "lora": {"r": 8, "alpha": 16, "dropout": 0.0, "target_modules": ["q_proj", "v_proj"]},
                    "epochs": 1,
                    "batch_size": 4,
                    "max_length": 256,
                    "learning_rate": 1e-3,
                    "precision": "fp32",
                }
            )
            results["smollm2_135m_lora"] = compare(smollm2, examples(16))
    if not args.skip_smollm2:
        # As results/paper-smollm2/params.yaml trains it.
        paper = StudentParams.model_validate(
            {
                "model": "smollm2-135m",
                "tuning": "lora",
                "lora": {"r": 8, "alpha": 16, "dropout": 0.05, "target_modules": "all-linear"},
                "epochs": 1,
                "batch_size": 8,
                "max_length": 256,
                "learning_rate": 1e-3,
            }
        )
        results["smollm2_135m_lora_precision"] = compare_precision(paper, examples(16), args.rounds)
    results["speedup"] = min(
        r["speedup"]
        for k, r in results.items()
        if isinstance(r, dict) and "speedup" in r and k != "smollm2_135m_lora_precision"
    )
    results["speedup_definition"] = "min over students of: real tokens/s of ours / of the naive Trainer baseline (fp32)"
    results["machine"] = describe_machine()
    write_json(out, results)
    for name, r in results.items():
        if isinstance(r, dict) and "ours" in r:
            ours, baseline = r["ours"]["real_tokens_per_second"], r["baseline"]["real_tokens_per_second"]
            print(f"{name}: ours {ours} tok/s, baseline {baseline} tok/s, speedup {r['speedup']}x")
    if "smollm2_135m_lora_precision" in results:
        r = results["smollm2_135m_lora_precision"]
        fp32, bf16 = r["fp32"]["real_tokens_per_second"], r["bf16"]["real_tokens_per_second"]
        print(f"smollm2 lora: fp32 {fp32} tok/s, bf16 {bf16} tok/s")
        print(f"bf16 speedup {r['speedup']}x, peak memory {r['memory_ratio']}x")


if __name__ == "__main__":
    main()
