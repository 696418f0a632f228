"""Stage prompt: the pretrained student, before fine-tuning, prompted on the test set (the paper's
zero-shot, zero-shot-CoT and few-shot-CoT baselines; formats in ftcot/methods.py).

    python stages/prompt.py --method few_shot_cot --test data/finetune_sets/coin_flip/test.jsonl \
        --examples data/finetune_sets/coin_flip/train_ft_cot.jsonl \
        --predictions data/evaluate/coin_flip/few_shot_cot.jsonl \
        --metrics metrics/evaluate/coin_flip/few_shot_cot.json

Few-shot-CoT's worked examples are evaluate.few_shot_k kept teacher rationales of train
questions (seeded choice). Runs only for the methods listed in methods.prompting.
"""

import argparse

from ftcot.config import load_params
from ftcot.evaluation.engines import open_generator
from ftcot.evaluation.memory import Batching
from ftcot.evaluation.prompting import run_prompting, select_exemplars
from ftcot.evaluation.scoring import read_test_set, score_and_write
from ftcot.io import read_jsonl
from ftcot.methods import PROMPTING_METHODS, get_method
from ftcot.stage import run_stage
from ftcot.student.models import student_precision


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--method", required=True, choices=PROMPTING_METHODS)
    parser.add_argument("--test", required=True)
    parser.add_argument("--examples", required=True, help="kept train rationales (few-shot-CoT's worked examples)")
    parser.add_argument("--predictions", required=True)
    parser.add_argument("--metrics", required=True)
    args = parser.parse_args()

    params = load_params()
    test = read_test_set(args.test)
    exemplars = []
    if get_method(args.method).exemplars:
        examples = read_jsonl(args.examples, required=("id", "question_id", "question", "answer", "rationale"))
        exemplars = select_exemplars(examples, params.evaluate.few_shot_k, params.seed)
    evaluate = params.evaluate
    precision = student_precision(params.student.model, params.student.precision)
    batching = Batching(evaluate.batch_size, evaluate.memory_fraction)
    with open_generator(evaluate.engine, params.student.model, precision, batching, what="student.model") as generator:
        generations = run_prompting(args.method, generator, test, evaluate.max_new_tokens, exemplars)
    run = {"method": args.method, "model": params.student.model, "precision": precision, "engine": evaluate.engine}
    score_and_write(test, generations, args.method, run, args.predictions, args.metrics, evaluate.max_new_tokens)


if __name__ == "__main__":
    run_stage(main)
