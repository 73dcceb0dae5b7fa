"""Scorer for strive's generated arithmetic problems (data_source `strive/arithmetic`).

GSM8K's strict rule (the number after the last `####`, exact string match), plus a small format credit for a
well-formed `#### N` with the wrong N: a small model first learns the format, then the answers, and the
reward curve shows both.
"""

from __future__ import annotations

from strive.reward import gsm8k

FORMAT_SCORE = 0.1


def compute_score(solution_str: str, ground_truth: str, format_score: float = FORMAT_SCORE, score: float = 1.0) -> float:
    return gsm8k.compute_score(solution_str, ground_truth, method="strict", format_score=format_score, score=score)
