"""The tiny students' tokenizers that spell words out (``student.tiny.tokenizer: char`` and ``word_char``)
and the tiny Llama student."""

from transformers import AutoModelForCausalLM, AutoTokenizer

from ftcot.config import StudentParams
from ftcot.evaluation.generation import generate_greedy
from ftcot.student.formats import student_prompt
from ftcot.student.models import (
    build_char_tokenizer,
    build_student_tokenizer,
    build_tiny_tokenizer,
    build_word_char_tokenizer,
    load_student,
)
from ftcot.student.training import finetune

QUESTION = 'Take the last letters of each words in "Ashley Bernard Cleo Dina" and concatenate them.'
CORPUS = [student_prompt(QUESTION) + ' The last letter of "Ashley" is "y". --> ydoa']


def ids(tokenizer, text: str) -> list[int]:
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def test_one_token_per_character_and_round_trip_through_save_and_load(tmp_path):
    tok = build_char_tokenizer(CORPUS)
    text = CORPUS[0] + "\n  two  spaces , and ' . ' kept"
    assert len(ids(tok, text)) == len(text)
    tok.save_pretrained(tmp_path)
    loaded = AutoTokenizer.from_pretrained(tmp_path)  # what stage evaluate does
    assert ids(loaded, text) == ids(tok, text)
    assert loaded.decode(ids(loaded, text), skip_special_tokens=True) == text
    assert (loaded.pad_token_id, loaded.eos_token_id) == (tok.pad_token_id, tok.eos_token_id)
    assert loaded.pad_token_id != loaded.eos_token_id  # EOS stays in the loss


def test_last_letters_are_tokens_of_their_own():
    # Each word's last letter is the token just before the space or closing quote, which is not so
    # with BPE, whose merges fold a frequent name into one token.
    char, bpe = build_char_tokenizer(CORPUS), build_tiny_tokenizer(CORPUS * 50, 300)
    for word in ("Ashley", "Bernard", "Cleo", "Dina"):
        assert char.convert_ids_to_tokens(ids(char, word))[-1] == word[-1]
    assert any(len(ids(bpe, f" {w}")) < len(w) + 1 for w in ("Ashley", "Bernard"))


def test_same_corpus_same_ids_and_any_ascii_character_has_an_id():
    assert build_char_tokenizer(CORPUS).get_vocab() == build_char_tokenizer(list(CORPUS)).get_vocab()
    tok = build_char_tokenizer(["ab"])  # no 'Q' or 'z' in the texts: they are still encodable
    assert tok.decode(ids(tok, "Quiz"), skip_special_tokens=True) == "Quiz"
    assert tok.unk_token_id not in ids(tok, "Quiz")


def test_unknown_characters_become_unk_and_do_not_crash(tmp_path):
    tok = build_char_tokenizer(CORPUS)
    tok.save_pretrained(tmp_path)
    loaded = AutoTokenizer.from_pretrained(tmp_path)
    encoded = ids(loaded, "Zoë → ok")
    assert len(encoded) == len("Zoë → ok")
    assert encoded.count(loaded.unk_token_id) == 2
    assert loaded.decode(encoded, skip_special_tokens=True) == "Zo  ok"
    # Characters of the training texts beyond ASCII get their own ids.
    assert build_char_tokenizer(["Zoë"]).unk_token_id not in ids(build_char_tokenizer(["Zoë"]), "Zoë")


def test_the_parameter_chooses_the_tokenizer():
    char = StudentParams.model_validate({"tiny": {"tokenizer": "char"}})
    bpe = StudentParams.model_validate({"tiny": {"tokenizer": "bpe"}})
    assert len(ids(build_student_tokenizer(char.tiny, CORPUS), "Ashley")) == 6
    assert len(ids(build_student_tokenizer(bpe.tiny, CORPUS * 50), "Ashley")) < 6
    _, tok = load_student(StudentParams.model_validate({"model": "tiny-t5", "tiny": {"tokenizer": "char"}}), 0, CORPUS)
    assert len(ids(tok, "Ashley")) == 6


def test_a_tiny_model_learns_last_letters_on_characters(tmp_path):
    # Two names in, their two last letters out (vanilla format), on characters.
    names = ["Ann", "Bob", "Cleo", "Dina", "Eve", "Finn", "Gus", "Hal"]
    data = [
        {"id": f"q{i}", "question": f"Last letter of {a} {b}?", "answer": (a[-1] + b[-1]).lower(), "rationale": None}
        for i, (a, b) in enumerate((a, b) for a in names for b in names if a != b)
    ]
    p = StudentParams.model_validate(
        {
            "model": "tiny-llama",
            "tiny": {"n_layer": 2, "n_head": 4, "n_embd": 64, "tokenizer": "char"},
            "epochs": 100,
            "batch_size": 8,
            "learning_rate": 1e-2,
            "warmup_ratio": 0.0,
            "max_length": 48,
            "val_accuracy": False,
        }
    )
    finetune(data, [], "vanilla", p, seed=0, output_dir=tmp_path / "m")
    tok = AutoTokenizer.from_pretrained(tmp_path / "m")
    model = AutoModelForCausalLM.from_pretrained(tmp_path / "m")
    out = generate_greedy(model, tok, [student_prompt(ex["question"]) for ex in data], 64, max_new_tokens=6)
    accuracy = sum(o["text"].strip() == ex["answer"] for o, ex in zip(out, data, strict=True)) / len(data)
    assert accuracy >= 0.9


# ---- word_char: frequent words whole, every other word spelled out ------------------------------

COIN = [
    f"A coin is heads up. {a} flips the coin. {b} does not flip the coin. ### {a} flips it: tails up. --> no"
    for a, b in [("Ashley", "Bernard"), ("Cleo", "Dina"), ("Evan", "Faith"), ("Gus", "Hanna")] * 5
]


def test_word_char_keeps_frequent_words_whole_and_spells_names():
    tok = build_word_char_tokenizer(COIN)
    tokens = tok.convert_ids_to_tokens(ids(tok, "A coin is heads up. Zelda flips the coin."))
    assert "Ġcoin" in tokens and "Ġflips" in tokens  # in every text: one token each
    assert tokens[tokens.index("Ġ", 4) + 1 : tokens.index("Ġflips")] == list("Zelda")  # unseen name: bytes
    # A name in a share of the texts below the threshold (each is in 5 of 20 here) is spelled too.
    assert all(len(ids(build_word_char_tokenizer(COIN, min_share=0.5), f" {n}")) == len(n) + 1 for n in ("Cleo", "Gus"))


def test_word_char_spells_a_name_alike_after_a_space_or_a_quote_with_its_last_letter_apart():
    tok = build_word_char_tokenizer(COIN)  # "Zelda" is in none of the texts
    after_space = tok.convert_ids_to_tokens(ids(tok, " Zelda"))
    after_quote = tok.convert_ids_to_tokens(ids(tok, '"Zelda'))
    assert after_space == ["Ġ", *"Zelda"] and after_quote == ['"', *"Zelda"]


def test_word_char_round_trips_through_save_and_load_and_encodes_anything(tmp_path):
    tok = build_word_char_tokenizer(COIN)
    tok.save_pretrained(tmp_path)
    loaded = AutoTokenizer.from_pretrained(tmp_path)
    for text in [*COIN[:3], "Zoë → ok,  two spaces\n", '"ydoa".']:
        assert ids(loaded, text) == ids(tok, text)
        assert loaded.decode(ids(loaded, text), skip_special_tokens=True) == text
    assert loaded.pad_token_id != loaded.eos_token_id
    assert build_word_char_tokenizer(COIN).get_vocab() == tok.get_vocab()  # deterministic


def test_tiny_llama_is_built_from_student_tiny_and_reloads(tmp_path):
    p = StudentParams.model_validate(
        {"model": "tiny-llama", "tiny": {"n_layer": 1, "n_head": 2, "n_embd": 32, "tokenizer": "word_char"}}
    )
    model, tok = load_student(p, 0, COIN)
    assert model.config.model_type == "llama" and model.config.hidden_size == 32
    assert model.config.num_hidden_layers == 1 and model.config.vocab_size == len(tok)
    model.save_pretrained(tmp_path)
    again, _ = load_student(p, 0, COIN)
    assert all(a.equal(b) for a, b in zip(model.parameters(), again.parameters(), strict=True))  # seeded
    assert AutoModelForCausalLM.from_pretrained(tmp_path).config.model_type == "llama"
