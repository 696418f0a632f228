"""What a benchmark ran on, recorded beside its figures: cores, the CPU's model and whether it
computes bf16 natively, the device, ATen's kernels and threads, the load when it started."""

from __future__ import annotations

import os
import platform
from pathlib import Path

from ftcot.numerics import cpu_has_native_bf16


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def describe_machine() -> dict:
    import torch  # here: the benchmarks that only read /proc/cpuinfo do not load it

    return {
        "cores": os.cpu_count(),
        "cpu": cpu_model(),
        "cpu_native_bf16": cpu_has_native_bf16(),
        "device": torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu",
        "torch_threads": torch.get_num_threads(),
        "aten_kernels": torch.backends.cpu.get_cpu_capability(),  # AVX2 where numerics are pinned (portable)
        "load_average_1min": round(os.getloadavg()[0], 2),
        "python": platform.python_version(),
        "platform": platform.platform(),
    }


def in_own_process(target, *args):
    """``target(*args, queue)`` in a fresh (spawned) process, so that its peak memory is its own;
    returns what it put on the queue. A process that dies without an answer (an import error, the
    kernel's OOM killer) is an error here, not a wait without end."""
    import multiprocessing
    import queue as queues

    context = multiprocessing.get_context("spawn")
    answers = context.Queue()
    worker = context.Process(target=target, args=(*args, answers))
    worker.start()
    try:
        while True:
            try:
                return answers.get(timeout=5)
            except queues.Empty:
                if not worker.is_alive():
                    why = f"its process exited (code {worker.exitcode}) without a result"
                    raise RuntimeError(f"{target.__name__}: {why}") from None
    finally:
        worker.join()
