import pytest

from ftcot.answers import contains_answer, extract_flexible
from ftcot.evaluation.scoring import (
    EvaluationError,
    accuracy_interval,
    check_predictions_file,
    majority_vote,
    score_predictions,
    summarize_predictions,
)
from ftcot.student.formats import student_prompt, student_target

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


def test_strict_and_flexible_scoring_and_contains_answer():
    # The student says the right answer but never learned "-->": strict fails, flexible passes.
    preds = score_predictions(
        TEST,
        [gen(" heads, so yes"), gen(" yes, no wait --> yes"), gen(" no, then yes --> no")],
        "ft_cot",
    )
    assert [p["prediction"] for p in preds] == [None, "yes", "no"]
    assert [p["flexible_prediction"] for p in preds] == ["yes", "yes", "no"]
    assert [p["flexible_correct"] for p in preds] == [True, False, False]
    assert [p["contains_answer"] for p in preds] == [True, True, True]
    m = summarize_predictions(preds, ["a", "b", "c"])
    assert (m["accuracy"], m["flexible_accuracy"], m["contains_answer"]) == (0.0, round(1 / 3, 6), 1.0)


def test_flexible_rules_per_answer_type():
    assert extract_flexible("12 apples, then 3 more: 1,215 in all.", "number") == "1215"
    assert extract_flexible("(A) is wrong, the answer is (C).", "choice_A-E") == "C"
    assert extract_flexible('The last letters are "y" and "a", so "ya".', "letters") == "ya"
    assert extract_flexible("nothing here", "number") is None
    assert contains_answer("first 7, then 8", "7", "number") and not contains_answer("8", "7", "number")


def test_accuracy_interval_is_wilson():
    low, high = accuracy_interval(76, 150)
    # Wilson interval for 76/150 (reference values from statsmodels' proportion_confint).
    assert low == pytest.approx(0.4272, abs=1e-3) and high == pytest.approx(0.5858, abs=1e-3)
    assert accuracy_interval(0, 10)[0] == 0.0 and 0 < accuracy_interval(0, 10)[1] < 0.35
    m = summarize_predictions(score_predictions(TEST, [gen(" yes")] * 3, "vanilla"))
    assert m["accuracy_ci_low"] < m["accuracy"] < m["accuracy_ci_high"]


def test_self_consistency_majority_vote():
    assert majority_vote(["no", None, "yes", "yes"]) == "yes"
    assert majority_vote(["no", "yes"]) == "no"  # a tie goes to the answer seen first
    assert majority_vote([None, None]) is None
    samples = [
        [gen(" a --> yes"), gen(" b --> no"), gen(" c --> yes")],
        [gen(" --> yes"), gen(" --> yes"), gen(" nothing")],
        [gen(" x"), gen(" y"), gen(" z")],
    ]
    greedy = [gen(" --> no"), gen(" --> no"), gen(" --> yes")]
    preds = score_predictions(TEST, greedy, "ft_cot", samples)
    assert [p["vote"] for p in preds] == ["yes", "yes", None]
    assert [p["votes"] for p in preds][1] == ["yes", "yes", None]
    m = summarize_predictions(preds)
    assert m["accuracy"] == round(2 / 3, 6)  # greedy: b and c; the vote: a only
    sc = m["self_consistency"]
    assert (sc["samples"], sc["accuracy"], sc["parse_rate"]) == (3, round(1 / 3, 6), round(2 / 3, 6))
    with pytest.raises(EvaluationError, match="2 sample sets for 3"):
        score_predictions(TEST, greedy, "ft_cot", samples[:2])


def test_predictions_that_do_not_match_the_test_set_stop(tmp_path):
    preds = score_predictions(TEST, [gen(" yes")] * 3, "vanilla")
    with pytest.raises(EvaluationError, match=r"preds.jsonl: .*1 missing \(e.g. \['c'\]\), 1 unknown"):
        check_predictions_file([*preds[:2], {**preds[2], "id": "zzz"}], TEST, "preds.jsonl")
    with pytest.raises(EvaluationError, match="3 predictions for 2 test examples"):
        check_predictions_file(preds, TEST[:2], "p")
    with pytest.raises(EvaluationError, match="p: the test set is empty"):
        check_predictions_file(preds, [], "p")
    check_predictions_file(list(reversed(preds)), TEST, "p")  # order does not matter


def test_mostly_truncated_completions_are_warned_in_the_stage_and_flagged_in_the_report():
    from ftcot.evaluation.scoring import truncation_warning
    from ftcot.report.document import truncation_flags

    cut = summarize_predictions(
        score_predictions(TEST, [gen(" so", True), gen(" it", True), gen(" so yes --> yes")], "ft_cot"),
        ["a", "b", "c"],
    )
    fine = summarize_predictions(
        score_predictions(TEST, [gen(" yes"), gen(" no", True), gen(" no")], "vanilla"), ["a", "b", "c"]
    )
    assert truncation_warning(cut, 64) == (
        "2 of 3 completions reached evaluate.max_new_tokens (64) before their answer's end: "
        "the accuracy is a floor; raise evaluate.max_new_tokens"
    )
    assert truncation_warning(fine, 64) is None
    summary = {"tasks": {"coin_flip": {"ft_cot": {**cut, "num_seeds": 1}, "vanilla": fine}}}
    (flag,) = [line for line in truncation_flags(summary) if line]
    assert "coin_flip, Fine-tune-CoT: 2 of 3 completions were cut" in flag
    assert truncation_flags({"tasks": {"coin_flip": {"vanilla": fine}}}) == []
