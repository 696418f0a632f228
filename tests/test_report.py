import base64
import re
from pathlib import Path

import pytest

from ftcot.config import load_params
from ftcot.evaluation.scoring import accuracy_interval, summarize_predictions
from ftcot.provenance import run_metadata
from ftcot.report.document import render_html, render_markdown
from ftcot.report.figures import plot_accuracy, plot_sweep, plot_training_curves
from ftcot.report.summary import ReportError, accuracy_rows, build_summary, combine_seeds, headline

REPO = Path(__file__).resolve().parents[1]
TEACH = {
    "coin_flip": {
        "teacher_test_accuracy": 0.8,
        "estimated_cost_usd": 0.0123,
        "prompt_tokens": 1000,
        "completion_tokens": 500,
    }
}
FILTER = {
    "coin_flip": {"teacher_accuracy": 0.78, "kept_rate": 0.75, "kept": 3, "rationales": 4, "question_coverage": 0.75}
}


def method_metrics(accuracy, n=10, **extra):
    return {
        "accuracy": accuracy,
        "accuracy_ci_low": max(0.0, accuracy - 0.2),
        "accuracy_ci_high": min(1.0, accuracy + 0.2),
        "flexible_accuracy": accuracy + 0.05,
        "contains_answer": 1.0,
        "parse_rate": 0.9,
        "truncated": 1,
        "mean_generated_tokens": 12.5,
        "n": n,
        **extra,
    }


SC = {"samples": 5, "accuracy": 0.7, "accuracy_ci_low": 0.4, "accuracy_ci_high": 0.9, "parse_rate": 1.0}
EVAL = {
    "coin_flip": {
        "ft_cot": method_metrics(0.6, self_consistency=SC),
        "vanilla": method_metrics(0.5),
        "few_shot_cot": method_metrics(0.3),
    }
}
SETUP = {"teacher": "gpt-x", "student": "smollm2-135m", "diversity": 4, "self_consistency_samples": 5}


def summary():
    return build_summary(["coin_flip"], {"coin_flip": "yes_no"}, TEACH, FILTER, EVAL, SETUP)


def test_summary_is_nested_by_task_and_method():
    s = summary()
    row = s["tasks"]["coin_flip"]
    assert row["random"] == 0.5 and row["teacher"]["test_accuracy"] == 0.8 and row["teacher"]["cost_usd"] == 0.0123
    assert row["ft_cot"]["accuracy"] == 0.6 and row["ft_cot"]["self_consistency"]["accuracy"] == 0.7
    assert "zero_shot" not in row  # not run, not reported
    bad = {"coin_flip": {**EVAL["coin_flip"], "vanilla": method_metrics(0.5, n=11)}}
    with pytest.raises(ReportError, match="different sizes"):
        build_summary(["coin_flip"], {"coin_flip": "yes_no"}, TEACH, FILTER, bad, SETUP)


def test_markdown_has_the_paper_table_rows_methods_columns_tasks():
    teacher = {
        "coin_flip": {
            "kept": [
                {"question": "Q1?", "rationale": "R1.", "prediction": "yes", "answer": "yes", "correct": True},
                # filter.keep: all keeps wrong answers too: the report shows what the filter kept
                {"question": "Q4?", "rationale": "R4.", "prediction": "no", "answer": "yes", "correct": False},
            ],
            "dropped": [{"question": "Q2?", "rationale": "R2.", "prediction": "no", "answer": "yes", "correct": False}],
        }
    }
    student = {
        "coin_flip": {
            "correct": [],
            "wrong": [{"question": "Q3?", "generated": " R3 --> no", "prediction": "no", "answer": "yes"}],
        }
    }
    sweep = {
        "name": "diversity",
        "keys": ["diversity"],
        "commit": "abc",
        "regenerate": "python scripts/sweep.py --set diversity=1,2 --name diversity",
        "points": [
            {"task": "coin_flip", "method": "ft_cot", "values": {"diversity": d}, "accuracy": a, "experiment": e}
            for d, a, e in ((1, 0.4, "diversity-1-abc"), (2, 0.5, "diversity-2-abc"))
        ],
    }
    md = render_markdown(
        summary(),
        teacher,
        student,
        {"accuracy": "accuracy.png", "curves/coin_flip": "c.png", "sweep/diversity": "d.png"},
        [sweep],
    )
    lines = md.splitlines()
    head = lines.index("| Method | coin_flip |")
    table = lines[head : head + 8]
    assert table[2] == "| Random | 50.0 |"
    assert table[3] == "| Teacher (gpt-x): Zero-shot-CoT | 80.0 |"
    # Paper order: prompting baselines, then vanilla, then Fine-tune-CoT (diverse reasoning at D=4).
    assert table[4] == "| Student: Few-shot-CoT | 30.0 (10.0–50.0) |"
    assert table[5] == "| Student: Vanilla fine-tuning | 50.0 (30.0–70.0) |"
    assert table[6] == "| Student: Fine-tune-CoT, diverse reasoning (D=4) | 60.0 (40.0–80.0) |"
    assert table[7].startswith(
        "| Student: Fine-tune-CoT, diverse reasoning (D=4) + self-consistency (5 samples) | 70.0"
    )
    assert table[7].endswith("of votes parsed |")  # a vote can be no answer at all
    assert "| coin_flip | Fine-tune-CoT | 60.0 | 65.0 | 100.0 | 90.0 | 12.5 | 1/10 |" in md
    assert "| coin_flip | 78.0 | 4 | 3 | 75.0 | 75.0 | 1,000 + 500 | 0.0123 |" in md
    assert (
        "*kept by the filter, wrong answer* **Q:** Q4?" in md and "*kept by the filter, right answer* **Q:** Q1?" in md
    )
    assert "*dropped by the filter, wrong answer* **Q:** Q2?" in md and "> R2. → teacher: no, gold: yes" in md
    assert "(`python scripts/sweep.py --set diversity=1,2 --name diversity`, commit abc)" in md
    assert "*wrong* **Q:** Q3?" in md
    assert "| coin_flip | Student: Fine-tune-CoT, diverse reasoning (D=4) | 2 | 50.0 |" in md
    for image in ("accuracy.png", "c.png", "d.png"):
        assert f"]({image})" in md
    no_sweep = render_markdown(summary(), {}, {}, {})
    assert "No sweep recorded yet: `python scripts/sweep.py --set diversity=1,2,4,8`" in no_sweep
    assert "not a language model" not in md  # a real teacher (gpt-x): no caveat
    run = run_metadata(Path.cwd(), load_params(REPO / "params.yaml").model_dump(mode="json"), {"x": "cpu"})
    oracle = render_markdown({**summary(), "run": run}, {}, {}, {})
    assert "it is not a language model" in oracle.split("## Strict")[0]
    assert f"- Code: git commit `{run['code']['commit'][:12]}`" in oracle and "- Devices: cpu." in oracle


def test_html_is_self_contained_with_inline_images(tmp_path):
    plot_accuracy(summary(), tmp_path / "accuracy.png")
    md = render_markdown(summary(), {}, {}, {"accuracy": "accuracy.png"})
    page = render_html(md, tmp_path)
    assert page.startswith("<!DOCTYPE html>") and "<table>" in page and "<script" not in page
    assert "http://" not in page and "https://" not in page  # renders offline
    (data,) = re.findall(r'src="data:image/png;base64,([^"]+)"', page)
    assert base64.b64decode(data) == (tmp_path / "accuracy.png").read_bytes()
    assert render_html(md, tmp_path) == page


def test_figures_are_png_and_byte_identical_across_runs(tmp_path):
    curves = {
        ("ft_cot", 0): {"train/loss": [(1, 2.0), (2, 1.0)], "eval/loss": [(2, 1.5)], "eval/accuracy": [(2, 0.5)]},
        ("ft_cot", 1): {"train/loss": [(1, 2.1), (2, 1.1)], "eval/loss": [(2, 1.6)], "eval/accuracy": [(2, 0.4)]},
        ("vanilla", 0): {"train/loss": [(1, 1.0), (2, 0.5)]},
    }
    points = [
        {"task": "coin_flip", "method": "ft_cot", "values": {"diversity": d}, "accuracy": a}
        | {"accuracy_ci_low": a - 0.1, "accuracy_ci_high": a + 0.1}
        for d, a in ((1, 0.4), (2, 0.5), (8, 0.7))
    ]
    draw = {
        "accuracy.png": lambda p: plot_accuracy(summary(), p),
        "curves.png": lambda p: plot_training_curves("coin_flip", curves, p),
        "sweep_diversity.png": lambda p: plot_sweep({"name": "diversity", "keys": ["diversity"], "points": points}, p),
    }
    for name, fn in draw.items():
        fn(tmp_path / name)
        first = (tmp_path / name).read_bytes()
        assert first.startswith(b"\x89PNG") and len(first) > 5000
        fn(tmp_path / name)
        assert (tmp_path / name).read_bytes() == first, name  # stable bytes, stable DVC hashes


def test_accuracy_rows_for_dvc_plots():
    rows = accuracy_rows(summary())
    assert [r["run"] for r in rows] == [
        "coin_flip / teacher",
        "coin_flip / few_shot_cot",
        "coin_flip / vanilla",
        "coin_flip / ft_cot",
    ]
    assert rows[-1]["accuracy"] == 0.6


def seed_metrics(correct: list[bool]) -> tuple[dict, list[dict]]:
    predictions = [
        {
            "id": str(i),
            "correct": c,
            "prediction": "yes",
            "flexible_correct": c,
            "contains_answer": c,
            "truncated": False,
            "generated_tokens": 5,
        }
        for i, c in enumerate(correct)
    ]
    return summarize_predictions(predictions), predictions


def test_seeds_combine_into_mean_sd_and_a_pooled_interval():
    (m0, p0), (m1, p1) = seed_metrics([True] * 8 + [False] * 2), seed_metrics([True] * 6 + [False] * 4)
    combined = combine_seeds({0: m0, 1: m1}, summarize_predictions(p0 + p1))
    assert combined["accuracy"] == 0.7 and combined["n"] == 10 and combined["num_seeds"] == 2
    assert combined["accuracy_sd"] == pytest.approx(0.141421, abs=1e-6)
    assert (combined["accuracy_ci_low"], combined["accuracy_ci_high"]) == accuracy_interval(14, 20)
    assert combined["seeds"]["1"]["accuracy"] == 0.6
    assert combine_seeds({0: m0}, summarize_predictions(p0))["accuracy_sd"] is None
    with pytest.raises(ReportError, match="test sets of sizes"):
        combine_seeds({0: m0, 1: seed_metrics([True] * 3)[0]}, summarize_predictions(p0))
    # In the table: mean (pooled interval) ± sd, and a line per seed.
    s = build_summary(
        ["coin_flip"],
        {"coin_flip": "yes_no"},
        TEACH,
        FILTER,
        {"coin_flip": {"ft_cot": combined}},
        {**SETUP, "seeds": [0, 1]},
    )
    md = render_markdown(s, {}, {}, {})
    low, high = accuracy_interval(14, 20)
    assert f"| 70.0 ({100 * low:.1f}–{100 * high:.1f}) ± 14.1 sd |" in md
    assert "mean over 2 seeds (0, 1)" in md and "| coin_flip | Fine-tune-CoT | 80.0 (" in md
    assert "| coin_flip | Fine-tune-CoT | 70.0 | 70.0 | 70.0 | 100.0 | 5.0 | 0/20 |" in md


def test_headline_is_compact_and_numeric():
    h = headline(summary())
    assert set(h["coin_flip"]) == {"teacher", "few_shot_cot", "vanilla", "ft_cot", "ft_cot_self_consistency"}
    assert h["coin_flip"]["ft_cot"] == pytest.approx(
        {"accuracy": 0.6, "accuracy_ci_low": 0.4, "accuracy_ci_high": 0.8, "parse_rate": 0.9}
    )
    assert h["coin_flip"]["teacher"] == {"kept": 3, "kept_rate": 0.75, "test_accuracy": 0.8, "cost_usd": 0.0123}

    def leaves(d):
        for v in d.values():
            yield from leaves(v) if isinstance(v, dict) else [v]

    assert all(isinstance(v, int | float) for v in leaves(h))  # strings and nulls are not metrics
