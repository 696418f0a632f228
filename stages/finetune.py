"""Stage finetune: train the student on one task and variant (ft_cot or vanilla).

    python stages/finetune.py --task coin_flip --variant ft_cot \
        --train data/split/coin_flip/train_ft_cot.jsonl --val data/split/coin_flip/val_ft_cot.jsonl \
        --out models/coin_flip/ft_cot --metrics metrics/finetune/coin_flip/ft_cot.json \
        --curve metrics/finetune/coin_flip/ft_cot_curve.json
"""

import argparse

from ftcot.config import load_params
from ftcot.io import read_jsonl, write_json
from ftcot.stage import log, run_stage
from ftcot.student import StudentLoadError
from ftcot.training import EmptyTrainingSetError, finetune

FIELDS = ("id", "question_id", "question", "answer", "rationale")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--task", required=True)
    parser.add_argument("--variant", required=True, choices=["ft_cot", "vanilla"])
    parser.add_argument("--train", required=True)
    parser.add_argument("--val", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--metrics", required=True)
    parser.add_argument("--curve", required=True)
    args = parser.parse_args()

    params = load_params()
    log.info("student: %s", params.student.model_dump_json())
    train = read_jsonl(args.train, required=FIELDS)
    val = read_jsonl(args.val, required=FIELDS)
    metrics, curve = finetune(train, val, args.variant, params.student, params.seed, args.out, task=args.task)
    write_json(args.metrics, metrics)
    write_json(args.curve, curve)
    if metrics["truncated_train"]:
        log.warning(
            "%d training examples were cut at student.max_length=%d",
            metrics["truncated_train"],
            params.student.max_length,
        )
    log.info(
        "%s/%s: train loss %s after %d steps -> %s",
        args.task,
        args.variant,
        metrics["train_loss"],
        metrics["steps"],
        args.out,
    )


if __name__ == "__main__":
    run_stage(main, EmptyTrainingSetError, StudentLoadError)
