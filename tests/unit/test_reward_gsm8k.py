"""GSM8K scorer: verl's exact-match quirks (spec §3.1) pinned case by case."""

import pytest

from strive.reward.gsm8k import compute_score, extract_solution


@pytest.mark.parametrize(
    "response, ground_truth, expected",
    [
        ("She sold 72 clips.\n#### 72", "72", 1.0),
        ("#### 1,000", "1000", 1.0),  # strict mode deletes commas
        ("#### -5", "-5", 1.0),
        ("#### 18.00", "18", 0.0),  # exact string equality, no numeric comparison
        ("#### 18.", "18", 0.0),  # the trailing period is captured
        ("#### $18", "18", 0.0),  # `$` blocks the match: nothing extracted
        ("#### 17", "18", 0.0),
        ("The answer is 18", "18", 0.0),  # no marker in strict mode
        ("####18", "18", 0.0),  # the marker needs the space
        ("#### 12\nwait, actually\n#### 18", "18", 1.0),  # last match wins
        ("#### 18\nno, it is\n#### 12", "18", 0.0),
        ("", "18", 0.0),
    ],
)
def test_strict(response, ground_truth, expected):
    assert compute_score(response, ground_truth) == expected


def test_score_values_distinguish_format_from_nothing():
    assert compute_score("#### 17", "18", format_score=0.1, score=2.0) == 0.1
    assert compute_score("#### 18", "18", format_score=0.1, score=2.0) == 2.0
    assert compute_score("no answer", "18", format_score=0.1, score=2.0) == 0.0


def test_only_last_300_characters_are_searched():
    answer_then_padding = "#### 18" + " " * 300
    assert compute_score(answer_then_padding, "18") == 0.0
    just_inside = "#### 18" + " " * (300 - len("#### 18"))
    assert len(just_inside) == 300 and compute_score(just_inside, "18") == 1.0
    # The window starts one character in, so the marker reads "### 18" and does not match.
    cut = "#### 18" + "x" * 294
    assert extract_solution(cut) is None


def test_strict_extraction_strings():
    assert extract_solution("#### 1,234.5") == "1234.5"
    assert extract_solution("#### -3") == "-3"
    assert extract_solution("#### - 3") is None
    assert extract_solution("#### 18. Done") == "18."


@pytest.mark.parametrize(
    "response, extracted",
    [
        ("so the total is 1,000", "1,000"),  # commas kept in flexible mode
        ("first 3 then 42.", "42."),
        ("cost 5 and then .", "5"),  # a lone "." is skipped
        ("no digits here", None),
        ("The end.", "."),  # verl quirk: only lone "." tokens leaves "." extracted
        ("value -7", "-7"),
    ],
)
def test_flexible_extraction(response, extracted):
    assert extract_solution(response, method="flexible") == extracted


def test_flexible_score():
    assert compute_score("I think the answer is 18", "18", method="flexible") == 1.0
    assert compute_score("total 1,000", "1000", method="flexible") == 0.0
    assert compute_score("The end.", "18", method="flexible", format_score=0.1) == 0.1


def test_unknown_method_is_rejected():
    with pytest.raises(ValueError, match="strict"):
        extract_solution("#### 1", method="loose")
