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


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (" $1,234.50.", "1234.5"),
        (" 18.", "18"),  # a trailing period is not a decimal point
        (" 18.0", "18"),
        (" -3 degrees", "-3"),
        (" 0.25 of the pie", "0.25"),
        (" 7 apples, not 8.", "7"),  # the first number after the trigger
        (" 1,000,000", "1000000"),
        (" none", None),
        ("", None),
    ],
)
def test_number_teacher(text, expected):
    assert extract_answer(text, "number", "teacher") == expected


def test_number_student_and_tolerance():
    assert extract_answer(" 16 - 3 - 4 = 9 eggs; 9 * 2 = 18. --> 18", "number", "student") == "18"
    assert extract_answer(" 9 eggs, so 18", "number", "student") is None  # no "-->"
    assert is_correct("18", "18.0", "number")
    assert is_correct("1234.5", "1,234.50", "number")
    assert is_correct("0.3333333", "0.33333333", "number")  # within the tolerance
    assert not is_correct("0.33", "0.3333", "number")
    assert not is_correct("17", "18", "number")


@pytest.mark.parametrize(
    ("text", "answer_type", "expected"),
    [
        (" (B) 24", "choice_A-E", "B"),
        (" B", "choice_A-E", "B"),
        (" B.", "choice_A-E", "B"),
        (" (b)", "choice_A-E", None),  # lowercase letters are not choices (a is an article)
        (" a tough one, but (C).", "choice_A-E", "C"),
        (" (F) 05/02/2021", "choice_A-F", "F"),
        (" (F) 05/02/2021", "choice_A-E", None),  # F is no choice of A-E
        (" (D)", "choice_A-C", None),
        (" (C) blue ball.", "choice_A-C", "C"),
        (" None of them.", "choice_A-E", None),
    ],
)
def test_choice_teacher(text, answer_type, expected):
    assert extract_answer(text, answer_type, "teacher") == expected


def test_choice_student_and_gold():
    assert extract_answer(" The tower ... so 5(√3 + 1). --> A", "choice_A-E", "student") == "A"
    assert is_correct(extract_answer(" (B)", "choice_A-E", "teacher"), "B", "choice_A-E")  # "(B)" vs "B"
    assert not is_correct("B", "C", "choice_A-E")


def test_yes_no_against_gold_with_capitals_and_periods():
    assert is_correct(extract_answer(" Yes.", "yes_no", "teacher"), "yes", "yes_no")  # "Yes." vs "yes"
    assert is_correct(extract_answer(" so it is tails --> no.", "yes_no", "student"), "No", "yes_no")
    assert not is_correct(extract_answer(" Yes.", "yes_no", "teacher"), "no", "yes_no")


@pytest.mark.parametrize(
    ("text", "answer_type", "expected"),
    [
        ("Therefore, the answer (arabic numerals) is 18.", "number", "18"),
        ("She sells 9 eggs at $2.\nTherefore, the answer (arabic numerals) is $18.", "number", "18"),
        ("Therefore, among A through E, the answer is (C).", "choice_A-E", "C"),
        ("Therefore, among A through F, the answer is F) 04/29/2021.", "choice_A-F", "F"),
        ("Therefore, the answer (Yes or No) is No.", "yes_no", "no"),
        ('Therefore, the answer is "yajc".', "letters", "yajc"),
        ("Therefore, among A through E, the answer is unclear.", "choice_A-E", None),
    ],
)
def test_teacher_answer_step_with_its_trigger(text, answer_type, expected):
    assert extract_answer(text, answer_type, "teacher") == expected


def test_one_declaration_per_answer_type():
    from ftcot.answers import ANSWER_TYPES

    for name, kind in ANSWER_TYPES.items():
        assert kind.name == name and kind.trigger.startswith("Therefore") and 0.0 <= kind.chance <= 1.0
        assert kind.strict.pattern and kind.flexible.select == "last"
    assert ANSWER_TYPES["choice_A-E"].chance == 1 / 5 and ANSWER_TYPES["yes_no"].chance == 1 / 2
    assert ANSWER_TYPES["choice_A-D"].trigger == "Therefore, among A through D, the answer is"


def test_text_answers_are_compared_as_squad_does():
    assert extract_answer(" The Eiffel Tower.\nIt is in Paris.", "text", "teacher") == "eiffel tower"
    assert is_correct(extract_answer(" the eiffel tower!", "text", "teacher"), "Eiffel Tower", "text")
    assert not is_correct(extract_answer(" Big Ben", "text", "teacher"), "Eiffel Tower", "text")
    assert extract_answer(" Paris --> the Louvre", "text", "student") == "louvre"
    assert extract_answer("", "text", "teacher") is None


def test_numbers_with_units_and_tolerances():
    from ftcot.answers import get_answer_type

    assert extract_answer(" It weighs 3.50 Kilograms.", "number_unit", "teacher") == "3.5 kilogram"
    assert is_correct("3.5 kilogram", "3.5 kilograms", "number_unit")
    assert is_correct("3.5", "3.5 kg", "number_unit")  # no unit said: the number decides
    assert not is_correct("3.5 gram", "3.5 kilograms", "number_unit")
    assert not is_correct("4 kilogram", "3.5 kilograms", "number_unit")
    loose = get_answer_type("number", {"tolerance": 0.01})
    assert is_correct("101", "100", loose) and not is_correct("101", "100", "number")
    custom = get_answer_type("yes_no", {"trigger": "So, yes or no:"})
    assert extract_answer("Maybe. So, yes or no: no", custom, "cot") == "no"
