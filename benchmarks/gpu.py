"""The device check: what one GPU gives the project's training and evaluation, in under 8 minutes.

    python benchmarks/gpu.py                      # on a machine with a CUDA GPU: metrics/bench_gpu.json
    python benchmarks/gpu.py --smoke --out X.json # tiny shapes on whatever device is there (tests the code)

Without a GPU (and without --smoke) it prints one line and exits 0, writing nothing: a benchmark,
not a test. On a GPU it measures, in bf16:
- training tokens/s and MFU (model FLOPs utilisation against the GPU's dense bf16 peak, from the
  table below by device name) of GPT-2 124M, full fine-tuning, and of a SmolLM2-135M-shaped model
  with LoRA (r 8, every linear layer) — both built from their configs with random weights (nothing
  can be downloaded there; the throughput does not depend on the weights);
- evaluation questions/s of the evaluate stage's two engines on the same prompts: ``hf``
  (`generate_greedy`, the weights in bf16) and, where vLLM is installed (FTCOT_VLLM), ``vllm``
  (its OpenAI-compatible server, started and stopped as the stage does, serving the trained LoRA
  adapter over its base as the stage serves a LoRA student), and how often their
  greedy completions agree (random weights: an agreement under 100% there says how often bf16 ties break
  differently, not that one engine is wrong);
- peak GPU memory of each part.
Targets (issue: GPUs): GPT-2 124M training >= 40% MFU; vLLM >= 5x the Hugging Face questions/s.

FLOPs per trained token: 6 N + 12 L d T for full fine-tuning (N parameters without embeddings, L
layers, width d, sequence T: PaLM's appendix B), 4 N + 12 L d T under LoRA (no weight gradients for
the frozen base; the adapters' own FLOPs are negligible).
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from ftcot.paths import ADAPTER_DIR  # noqa: E402

# Dense bf16 tensor throughput (TFLOP/s) by device name, from the vendors' data sheets (without
# sparsity); the first key found in torch.cuda.get_device_name() is used.
BF16_PEAK_TFLOPS = {
    "H200": 989.0,
    "H100 SXM": 989.0,
    "H100 PCIe": 756.0,
    "H100": 989.0,
    "A100": 312.0,
    "L40S": 362.0,
    "L4": 121.0,
    "A10G": 70.0,
    "A10": 125.0,
    "RTX 4090": 165.0,
    "RTX 3090": 71.0,
}
GPT2_124M = {"n_layer": 12, "n_head": 12, "n_embd": 768, "vocab_size": 50257, "n_positions": 1024}
SMOLLM2_135M = {
    "hidden_size": 576,
    "intermediate_size": 1536,
    "num_hidden_layers": 30,
    "num_attention_heads": 9,
    "num_key_value_heads": 3,
    "vocab_size": 49152,
    "max_position_embeddings": 2048,
    "tie_word_embeddings": True,
}
SMOKE = {  # the same code paths on tiny shapes, for a test on a CPU
    "gpt2": {"n_layer": 2, "n_head": 2, "n_embd": 64, "vocab_size": 512, "n_positions": 128},
    "smollm2": {
        **SMOLLM2_135M,
        "hidden_size": 64,
        "intermediate_size": 128,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "vocab_size": 512,
    },
}


def peak_tflops(device_name: str) -> float | None:
    return next((v for k, v in BF16_PEAK_TFLOPS.items() if k in device_name), None)


def flops_per_token(n_params: int, layers: int, width: int, seq: int, lora: bool) -> float:
    return (4 if lora else 6) * n_params + 12 * layers * width * seq


def _sync(device: str) -> None:
    import torch

    if device == "cuda":
        torch.cuda.synchronize()


def _peak_gib(device: str) -> float | None:
    import torch

    return round(torch.cuda.max_memory_allocated() / 2**30, 2) if device == "cuda" else None


def measure_training(model, device: str, batch: int, seq: int, steps: int, lora: bool, layers: int, width: int) -> dict:
    """Tokens/s of optimizer steps on random tokens (bf16 autocast, fused AdamW on a GPU)."""
    import torch

    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    model.to(device).train()
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=1e-4, fused=device == "cuda")
    vocab = model.config.vocab_size
    generator = torch.Generator(device="cpu").manual_seed(0)
    data = torch.randint(0, vocab, (steps + 2, batch, seq), generator=generator)
    dtype = torch.bfloat16 if device == "cuda" else torch.float32

    def step(ids) -> float:
        ids = ids.to(device)
        with torch.autocast(device_type=device, dtype=dtype, enabled=device == "cuda"):
            loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return float(loss)

    for warm in data[:2]:
        step(warm)
    _sync(device)
    start = time.perf_counter()
    for ids in data[2:]:
        loss = step(ids)
    _sync(device)
    seconds = time.perf_counter() - start
    tokens_per_second = steps * batch * seq / seconds
    embeddings = sum(p.numel() for n, p in model.named_parameters() if "embed" in n or n.endswith("wte.weight"))
    n_params = sum(p.numel() for p in model.parameters()) - embeddings
    achieved = flops_per_token(n_params, layers, width, seq, lora) * tokens_per_second
    return {
        "batch": batch,
        "sequence": seq,
        "steps": steps,
        "tokens_per_second": round(tokens_per_second, 1),
        "achieved_tflops": round(achieved / 1e12, 2),
        "final_loss": round(loss, 4),
        "peak_memory_gib": _peak_gib(device),
    }


def measure_generation(model, tokenizer, device: str, prompts: list[str], max_new_tokens: int, batch: int) -> dict:
    import torch

    from ftcot.evaluation.generation import generate_greedy

    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    # as the evaluate stage decodes in bf16: the weights in bf16 (on a CPU smoke run, as they are)
    model.to(device, dtype=torch.bfloat16 if device == "cuda" else None).eval()
    _sync(device)
    start = time.perf_counter()
    out = generate_greedy(model, tokenizer, prompts, batch, max_new_tokens, desc="hf")
    _sync(device)
    seconds = time.perf_counter() - start
    return {
        "questions_per_second": round(len(prompts) / seconds, 3),
        "seconds": round(seconds, 2),
        "peak_memory_gib": _peak_gib(device),
        "texts": [o["text"] for o in out],
    }


def measure_vllm(folder: Path, base: Path, prompts: list[str], max_new_tokens: int) -> dict:
    """The evaluate stage's ``vllm`` engine: its server started on the student ``folder`` (vLLM in
    its own environment, named by FTCOT_VLLM), which serves the LoRA adapter saved in it over
    ``base``, as the stage serves a LoRA student; the same prompts, greedy."""
    from ftcot.evaluation.engines import EngineUnavailable, vllm_command
    from ftcot.evaluation.vllm_server import VllmGenerator

    try:
        command = vllm_command()
    except EngineUnavailable as err:
        return {"skipped": str(err)}
    with VllmGenerator.start(command, str(folder), "bf16", "the benchmark's model", base=str(base)) as generator:
        generator.greedy(prompts[:4], max_new_tokens, desc="vllm warm-up")  # compilation and graphs
        start = time.perf_counter()
        out = generator.greedy(prompts, max_new_tokens, desc="vllm")
        seconds = time.perf_counter() - start
    return {
        "questions_per_second": round(len(prompts) / seconds, 3),
        "seconds": round(seconds, 2),
        "lora_adapter": generator.serves_adapter,
        "texts": [o["text"] for o in out],
    }


def word_tokenizer(vocab_size: int, folder: Path | None = None):
    """A word-level tokenizer made on the spot (nothing can be downloaded on the device machine)."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    words = ["<pad>", "<unk>", "<eos>"] + [f"w{i}" for i in range(vocab_size - 3)]
    core = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=core, pad_token="<pad>", eos_token="<eos>", unk_token="<unk>")
    if folder is not None:
        tokenizer.save_pretrained(folder)
    return tokenizer


def run(smoke: bool, device: str) -> dict:
    import tempfile

    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    gpt2_shape = SMOKE["gpt2"] if smoke else GPT2_124M
    smol_shape = SMOKE["smollm2"] if smoke else SMOLLM2_135M
    batch, seq, steps = (2, 32, 2) if smoke else (16, 1024, 30)
    name = torch.cuda.get_device_name(0) if device == "cuda" else platform.processor() or "cpu"
    peak = peak_tflops(name) if device == "cuda" else None

    def mfu(result: dict) -> float | None:
        return round(result["achieved_tflops"] / peak, 3) if peak else None

    report: dict = {"device": device, "device_name": name, "bf16_peak_tflops": peak, "smoke": smoke}
    gpt2 = GPT2LMHeadModel(GPT2Config(**gpt2_shape))
    if device == "cuda":
        gpt2.config._attn_implementation = "sdpa"
    full = measure_training(gpt2, device, batch, seq, steps, False, gpt2_shape["n_layer"], gpt2_shape["n_embd"])
    report["gpt2_124m_full"] = {**full, "mfu": mfu(full), "target_mfu": 0.40}
    del gpt2

    questions, max_new_tokens = (8, 8) if smoke else (512, 128)
    with tempfile.TemporaryDirectory() as tmp:
        # Saved as the finetune stage saves a LoRA student: the merged model (what hf evaluates) and
        # the adapter in its adapter/ folder naming its base; here the base is saved beside them.
        folder, base = Path(tmp) / "model", Path(tmp) / "base"
        smol = LlamaForCausalLM(LlamaConfig(**smol_shape))
        smol.save_pretrained(base)  # before training: what vLLM serves the adapter over
        word_tokenizer(smol_shape["vocab_size"], base)
        config = LoraConfig(r=8, lora_alpha=16, target_modules="all-linear", task_type="CAUSAL_LM")
        lora = get_peft_model(smol, config)
        lora_seq = min(seq, 512)
        adapted = measure_training(
            lora, device, batch, lora_seq, steps, True, smol_shape["num_hidden_layers"], smol_shape["hidden_size"]
        )
        report["smollm2_135m_lora"] = {**adapted, "mfu": mfu(adapted)}
        lora.peft_config["default"].base_model_name_or_path = base.name
        lora.save_pretrained(folder / ADAPTER_DIR)
        model = lora.merge_and_unload()
        tokenizer = word_tokenizer(smol_shape["vocab_size"], folder)
        model.save_pretrained(folder)
        rng = torch.Generator().manual_seed(1)
        prompts = [
            " ".join(f"w{int(i)}" for i in torch.randint(0, smol_shape["vocab_size"] - 3, (int(n),), generator=rng))
            + " ###"
            for n in torch.randint(20, 120, (questions,), generator=rng)
        ]
        hf = measure_generation(model, tokenizer, device, prompts, max_new_tokens, batch=64 if not smoke else 4)
        # vLLM needs a GPU; the smoke run goes through the engine's code with whatever FTCOT_VLLM names
        vllm = {"skipped": "no GPU"}
        if device == "cuda" or smoke:
            vllm = measure_vllm(folder, base, prompts, max_new_tokens)
    evaluation = {
        "questions": questions,
        "max_new_tokens": max_new_tokens,
        "hf": {k: v for k, v in hf.items() if k != "texts"},
        "vllm": {k: v for k, v in vllm.items() if k != "texts"},
    }
    if "texts" in vllm:
        same = sum(a.strip() == b.strip() for a, b in zip(hf["texts"], vllm["texts"], strict=True))
        evaluation["agreement"] = round(same / questions, 3)
        evaluation["speedup"] = round(vllm["questions_per_second"] / hf["questions_per_second"], 2)
        evaluation["target_speedup"] = 5.0
    report["evaluation"] = evaluation
    report["machine"] = {"python": platform.python_version(), "torch": torch.__version__}
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="metrics/bench_gpu.json")
    parser.add_argument("--smoke", action="store_true", help="tiny shapes on whatever device is there")
    args = parser.parse_args()

    from ftcot.numerics import compute_device

    device = compute_device()
    if device == "cpu" and not args.smoke:
        print("benchmarks/gpu.py: no CUDA GPU on this machine; nothing measured, nothing written")
        return
    report = run(args.smoke, device)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=1, sort_keys=True) + "\n")
    print(json.dumps(report, indent=1, sort_keys=True))


if __name__ == "__main__":
    main()
