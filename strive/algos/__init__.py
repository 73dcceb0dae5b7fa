"""The RL math of strive as pure functions on tensors: advantages, KL, losses, log-probs.

Why this package exists: it is the part of verl's `core_algos` whose numbers strive must
reproduce (spec §4). It imports only torch, so the workers, the trainer and the CPU unit tests
can all use it without Ray, engines or configs.

Importing the package loads nothing: `strive.config` validates user-written names against
`strive.algos.names` and must not pull in torch to do so. `from strive.algos import kl_penalty`
still works; each name is imported from its module on first use (PEP 562 `__getattr__`).

Exercised by: pytest tests/unit -k "algos or names"
"""

from __future__ import annotations

from strive.lazy import lazy_exports

# public name -> the module of this package that defines it
_HOME = {
    "compute_advantages": "advantages",
    "compute_gae": "advantages",
    "compute_grpo": "advantages",
    "compute_reinforce_pp": "advantages",
    "compute_reinforce_pp_baseline": "advantages",
    "compute_remax": "advantages",
    "compute_rloo": "advantages",
    "whiten": "advantages",
    "AdaptiveKLController": "kl",
    "FixedKLController": "kl",
    "kl_penalty": "kl",
    "entropy_from_logits": "logits",
    "logprobs_from_logits": "logits",
    "aggregate_loss": "losses",
    "policy_loss": "losses",
    "value_loss": "losses",
    "AGG_MODES": "names",
    "CRITIC_ESTIMATORS": "names",
    "ESTIMATORS": "names",
    "GROUP_ESTIMATORS": "names",
    "KL_KINDS": "names",
    "KL_NOT_IMPLEMENTED": "names",
}

__all__ = sorted(_HOME)
__getattr__, __dir__ = lazy_exports(__name__, _HOME)
