"""Multi-turn, tool-calling rollouts (verl's `rollout.multi_turn.*`): tools, the hermes tool-call parser, the
runner that turns parsed calls into tool messages, and the token-level trajectory (`trajectory.py`: loss mask on
the engine's tokens only, aligned log-probs, turn limits) with its chat-template check (`chat_template.py`).

Why it exists: verl's GSM8K/Sandbox-Fusion tool recipes must run unchanged under strive. These are the first
slices: they import nothing heavy (no torch, no Ray, no engine) and are not wired into the trainer yet; the keys
`actor_rollout_ref.rollout.multi_turn.*` stay refused until an agent loop uses them. `docs/multiturn.md` explains.

    PYTHONPATH=$PWD python -m pytest -q tests/unit/test_agent_*.py
"""
