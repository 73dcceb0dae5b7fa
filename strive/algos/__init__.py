"""The RL math of strive as pure functions on tensors: advantages, KL, losses, log-probs.

Why this package exists: it is the part of verl's `core_algos` whose numbers strive must
reproduce (spec §4). It imports only torch, so the workers, the trainer and the CPU unit tests
can all use it without Ray, engines or configs.

Exercised by: pytest tests/unit -k algos
"""

from strive.algos.advantages import (
    CRITIC_ESTIMATORS,
    ESTIMATORS,
    compute_advantages,
    compute_gae,
    compute_grpo,
    compute_reinforce_pp,
    compute_reinforce_pp_baseline,
    compute_remax,
    compute_rloo,
    needs_critic,
    whiten,
)
from strive.algos.kl import KL_KINDS, AdaptiveKLController, FixedKLController, kl_penalty
from strive.algos.logits import entropy_from_logits, logprobs_from_logits
from strive.algos.losses import AGG_MODES, aggregate_loss, policy_loss, value_loss

__all__ = [
    "AGG_MODES",
    "CRITIC_ESTIMATORS",
    "ESTIMATORS",
    "KL_KINDS",
    "AdaptiveKLController",
    "FixedKLController",
    "aggregate_loss",
    "compute_advantages",
    "compute_gae",
    "compute_grpo",
    "compute_reinforce_pp",
    "compute_reinforce_pp_baseline",
    "compute_remax",
    "compute_rloo",
    "entropy_from_logits",
    "kl_penalty",
    "logprobs_from_logits",
    "needs_critic",
    "policy_loss",
    "value_loss",
    "whiten",
]
