"""Stage evaluate: a fine-tuned student decodes the test set (greedy, batched); strict and flexible
accuracy, and with evaluate.samples = k a self-consistency vote over k sampled completions.

    python stages/evaluate.py --variant ft_cot --seed 0 --model models/coin_flip/ft_cot/seed0 \
        --test data/finetune_sets/coin_flip/test.jsonl \
        --predictions data/evaluate/coin_flip/ft_cot/seed0.jsonl \
        --metrics metrics/evaluate/coin_flip/ft_cot/seed0.json

--seed is the student's (one of params `seeds`); it seeds the self-consistency samples.
"""

import argparse
import functools

from ftcot.config import load_params
from ftcot.evaluation.engines import open_generator
from ftcot.evaluation.memory import Batching
from ftcot.evaluation.scoring import read_test_set, score_and_write
from ftcot.methods import FINETUNE_METHODS
from ftcot.stage import run_stage
from ftcot.student.formats import answer_end, student_prompt
from ftcot.student.models import student_precision


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--variant", required=True, choices=FINETUNE_METHODS)
    parser.add_argument("--seed", required=True, type=int, help="the student's seed (one of params seeds)")
    parser.add_argument("--model", required=True)
    parser.add_argument("--test", required=True)
    parser.add_argument("--predictions", required=True)
    parser.add_argument("--metrics", required=True)
    args = parser.parse_args()

    params = load_params()
    test = read_test_set(args.test)
    evaluate = params.evaluate
    # student.model: the precision evaluation runs in, and what a LoRA student's adapter goes over
    # where the engine serves adapters (vllm)
    student = params.student.model
    precision = student_precision(student, params.student.precision)
    batching = Batching(evaluate.batch_size, evaluate.memory_fraction)
    # Decoding of a completion ends with its answer's line: what is read of it is on that line.
    ends = functools.partial(answer_end, args.variant)
    with open_generator(evaluate.engine, args.model, precision, batching, "--model", base=student) as generator:
        prompts = [student_prompt(ex["question"], generator.encoder_decoder) for ex in test]
        generations = generator.greedy(prompts, evaluate.max_new_tokens, ends=ends)
        samples = None
        if evaluate.samples:
            samples = generator.samples(
                prompts, evaluate.max_new_tokens, evaluate.samples, evaluate.temperature, args.seed, ends=ends
            )
    run = {"method": args.variant, "seed": args.seed, "precision": precision, "engine": evaluate.engine}
    score_and_write(
        test,
        generations,
        args.variant,
        run,
        predictions_path=args.predictions,
        metrics_path=args.metrics,
        max_new_tokens=evaluate.max_new_tokens,
        samples=samples,
        label=args.model,  # the model's folder names the task, the method and the seed
    )


if __name__ == "__main__":
    run_stage(main)
