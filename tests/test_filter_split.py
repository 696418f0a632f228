import pytest

from ftcot.data.synthetic import generate_records
from ftcot.data.tasks import get_task
from ftcot.filtering import filter_rationales
from ftcot.student.finetune_sets import LeakageError, assert_no_leakage, build_finetune_sets
from ftcot.teacher.cache import CompletionCache
from ftcot.teacher.oracle import OracleTeacher
from ftcot.teacher.teaching import teach


@pytest.fixture
def pipeline_inputs(tmp_path):
    records = generate_records(get_task("coin_flip"), 100, 0, 0.7)
    train = [r for r in records if r["split"] == "train"]
    rationales, _ = teach(train, OracleTeacher(error_rate=0.3), CompletionCache(tmp_path), 2, 0.7, 128)
    return records, rationales


def test_filter_keeps_only_correct(pipeline_inputs):
    _, rationales = pipeline_inputs
    kept, metrics = filter_rationales(rationales)
    assert all(k["prediction"] == k["answer"] for k in kept)
    assert 0 < metrics["kept"] < metrics["rationales"] == 140
    assert metrics["kept_rate"] == round(metrics["kept"] / 140, 6)
    assert metrics["parse_rate"] == 1.0 and metrics["invalid"] == 0
    assert 0.5 < metrics["teacher_accuracy"] < 0.9  # error rate 0.3


def test_filter_counts_unparseable(pipeline_inputs):
    _, rationales = pipeline_inputs
    broken = [{**r, "answer_completion": " I cannot tell."} for r in rationales[:10]] + rationales[10:]
    kept, metrics = filter_rationales(broken)
    assert metrics["invalid"] == 10
    assert all(k["id"] not in {r["id"] for r in broken[:10]} for k in kept)


def test_splits_never_leak_test_questions(pipeline_inputs):
    records, rationales = pipeline_inputs
    kept, _ = filter_rationales(rationales)
    splits = build_finetune_sets(records, kept, val_fraction=0.2, seed=0)
    test_ids = {r["id"] for r in records if r["split"] == "test"}
    assert {r["question_id"] for r in splits["test"]} == test_ids
    for name in ("train_ft_cot", "val_ft_cot", "train_vanilla", "val_vanilla"):
        assert not {r["question_id"] for r in splits[name]} & test_ids, name
    # validation is split by question: no question's samples straddle train and validation
    assert not {r["question_id"] for r in splits["train_ft_cot"]} & {r["question_id"] for r in splits["val_ft_cot"]}
    assert len(splits["train_vanilla"]) + len(splits["val_vanilla"]) == 70
    assert all(r["rationale"] for r in splits["train_ft_cot"])


def test_vanilla_split_does_not_depend_on_the_teacher(pipeline_inputs):
    records, rationales = pipeline_inputs
    kept, _ = filter_rationales(rationales)
    a = build_finetune_sets(records, kept, 0.2, 0)
    b = build_finetune_sets(records, kept[: len(kept) // 2], 0.2, 0)
    assert a["train_vanilla"] == b["train_vanilla"] and a["val_vanilla"] == b["val_vanilla"]
    assert a["train_ft_cot"] != b["train_ft_cot"]


def test_leakage_is_caught():
    test = [{"question_id": "q1", "question": "Is it?"}]
    with pytest.raises(LeakageError, match="q1"):
        assert_no_leakage(test, [{"question_id": "q1", "question": "other"}])
    with pytest.raises(LeakageError):  # same text under another id
        assert_no_leakage(test, [{"question_id": "q9", "question": " is it? "}])
    assert_no_leakage(test, [{"question_id": "q2", "question": "Is it not?"}])


def test_kept_rationale_of_a_test_question_is_refused(pipeline_inputs):
    records, rationales = pipeline_inputs
    kept, _ = filter_rationales(rationales)
    test_q = next(r for r in records if r["split"] == "test")
    smuggled = {**kept[0], "question_id": test_q["id"], "question": test_q["question"]}
    with pytest.raises(LeakageError):
        build_finetune_sets(records, [*kept, smuggled], 0.2, 0)


def test_without_filtering_every_non_empty_rationale_is_kept(pipeline_inputs):
    records, rationales = pipeline_inputs
    emptied = [{**rationales[0], "rationale": ""}, *rationales[1:]]
    kept, metrics = filter_rationales(emptied, keep="all")
    assert len(kept) == 139 and metrics["keep"] == "all"
    correct, _ = filter_rationales(emptied)
    assert metrics["kept_wrong"] == len(kept) - sum(k["correct"] for k in kept) > 0
    assert len(correct) < len(kept)
    sets = build_finetune_sets(records, kept, 0.2, 0)
    assert len(sets["train_ft_cot"]) + len(sets["val_ft_cot"]) == 139  # the student learns from the wrong ones too


def test_the_papers_exact_split_may_hold_a_test_questions_text_in_train(pipeline_inputs):
    records, rationales = pipeline_inputs
    kept, _ = filter_rationales(rationales)
    test = next(r for r in records if r["split"] == "test")
    twin = {**next(r for r in records if r["split"] == "train"), "question": test["question"]}
    records = [twin if r["id"] == twin["id"] else r for r in records]
    kept = [{**k, "question": test["question"]} if k["question_id"] == twin["id"] else k for k in kept]
    with pytest.raises(LeakageError):
        build_finetune_sets(records, kept, 0.2, 0)
    assert build_finetune_sets(records, kept, 0.2, 0, same_text_allowed=True)["test"]  # ids still checked
