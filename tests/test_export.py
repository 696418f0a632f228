"""The model and dataset cards of scripts/export.py (the files, not an upload)."""

import yaml

from ftcot.export import dataset_card, export_rationales, model_card

TEST = {"accuracy": 0.9, "accuracy_ci_low": 0.85, "accuracy_ci_high": 0.94, "correct": 135, "n": 150, "parse_rate": 1.0}
TRAIN = {"train_examples": 288, "val_examples": 32, "steps": 111, "best_eval_loss": 0.41}


def header(card: str) -> dict:
    assert card.startswith("---\n")
    return yaml.safe_load(card.split("---\n")[1])


def test_a_lora_students_card_names_its_base_its_adapter_and_its_accuracy():
    card = model_card(
        "coin_flip", "ft_cot", 0, "HuggingFaceTB/SmolLM2-135M-Instruct", {"tuning": "lora", "r": 8}, TRAIN, TEST,
        "text-davinci-002", "abc123", "coin_flip-rationales",
    )  # fmt: skip
    meta = header(card)
    assert meta["base_model"] == "HuggingFaceTB/SmolLM2-135M-Instruct" and "lora" in meta["tags"]
    assert meta["model-index"][0]["results"][0]["metrics"] == [{"type": "accuracy", "value": 90.0}]
    assert "90.0% (135 of 150 test questions), 95% Wilson interval 85.0–94.0%" in card
    assert "`adapter/`" in card and "GGUF" in card and "commit `abc123`" in card
    full = model_card("coin_flip", "vanilla", 1, "tiny-llama", {"tuning": "full"}, TRAIN, TEST, "oracle", None, "x")
    assert "adapter" not in full and "GGUF" not in full


def test_the_rationales_become_a_dataset_folder_with_its_card(tmp_path):
    kept = [
        {"id": f"q{i}-s0", "question_id": f"q{i}", "question": "Q?", "rationale": "R.", "answer": "yes",
         "answer_type": "yes_no", "sample_index": 0, "cache_keys": ["k"], "teacher": {"model": "m"}}
        for i in range(3)
    ]  # fmt: skip
    export_rationales(kept, tmp_path / "ds", "coin_flip", "text-davinci-002", "data/filter/coin_flip.jsonl")
    lines = (tmp_path / "ds/data/train.jsonl").read_text().splitlines()
    assert len(lines) == 3 and "cache_keys" not in lines[0]
    meta = header((tmp_path / "ds/README.md").read_text())
    assert meta["configs"][0]["data_files"] == [{"split": "train", "path": "data/train.jsonl"}]
    assert "3 zero-shot-CoT rationales for 3 training questions" in dataset_card("coin_flip", "t", 3, 3, "s")
