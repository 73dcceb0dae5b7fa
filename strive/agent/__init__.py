"""Multi-turn, tool-calling rollouts (verl's `rollout.multi_turn.*`): the agent loops (`loop.py`), their settings
from the config (`settings.py`), tools, the hermes tool-call parser, the runner that turns parsed calls into tool
messages, and the token-level trajectory (`trajectory.py`: loss mask on the engine's tokens only, aligned
log-probs, turn limits) with its chat-template check (`chat_template.py`).

Why it exists: verl's GSM8K/Sandbox-Fusion tool recipes must run unchanged under strive. Nothing here imports
torch, Ray or an engine; the rollout worker builds an `AgentRunner` on its engine when `multi_turn.enable` is
set. `docs/multiturn.md` explains.

    PYTHONPATH=$PWD python -m pytest -q tests/unit/test_agent_*.py
"""
