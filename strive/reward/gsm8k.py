"""GSM8K rule reward, bit-for-bit compatible with verl's `reward_score/gsm8k.py`.

Why it exists: `data_source == "openai/gsm8k"` rows are scored by this function, and a
run's reward curve is only comparable with verl's if the same strings score the same.
So the quirks are kept on purpose (spec §3.1):

- only the last 300 characters of the response are searched (verl bounds regex cost);
- `strict` takes the last `#### <number>` and deletes commas, so `#### 1,000` == "1000";
- `flexible` takes the last bare number-like token that is not "" or "." and keeps commas
  (if every token is a lone ".", verl ends up with "." and so do we);
- the answer is compared to the ground truth by exact string equality, so `#### 18.00`,
  `#### 18.` and `#### $18` are all wrong for "18".

Exercised by `pytest tests/unit/test_reward_gsm8k.py`.
"""

from __future__ import annotations

import re

CLIP_CHARS = 300
"""Only this many trailing characters of the response are examined."""

_STRICT_RE = re.compile(r"#### (\-?[0-9\.\,]+)")
_FLEXIBLE_RE = re.compile(r"(\-?[0-9\.\,]+)")
_INVALID_FLEXIBLE = ("", ".")


def extract_solution(solution_str: str, method: str = "strict") -> str | None:
    """Return the answer string the model committed to, or None if there is none.

    strict: the last `#### <number>` match, commas (and `$`, which cannot occur) removed.
    flexible: the last number-like token that is not empty and not a lone ".", as written.
    """
    if method not in ("strict", "flexible"):
        raise ValueError(f"gsm8k extract_solution: method must be 'strict' or 'flexible', got {method!r}")
    tail = solution_str[-CLIP_CHARS:]
    if method == "strict":
        matches = _STRICT_RE.findall(tail)
        if not matches:
            return None
        return matches[-1].replace(",", "").replace("$", "")
    candidates = _FLEXIBLE_RE.findall(tail)
    for candidate in reversed(candidates):
        if candidate not in _INVALID_FLEXIBLE:
            return candidate
    # verl's loop leaves its variable on the first match when every match is invalid, so a
    # response whose only "number" is a lone "." extracts "." (and earns format_score).
    return candidates[0] if candidates else None


def compute_score(
    solution_str: str,
    ground_truth: str,
    method: str = "strict",
    format_score: float = 0.0,
    score: float = 1.0,
) -> float:
    """`score` if the extracted answer equals `ground_truth` exactly, `format_score` if an
    answer was extracted but differs, and 0 when nothing could be extracted."""
    return score_answer(extract_solution(solution_str, method=method), ground_truth, format_score, score)


def score_answer(answer: str | None, ground_truth: str, format_score: float = 0.0, score: float = 1.0) -> float:
    """The rule of `compute_score` for an answer already extracted (None: nothing was)."""
    if answer is None:
        return 0.0
    return score if answer == ground_truth else format_score
