"""Stage fetch: a task's normalised dataset, split as in the paper.

python stages/fetch.py --task coin_flip --out data/fetch/coin_flip.jsonl
"""

import argparse

from ftcot.config import load_params
from ftcot.io import write_jsonl
from ftcot.stage import log, run_stage
from ftcot.tasks import generate_records, get_task


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--task", required=True)
    parser.add_argument("--out", required=True)
    args = parser.parse_args()

    params = load_params()
    task = get_task(args.task)
    records = generate_records(task, params.data.num_questions, params.seed, params.data.train_fraction)
    n = write_jsonl(args.out, records)
    n_train = sum(r["split"] == "train" for r in records)
    log.info("%s: %d questions (%d train, %d test) -> %s", args.task, n, n_train, n - n_train, args.out)


if __name__ == "__main__":
    run_stage(main, KeyError)
