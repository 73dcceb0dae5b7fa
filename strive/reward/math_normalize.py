"""Plain-Python answer equivalence for MATH-style answers, used when `math_verify` is absent.

Why it exists: `strive.reward.math` prefers `math_verify` (symbolic comparison through
SymPy), but the package must still score boxed answers without it, and a cheap string check
in front of SymPy saves time on the common exact case. This module is that check.

What it chose: be conservative. Two answers are equal when their normalised strings match,
when both read as the same exact rational number (`\\frac{1}{2}` = `1/2` = `0.5`), or when
both are tuples/intervals with the same brackets and equal elements. No algebra is done, so
`(x+1)^2` vs `x^2+2x+1` is "different" here; a false negative costs less than a false
positive reward.

Exercised by `pytest tests/unit/test_reward_math.py`.
"""

from __future__ import annotations

import re
from fractions import Fraction

_DROP_TOKENS = ("\\displaystyle", "\\!", "\\,", "\\;", "\\:", "\\qquad", "\\quad", "\\ ", "\\$", "$")
_LEFT_RIGHT_RE = re.compile(r"\\(?:left|right)(?![a-zA-Z])")
_DEGREE_RE = re.compile(r"\^\s*\{?\s*\\circ\s*\}?")
_TEXT_CMD = r"\\(?:text|textbf|textrm|mbox|mathrm)"
_WHOLE_TEXT_RE = re.compile(r"^" + _TEXT_CMD + r"\{([^{}]*)\}$")
_TRAILING_UNIT_RE = re.compile(r"(?<=\S)\s*" + _TEXT_CMD + r"\{\s*[a-zA-Z][a-zA-Z\s.^0-9]*\}$")
_LHS_RE = re.compile(r"^[a-zA-Z](?:_\{?\w+\}?)?\s*=(?!=)")
_FRAC_SHORT_RE = re.compile(r"\\frac(\d)(\d)")
_FRAC_HALF_RE = re.compile(r"\\frac(\d)(?=\{)")
_SQRT_SHORT_RE = re.compile(r"\\sqrt(\w)")
_THOUSANDS_RE = re.compile(r"^-?\d{1,3}(?:,\d{3})+(?:\.\d+)?$")
_INT_SLASH_RE = re.compile(r"^(-?\d+)/(\d+)$")
_FRAC_RE = re.compile(r"^(-?)\\frac\{(-?\d+(?:\.\d+)?)\}\{(-?\d+(?:\.\d+)?)\}$")
_DECIMAL_RE = re.compile(r"^-?(?:\d+\.?\d*|\.\d+)$")


def normalize_answer(answer: str) -> str:
    """Canonical string form of a final answer: LaTeX spacing, `\\left`/`\\right`, `\\dfrac`,
    dollar signs, degrees, percent signs, trailing units and `x =` prefixes are removed."""
    s = answer.strip().replace("\n", "")
    for token in _DROP_TOKENS:
        s = s.replace(token, "")
    s = _LEFT_RIGHT_RE.sub("", s)
    s = s.replace("\\dfrac", "\\frac").replace("\\tfrac", "\\frac")
    s = _DEGREE_RE.sub("", s).replace("\\%", "").replace("%", "")
    s = s.replace("{,}", ",").strip()
    whole_text = _WHOLE_TEXT_RE.match(s)
    if whole_text:
        s = whole_text.group(1).strip()
    s = _TRAILING_UNIT_RE.sub("", s)
    s = _LHS_RE.sub("", s) if s.count("=") == 1 else s
    s = s.replace(" ", "").rstrip(".")
    s = _FRAC_SHORT_RE.sub(r"\\frac{\1}{\2}", s)
    s = _FRAC_HALF_RE.sub(r"\\frac{\1}", s)
    s = _SQRT_SHORT_RE.sub(r"\\sqrt{\1}", s)
    if _THOUSANDS_RE.match(s):
        s = s.replace(",", "")
    if s.startswith("."):
        s = "0" + s
    slash = _INT_SLASH_RE.match(s)
    if slash:
        s = f"\\frac{{{slash.group(1)}}}{{{slash.group(2)}}}"
    return s


def to_number(normalized: str) -> Fraction | None:
    """The exact rational value of a normalised answer, or None if it is not a plain number."""
    try:
        if _DECIMAL_RE.match(normalized):
            return Fraction(normalized)
        frac = _FRAC_RE.match(normalized)
        if frac:
            value = Fraction(frac.group(2)) / Fraction(frac.group(3))
            return -value if frac.group(1) else value
    except (ValueError, ZeroDivisionError):
        return None
    return None


def _split_top_level(inner: str) -> list[str]:
    """Split on commas that are not nested inside braces/brackets/parentheses."""
    parts, depth, start = [], 0, 0
    for i, ch in enumerate(inner):
        if ch in "([{":
            depth += 1
        elif ch in ")]}":
            depth -= 1
        elif ch == "," and depth == 0:
            parts.append(inner[start:i])
            start = i + 1
    parts.append(inner[start:])
    return parts


def _elements_equal(a: str, b: str) -> bool:
    if a == b:
        return True
    x, y = to_number(a), to_number(b)
    return x is not None and x == y


def strings_equivalent(prediction: str, ground_truth: str) -> bool:
    """True when the two answers are the same after normalisation (see module docstring)."""
    a, b = normalize_answer(prediction), normalize_answer(ground_truth)
    if _elements_equal(a, b):
        return True
    if len(a) < 2 or len(b) < 2 or a[0] != b[0] or a[-1] != b[-1]:
        return False
    if a[0] not in "([" or a[-1] not in ")]":
        return False
    left, right = _split_top_level(a[1:-1]), _split_top_level(b[1:-1])
    if len(left) < 2 or len(left) != len(right):
        return False
    return all(_elements_equal(x, y) for x, y in zip(left, right))
