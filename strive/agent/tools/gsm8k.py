"""`calc_gsm8k_reward`: the model submits an answer to a GSM8K problem and is told whether it is right.

Why it exists: verl's multi-turn GSM8K recipe (`examples/sglang_multiturn`, `verl.tools.gsm8k_tool.Gsm8kTool`)
trains the model to call this tool; its YAML maps here. The semantics follow verl's tool exactly:

- the ground truth comes from `create(ground_truth=...)` or `create(create_kwargs={"ground_truth": ...})`
  (verl's data rows carry it in `extra_info.tools_kwargs.calc_gsm8k_reward.create_kwargs`);
- the `answer` argument is turned into a string, prefixed with `"#### "` unless it already starts so, and scored
  by strive's GSM8K scorer in `flexible` mode (format score 0, score 1): the reward is 1.0 if the last number in
  it equals the ground truth, else 0.0;
- the step reward is 0.0 when this answer scores higher than the instance's previous best-so-far reward (which
  starts at 0.0), else -0.05 (verl's "penalty for non improved answer submission"); the stored reward is then
  replaced by this answer's, so a wrong answer after a right one is penalised and lowers `calc_reward`;
- the text returned is verl's: `Current parsed answer='72' reward=1.0`.

Note that verl's current agent loop creates and releases an instance around every single call, so there the
penalty is simply -0.05 for every wrong answer; strive's runner keeps one instance per trajectory (as verl's older
SGLang rollout did), which is what the "non improved" rule was written for.

    PYTHONPATH=$PWD python -m pytest -q tests/unit/test_agent_gsm8k_tool.py
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from strive.agent.tools.base import BaseTool, create_kwargs_of
from strive.reward.gsm8k import compute_score

NON_IMPROVED_PENALTY = -0.05
"""Step reward of an answer that does not beat the instance's previous reward."""


@dataclass
class _Attempt:
    ground_truth: str | None
    response: str = ""
    reward: float = 0.0


def score_submission(answer: Any, ground_truth: str | None) -> tuple[str, float]:
    """The answer as verl's tool reads it (a string) and its reward (1.0 right, 0.0 wrong or no ground truth)."""
    text = answer if isinstance(answer, str) else str(answer)
    response = text if text.startswith("#### ") else "#### " + text
    if ground_truth is None:
        return text, 0.0
    return text, float(compute_score(response, str(ground_truth), method="flexible", format_score=0.0, score=1.0))


class Gsm8kTool(BaseTool):
    """verl's `Gsm8kTool`, on strive's scorer. Config: none (verl's `type: native` is accepted and ignored)."""

    default_schema: ClassVar[dict[str, Any] | None] = {
        "type": "function",
        "function": {
            "name": "calc_gsm8k_reward",
            "description": "A tool for calculating the reward of gsm8k",
            "parameters": {
                "type": "object",
                "properties": {"answer": {"type": "string", "description": "The answer to the question"}},
                "required": ["answer"],
            },
        },
    }

    def __init__(self, config: dict[str, Any] | None = None, tool_schema: Any = None):
        super().__init__(config, tool_schema)
        self._attempts: dict[str, _Attempt] = {}

    async def create(self, instance_id: str | None = None, **kwargs: Any) -> str:
        instance_id = await super().create(instance_id)
        truth = create_kwargs_of(kwargs).get("ground_truth")
        self._attempts[instance_id] = _Attempt(ground_truth=None if truth is None else str(truth))
        return instance_id

    async def execute(self, instance_id: str, parameters: dict[str, Any], **kwargs: Any) -> tuple[str, float, dict]:
        attempt = self._attempts[instance_id]
        answer, reward = score_submission(parameters.get("answer", ""), attempt.ground_truth)
        attempt.response = answer if answer.startswith("#### ") else "#### " + answer
        step_reward = 0.0 if reward > attempt.reward else NON_IMPROVED_PENALTY
        attempt.reward = reward
        return f"Current parsed {answer=} {reward=}", step_reward, {}

    async def calc_reward(self, instance_id: str, **kwargs: Any) -> float:
        return self._attempts[instance_id].reward

    async def release(self, instance_id: str, **kwargs: Any) -> None:
        self._attempts.pop(instance_id, None)
