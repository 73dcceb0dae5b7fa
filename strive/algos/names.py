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

# algorithm.rollout_correction (verl's names; strive/algos/rollout_correction.py has the math).
ROLLOUT_IS_LEVELS = ("token", "sequence")
# Rejection options: a statistic of δ = log π_old − log π_rollout per token (k1 = −δ, k2 = ½δ², k3 = e^δ − 1 − δ),
# taken per token, or summed / averaged / maximised over each sequence. k1 options keep a band [log lo, log hi];
# k2/k3 options keep values ≤ hi. Several may be joined with commas; a token must pass all of them.
ROLLOUT_RS_OPTIONS = ("token_k1", "token_k2", "token_k3", "seq_sum_k1", "seq_sum_k2", "seq_sum_k3",
                      "seq_mean_k1", "seq_mean_k2", "seq_mean_k3", "seq_max_k2", "seq_max_k3")
# verl ≤ 0.6 spelled the three ratio bands token / sequence / geometric; accepted as these options.
ROLLOUT_RS_ALIASES = {"token": "token_k1", "sequence": "seq_sum_k1", "geometric": "seq_mean_k1"}
ROLLOUT_LOSS_TYPES = ("ppo_clip", "reinforce")


def parse_rejection(options: str, thresholds: object) -> tuple[tuple[str, float | None, float], ...]:
    """`rollout_rs` and `rollout_rs_threshold` as (option, lower, upper) rules, in the order written.

    'token_k1,seq_mean_k3' with '0.5_2.0,0.01' -> (('token_k1', 0.5, 2.0), ('seq_mean_k3', None, 0.01)).
    One threshold is shared by every option. A k1 threshold is 'lower_upper' or a bare upper (lower = 1/upper);
    k2/k3 thresholds are one upper bound. Every bound must be > 0. Raises ValueError saying what is wrong.
    """
    names = []
    for raw in str(options).split(","):
        name = ROLLOUT_RS_ALIASES.get(raw.strip(), raw.strip())
        if not name:
            continue
        if name not in ROLLOUT_RS_OPTIONS:
            raise ValueError(f"unknown rejection option {raw.strip()!r}; valid: {', '.join(ROLLOUT_RS_OPTIONS)} "
                             f"(or verl's older {', '.join(ROLLOUT_RS_ALIASES)})")
        if name not in names:
            names.append(name)
    if not names:
        raise ValueError("names no rejection option")
    if thresholds is None:
        raise ValueError("needs rollout_rs_threshold (one bound per option, e.g. 2.0 or 0.5_2.0 for k1 options)")
    specs = [s.strip() for s in str(thresholds).split(",") if s.strip()]
    if len(specs) == 1:
        specs = specs * len(names)
    if len(specs) != len(names):
        raise ValueError(f"has {len(specs)} thresholds for {len(names)} options; give one, or one per option")
    rules = []
    for name, spec in zip(names, specs):
        lower: float | None = None
        try:
            if "_" in spec:
                if not name.endswith("k1"):
                    raise ValueError(f"threshold {spec!r} for {name}: only k1 options take lower_upper bounds")
                low_s, up_s = spec.split("_", 1)
                lower, upper = float(low_s), float(up_s)
            else:
                upper = float(spec)
                lower = 1.0 / upper if name.endswith("k1") and upper > 0 else None
        except ValueError as err:
            if "only k1" in str(err):
                raise
            raise ValueError(f"threshold {spec!r} for {name} is not a number (or lower_upper)") from None
        if upper <= 0 or (lower is not None and lower <= 0):
            raise ValueError(f"threshold {spec!r} for {name}: bounds must be > 0")
        if lower is not None and lower > upper:
            raise ValueError(f"threshold {spec!r} for {name}: lower bound above the upper one")
        rules.append((name, lower, upper))
    return tuple(rules)
