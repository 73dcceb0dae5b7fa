"""Per-token KL estimators and the KL-coefficient controllers.

Why this module exists: KL to the reference policy enters training in two places, as a
penalty inside the reward (`algorithm.use_kl_in_reward`, with a fixed or adaptive β) and as
an extra loss term (`actor.use_kl_loss`). Both pick an estimator by verl's name (spec §4.2-4.4),
so the clamps and straight-through `+` variants live here, once; the names are
strive.algos.names.KL_KINDS, which config checks without importing torch.

Choices: `full` (exact KL over the vocabulary) needs full logits and is not implemented, so it is
not in KL_KINDS and is refused by name (names.KL_NOT_IMPLEMENTED), here and in config alike;
AdaptiveKLController also rejects target_kl <= 0, where verl would silently divide by zero.

Shapes: B = sequences, T = response tokens (any shape works; everything is element-wise).
Exercised by: pytest tests/unit/test_algos_kl.py
"""

from __future__ import annotations

import torch

from strive.algos.names import KL_KINDS, KL_NOT_IMPLEMENTED, split_kl_kind


def _base_kl(logp: torch.Tensor, ref_logp: torch.Tensor, base: str, kind: str) -> torch.Tensor:
    """The estimator named `base` at d = logp − ref_logp; `kind` is the name the user gave."""
    if base in KL_NOT_IMPLEMENTED:
        raise NotImplementedError(f"KL kind {kind!r} {KL_NOT_IMPLEMENTED[base]}")
    if base not in KL_KINDS:
        raise ValueError(f"unknown KL kind {kind!r}; valid kinds: {', '.join(KL_KINDS)}, each optionally with '+'")
    d = logp - ref_logp  # (B, T)
    if base in ("kl", "k1"):
        return d
    if base == "abs":
        return d.abs()
    if base in ("mse", "k2"):
        return 0.5 * d.square()
    if base in ("low_var_kl", "k3"):
        u = (-d).clamp(-20.0, 20.0)  # log(π_ref/π), clamped so exp stays finite
        return (u.exp() - u - 1.0).clamp(-10.0, 10.0)
    raise NotImplementedError(f"KL kind {base!r} is in strive.algos.names.KL_KINDS "
                              "but kl_penalty has no branch for it")


def kl_penalty(logp: torch.Tensor, ref_logp: torch.Tensor, kind: str) -> torch.Tensor:
    """Per-token KL estimate between the policy and the reference, with d = logp − ref_logp.

    kl, k1: d            abs: |d|            mse, k2: ½d²
    low_var_kl, k3: with u = clamp(−d, −20, 20): clamp(e^u − u − 1, −10, 10)
    `<kind>+`: forward value of <kind>, gradient of k2 (straight-through):
        ½d² − sg(½d²) + sg(<kind>)
    """
    base, straight_through = split_kl_kind(kind)
    forward = _base_kl(logp, ref_logp, base, kind)  # (B, T)
    if not straight_through:
        return forward
    k2 = 0.5 * (logp - ref_logp).square()  # (B, T)
    return k2 - k2.detach() + forward.detach()


class FixedKLController:
    """β = kl_coef for the whole run (`algorithm.kl_ctrl.type=fixed`)."""

    def __init__(self, kl_coef: float) -> None:
        self.value = float(kl_coef)

    def update(self, current_kl: float, n_steps: int) -> None:
        """No-op: a fixed β ignores the measured KL."""


class AdaptiveKLController:
    """Proportional β controller of Ziegler et al. 2019 (`algorithm.kl_ctrl.type=adaptive`).

    e = clip(current_kl / target_kl − 1, −0.2, 0.2);   β ← β·(1 + e·n_steps / horizon).
    """

    def __init__(self, init_kl_coef: float, target_kl: float, horizon: float) -> None:
        if horizon <= 0:
            raise ValueError(f"AdaptiveKLController needs horizon > 0, got {horizon}")
        if target_kl <= 0:
            raise ValueError(f"AdaptiveKLController needs target_kl > 0, got {target_kl}")
        self.value = float(init_kl_coef)
        self.target_kl = float(target_kl)
        self.horizon = float(horizon)

    def update(self, current_kl: float, n_steps: int) -> None:
        """current_kl: batch mean of per-sequence mean KL; n_steps: sequences in the batch."""
        error = min(max(float(current_kl) / self.target_kl - 1.0, -0.2), 0.2)
        self.value *= 1.0 + error * n_steps / self.horizon
