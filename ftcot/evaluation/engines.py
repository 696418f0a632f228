"""Who generates for stages evaluate and prompt (``evaluate.engine``): the student in this process
through Hugging Face (``hf``), or vLLM's OpenAI-compatible server, which the stage starts on the
student's folder and stops when done (``vllm``).

vLLM pins its own torch and CUDA, so it lives in an environment of its own, apart from the
project's CPU-pinned one; ``FTCOT_VLLM`` names its command (``/opt/vllm/bin/vllm``; default: ``vllm``
on the PATH). Both engines take the same prompts and apply the same stop rules and answer ends to
the text, so scoring does not depend on the engine. Greedy decoding on the two agrees up to the
floating-point effects of different kernels: ``benchmarks/gpu.py`` measures the agreement.

This module imports neither torch nor the client: stage check reads it to refuse an engine that
is not installed before anything is trained.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import shlex
import shutil
from collections.abc import Callable, Iterator, Sequence
from typing import Protocol

from ftcot.errors import FtcotError

HF = "hf"
VLLM = "vllm"
ENGINES = {
    HF: "the student in this process, through Hugging Face transformers",
    VLLM: "vLLM's OpenAI-compatible server, in its own environment (FTCOT_VLLM names its command)",
}
ENGINE_NAMES = tuple(ENGINES)
VLLM_ENV = "FTCOT_VLLM"
INSTALL_VLLM = (
    "install vLLM in an environment of its own (it pins its own torch): python3 -m venv .venv-vllm && "
    ".venv-vllm/bin/pip install vllm, then export FTCOT_VLLM=$PWD/.venv-vllm/bin/vllm"
)


class EngineUnavailable(FtcotError, RuntimeError):
    """``evaluate.engine`` names an engine this machine cannot run."""


class Generator(Protocol):
    """What the stages generate through, whatever the engine."""

    encoder_decoder: bool

    def greedy(
        self,
        prompts: Sequence[str],
        max_new_tokens: int,
        desc: str = "generate",
        stop: Sequence[str] = (),
        ends: Callable[[str], int | None] | None = None,
    ) -> list[dict]: ...

    def samples(
        self,
        prompts: Sequence[str],
        max_new_tokens: int,
        num_samples: int,
        temperature: float,
        seed: int,
        ends: Callable[[str], int | None] | None = None,
    ) -> list[list[dict]]: ...


def vllm_command() -> list[str]:
    """The command that starts vLLM (``FTCOT_VLLM``, split as a shell would, or ``vllm`` on the
    PATH); an error saying how to install it where there is none."""
    raw = os.environ.get(VLLM_ENV, "").strip()
    command = shlex.split(raw) if raw else ["vllm"]
    found = shutil.which(command[0])
    if found is None:
        where = f"{VLLM_ENV}={raw!r} names no executable" if raw else f"no `vllm` on the PATH and {VLLM_ENV} unset"
        raise EngineUnavailable(f"evaluate.engine: {VLLM} needs vLLM, and {where}: {INSTALL_VLLM}")
    return [found, *command[1:]]


def check_engine(engine: str) -> None:
    """Raises, naming ``evaluate.engine``, where the engine cannot run on this machine."""
    if engine == VLLM:
        vllm_command()


# Where each engine's generator is, imported when the engine is used (tests/test_stage_deps.py
# counts these modules as imported by whoever imports open_generator).
GENERATORS = {
    HF: ("ftcot.evaluation.generation", "HFGenerator"),
    VLLM: ("ftcot.evaluation.vllm_server", "VllmGenerator"),
}


@contextlib.contextmanager
def open_generator(
    engine: str, model: str, precision: str, batching, what: str, base: str | None = None
) -> Iterator[Generator]:
    """The student ``model`` (a folder, a built-in name or a hub id; ``what`` names where it comes
    from in errors), ready to generate on ``engine`` in ``precision``; for vLLM, a server that
    stops when the block ends, serving a LoRA student's adapter over ``base`` (``student.model``,
    the pretrained model it was trained over)."""
    if engine not in GENERATORS:
        raise EngineUnavailable(f"evaluate.engine: unknown engine {engine!r}; known: {', '.join(ENGINES)}")
    module, name = GENERATORS[engine]
    generator = getattr(importlib.import_module(module), name)
    if engine == VLLM:
        with generator.start(vllm_command(), model, precision, what, base) as running:
            yield running
    else:
        yield generator.load(model, precision, batching, what)
