"""Start-up checks of the reward's columns, so bad rows stop the run before any worker starts.

Why it exists: strive's built-in scorers (strive.reward, verl's `default_compute_score`) compare the extracted
answer with `reward_model.ground_truth` as a string. An integer or float ground truth (a parquet column written
from numbers) never equals a string, so such a run trained without a word and always scored 0; a list, dict or
missing ground truth, or a `data_source` with no scorer, failed only when the first batch was scored.

What it chose, for runs scored by the built-in scorers (no `custom_reward_function.path`):
- an int or float ground truth (not bool) becomes its string form (`18`, `18.0` → "18"; `2.5` → "2.5"), with one
  start-up line naming the column and how many rows of which file were converted;
- any other non-string ground truth (list, dict, None, bool, bytes) stops the run naming file, row and column;
- a data source without a scorer stops the run naming file, row, column and value.
With a custom reward function the values reach it unchanged (its contract is its own), as in verl.

Exercised by `pytest tests/unit/test_data_checks.py tests/reliability/test_bad_input.py`.
"""

from __future__ import annotations

import numbers
from typing import Any

from strive.reward import select_scorer

GROUND_TRUTH = "reward_model.ground_truth"


def ground_truth_text(value: Any) -> str | None:
    """The string a built-in scorer compares with, for an int/float ground truth; None for any other type."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        return None
    if isinstance(value, numbers.Integral):
        return str(int(value))
    number = float(value)
    return str(int(number)) if number.is_integer() else repr(number)


def check_reward_columns(dataset: Any, reward_fn_key: str = "data_source") -> None:
    """Convert numeric ground truths to strings and refuse unusable ones or unknown data sources (module doc).
    `dataset` is an RLDataset: `rows` (dicts) and `origins` ((file, row in file) per row)."""
    origins = getattr(dataset, "origins", None) or [("<data>", i) for i in range(len(dataset.rows))]
    converted: dict[str, int] = {}
    known: set[Any] = set()
    for row, (path, index) in zip(dataset.rows, origins):
        source = row.get(reward_fn_key)
        if source not in known:
            try:
                select_scorer(source)
            except Exception as exc:
                raise ValueError(f"{path}: row {index}, column {reward_fn_key!r} (data.reward_fn_key): {exc}") from None
            known.add(source)
        reward_model = row.get("reward_model")
        truth = reward_model.get("ground_truth") if isinstance(reward_model, dict) else None
        if isinstance(truth, str):
            continue
        text = ground_truth_text(truth)
        if text is None:
            raise ValueError(
                f"{path}: row {index}, column {GROUND_TRUTH!r}: the ground truth is "
                f"{'missing' if truth is None else f'a {type(truth).__name__} ({truth!r:.60})'}; the built-in scorers "
                "compare it as a string. Write it as a string, or score with custom_reward_function.path."
            )
        reward_model["ground_truth"] = text
        converted[path] = converted.get(path, 0) + 1
    for path, count in converted.items():
        print(f"[strive] note: column {GROUND_TRUTH!r} of {path} holds numbers in {count} rows; converted to strings "
              "(e.g. 18 → '18') so the built-in scorers can compare them", flush=True)
