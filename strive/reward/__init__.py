"""Rule-based rewards, chosen per row by its `data_source` column (spec §3.2).

Why it exists: verl users select the scorer implicitly through the dataset's `data_source`
value, so `default_compute_score` keeps that mapping. It is a plain function with a dict
lookup, not a registry; a user scorer replaces it through `custom_reward_function.path`
(`strive.reward.custom`).

What it chose: `math`, `math_dapo`, `math_dapo_reasoning` and `aime*` go to the boxed-answer
scorer in `strive.reward.math` (verl's separate `math_dapo` scorer, which needs an
"Answer:" line and returns ±1, is not reproduced). Code, geometry and search data sources
are not supported yet and raise. This package imports nothing heavy: the manager
(torch) lives in `strive.reward.manager` and math_verify is imported on first use.

Exercised by `pytest tests/unit/test_reward_dispatch.py`.
"""

from __future__ import annotations

import numbers
from collections.abc import Callable
from typing import Any

from strive.reward import arithmetic, gsm8k, math, token_set

_SCORERS: dict[str, Callable[[str, Any], float | dict[str, float]]] = {
    "openai/gsm8k": gsm8k.compute_score,
    "strive/arithmetic": arithmetic.compute_score,  # strive.data.synthetic: GSM8K-format problems
    "strive/token_set": token_set.compute_score,  # random-weight models on GPU: a reward a policy can climb
    "lighteval/MATH": math.compute_score,
    "DigitalLearningGmbH/MATH-lighteval": math.compute_score,
    "HuggingFaceH4/MATH-500": math.compute_score,
    "math": math.compute_score,
    "math_dapo": math.compute_score,
    "math_dapo_reasoning": math.compute_score,
}
_PREFIX_SCORERS: dict[str, Callable[[str, Any], float | dict[str, float]]] = {"aime": math.compute_score}

SUPPORTED_DATA_SOURCES: tuple[str, ...] = tuple(_SCORERS) + tuple(f"{p}*" for p in _PREFIX_SCORERS)


def normalize_score(result: Any, data_source: str = "?") -> float | dict[str, Any]:
    """A scorer's return value in the two shapes the reward manager accepts.

    dict: returned unchanged, but it must contain `score`. int/float/bool (or a 0-d array): float.
    Anything else (tuple, list, array): its first element, as a float.
    """
    if isinstance(result, dict):
        if "score" not in result:
            raise ValueError(
                f"reward function for data_source={data_source!r} returned a dict without a 'score' key "
                f"(keys: {sorted(result)})"
            )
        return result
    if isinstance(result, numbers.Real) or getattr(result, "ndim", None) == 0:  # incl. numpy/torch scalars
        return float(result)
    try:
        return float(result[0])
    except (TypeError, IndexError, KeyError, ValueError) as err:
        raise TypeError(
            f"reward function for data_source={data_source!r} returned {type(result).__name__} {result!r}; "
            "expected a float, a bool, a dict with 'score', or a sequence whose first element is the score"
        ) from err


def select_scorer(data_source: str) -> Callable[[str, Any], float]:
    """The rule scorer for `data_source`, or NotImplementedError listing the supported ones."""
    if data_source in _SCORERS:
        return _SCORERS[data_source]
    for prefix, scorer in _PREFIX_SCORERS.items():
        if str(data_source).startswith(prefix):
            return scorer
    raise NotImplementedError(
        f"no rule reward for data_source={data_source!r}. Supported: {', '.join(SUPPORTED_DATA_SOURCES)}. "
        "For other data, set custom_reward_function.path (and .name) to your own scoring function."
    )


def default_compute_score(
    data_source: str,
    solution_str: str,
    ground_truth: Any,
    extra_info: dict | None = None,
    **kwargs: Any,
) -> float | dict[str, Any]:
    """Score one response with the rule reward its data source selects.

    `extra_info` and extra keyword arguments (verl passes sandbox settings here) are
    accepted for signature compatibility and ignored by the rule scorers.
    """
    scorer = select_scorer(data_source)
    return normalize_score(scorer(solution_str, ground_truth), data_source)


__all__ = ["SUPPORTED_DATA_SOURCES", "default_compute_score", "normalize_score", "select_scorer"]
