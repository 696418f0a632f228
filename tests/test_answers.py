import pytest

from ftcot.answers import extract_answer, is_correct


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (" Yes.", "yes"),
        (" No.", "no"),
        (" yes, the coin is still heads up.", "yes"),
        ("\nNO", "no"),
        (" No, not yes.", "no"),  # the first one counts
        (" I cannot tell.", None),
        ("", None),
        (" Nobody knows.", None),  # "no" only as a word
    ],
)
def test_yes_no_teacher(text, expected):
    assert extract_answer(text, "yes_no", "teacher") == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (' "yajo".', "yajo"),
        (" yajo", "yajo"),
        (" y a j o.", "yajo"),
        (" 'YAJO'", "yajo"),
        (' "abcd", since the last letters are a, b, c, d.', "abcd"),
        (" 1234", None),
        ("", None),
    ],
)
def test_letters_teacher(text, expected):
    assert extract_answer(text, "letters", "teacher") == expected


@pytest.mark.parametrize(
    ("text", "answer_type", "expected"),
    [
        (" The coin is flipped twice, so it is heads up. --> yes", "yes_no", "yes"),
        (" ... so no flips remain --> no", "yes_no", "no"),
        (" it is heads up, yes.", "yes_no", None),  # no --> : the format was not learned
        (' ... gives "yajo". --> yajo', "letters", "yajo"),
        (" a --> b --> c", "letters", "b"),  # the answer follows the first marker
        (" -->", "letters", None),
    ],
)
def test_student_reads_after_marker(text, answer_type, expected):
    assert extract_answer(text, answer_type, "student") == expected


def test_direct_mode_reads_whole_completion():
    assert extract_answer(" no", "yes_no", "direct") == "no"
    assert extract_answer(" yajo", "letters", "direct") == "yajo"


def test_is_correct_normalises_gold_and_rejects_missing():
    assert is_correct("yes", "Yes", "yes_no")
    assert not is_correct("no", "yes", "yes_no")
    assert not is_correct(None, "yes", "yes_no")


def test_bad_mode_and_type():
    with pytest.raises(ValueError, match="mode"):
        extract_answer("x", "yes_no", "judge")
    with pytest.raises(KeyError, match="unknown answer type"):
        extract_answer("x", "color", "teacher")
