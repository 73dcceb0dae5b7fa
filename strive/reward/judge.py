"""The LLM judge's side of a reward: the prompt it reads and the score pulled from its reply.

reward_model.judge.prompt_template is filled per sample with {prompt} (the question: the last user message),
{response} (decoded without special tokens) and {ground_truth} (str of the row's ground truth, "" if none); the
text becomes the judge's user message, rendered with the judge's chat template. The reply's first match of
reward_model.judge.score_regex (its group 1 if it has one) is the score, divided by reward_model.judge.max_score and
clipped to [0, 1]; a reply with no parseable number scores 0 and is counted (reward_extra/judge_parsed).

Pure functions; `pytest tests/unit/test_reward_judge.py`.
"""

from __future__ import annotations

import re
from typing import Any


def judge_prompt(template: str, prompt: str, response: str, ground_truth: Any) -> str:
    return template.format(prompt=prompt, response=response, ground_truth="" if ground_truth is None else str(ground_truth))


def parse_score(reply: str, pattern: str, max_score: float) -> tuple[float, bool]:
    """(score in [0, 1], whether the reply held one)."""
    match = re.search(pattern, reply)
    if match is None:
        return 0.0, False
    text = match.group(1) if match.groups() else match.group(0)
    try:
        value = float(text)
    except (TypeError, ValueError):
        return 0.0, False
    return min(max(value / max_score, 0.0), 1.0), True
