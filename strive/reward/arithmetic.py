"""Scorer for strive's generated arithmetic problems (data_source `strive/arithmetic`).

GSM8K's strict rule: 1 for the right number after the last `####` (exact string match), else 0 (no credit for
the format alone: the demo pays for right answers only). Besides the score it reports whether the answer was right,
whether it was in the `#### N` format at all, and whether the last number written anywhere was right, so
validation logs them apart (`val-aux/strive/arithmetic/right/mean@1`, `.../formatted/...`,
`.../right_any_format/...`): a rise in `right` that `right_any_format` does not share would be format alone.
"""

from __future__ import annotations

from strive.reward import gsm8k

FORMAT_SCORE = 0.0


def compute_score(solution_str: str, ground_truth: str, format_score: float = FORMAT_SCORE,
                  score: float = 1.0) -> dict[str, float]:
    answer = gsm8k.extract_solution(solution_str, method="strict")
    return {"score": gsm8k.score_answer(answer, ground_truth, format_score, score),
            "right": float(answer == ground_truth), "formatted": float(answer is not None),
            "right_any_format": float(_last_number(solution_str) == ground_truth)}


def _last_number(solution_str: str) -> str | None:
    """The last number written anywhere in the response (GSM8K's flexible rule), commas and a final '.' dropped."""
    found = gsm8k.extract_solution(solution_str, method="flexible")
    return None if found is None else found.replace(",", "").rstrip(".")
