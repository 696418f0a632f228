import pytest

from ftcot.evaluation import EvaluationError, score_predictions, summarize_predictions
from ftcot.formats import student_prompt, student_target
from ftcot.report import build_summary, plot_accuracy, render_markdown

TEST = [
    {"id": "a", "question": "Q1", "answer": "yes", "answer_type": "yes_no"},
    {"id": "b", "question": "Q2", "answer": "no", "answer_type": "yes_no"},
    {"id": "c", "question": "Q3", "answer": "yes", "answer_type": "yes_no"},
]


def gen(text, truncated=False):
    return {"text": text, "generated_tokens": len(text.split()), "truncated": truncated}


def test_formats_follow_the_paper():
    assert student_prompt("Is it? ") == "Is it? ###"
    assert student_target("ft_cot", "yes", "Because.") == " Because. --> yes"
    assert student_target("vanilla", "yes") == " yes"
    with pytest.raises(ValueError, match="needs a rationale"):
        student_target("ft_cot", "yes", None)


def test_ft_cot_scoring_and_summary():
    preds = score_predictions(
        TEST, [gen(" so yes --> yes"), gen(" so --> yes"), gen(" it is yes", truncated=True)], "ft_cot"
    )
    assert [p["correct"] for p in preds] == [True, False, False]
    assert preds[2]["prediction"] is None  # no "-->": not parsed, even though "yes" appears
    m = summarize_predictions(preds, ["a", "b", "c"])
    assert (m["n"], m["correct"], m["invalid"], m["truncated"]) == (3, 1, 1, 1)
    assert m["accuracy"] == round(1 / 3, 6) and m["parse_rate"] == round(2 / 3, 6)


def test_vanilla_scoring_reads_the_completion():
    preds = score_predictions(TEST, [gen(" yes"), gen(" no"), gen(" no")], "vanilla")
    assert [p["correct"] for p in preds] == [True, True, False]


def test_bad_inputs_stop_clearly():
    with pytest.raises(EvaluationError, match="empty"):
        score_predictions([], [], "ft_cot")
    with pytest.raises(EvaluationError, match="2 generations for 3"):
        score_predictions(TEST, [gen("x"), gen("y")], "ft_cot")
    preds = score_predictions(TEST, [gen(" yes")] * 3, "vanilla")
    with pytest.raises(EvaluationError, match="do not match"):
        summarize_predictions(preds, ["a", "b", "zzz"])


def test_report_table_and_plot(tmp_path):
    filt = {"coin_flip": {"teacher_accuracy": 0.8, "kept_rate": 0.75, "kept": 3, "rationales": 4}}
    ev = {
        "coin_flip": {
            "ft_cot": {"accuracy": 0.9, "parse_rate": 1.0, "n": 10},
            "vanilla": {"accuracy": 0.5, "parse_rate": 1.0, "n": 10},
        }
    }
    teach = {"coin_flip": {"teacher_test_accuracy": 0.7, "estimated_cost_usd": 0.0123}}
    summary = build_summary(["coin_flip"], filt, ev, diversity=2, teach_metrics=teach)
    assert summary["tasks"]["coin_flip"]["ft_cot_accuracy"] == 0.9
    student = {"coin_flip": [{"question": "Q?", "generated": " R. --> no", "answer": "yes", "correct": False}]}
    rationales = {"coin_flip": [{"question": "Q?", "rationale": "R.", "answer": "yes"}]}
    md = render_markdown(summary, rationales, "accuracy.png", student)
    assert "**Student:** R. --> no (wrong (gold: yes))" in md
    assert "| coin_flip | 70.0 | 80.0 | 3/4 (75.0) | 90.0 | 50.0 | 10 | 0.0123 |" in md
    no_baseline = build_summary(["coin_flip"], filt, ev, diversity=2)
    assert "| coin_flip | – | 80.0 |" in render_markdown(no_baseline, {}, None)
    assert "**Teacher rationale:** R." in md and "![Test accuracy per task](accuracy.png)" in md
    png = tmp_path / "a.png"
    plot_accuracy(summary, png)
    first = png.read_bytes()
    assert first.startswith(b"\x89PNG")
    plot_accuracy(summary, png)
    assert png.read_bytes() == first  # deterministic bytes, so DVC hashes are stable
