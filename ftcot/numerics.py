"""CPU numerics that do not depend on the machine, so a fresh clone reproduces dvc.lock.

On CPU the same float32 model trained with the same seed gives different weights on different
machines, because three things follow the hardware: which of ATen's kernels run (AVX-512, AVX2 or
plain: the vector width changes the order of every reduction), which code path MKL takes for
matrix products (chosen by CPU model), and how many threads split a reduction. Measured on the
default pipeline's vanilla Coin Flip student: each of the three alone changes the saved weights,
and the best epoch moved from step 60 to 180.

The pipeline's stages therefore pin all three before the first tensor operation (ATen reads
``ATEN_CPU_CAPABILITY`` and MKL reads ``MKL_CBWR`` when first used, not when imported):

- ``ATEN_CPU_CAPABILITY=avx2``: the AVX2 kernels, which every x86-64 CPU since 2013-2015 runs
  (Intel Haswell, AMD Excavator / Zen), also on CPUs that have AVX-512;
- ``MKL_CBWR=COMPATIBLE``: MKL's conditional-numerical-reproducibility branch that gives the same
  results on every x86-64 CPU, Intel or AMD (the ``AVX2`` branch is Intel-only: MKL ignores it
  on AMD);
- ``ONEDNN_MAX_CPU_ISA=AVX2`` for oneDNN kernels, and a fixed number of threads
  (``FTCOT_NUM_THREADS``, default 2), whatever the number of cores.

The cost is measured by ``benchmarks/reproducibility.py``. ``FTCOT_NUMERICS=native`` turns the
pinning off (all cores, the widest kernels): faster on large CPUs, but results then depend on the
machine and no longer match the committed ones. GPU kernels are not affected either way.
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

from ftcot.errors import FtcotError

log = logging.getLogger("ftcot")

PORTABLE_ENV = {
    "ATEN_CPU_CAPABILITY": "avx2",
    "MKL_CBWR": "COMPATIBLE",
    "ONEDNN_MAX_CPU_ISA": "AVX2",
}
DEFAULT_THREADS = 2


class NumericsError(FtcotError, RuntimeError):
    """The pinning came too late: a tensor operation ran before it."""


def numerics_mode() -> str:
    mode = os.environ.get("FTCOT_NUMERICS", "portable")
    if mode not in ("portable", "native"):
        raise NumericsError(f"FTCOT_NUMERICS must be 'portable' or 'native', got {mode!r}")
    return mode


def num_threads() -> int:
    raw = os.environ.get("FTCOT_NUM_THREADS", str(DEFAULT_THREADS))
    if not raw.isdigit() or int(raw) < 1:
        raise NumericsError(f"FTCOT_NUM_THREADS must be a positive integer, got {raw!r}")
    return int(raw)


def cpu_has_avx2() -> bool:
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:  # not Linux: assume a current CPU
        return True
    return " avx2" in flags


def pin_environment() -> None:
    """Sets the variables the math libraries read at their first use; overrides what the caller's
    environment says, since that is what differs from machine to machine."""
    if numerics_mode() == "native":
        return
    os.environ.update(PORTABLE_ENV)
    threads = str(num_threads())
    os.environ["OMP_NUM_THREADS"] = threads
    os.environ["MKL_NUM_THREADS"] = threads


def pin_cpu_numerics() -> str:
    """Pins the environment and torch's thread count; returns a one-line description.

    Must run before the process's first tensor operation; raises if one already ran.
    """
    pin_environment()
    torch = sys.modules.get("torch")
    if torch is None:  # a stage without torch; one that imports it later inherits the environment
        return f"{numerics_mode()} (torch not loaded)"
    if numerics_mode() == "native":
        return f"native (ATen {torch.backends.cpu.get_cpu_capability()}, {torch.get_num_threads()} threads)"
    torch.set_num_threads(num_threads())
    capability = torch.backends.cpu.get_cpu_capability()
    if capability != "AVX2":
        if cpu_has_avx2():
            raise NumericsError(
                f"ATen runs its {capability} kernels on a CPU with AVX2: a tensor operation ran before the "
                "numerics were pinned (call ftcot.numerics.pin_cpu_numerics first)"
            )
        log.warning("no AVX2 on this CPU: ATen runs its %s kernels; results can differ from the reference", capability)
    return f"portable (ATen {capability}, MKL {os.environ['MKL_CBWR']}, {torch.get_num_threads()} threads)"


def compute_device() -> str:
    """Where a stage puts its model: ``cuda`` when a GPU is visible, else ``cpu`` (said once)."""
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def device_description() -> str:
    """Where tensors run, as a stable one-liner for run metadata (no host name, no clock):
    ``cuda (NVIDIA H100 80GB HBM3)`` or ``cpu, portable numerics (AVX2 kernels, 2 threads)``."""
    import torch

    if torch.cuda.is_available():
        return f"cuda ({torch.cuda.get_device_name(0)})"
    kernels = f"{torch.backends.cpu.get_cpu_capability()} kernels, {torch.get_num_threads()} threads"
    return f"cpu, {numerics_mode()} numerics ({kernels})"


def cpu_has_native_bf16() -> bool:
    """Whether this CPU computes bfloat16 in hardware (AVX-512 BF16 or AMX); elsewhere torch emulates
    it, more slowly than float32."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return " avx512_bf16" in flags or " amx_bf16" in flags


def resolve_precision(precision: str, pretrained: bool) -> str:
    """``student.precision`` as it runs here: as asked, or for ``auto``: on a CUDA GPU bf16, or fp16
    where the GPU has no bf16 (before Ampere: V100, T4); on a CPU bf16 where it computes it natively
    (AVX-512 BF16 or AMX, under ``FTCOT_NUMERICS=native``) for a pretrained student, else fp32. So
    the default (portable numerics, the tiny students) stays fp32 and byte-identical on every CPU."""
    import torch

    if precision != "auto":
        return precision
    if torch.cuda.is_available():
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    return "bf16" if pretrained and numerics_mode() == "native" and cpu_has_native_bf16() else "fp32"
