"""Greedy decoding whose batch shrinks as sequences end: the same completions as ``generate()``, the
same stop rules, and a completion that ends with its answer's line."""

import pytest
import torch

from ftcot.config import StudentParams
from ftcot.evaluation.generation import _generate_padded_left, decode_greedy, generate_greedy
from ftcot.student.formats import answer_end, student_prompt
from ftcot.student.models import build_tiny_gpt2, build_tiny_llama, build_tiny_tokenizer

TINY = {"n_layer": 1, "n_head": 2, "n_embd": 32, "vocab_size": 300}
QUESTIONS = [f"Is the colour number {i} {'red ' * (i % 5)}bright?" for i in range(23)]


def model_and_tokenizer(build, seed: int):
    prompts = [student_prompt(q) for q in QUESTIONS]
    tok = build_tiny_tokenizer([*prompts, "yes no --> \n maybe"], 300)
    model = build(StudentParams(tiny=TINY, max_length=64), tok, seed=seed)
    torch.manual_seed(seed)
    with torch.no_grad():  # weights far from the small init, so that completions differ from prompt to prompt
        for weight in model.parameters():
            weight.normal_(0.0, 0.5)
    return model, tok, prompts


@pytest.mark.parametrize("build", [build_tiny_gpt2, build_tiny_llama])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_the_shrinking_batch_gives_generates_completions(build, seed):
    model, tok, prompts = model_and_tokenizer(build, seed)
    # As EOS, a token the random model writes in some completions and not in others: sequences end
    # at different steps, so the batches shrink.
    free = decode_greedy(model, tok, prompts, 8, 20)
    rows = [tok(g["text"], add_special_tokens=False)["input_ids"] for g in free]
    counts = {t: sum(t in r for r in rows) for r in rows for t in r}
    tok.eos_token = tok.convert_ids_to_tokens(min(counts, key=lambda t: (abs(counts[t] - len(rows) / 2), t)))
    expected = [g[0] for g in _generate_padded_left(model, tok, prompts, 8, 20, "generate()")]
    got = decode_greedy(model, tok, prompts, 8, 20)
    assert got == expected
    assert len({g["generated_tokens"] for g in got}) > 1 and any(not g["truncated"] for g in got)


def test_stop_strings_cut_as_generate_does():
    model, tok, prompts = model_and_tokenizer(build_tiny_llama, 0)
    text = decode_greedy(model, tok, prompts[:4], 4, 30)[0]["text"]
    stop = text.strip().split()[2]  # a word the model does write
    expected = [g[0] for g in _generate_padded_left(model, tok, prompts, 8, 30, "generate()", stop=(stop,))]
    assert decode_greedy(model, tok, prompts, 8, 30, stop=(stop,)) == expected
    assert any(not g["truncated"] for g in expected)


def test_a_completion_ends_with_its_answers_line():
    assert answer_end("ft_cot", " It flips twice. --> yes\nQ: and more") == len(" It flips twice. --> yes")
    assert answer_end("ft_cot", " It flips twice. -->") is None  # no answer yet
    assert answer_end("ft_cot", " First line.\nSecond. --> no") is None  # a rationale may span lines
    assert answer_end("vanilla", " 18\n19") == 3
    assert answer_end("vanilla", "\n 18") is None

    model, tok, prompts = model_and_tokenizer(build_tiny_llama, 0)
    plain = generate_greedy(model, tok, prompts, 8, 24)
    ends = [answer_end("vanilla", g["text"]) for g in plain]
    cut = generate_greedy(model, tok, prompts, 8, 24, ends=lambda t: answer_end("vanilla", t))
    for before, after, end in zip(plain, cut, ends, strict=True):
        if end is None:
            assert after == before
        else:
            assert after["text"] == before["text"][:end] and not after["truncated"]
            assert after["generated_tokens"] <= before["generated_tokens"]
