"""Stage check: validate the whole of params.yaml, and every task file, before any other stage runs.

    python stages/check.py --out data/params.checked

Every other stage depends on this stage's output, so `dvc repro` and `dvc exp run` run it first.
It depends on params.yaml as a file (not on single keys), so any edit of the file, an unknown or
misspelt key included, reruns it, and a bad file stops the pipeline here with a message naming
the key, even when no other stage would have rerun. Its output is the same text whatever the
parameters are, so a valid edit reruns only the stages whose own parameters changed. It also
depends on the task files (the built-in ones and data.task_dir's), which the parameters are
checked against: a task file that does not follow the schema stops the run here, naming the file
and the key. An evaluate.engine this machine cannot run (vLLM not installed) stops it here too,
before any student is trained.
"""

import argparse
from pathlib import Path

from ftcot.config import load_params
from ftcot.evaluation.engines import check_engine
from ftcot.stage import log, run_stage

CHECKED = "params.yaml is complete and valid (ftcot/config.py).\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True)
    args = parser.parse_args()

    params = load_params()
    check_engine(params.evaluate.engine)  # before any student is trained for it
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(CHECKED)
    log.info("params.yaml: every key known, typed and present")


if __name__ == "__main__":
    run_stage(main)
