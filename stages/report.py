"""Stage report: the paper's table and everything around it.

    python stages/report.py

Reads the outputs of the other stages where ftcot/paths.py says they are (the same paths as in
dvc.yaml), and writes metrics/summary.json (every number of the report, and what produced the run:
code, resolved params, packages, devices, seeds, teacher), metrics/headline.json (the compact
numbers `dvc metrics diff` and `dvc exp show` compare) and, in report/, report.md, report.html
(self-contained: images inline), accuracy.png (a bar chart per task), curves_<task>.png (training
curves, from the finetune stage's metrics), sweep_<name>.png (each sweep of scripts/sweep.py
that describes this run) and
accuracy.json (the rows of `dvc plots`). Every method listed in params.yaml `methods` must have
been evaluated, on exactly the task's test set.
"""

import argparse

from ftcot.config import load_params
from ftcot.report.build import write_report
from ftcot.stage import run_stage


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.parse_args()
    params = load_params()
    write_report(params)  # reads every section: the report records the resolved params


if __name__ == "__main__":
    run_stage(main)
