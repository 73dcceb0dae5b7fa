"""KL estimators (spec §4.2) against per-element math, the straight-through '+' gradients via
autograd, and the KL controllers (spec §4.3)."""

import math
import random

import pytest
import torch

from strive.algos import KL_KINDS, AdaptiveKLController, FixedKLController, kl_penalty


def ref_kl(d, kind):
    """Per-element formula from the spec table, on a Python float d = logp − ref_logp."""
    if kind in ("kl", "k1"):
        return d
    if kind == "abs":
        return abs(d)
    if kind in ("mse", "k2"):
        return d * d / 2
    u = min(max(-d, -20.0), 20.0)
    return min(max(math.exp(u) - u - 1, -10.0), 10.0)


BASE_KINDS = ["kl", "k1", "abs", "mse", "k2", "low_var_kl", "k3"]


def random_logps(seed, shape, spread=1.0):
    rng = random.Random(seed)
    logp = [[-rng.uniform(0, 5) for _ in range(shape[1])] for _ in range(shape[0])]
    ref = [[v + rng.gauss(0, spread) for v in row] for row in logp]
    return torch.tensor(logp, dtype=torch.float64), torch.tensor(ref, dtype=torch.float64)


@pytest.mark.parametrize("kind", BASE_KINDS)
@pytest.mark.parametrize("seed,shape,spread", [(0, (3, 5), 0.5), (1, (8, 17), 3.0), (2, (2, 4), 30.0)])
def test_kl_matches_reference(kind, seed, shape, spread):
    logp, ref = random_logps(seed, shape, spread)
    got = kl_penalty(logp, ref, kind)
    expected = [[ref_kl(a - b, kind) for a, b in zip(ra, rb)] for ra, rb in zip(logp.tolist(), ref.tolist())]
    torch.testing.assert_close(got, torch.tensor(expected, dtype=torch.float64))


def test_k3_clamps():
    logp = torch.tensor([-30.0, 0.0, 30.0], dtype=torch.float64)
    got = kl_penalty(logp, torch.zeros(3, dtype=torch.float64), "k3")
    # d = −30 → u = 20 → huge → clamped to 10;  d = 0 → 0;  d = 30 → u = −20 → e^−20 + 19 → clamped to 10
    torch.testing.assert_close(got, torch.tensor([10.0, 0.0, 10.0], dtype=torch.float64))


@pytest.mark.parametrize("kind", BASE_KINDS)
def test_plus_variant_has_base_value_and_k2_gradient(kind):
    logp, ref = random_logps(3, (4, 6), 1.0)
    logp.requires_grad_(True)
    ref.requires_grad_(True)
    value = kl_penalty(logp, ref, kind + "+")
    torch.testing.assert_close(value.detach(), kl_penalty(logp.detach(), ref.detach(), kind))
    weights = torch.rand(4, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    (value * weights).sum().backward()
    d = (logp - ref).detach()
    torch.testing.assert_close(logp.grad, weights * d)  # ∂(½d²)/∂logp = d
    torch.testing.assert_close(ref.grad, -weights * d)


def test_plain_k3_gradient_differs_from_k2():
    # guards the test above: the '+' variant must change the gradient, not just copy the base
    logp = torch.tensor([0.0, -1.0], dtype=torch.float64, requires_grad=True)
    kl_penalty(logp, torch.tensor([-2.0, 0.5], dtype=torch.float64), "k3").sum().backward()
    d = torch.tensor([2.0, -1.5], dtype=torch.float64)
    torch.testing.assert_close(logp.grad, 1 - torch.exp(-d))  # ∂(e^{−d} + d − 1)/∂d
    assert not torch.allclose(logp.grad, d)


def test_kl_errors():
    x = torch.zeros(2, 3)
    for kind in ("full", "full+"):
        with pytest.raises(NotImplementedError, match="full"):
            kl_penalty(x, x, kind)
    for kind in ("k4", "k3++", "KL"):
        with pytest.raises(ValueError) as info:
            kl_penalty(x, x, kind)
        assert repr(kind) in str(info.value)
        assert all(k in str(info.value) for k in KL_KINDS)


def test_fixed_controller_is_constant():
    ctl = FixedKLController(0.05)
    ctl.update(current_kl=10.0, n_steps=256)
    assert ctl.value == 0.05


@pytest.mark.parametrize(
    "current_kl,expected_error",
    [(0.3, 0.2), (0.12, 0.2), (0.11, 0.1), (0.1, 0.0), (0.095, -0.05), (0.0, -0.2)],
)
def test_adaptive_controller_step(current_kl, expected_error):
    ctl = AdaptiveKLController(init_kl_coef=0.2, target_kl=0.1, horizon=1000)
    ctl.update(current_kl, n_steps=50)
    assert ctl.value == pytest.approx(0.2 * (1 + expected_error * 50 / 1000), rel=1e-12)


def test_adaptive_controller_direction_over_steps():
    up = AdaptiveKLController(0.1, target_kl=0.01, horizon=100)
    down = AdaptiveKLController(0.1, target_kl=0.01, horizon=100)
    prev_up, prev_down = up.value, down.value
    for _ in range(5):
        up.update(torch.tensor(0.05), n_steps=8)  # KL too high → β grows
        down.update(0.001, n_steps=8)  # KL too low → β shrinks
        assert up.value > prev_up and down.value < prev_down
        prev_up, prev_down = up.value, down.value
    assert up.value == pytest.approx(0.1 * (1 + 0.2 * 8 / 100) ** 5)


def test_adaptive_controller_rejects_bad_args():
    with pytest.raises(ValueError, match="horizon"):
        AdaptiveKLController(0.1, 0.1, 0)
    with pytest.raises(ValueError, match="target_kl"):
        AdaptiveKLController(0.1, 0.0, 10)
