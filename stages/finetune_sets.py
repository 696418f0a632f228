"""Stage finetune_sets: the fine-tuning sets (train / validation per method) and the test set.

    python stages/finetune_sets.py --records data/fetch/coin_flip.jsonl --kept data/filter/coin_flip.jsonl \
        --out-dir data/finetune_sets/coin_flip

Writes train_ft_cot, val_ft_cot, train_vanilla, val_vanilla and test (.jsonl) to --out-dir.
"""

import argparse
from pathlib import Path

from ftcot.config import load_params
from ftcot.io import read_jsonl, write_jsonl
from ftcot.stage import log, run_stage
from ftcot.student.finetune_sets import build_finetune_sets


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--records", required=True)
    parser.add_argument("--kept", required=True)
    parser.add_argument("--out-dir", required=True)
    args = parser.parse_args()

    params = load_params()
    records = read_jsonl(args.records, required=("id", "question", "answer", "answer_type", "split"))
    kept = read_jsonl(args.kept, required=("id", "question_id", "sample_index", "rationale"))
    # With data.drop_test_duplicates: false (the paper's exact split) a train question may have a
    # test question's text: then only ids are checked for leakage.
    sets = build_finetune_sets(
        records,
        kept,
        params.finetune_sets.val_fraction,
        params.seed,
        same_text_allowed=not params.data.drop_test_duplicates,
    )
    for name, examples in sets.items():
        write_jsonl(Path(args.out_dir) / f"{name}.jsonl", examples)
    log.info("fine-tuning sets: %s", {name: len(v) for name, v in sets.items()})


if __name__ == "__main__":
    run_stage(main)
