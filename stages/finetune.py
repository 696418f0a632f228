"""Stage finetune: train the student on one task and variant (ft_cot or vanilla).

    python stages/finetune.py --task coin_flip --variant ft_cot --seed 0 \
        --train data/finetune_sets/coin_flip/train_ft_cot.jsonl --val data/finetune_sets/coin_flip/val_ft_cot.jsonl \
        --out models/coin_flip/ft_cot/seed0 --metrics metrics/finetune/coin_flip/ft_cot/seed0.json \
        --live curves/coin_flip/ft_cot/seed0

--seed (one of params `seeds`) seeds the initial weights, the data order and dropout.

A checkpoint is saved every epoch in .checkpoints/<task>-<variant>-seed<seed>-<key>/ in the project
($FTCOT_CHECKPOINT_DIR to put them elsewhere), where the key hashes the student params, seed,
variant, data and training code (outside DVC's outputs, which DVC deletes before a rerun; ignored by
git and DVC). An interrupted stage resumes from its newest complete checkpoint and writes the
same model, metrics and curves as an uninterrupted run; a checkpoint cut off while being written is
removed with a warning (then the one before is used, or training starts over). The folder is
removed once training ends. The saved model is the epoch with the lowest validation loss.

Checkpoint folders of the same task, variant and seed with another key are removed when this stage
starts and when it ends: their inputs are no longer this stage's, so it would never resume them
(DVC restoring a stage from its run-cache never runs it, so nothing else would remove them).
Switching params back to those of an interrupted run therefore trains from scratch. A folder still
in use is kept: each run holds an flock on <folder>.lock for as long as it lives, so another
experiment training concurrently with other params (same cache dir) is never touched, however long
its epochs take, while the folder of a killed run is free at once. $FTCOT_CACHE_DIR must be on a
file system with working flock (a local disk). A second run with the very same inputs while one is
going stops with an error rather than share its checkpoints.

Several processes (DDP; gloo on CPU, NCCL on GPUs): prefix the command with
`torchrun --nproc_per_node N` or `accelerate launch --num_processes N`; student.batch_size is
per process.
"""

import argparse
import os
import shutil
from contextlib import nullcontext

from ftcot.config import load_params
from ftcot.io import read_jsonl, write_json
from ftcot.methods import FINETUNE_METHODS
from ftcot.numerics import device_description
from ftcot.stage import log, run_stage
from ftcot.student.checkpoints import checkpoint_folder, claimed, remove_stale_checkpoints
from ftcot.student.training import checkpoint_key, finetune

FIELDS = ("id", "question_id", "question", "answer", "rationale")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--task", required=True)
    parser.add_argument("--variant", required=True, choices=FINETUNE_METHODS)
    parser.add_argument("--seed", required=True, type=int, help="the student's seed (one of params seeds)")
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
    key = checkpoint_key(params.student, args.seed, args.variant, train, val)
    checkpoints = checkpoint_folder(args.task, args.variant, args.seed, key)
    # Under torchrun / accelerate launch, rank 0 writes the outputs and looks after the checkpoints.
    rank0 = int(os.environ.get("RANK", "0")) == 0
    with claimed(checkpoints) if rank0 else nullcontext():
        if rank0:
            remove_stale_checkpoints(checkpoints)
        if any(checkpoints.glob("checkpoint-*")):
            log.info("resuming from the checkpoints in %s", checkpoints)
        shutil.rmtree(args.live, ignore_errors=True)  # curves of this run only (a resume writes them all again)
        metrics, curve = finetune(
            train, val, args.variant, params.student, args.seed, args.out, args.task, checkpoints, args.live
        )
        if not rank0:
            return
        shutil.rmtree(checkpoints, ignore_errors=True)
        # Again at the end: a run of other inputs may have been interrupted while this one trained.
        remove_stale_checkpoints(checkpoints)
    # The curves beside the metrics: what the report draws (DVCLive's files serve `dvc plots`).
    write_json(args.metrics, {**metrics, "curve": curve, "seed": args.seed, "device": device_description()})
    if metrics["truncated_train"]:
        log.warning(
            "%d training examples were cut at student.max_length=%d",
            metrics["truncated_train"],
            params.student.max_length,
        )
    log.info(
        "%s/%s seed %d: train loss %s after %d steps -> %s",
        args.task,
        args.variant,
        args.seed,
        metrics["train_loss"],
        metrics["steps"],
        args.out,
    )


if __name__ == "__main__":
    run_stage(main)
