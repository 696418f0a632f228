"""Stage fetch: a task's normalised dataset, split as in the paper.

    python stages/fetch.py --task gsm8k --out data/fetch/gsm8k.jsonl --metrics metrics/fetch/gsm8k.json

Source files come from data.mirror (or $FTCOT_DATA_MIRROR) when set, else are downloaded once
to $FTCOT_CACHE_DIR/datasets (default ~/.cache/finetune-cot/datasets) and checked against pinned
SHA-256 sums.
"""

import argparse

from ftcot.config import load_params
from ftcot.data.fetching import fetch_task
from ftcot.io import write_json, write_jsonl
from ftcot.paths import DOWNLOADS, cache_folder
from ftcot.stage import log, run_stage


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--task", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--metrics", required=True)
    args = parser.parse_args()

    params = load_params()
    records, info = fetch_task(args.task, params.data, params.seed, cache_folder(DOWNLOADS))
    write_jsonl(args.out, records)
    write_json(args.metrics, info)
    log.info(
        "%s: %d train, %d test questions (%d train duplicates of test questions dropped) -> %s",
        args.task,
        info["train"],
        info["test"],
        info["dropped_train_duplicates_of_test"],
        args.out,
    )


if __name__ == "__main__":
    run_stage(main)
