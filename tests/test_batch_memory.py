"""Batches sized by memory: the estimate of a sequence's memory (its KV cache counted exactly),
the packing of sorted prompts into batches that fit, and decoding that gives the same completions
whatever the batches."""

import logging

import psutil
import pytest
import torch
from test_generation import model_and_tokenizer
from transformers import (
    GPT2Config,
    GPT2LMHeadModel,
    LlamaConfig,
    LlamaForCausalLM,
    T5Config,
    T5ForConditionalGeneration,
)

from ftcot.config import ConfigError, parse_params
from ftcot.evaluation import memory
from ftcot.evaluation.generation import generate_greedy, generate_samples
from ftcot.evaluation.memory import Batching, ModelShape, kv_cache_bytes, plan_batches, sequence_bytes
from ftcot.student.models import build_tiny_llama


def _cache_bytes(cache) -> int:
    caches = (
        [cache.self_attention_cache, cache.cross_attention_cache]
        if hasattr(cache, "cross_attention_cache")
        else [cache]
    )
    return sum(layer.keys.nbytes + layer.values.nbytes for c in caches for layer in c.layers)


MODELS = {
    # grouped-query attention, as SmolLM2 (9 heads, 3 of keys and values)
    "llama": lambda: LlamaForCausalLM(
        LlamaConfig(
            vocab_size=100,
            hidden_size=48,
            intermediate_size=96,
            num_hidden_layers=3,
            num_attention_heads=6,
            num_key_value_heads=2,
            bos_token_id=1,
            eos_token_id=2,
        )
    ),
    "gpt2": lambda: GPT2LMHeadModel(
        GPT2Config(vocab_size=100, n_embd=32, n_layer=2, n_head=4, bos_token_id=1, eos_token_id=2)
    ),
    "t5": lambda: T5ForConditionalGeneration(
        T5Config(
            vocab_size=100,
            d_model=32,
            d_ff=64,
            d_kv=8,
            num_layers=2,
            num_decoder_layers=3,
            num_heads=4,
            decoder_start_token_id=0,
            eos_token_id=2,
        )
    ),
}


@pytest.mark.parametrize("name", sorted(MODELS))
def test_the_kv_cache_estimate_is_the_cache_a_forward_pass_keeps(name):
    model = MODELS[name]()
    prompt, new = 7, 5
    with torch.no_grad():
        if model.config.is_encoder_decoder:
            out = model(
                input_ids=torch.ones(2, prompt, dtype=torch.long),
                decoder_input_ids=torch.ones(2, new, dtype=torch.long),
                use_cache=True,
            )
        else:
            out = model(input_ids=torch.ones(2, prompt + new, dtype=torch.long), use_cache=True)
    shape = ModelShape.of(model.config)
    assert _cache_bytes(out.past_key_values) == 2 * kv_cache_bytes(shape, prompt + new)
    assert sequence_bytes(shape, prompt, new) > kv_cache_bytes(shape, prompt + new)
    # a model that computes every position's logits costs a vocabulary row per prompt token more
    assert sequence_bytes(shape, prompt, new, all_logits=True) - sequence_bytes(shape, prompt, new) == (
        4 * shape.vocab * (prompt - 1)
    )


def test_a_config_without_sizes_is_refused_by_name():
    class Odd:
        vocab_size = 10

    with pytest.raises(ValueError, match="Odd"):
        ModelShape.of(Odd())


def test_with_memory_to_spare_the_batches_are_the_asked_size():
    lengths = sorted([3, 9, 4, 4, 12, 30, 7] * 10)
    plan = plan_batches(lengths, 16, budget=10**12, cost=lambda n: 1000 * n)
    assert [len(b) for b in plan] == [16, 16, 16, 16, 6]
    assert [i for b in plan for i in b] == list(range(len(lengths)))


def test_short_of_memory_each_batch_fits_and_short_prompts_batch_more():
    lengths = sorted(range(1, 101))
    budget = 2000

    def cost(n):
        return 10 * n

    plan = plan_batches(lengths, 64, budget, cost)
    assert [i for b in plan for i in b] == list(range(100))  # every prompt once, in order
    for batch in plan:
        assert len(batch) * cost(lengths[batch[-1]]) <= budget
        # as large as the budget allows: one more prompt would not fit (or none is left)
        if batch[-1] + 1 < len(lengths) and len(batch) < 64:
            assert (len(batch) + 1) * cost(lengths[batch[-1] + 1]) > budget
    sizes = [len(b) for b in plan]
    assert sizes[0] > sizes[-1] and sizes == sorted(sizes, reverse=True)


def test_auto_has_no_limit_but_memory_and_a_prompt_too_large_goes_alone():
    assert [len(b) for b in plan_batches([1] * 500, None, 10**9, lambda n: 1)] == [500]
    assert [len(b) for b in plan_batches([1, 2, 50, 60], None, 100, lambda n: n * 2)] == [2, 1, 1]
    with pytest.raises(ValueError, match="sorted"):
        plan_batches([3, 1], 4, 100, lambda n: 1)


def test_free_memory_on_cpu_is_what_the_system_reports_available():
    free = memory.free_memory("cpu")
    assert 0 < free <= psutil.virtual_memory().total


@pytest.mark.parametrize("size", [8, "auto"])
def test_decoding_in_batches_made_smaller_by_memory_gives_the_same_completions(monkeypatch, caplog, size):
    model, tok, prompts = model_and_tokenizer(build_tiny_llama, 0)
    full = generate_greedy(model, tok, prompts, 8, 20)
    shape = ModelShape.of(model.config)
    longest = max(len(tok(p, add_special_tokens=False)["input_ids"]) for p in prompts)
    # room for three of the longest prompts at half of the "free" memory
    monkeypatch.setattr(memory, "free_memory", lambda device: 2 * 3 * sequence_bytes(shape, longest, 20) + 1)
    with caplog.at_level(logging.INFO, logger="ftcot"):
        small = generate_greedy(model, tok, prompts, Batching(size, 0.5), 20, desc="tight")
    assert [g["text"] for g in small] == [g["text"] for g in full]
    said = caplog.text
    if size == "auto":
        assert "tight: batches of up to" in said and "as memory allows" in said
    else:
        assert "fewer than evaluate.batch_size 8 asks" in said


def test_sampled_completions_count_as_sequences_in_a_batch(monkeypatch):
    model, tok, prompts = model_and_tokenizer(build_tiny_llama, 0)
    seen = []
    original = memory.plan_batches

    def spy(lengths, limit, budget, cost):
        plan = original(lengths, limit, budget, cost)
        seen.append((limit, [len(b) for b in plan]))
        return plan

    monkeypatch.setattr(memory, "plan_batches", spy)
    samples = generate_samples(model, tok, prompts[:10], 8, 6, num_samples=3, temperature=0.7, seed=0)
    assert [len(s) for s in samples] == [3] * 10
    assert seen == [(2, [2, 2, 2, 2, 2])]  # 8 sequences a batch: 2 prompts of 3 samples


def test_evaluate_batch_size_takes_auto_and_refuses_nonsense():
    def params_with(**evaluate):
        return parse_params({"data": {"tasks": ["coin_flip"]}, "evaluate": evaluate})

    default = params_with().evaluate
    assert (default.batch_size, default.memory_fraction) == (64, memory.DEFAULT_MEMORY_FRACTION)
    auto = params_with(batch_size="auto", memory_fraction=0.8).evaluate
    assert Batching(auto.batch_size, auto.memory_fraction) == Batching("auto", 0.8)
    for bad, named in [
        ({"batch_size": 0}, r"evaluate\.batch_size"),
        ({"batch_size": "lots"}, r"evaluate\.batch_size"),
        ({"memory_fraction": 0}, r"evaluate\.memory_fraction"),
        ({"memory_fraction": 1.5}, r"evaluate\.memory_fraction"),
    ]:
        with pytest.raises(ConfigError, match=named):
            params_with(**bad)
