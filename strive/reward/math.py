"""MATH-style rule reward: the last `\\boxed{...}` answer, compared for equivalence.

Why it exists: MATH, MATH-500, DAPO-style and AIME data sources are scored on the final
boxed answer (spec §3.2). Models write the same value many ways (`\\dfrac12`, `0.5`, `1/2`,
`\\left( 1, 2 \\right)`, `5\\text{ cm}`), so exact string matching would punish correct
answers.

What it chose:
- extraction takes the *last* `\\boxed{...}` or `\\fbox{...}` with balanced braces, and also
  the brace-less `\\boxed 5` form (up to the next `$` or newline);
- no boxed answer scores 0.0: the format is part of the task;
- equivalence first tries the cheap conservative check in `math_normalize`, then, when the
  `math_verify` package imports, its SymPy-based `parse`/`verify`. Without `math_verify`
  only the normalised check runs. math_verify's timeout uses SIGALRM, which only works on
  the main thread, so off the main thread it runs without a timeout.

Exercised by `pytest tests/unit/test_reward_math.py`.
"""

from __future__ import annotations

import functools
import threading

from strive.reward.math_normalize import strings_equivalent

_BOX_COMMANDS = ("\\boxed", "\\fbox")
_TIMEOUT_S = 5


def _find_last_box(text: str) -> tuple[int, str] | None:
    """Position and name of the last box command that is not a prefix of a longer command."""
    best = None
    for command in _BOX_COMMANDS:
        pos = len(text)
        while (pos := text.rfind(command, 0, pos)) >= 0:
            end = pos + len(command)
            if end >= len(text) or not text[end].isalpha():
                if best is None or pos > best[0]:
                    best = (pos, command)
                break
    return best


def extract_boxed_answer(text: str) -> str | None:
    """Content of the last `\\boxed{...}`/`\\fbox{...}` (or `\\boxed 5`), or None."""
    found = _find_last_box(text)
    if found is None:
        return None
    pos, command = found
    rest = text[pos + len(command):]
    stripped = rest.lstrip()
    if not stripped.startswith("{"):
        if len(stripped) == len(rest):  # `\boxed5` is not the brace-less form; `\boxed 5` is
            return None
        answer = stripped.split("$")[0].split("\n")[0].strip()
        return answer or None
    depth = 0
    for i, ch in enumerate(stripped):
        if ch == "{":
            depth += 1
        elif ch == "}":
            depth -= 1
            if depth == 0:
                return stripped[1:i]
    return None  # unbalanced: the answer was cut off


@functools.lru_cache(maxsize=1)
def _import_math_verify():
    """The math_verify module, or None when it is not installed."""
    try:
        import math_verify
    except ImportError:
        return None
    return math_verify


def _math_verify_equivalent(mv, prediction: str, ground_truth: str) -> bool:
    on_main = threading.current_thread() is threading.main_thread()
    timeout = _TIMEOUT_S if on_main else None
    targets = [mv.LatexExtractionConfig(), mv.ExprExtractionConfig()]
    try:
        gold = mv.parse("\\boxed{" + ground_truth + "}", extraction_config=targets, parsing_timeout=timeout)
        pred = mv.parse("\\boxed{" + prediction + "}", extraction_config=targets, parsing_timeout=timeout)
        if not gold or not pred:
            return False
        return bool(mv.verify(gold, pred, timeout_seconds=timeout))
    except Exception:  # SymPy can fail in many ways on odd model output; that is "not equal"
        return False


def is_equivalent(prediction: str, ground_truth: str, use_math_verify: bool | None = None) -> bool:
    """Whether two final answers denote the same value.

    use_math_verify: None = use it when importable; False = normalised strings only.
    """
    if strings_equivalent(prediction, ground_truth):
        return True
    mv = _import_math_verify() if use_math_verify is not False else None
    if use_math_verify and mv is None:
        raise ImportError("use_math_verify=True but the `math_verify` package is not installed (pip install math-verify)")
    return mv is not None and _math_verify_equivalent(mv, prediction, ground_truth)


def compute_score(solution_str: str, ground_truth: str, use_math_verify: bool | None = None) -> float:
    """1.0 if the last boxed answer in `solution_str` is equivalent to `ground_truth`, else 0.0.

    A ground truth that itself contains `\\boxed{}` (MATH's full solutions) is reduced to its box.
    """
    answer = extract_boxed_answer(solution_str)
    if answer is None:
        return 0.0
    gold = str(ground_truth)
    gold = extract_boxed_answer(gold) or gold
    return 1.0 if is_equivalent(answer, gold, use_math_verify=use_math_verify) else 0.0
