"""Scorer for strive's generated arithmetic problems (data_source `strive/arithmetic`).

GSM8K's strict rule (the number after the last `####`, exact string match), plus a small format credit for a
well-formed `#### N` with the wrong N: a small model first learns the format, then the answers, and the
reward curve shows both. Besides the score it reports whether the answer was right and whether it was in the
`#### N` format, so validation logs the two apart (`val-aux/strive/arithmetic/right/mean@1` and `.../formatted/...`).
"""

from __future__ import annotations

from strive.reward import gsm8k

FORMAT_SCORE = 0.1


def compute_score(solution_str: str, ground_truth: str, format_score: float = FORMAT_SCORE,
                  score: float = 1.0) -> dict[str, float]:
    answer = gsm8k.extract_solution(solution_str, method="strict")
    return {"score": gsm8k.score_answer(answer, ground_truth, format_score, score),
            "right": float(answer == ground_truth), "formatted": float(answer is not None)}
