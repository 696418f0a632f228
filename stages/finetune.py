"""Stage finetune: train the student on one task and variant (ft_cot or vanilla).

    python stages/finetune.py --task coin_flip --variant ft_cot \
        --train data/split/coin_flip/train_ft_cot.jsonl --val data/split/coin_flip/val_ft_cot.jsonl \
        --out models/coin_flip/ft_cot --metrics metrics/finetune/coin_flip/ft_cot.json \
        --live curves/coin_flip/ft_cot

A checkpoint is saved every epoch in $FTCOT_CACHE_DIR/checkpoints/ (outside DVC's outputs, which
DVC deletes before a rerun): an interrupted stage resumes from it; it is removed once training
ends. The saved model is the epoch with the lowest validation loss.

Several processes (DDP; gloo on CPU, NCCL on GPUs): prefix the command with
`torchrun --nproc_per_node N` or `accelerate launch --num_processes N`; student.batch_size is
per process.
"""

import argparse
import os
import shutil

from ftcot.config import load_params
from ftcot.io import default_cache_dir, read_jsonl, write_json
from ftcot.methods import FINETUNE_METHODS
from ftcot.stage import log, run_stage
from ftcot.student import StudentLoadError
from ftcot.training import EmptyTrainingSetError, checkpoint_key, finetune

FIELDS = ("id", "question_id", "question", "answer", "rationale")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--task", required=True)
    parser.add_argument("--variant", required=True, choices=FINETUNE_METHODS)
    parser.add_argument("--train", required=True)
    parser.add_argument("--val", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--metrics", required=True)
    parser.add_argument("--live", required=True, help="DVCLive folder for the training curves")
    args = parser.parse_args()

    params = load_params()
    log.info("student: %s", params.student.model_dump_json())
    train = read_jsonl(args.train, required=FIELDS)
    val = read_jsonl(args.val, required=FIELDS)
    key = checkpoint_key(params.student, params.seed, args.variant, train, val)
    checkpoints = default_cache_dir() / "checkpoints" / f"{args.task}-{args.variant}-{key}"
    if any(checkpoints.glob("checkpoint-*")):
        log.info("resuming from the checkpoints in %s", checkpoints)
    shutil.rmtree(args.live, ignore_errors=True)  # curves of this run only
    metrics, _ = finetune(
        train, val, args.variant, params.student, params.seed, args.out, args.task, checkpoints, args.live
    )
    if int(os.environ.get("RANK", "0")) != 0:
        return  # under torchrun / accelerate launch, rank 0 writes the outputs
    shutil.rmtree(checkpoints, ignore_errors=True)
    write_json(args.metrics, metrics)
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
