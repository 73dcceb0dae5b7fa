"""MATH boxed-answer scorer: extraction, equivalences, and both comparison paths."""

import threading

import pytest

from strive.reward import math as math_reward
from strive.reward.math import compute_score, extract_boxed_answer, is_equivalent
from strive.reward.math_normalize import normalize_answer, strings_equivalent


@pytest.mark.parametrize(
    "text, expected",
    [
        ("so $\\boxed{5}$.", "5"),
        ("\\boxed{1} then \\boxed{\\frac{1}{2}}", "\\frac{1}{2}"),  # last box wins
        ("\\boxed{\\left\\{ 1, \\{2\\} \\right\\}}", "\\left\\{ 1, \\{2\\} \\right\\}"),  # nested braces
        ("answer: $\\boxed 5$", "5"),
        ("\\fbox{7}", "7"),
        ("\\boxed {3}", "3"),
        ("\\boxed{unbalanced", None),
        ("no box here", None),
        ("\\boxedfoo{3}", None),  # a longer command, not \boxed
    ],
)
def test_extract_boxed_answer(text, expected):
    assert extract_boxed_answer(text) == expected


EQUIVALENT = [
    ("\\frac{1}{2}", "0.5"),
    ("\\dfrac12", "1/2"),
    ("\\tfrac{1}{2}", "\\frac{1}{2}"),
    ("0.5", "\\frac{1}{2}"),
    (".5", "0.5"),
    ("\\left( 1, 2 \\right)", "(1,2)"),
    ("\\left[ \\frac12, 3 \\right)", "[0.5,3)"),
    ("5\\text{ cm}", "5"),
    ("5 \\text{ dollars}", "5"),
    ("90^\\circ", "90"),
    ("\\$18", "18"),
    ("x = 3", "3"),
    ("1{,}000", "1000"),
    ("1,000", "1000"),
    ("\\sqrt2", "\\sqrt{2}"),
    ("\\text{(A)}", "(A)"),
    ("10\\%", "10"),
    ("-\\frac{3}{4}", "-0.75"),
]
DIFFERENT = [
    ("2", "3"),
    ("(1,2)", "[1,2]"),
    ("0.3333", "\\frac{1}{3}"),
    ("\\frac{1}{2}", "\\frac{1}{3}"),
    ("(1,2)", "(1,2,3)"),
    ("12", "1,2"),
]


@pytest.mark.parametrize("prediction, gold", EQUIVALENT)
def test_fallback_equivalences(prediction, gold):
    assert is_equivalent(prediction, gold, use_math_verify=False)


@pytest.mark.parametrize("prediction, gold", DIFFERENT)
def test_fallback_differences(prediction, gold):
    assert not is_equivalent(prediction, gold, use_math_verify=False)


@pytest.mark.parametrize("prediction, gold", EQUIVALENT)
def test_math_verify_equivalences(prediction, gold):
    pytest.importorskip("math_verify")
    assert is_equivalent(prediction, gold, use_math_verify=True)


@pytest.mark.parametrize("prediction, gold", DIFFERENT)
def test_math_verify_differences(prediction, gold):
    pytest.importorskip("math_verify")
    assert not is_equivalent(prediction, gold, use_math_verify=True)


def test_math_verify_adds_symbolic_equivalence():
    pytest.importorskip("math_verify")
    assert not is_equivalent("x^2+2x+1", "(x+1)^2", use_math_verify=False)
    assert is_equivalent("x^2+2x+1", "(x+1)^2")
    assert is_equivalent("\\pi/2", "\\frac{\\pi}{2}")


def test_missing_math_verify_falls_back(monkeypatch):
    monkeypatch.setattr(math_reward, "_import_math_verify", lambda: None)
    assert compute_score("\\boxed{\\dfrac{1}{2}}", "0.5") == 1.0
    assert compute_score("\\boxed{x^2+2x+1}", "(x+1)^2") == 0.0  # needs algebra
    with pytest.raises(ImportError, match="math-verify"):
        is_equivalent("1", "2", use_math_verify=True)


def test_math_verify_off_main_thread():
    pytest.importorskip("math_verify")
    results = []
    worker = threading.Thread(target=lambda: results.append(compute_score("\\boxed{x^2+2x+1}", "(x+1)^2")))
    worker.start()
    worker.join()
    assert results == [1.0]


def test_compute_score():
    assert compute_score("The answer is $\\boxed{\\frac{1}{2}}$.", "\\frac12") == 1.0
    assert compute_score("The answer is 1/2.", "\\frac12") == 0.0  # no box, no reward
    assert compute_score("\\boxed{3}", "The solution ... so $\\boxed{3}$") == 1.0  # boxed gold reduced
    assert compute_score("\\boxed{4}", 4) == 1.0  # non-string gold


def test_normalize_answer_examples():
    assert normalize_answer("\\left( 1 , 2 \\right)") == "(1,2)"
    assert normalize_answer("\\dfrac{3}{4}") == "\\frac{3}{4}"
    assert normalize_answer("3/4") == "\\frac{3}{4}"
    assert normalize_answer("y = 2") == "2"
    assert strings_equivalent("1,234,567", "1234567")
