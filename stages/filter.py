"""Stage filter: keep the rationales whose final answer is correct (filter.keep: correct), or every
non-empty one (filter.keep: all, the paper's ablation without filtering).

    python stages/filter.py --teach data/teach/coin_flip.jsonl \
        --out data/filter/coin_flip.jsonl --metrics metrics/filter/coin_flip.json
"""

import argparse

from ftcot.config import load_params
from ftcot.filtering import filter_rationales
from ftcot.io import read_jsonl, write_json, write_jsonl
from ftcot.stage import log, run_stage


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--teach", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--metrics", required=True)
    args = parser.parse_args()

    params = load_params()
    rationales = read_jsonl(
        args.teach, required=("question_id", "sample_index", "answer", "answer_type", "answer_completion")
    )
    kept, metrics = filter_rationales(rationales, params.filter.keep)
    write_jsonl(args.out, kept)
    write_json(args.metrics, metrics)
    log.info("kept %d of %d rationales (%.1f%%)", metrics["kept"], metrics["rationales"], 100 * metrics["kept_rate"])


if __name__ == "__main__":
    run_stage(main)
