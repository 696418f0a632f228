"""The ``vllm`` engine: vLLM's OpenAI-compatible server, started by the stage on the student's folder,
asked through the official ``openai`` client, stopped when the stage is done.

The prompts go as token ids, tokenized here exactly as the ``hf`` engine tokenizes them, so both
engines see the same tokens (no special tokens added by the server). The server cannot stop a
completion where its answer ends (a Python rule, :func:`ftcot.student.formats.answer_end`), so it
stops at EOS, at the stop strings or at the length limit, and the text is cut here by the same
rule as in the ``hf`` engine.

A LoRA student is served as what it is: its adapter (the ``adapter/`` subfolder peft wrote) over the
pretrained base it was trained on (``student.model``), with ``--enable-lora``, the way vLLM serves
many fine-tuned adapters over one base (the merged model saved beside the adapter is what the
``hf`` engine loads). A fully fine-tuned student is served as its folder.

``FTCOT_VLLM_STARTUP_SECONDS`` (default 900) bounds the wait for the server: loading a model and
capturing its CUDA graphs takes minutes.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from pathlib import Path

from ftcot.evaluation.engines import VLLM, EngineUnavailable
from ftcot.evaluation.generation import GenerationError, stop_at
from ftcot.paths import ADAPTER_DIR

SERVED_NAME = "student"  # what the requests name: the model, or the adapter over BASE_NAME
BASE_NAME = "base"
# vLLM sizes its LoRA buffers for one of these ranks (--max-lora-rank; its LoRAConfig's choices).
LORA_RANKS = (1, 8, 16, 32, 64, 128, 256, 320, 512)
STARTUP_SECONDS_ENV = "FTCOT_VLLM_STARTUP_SECONDS"
PROMPTS_PER_REQUEST = 256  # the server batches them itself; a request's size only bounds its body
DTYPES = {"bf16": "bfloat16", "fp16": "float16", "fp32": "float32"}
log = logging.getLogger("ftcot")


def startup_seconds() -> float:
    """``FTCOT_VLLM_STARTUP_SECONDS`` (default 900), read before the server is started."""
    raw = os.environ.get(STARTUP_SECONDS_ENV, "900")
    try:
        seconds = float(raw)
    except ValueError:
        seconds = 0.0
    if not seconds > 0:
        raise EngineUnavailable(f"{STARTUP_SECONDS_ENV} must be a number of seconds above 0, got {raw[:20]!r}")
    return seconds


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _tail(path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def wait_until_ready(process: subprocess.Popen, base_url: str, log_path: Path, timeout: float) -> None:
    """Polls the server's model list until it answers; an error with the end of its log if the
    process exits first or the time runs out."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise EngineUnavailable(
                f"evaluate.engine: {VLLM}: the server exited with code {process.returncode} before it was ready; "
                f"the end of its log ({log_path}):\n{_tail(log_path)}"
            )
        try:
            with urllib.request.urlopen(f"{base_url}/models", timeout=5) as answer:
                if answer.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.5)
    raise EngineUnavailable(
        f"evaluate.engine: {VLLM}: the server did not answer within {timeout:.0f} s ({STARTUP_SECONDS_ENV} sets "
        f"the wait); the end of its log ({log_path}):\n{_tail(log_path)}"
    )


def stop_server(process: subprocess.Popen, grace: float = 30.0) -> None:
    """SIGTERM to the server's process group (vLLM starts workers of its own), SIGKILL after ``grace``."""
    if process.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(grace)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()


def model_source(model: str) -> str:
    """What the server loads: a built-in name's converted folder, else the folder or hub id."""
    from ftcot.student.smollm2 import smollm2_folder

    return str(smollm2_folder(model) or model)


def lora_rank_slot(rank: int) -> int:
    """The smallest ``--max-lora-rank`` vLLM accepts that holds an adapter of ``rank``."""
    fitting = [slot for slot in LORA_RANKS if slot >= rank]
    if not fitting:
        raise EngineUnavailable(f"evaluate.engine: {VLLM} serves LoRA ranks up to {LORA_RANKS[-1]}, not {rank}")
    return fitting[0]


def served_model(model: str, base: str | None, what: str) -> tuple[str, list[str]]:
    """What ``vllm serve`` loads for the student folder ``model`` and the arguments that say how it
    serves it as ``SERVED_NAME``: a LoRA student's adapter over its pretrained ``base``
    (``student.model``), or the folder itself."""
    from ftcot.student.models import adapter_base_name

    adapter = Path(model) / ADAPTER_DIR
    config_path = adapter / "adapter_config.json"
    if base is None or not config_path.is_file():
        return model_source(model), ["--served-model-name", SERVED_NAME]
    config = json.loads(config_path.read_text())
    trained_over = config.get("base_model_name_or_path")
    if trained_over != adapter_base_name(base):
        raise EngineUnavailable(
            f"{what} = {model!r}: its LoRA adapter was trained over {trained_over!r}, but student.model is "
            f"{base!r}: train the student again (dvc repro) or set student.model back"
        )
    rank = lora_rank_slot(int(config["r"]))
    lora = ["--enable-lora", "--lora-modules", f"{SERVED_NAME}={adapter.resolve()}", "--max-lora-rank", str(rank)]
    return model_source(base), ["--served-model-name", BASE_NAME, *lora]


class VllmGenerator:
    """A :class:`ftcot.evaluation.engines.Generator` over a running vLLM server."""

    encoder_decoder = False  # vLLM serves decoder-only students here

    def __init__(self, base_url: str, tokenizer, context: int | None, serves_adapter: bool = False):
        from openai import OpenAI

        self.base_url, self.tokenizer, self.context = base_url, tokenizer, context
        self.serves_adapter = serves_adapter  # a LoRA adapter over its base, rather than a whole model
        self.client = OpenAI(base_url=base_url, api_key="not-needed", timeout=3600.0, max_retries=2)

    @classmethod
    @contextlib.contextmanager
    def start(
        cls, command: Sequence[str], model: str, precision: str, what: str, base: str | None = None
    ) -> Iterator[VllmGenerator]:
        """A server on ``model`` (``what`` names its origin in errors; ``base`` is the pretrained
        model a LoRA student was trained over), up for the block's length."""
        from transformers import AutoConfig, AutoTokenizer

        source = model_source(model)
        try:
            config = AutoConfig.from_pretrained(source)
            tokenizer = AutoTokenizer.from_pretrained(source)
        except (OSError, ValueError) as err:
            raise EngineUnavailable(f"{what} = {model!r} could not be read ({type(err).__name__}: {err})") from None
        if getattr(config, "is_encoder_decoder", False):
            raise EngineUnavailable(
                f"evaluate.engine: {VLLM} serves decoder-only students, and {what} = {model!r} is an "
                "encoder-decoder: use evaluate.engine: hf"
            )
        wait = startup_seconds()  # a bad value stops the stage before a server starts
        served, how = served_model(model, base, what)
        port = free_port()
        base_url = f"http://127.0.0.1:{port}/v1"
        args = [*command, "serve", served, "--host", "127.0.0.1", "--port", str(port)]
        args += [*how, "--dtype", DTYPES[precision], "--seed", "0"]
        log_path = Path(tempfile.mkstemp(prefix="ftcot-vllm-", suffix=".log")[1])
        log.info("%s: starting %s (log: %s)", VLLM, " ".join(args), log_path)
        with open(log_path, "wb") as log_file:
            process = subprocess.Popen(args, stdout=log_file, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            wait_until_ready(process, base_url, log_path, wait)
            yield cls(base_url, tokenizer, getattr(config, "max_position_embeddings", None), "--enable-lora" in how)
        finally:
            stop_server(process)
        log_path.unlink(missing_ok=True)  # kept where the server failed: the error names it

    def _budget(self, ids: list[int], max_new_tokens: int) -> int:
        budget = max_new_tokens if self.context is None else min(max_new_tokens, self.context - len(ids))
        if budget < 1:
            raise GenerationError(
                f"a prompt of {len(ids)} tokens leaves no room in the model's context of {self.context}"
            )
        return budget

    def _complete(self, prompts: Sequence[str], max_new_tokens: int, stop: Sequence[str], **sampling) -> list[list]:
        """The server's choices per prompt (``n`` of them), prompts grouped by their token budget."""
        encoded = [self.tokenizer(p, add_special_tokens=False)["input_ids"] for p in prompts]
        budgets = [self._budget(ids, max_new_tokens) for ids in encoded]
        choices: list[list] = [[] for _ in prompts]
        for budget in sorted(set(budgets)):
            group = [i for i, b in enumerate(budgets) if b == budget]
            for start in range(0, len(group), PROMPTS_PER_REQUEST):
                part = group[start : start + PROMPTS_PER_REQUEST]
                answer = self.client.completions.create(
                    model=SERVED_NAME,
                    prompt=[encoded[i] for i in part],
                    max_tokens=budget,
                    stop=list(stop) or None,
                    **sampling,
                )
                n = sampling.get("n", 1)
                for choice in sorted(answer.choices, key=lambda c: c.index):
                    choices[part[choice.index // n]].append(choice)
        return choices

    def _result(self, choice, stop: Sequence[str], ends) -> dict:
        text, stopped = choice.text, choice.finish_reason == "stop"
        cut = stop_at(text, stop, ends)
        if cut is not None:
            text, stopped = text[:cut], True
        tokens = len(self.tokenizer(text, add_special_tokens=False)["input_ids"])
        return {"text": text, "generated_tokens": tokens, "truncated": not stopped}

    # The Generator protocol's methods (ftcot.evaluation.engines: their types).
    def greedy(self, prompts, max_new_tokens, desc="generate", stop=(), ends=None) -> list[dict]:
        log.info("%s: %d prompts to %s", desc, len(prompts), VLLM)
        choices = self._complete(prompts, max_new_tokens, stop, temperature=0.0)
        return [self._result(c[0], stop, ends) for c in choices]

    def samples(self, prompts, max_new_tokens, num_samples, temperature, seed, ends=None) -> list[list[dict]]:
        log.info("sample: %d prompts x %d to %s", len(prompts), num_samples, VLLM)
        sampling = {"n": num_samples, "temperature": temperature, "top_p": 1.0, "seed": seed}
        choices = self._complete(prompts, max_new_tokens, (), extra_body={"top_k": -1}, **sampling)
        return [[self._result(c, (), ends) for c in group] for group in choices]
