"""The names a config may give the RL math, kept where both the math and the config can read them.

Why this module exists: `algorithm.adv_estimator`, `loss_agg_mode`, `kl_loss_type` and `algorithm.kl_penalty`
are checked by `strive.config` before any GPU is held, and `strive.config` imports no torch; the functions that
dispatch on those names (advantages.compute_advantages, kl.kl_penalty, losses.aggregate_loss) do. So each list
lives here, once, without imports: the dispatchers refuse anything outside it, config accepts exactly it, and
tests/unit/test_names.py checks that every name in it reaches a branch of its dispatcher.

Exercised by: pytest tests/unit/test_names.py
"""

from __future__ import annotations

ESTIMATORS = ("gae", "grpo", "rloo", "reinforce_plus_plus", "reinforce_plus_plus_baseline", "remax")
# Estimators that read critic values; `critic.enable` defaults to True exactly for these.
CRITIC_ESTIMATORS = ("gae",)
# Estimators that compare the responses to one prompt, so they need group ids and rollout.n > 1 to mean anything.
GROUP_ESTIMATORS = ("grpo", "rloo", "reinforce_plus_plus_baseline")

AGG_MODES = ("token-mean", "seq-mean-token-sum", "seq-mean-token-mean", "seq-mean-token-sum-norm")

# Each may carry a trailing "+": the forward value of the estimator with the gradient of k2 (kl.kl_penalty).
KL_KINDS = ("kl", "k1", "abs", "mse", "k2", "low_var_kl", "k3")
# verl names these too; they are refused with the reason rather than as unknown. "full" is the exact KL
# Σ_v π(v)·log(π(v)/π_ref(v)), which needs both models' logits over the whole vocabulary at every token;
# strive's forward keeps only the sampled token's log-prob (strive/models/forward.py).
KL_NOT_IMPLEMENTED = {"full": "needs full-vocabulary logits and is not implemented"}


def split_kl_kind(kind: str) -> tuple[str, bool]:
    """'k3+' -> ('k3', True), 'k3' -> ('k3', False): the estimator's name and whether it asks for the k2 gradient.

    Only one '+' is stripped, so 'k3++' has base 'k3+', which is no estimator.
    """
    return (kind[:-1], True) if kind.endswith("+") else (kind, False)
