"""A trained student and its task's kept rationales, ready to publish on the Hugging Face hub.

    python scripts/export.py --task coin_flip                     # ft_cot, the first seed
    python scripts/export.py --task coin_flip --variant vanilla --seed 1 --out export/

Writes, from the outputs of the last `dvc repro` (`dvc pull` them first in a fresh clone):
  export/<task>-<variant>-seed<seed>/   the model (merged weights, tokenizer, adapter/ for LoRA) and
                                        its model card (README.md: base model, data, params, test
                                        accuracy with its interval, commit)
  export/<task>-rationales/             the kept rationales as a datasets-loadable folder with its
                                        dataset card
Then, with a token: `huggingface-cli upload <user>/<name> export/<folder>` (or
`datasets.load_dataset("export/<task>-rationales").push_to_hub(...)`).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ftcot import paths
from ftcot.config import load_params
from ftcot.errors import FtcotError
from ftcot.export import export_model, export_rationales, model_card
from ftcot.io import read_json, read_jsonl
from ftcot.methods import FINETUNE_METHODS, FT_COT
from ftcot.paths import evaluation_run, path
from ftcot.provenance import teacher_label
from ftcot.student.models import adapter_base_name


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--task", required=True)
    parser.add_argument("--variant", default=FT_COT, choices=FINETUNE_METHODS)
    parser.add_argument("--seed", type=int, help="default: the first of params `seeds`")
    parser.add_argument("--out", default="export", type=Path)
    args = parser.parse_args()

    params = load_params()
    if args.task not in params.data.tasks:
        raise FtcotError(f"--task {args.task}: not in data.tasks of params.yaml ({', '.join(params.data.tasks)})")
    seed = params.seeds[0] if args.seed is None else args.seed
    model_dir = path(paths.MODEL, task=args.task, variant=args.variant, seed=seed)
    needed = [
        model_dir,
        path(paths.FINETUNE_METRICS, task=args.task, variant=args.variant, seed=seed),
        path(paths.EVAL_METRICS, task=args.task, run=evaluation_run(args.variant, seed)),
        path(paths.KEPT, task=args.task),
        path(paths.SUMMARY),
    ]
    missing = [str(p) for p in needed if not p.exists()]
    if missing:
        raise FtcotError(f"not there: {', '.join(missing)}; run `dvc repro` (or `dvc pull`) first")
    teacher = teacher_label(params.teacher.model_dump(mode="json"))
    dataset_name = f"{args.task}-rationales"
    summary = read_json(path(paths.SUMMARY))
    card = model_card(
        args.task,
        args.variant,
        seed,
        adapter_base_name(params.student.model),
        params.student.model_dump(mode="json"),
        read_json(needed[1]),
        read_json(needed[2]),
        teacher,
        summary["run"]["code"]["commit"],
        dataset_name,
    )
    model_out = args.out / f"{args.task}-{args.variant}-seed{seed}"
    export_model(model_dir, model_out, card)
    export_rationales(read_jsonl(needed[3]), args.out / dataset_name, args.task, teacher, str(needed[3]))
    print(f"wrote {model_out}/ and {args.out / dataset_name}/")


if __name__ == "__main__":
    try:
        main()
    except FtcotError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
