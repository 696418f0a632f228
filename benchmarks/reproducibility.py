"""Do the pipeline's outputs depend on the CPU? The default pipeline on two simulated CPUs.

    python benchmarks/reproducibility.py     # writes metrics/bench_reproducibility.json

Runs the real `dvc repro` of the default params.yaml four times, each in its own temporary copy
of the project with a cold teacher cache: on this CPU as it is (``this-cpu``) and on a simulated
other one (``avx2-1-core``: ATen and MKL told to use their AVX2 kernels, one core; see
``ftcot.testing.project.SIMULATED_CPUS``), each once with the stages' numerics pinned
(``portable``, the default) and once not (``FTCOT_NUMERICS=native``). Every tracked output
(dvc.lock, data, models, metrics, curves, report) is compared between the two CPUs.

- ``portable.identical`` must be true: the committed results reproduce on another CPU;
- ``native.differing`` lists what the pinning protects against (the control);
- ``speedup`` = seconds of the native run / seconds of the portable run on this CPU (ours ÷
  baseline in throughput; below 1 is the price of reproducibility).
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
from pathlib import Path

from machine import cpu_model

from ftcot.io import write_json
from ftcot.testing.project import (
    REPO,
    SIMULATED_CPUS,
    copy_project,
    differing,
    project_env,
    run,
    tracked_outputs,
)


def repro(root: Path, cpu: str, numerics: str) -> tuple[float, dict[str, str]]:
    simulated = SIMULATED_CPUS[cpu]
    env = project_env(root, FTCOT_NUMERICS=numerics, **simulated["env"])
    start = time.perf_counter()
    run([*simulated["prefix"], "dvc", "repro"], root, env)
    return time.perf_counter() - start, tracked_outputs(root)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default=str(REPO / "metrics" / "bench_reproducibility.json"))
    args = parser.parse_args()

    params = (REPO / "params.yaml").read_text()
    results: dict = {}
    with tempfile.TemporaryDirectory(prefix="ftcot-repro-") as tmp:
        for numerics in ("portable", "native"):
            runs = {}
            for cpu in ("this-cpu", "avx2-1-core"):
                root = copy_project(Path(tmp) / f"{numerics}-{cpu}", params)
                seconds, outputs = repro(root, cpu, numerics)
                runs[cpu] = {"seconds": round(seconds, 1), "outputs": outputs}
                print(f"{numerics:8s} {cpu:12s} {seconds:6.1f} s, {len(outputs)} outputs", flush=True)
            diff = differing(runs["this-cpu"]["outputs"], runs["avx2-1-core"]["outputs"])
            results[numerics] = {
                "identical": not diff,
                "outputs_compared": len(runs["this-cpu"]["outputs"]),
                "differing": diff,
                "seconds": {cpu: r["seconds"] for cpu, r in runs.items()},
            }
    results["speedup"] = round(results["native"]["seconds"]["this-cpu"] / results["portable"]["seconds"]["this-cpu"], 3)
    results["speedup_definition"] = "whole default dvc repro on this CPU: seconds with native numerics / with portable"
    results["simulated_cpus"] = SIMULATED_CPUS
    results["machine"] = {
        "cores": os.cpu_count(),
        "device": "cpu",
        "cpu": cpu_model(),
        "python": platform.python_version(),
        "platform": platform.platform(),
    }
    write_json(args.out, results)
    native_diff = len(results["native"]["differing"])
    print(f"portable identical: {results['portable']['identical']}; native: {native_diff} outputs differ")
    print(f"speedup (native / portable time): {results['speedup']}")


if __name__ == "__main__":
    main()
