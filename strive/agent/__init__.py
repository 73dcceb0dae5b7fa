"""Multi-turn, tool-calling rollouts (verl's `rollout.multi_turn.*`): tools, the hermes tool-call parser, and
the runner that turns parsed calls into tool messages.

Why it exists: verl's GSM8K/Sandbox-Fusion tool recipes must run unchanged under strive. This package is the first
slice: it imports nothing heavy (no torch, no Ray, no engine) and is not wired into the trainer yet; the keys
`actor_rollout_ref.rollout.multi_turn.*` stay refused until an agent loop uses it. `docs/multiturn.md` explains.

    PYTHONPATH=$PWD python -m pytest -q tests/unit/test_agent_*.py
"""
