"""Benchmark of the finetune stage's training against a naive baseline, side by side.

    python benchmarks/finetune.py           # writes metrics/bench_finetune.json

Both train the same model from the same initial weights on the same Fine-tune-CoT examples (coin
flip and last letters, as the default pipeline makes them), with the same batch size and number
of steps, through the transformers ``Trainer``:

- ours: ``ftcot.student.training.train_student`` — dynamic padding, length-grouped batches;
- baseline: every batch padded to ``student.max_length``, random order, no length grouping.

Throughput is real (non-padding) tokens per second; ``speedup`` = ours / baseline, for the tiny
GPT-2 student and for SmolLM2-135M with LoRA (target: >= 1.3x on CPU).
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
from pathlib import Path

import torch
from transformers import DataCollatorForSeq2Seq, Trainer, TrainingArguments

from ftcot.config import StudentParams
from ftcot.data.synthetic import generate_records
from ftcot.data.tasks import get_task
from ftcot.io import write_json
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
    texts = [student_prompt(e["question"]) + student_target("ft_cot", e["answer"], e["rationale"]) for e in data]
    timings = {}
    for name in ("baseline", "ours"):
        model, tokenizer = load_student(params, seed, corpus=texts)  # same initial weights for both
        if params.method == "lora":
            model = wrap_lora(model, params)
        train_ds, _ = build_dataset(data, "ft_cot", tokenizer, params.max_length)
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
        "method": params.method,
        "examples": len(data),
        "batch_size": params.batch_size,
        "epochs": params.epochs,
        "max_length": params.max_length,
        **timings,
        "speedup": round(timings["ours"]["real_tokens_per_second"] / timings["baseline"]["real_tokens_per_second"], 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default=str(REPO / "metrics" / "bench_finetune.json"))
    parser.add_argument("--skip-smollm2", action="store_true")
    args = parser.parse_args()

    results: dict = {}
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
                "method": "lora",
                "lora": {"r": 8, "alpha": 16, "dropout": 0.0, "target_modules": ["q_proj", "v_proj"]},
                "epochs": 1,
                "batch_size": 4,
                "max_length": 256,
                "learning_rate": 1e-3,
            }
        )
        results["smollm2_135m_lora"] = compare(smollm2, examples(16))
    results["speedup"] = min(r["speedup"] for r in results.values() if isinstance(r, dict))
    results["speedup_definition"] = "min over students of: real tokens/s of ours / of the naive Trainer baseline"
    results["machine"] = {
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "device": "cuda" if torch.cuda.is_available() else "cpu",
        "python": platform.python_version(),
        "platform": platform.platform(),
    }
    write_json(args.out, results)
    for name, r in results.items():
        if isinstance(r, dict) and "speedup" in r:
            print(
                f"{name}: ours {r['ours']['real_tokens_per_second']} tok/s, baseline "
                f"{r['baseline']['real_tokens_per_second']} tok/s, speedup {r['speedup']}x"
            )


if __name__ == "__main__":
    main()
