"""A synthetic reward for randomly initialised models (data_source `strive/token_set`).

GPU machines here have no real weights, so learning is shown on a reward a random policy can climb: the
fraction of response words `tK` (strive.models.tiny's word tokenizer) whose id K is divisible by 8. A random
policy scores about 1/8; a policy that learns scores more.
"""

from __future__ import annotations

MODULUS = 8


def compute_score(solution_str: str, ground_truth: str = "", modulus: int = MODULUS) -> float:
    words = solution_str.split()
    ids = [int(w[1:]) for w in words if w.startswith("t") and w[1:].isdigit()]
    if not ids:
        return 0.0
    return sum(1 for i in ids if i % modulus == 0) / len(ids)
