"""Loss aggregation (spec §4.7), PPO policy loss (§4.5) and value loss (§4.6) against float64
references computed token by token with plain Python."""

import math
import random

import pytest
import torch

from strive.algos import AGG_MODES, aggregate_loss, policy_loss, value_loss

SHAPES = [(1, 4), (5, 8), (12, 31)]
SEEDS = [0, 1, 2]


def t64(x):
    return torch.tensor(x, dtype=torch.float64)


def make_mask(rng, batch, length):
    """Rows with leading and trailing padding, some empty, row 0 full."""
    rows = [[1.0] * length]
    for _ in range(batch - 1):
        if rng.random() < 0.15:
            rows.append([0.0] * length)
            continue
        start = rng.randrange(0, max(1, length // 3))
        end = rng.randint(start + 1, length)
        rows.append([1.0 if start <= t < end else 0.0 for t in range(length)])
    return rows


def make_inputs(seed, batch, length):
    rng = random.Random(seed)
    mask = make_mask(rng, batch, length)
    logp = [[-rng.uniform(0.01, 4) for _ in range(length)] for _ in range(batch)]
    # old log-probs: mostly close, some far enough for the clip and the dual clip to bind
    old = [[v + rng.choice([rng.gauss(0, 0.1), rng.gauss(0, 1.5)]) for v in row] for row in logp]
    adv = [[rng.choice([0.0, rng.gauss(0, 1)]) for _ in range(length)] for _ in range(batch)]
    return logp, old, adv, mask


# ---------------------------------------------------------------- references


def ref_aggregate(loss, mask, mode, scale=None):
    length = len(mask[0])
    if mode == "token-mean":
        num = sum(l * m for lr, mr in zip(loss, mask) for l, m in zip(lr, mr))
        den = sum(m for mr in mask for m in mr)
        return num / den if den else 0.0
    if mode == "seq-mean-token-sum-norm":
        return sum(l * m for lr, mr in zip(loss, mask) for l, m in zip(lr, mr)) / (scale or length)
    per_seq = []
    for lr, mr in zip(loss, mask):
        n = sum(mr)
        if n == 0:
            continue
        total = sum(l * m for l, m in zip(lr, mr))
        per_seq.append(total if mode == "seq-mean-token-sum" else total / n)
    return sum(per_seq) / len(per_seq) if per_seq else 0.0


def ref_ppo_token(lp, old, a, eps_low, eps_high, c):
    """Returns (loss, clipped flag, lower-clipped flag) for one token."""
    ratio = math.exp(min(max(lp - old, -20.0), 20.0))
    l1 = -a * ratio
    l2 = -a * min(max(ratio, 1 - eps_low), 1 + eps_high)
    l_clip = max(l1, l2)
    l3 = -a * c
    if a < 0:
        return min(l_clip, l3), l2 > l1, l_clip > l3
    return l_clip, l2 > l1, False


def ref_policy(logp, old, adv, mask, eps_low, eps_high, c, mode):
    rows = [[ref_ppo_token(*x, eps_low, eps_high, c) for x in zip(*r)] for r in zip(logp, old, adv)]
    loss = ref_aggregate([[x[0] for x in r] for r in rows], mask, mode)
    clipfrac = ref_aggregate([[float(x[1]) for x in r] for r in rows], mask, "token-mean")
    lower = ref_aggregate([[float(x[2]) for x in r] for r in rows], mask, "token-mean")
    kl = ref_aggregate([[o - l for l, o in zip(lr, orow)] for lr, orow in zip(logp, old)], mask, "token-mean")
    return loss, {"pg_clipfrac": clipfrac, "pg_clipfrac_lower": lower, "ppo_kl": kl}


# ---------------------------------------------------------------- aggregation


HAND_LOSS = [[1.0, 2.0, 3.0, 7.0], [4.0, 5.0, 6.0, 7.0], [9.0, 9.0, 9.0, 9.0]]
HAND_MASK = [[1.0, 1.0, 0.0, 0.0], [1.0, 0.0, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0]]


@pytest.mark.parametrize(
    "mode,scale,expected",
    [
        ("token-mean", None, 7 / 3),  # (1 + 2 + 4) / 3 tokens
        ("seq-mean-token-sum", None, 3.5),  # (3 + 4) / 2 non-empty sequences
        ("seq-mean-token-mean", None, 2.75),  # (1.5 + 4) / 2
        ("seq-mean-token-sum-norm", None, 7 / 4),  # 7 / T
        ("seq-mean-token-sum-norm", 7.0, 1.0),
    ],
)
def test_aggregate_hand_examples(mode, scale, expected):
    got = aggregate_loss(t64(HAND_LOSS), t64(HAND_MASK), mode, scale=scale)
    assert got.item() == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize("mode", AGG_MODES)
def test_aggregate_all_masked_is_zero(mode):
    assert aggregate_loss(t64(HAND_LOSS), torch.zeros(3, 4, dtype=torch.float64), mode).item() == 0.0


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("mode", AGG_MODES)
def test_aggregate_matches_reference(seed, shape, mode):
    rng = random.Random(seed)
    mask = make_mask(rng, *shape)
    loss = [[rng.gauss(0, 1) for _ in range(shape[1])] for _ in range(shape[0])]
    got = aggregate_loss(t64(loss), t64(mask), mode)
    assert got.item() == pytest.approx(ref_aggregate(loss, mask, mode), rel=1e-10, abs=1e-12)


def test_aggregate_unknown_mode():
    with pytest.raises(ValueError) as info:
        aggregate_loss(torch.zeros(1, 2), torch.ones(1, 2), "token-sum")
    assert "'token-sum'" in str(info.value) and all(m in str(info.value) for m in AGG_MODES)


# ---------------------------------------------------------------- policy loss


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("mode", AGG_MODES)
@pytest.mark.parametrize("eps_low,eps_high,c", [(0.2, 0.2, 3.0), (0.2, 0.28, 10.0), (0.1, 0.3, 1.5)])
def test_policy_loss_matches_reference(seed, shape, mode, eps_low, eps_high, c):
    logp, old, adv, mask = make_inputs(seed, *shape)
    loss, metrics = policy_loss(t64(logp), t64(old), t64(adv), t64(mask), eps_low, eps_high, c, agg=mode)
    ref_loss, ref_metrics = ref_policy(logp, old, adv, mask, eps_low, eps_high, c, mode)
    assert loss.item() == pytest.approx(ref_loss, rel=1e-10, abs=1e-12)
    assert set(metrics) == set(ref_metrics)
    for name, value in metrics.items():
        assert value.dim() == 0 and not value.requires_grad
        assert value.item() == pytest.approx(ref_metrics[name], rel=1e-10, abs=1e-12), name


def test_policy_loss_metrics_see_clipping():
    # the random inputs must actually exercise both clips, or the comparison above proves little
    logp, old, adv, mask = make_inputs(0, 12, 31)
    _, metrics = policy_loss(t64(logp), t64(old), t64(adv), t64(mask))
    assert 0 < metrics["pg_clipfrac"].item() < 1
    assert 0 < metrics["pg_clipfrac_lower"].item() < 1


def test_dual_clip_bounds_token_loss():
    logp, old, adv, _ = make_inputs(4, 6, 10)
    lp, o, a = t64(logp), t64(old), t64(adv)
    bound_hit = 0
    for i in range(6):
        for t in range(10):
            one = torch.zeros(6, 10, dtype=torch.float64)
            one[i, t] = 1.0
            token_loss = policy_loss(lp, o, a, one, clip_c=3.0)[0].item()  # token-mean of one token
            if adv[i][t] < 0:
                assert token_loss <= 3.0 * abs(adv[i][t]) + 1e-12
                bound_hit += token_loss == pytest.approx(3.0 * abs(adv[i][t]))
    assert bound_hit > 0
    # without the dual clip the same token would cost more: ratio e^3 ≈ 20 > c
    one = torch.ones(1, 1, dtype=torch.float64)
    capped = policy_loss(t64([[0.0]]), t64([[-3.0]]), t64([[-2.0]]), one, clip_c=3.0)[0]
    assert capped.item() == pytest.approx(6.0)


def test_policy_gradient_at_ratio_one():
    # with old = sg(logp), ∂loss/∂logp = −A·m / Σm for token-mean (plain policy gradient)
    logp, _, adv, mask = make_inputs(7, 5, 8)
    lp = t64(logp).requires_grad_(True)
    a, m = t64(adv), t64(mask)
    loss, metrics = policy_loss(lp, lp.detach(), a, m)
    loss.backward()
    torch.testing.assert_close(lp.grad, -a * m / m.sum())
    assert metrics["pg_clipfrac"].item() == 0.0 and metrics["ppo_kl"].item() == 0.0


@pytest.mark.parametrize("c", [1.0, 0.5])
def test_policy_loss_rejects_clip_c_not_above_one(c):
    x = torch.zeros(1, 2)
    with pytest.raises(ValueError, match="clip_ratio_c"):
        policy_loss(x, x, x, torch.ones(1, 2), clip_c=c)


# ---------------------------------------------------------------- value loss


def ref_value(values, old, returns, mask, clip, mode):
    errs, flags = [], []
    for vr, orow, rr in zip(values, old, returns):
        e_row, f_row = [], []
        for v, o, r in zip(vr, orow, rr):
            v_clip = min(max(v, o - clip), o + clip)
            e1, e2 = (v - r) ** 2, (v_clip - r) ** 2
            e_row.append(max(e1, e2))
            f_row.append(float(e2 > e1))
        errs.append(e_row)
        flags.append(f_row)
    return 0.5 * ref_aggregate(errs, mask, mode), {
        "vf_clipfrac": ref_aggregate(flags, mask, "token-mean"),
        "vpred_mean": ref_aggregate(values, mask, "token-mean"),
    }


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("mode", AGG_MODES)
@pytest.mark.parametrize("clip", [0.5, 0.05])
def test_value_loss_matches_reference(seed, shape, mode, clip):
    rng = random.Random(seed)
    mask = make_mask(rng, *shape)
    values = [[rng.gauss(0, 1) for _ in range(shape[1])] for _ in range(shape[0])]
    old = [[v + rng.gauss(0, 0.5) for v in row] for row in values]
    returns = [[rng.gauss(0, 1) for _ in range(shape[1])] for _ in range(shape[0])]
    loss, metrics = value_loss(t64(values), t64(old), t64(returns), t64(mask), clip=clip, agg=mode)
    ref_loss, ref_metrics = ref_value(values, old, returns, mask, clip, mode)
    assert loss.item() == pytest.approx(ref_loss, rel=1e-10, abs=1e-12)
    assert set(metrics) == set(ref_metrics)
    for name, value in metrics.items():
        assert not value.requires_grad
        assert value.item() == pytest.approx(ref_metrics[name], rel=1e-10, abs=1e-12), name


def test_value_loss_hand_example():
    # V = 2, V_old = 0, R = 0, clip 0.5: V_clip = 0.5; max(4, 0.25) = 4 → loss ½·4 = 2, not clipped
    # V = −1, V_old = 0, R = 1: V_clip = −0.5; max(4, 2.25) = 4 → 2; token 3 is masked
    loss, metrics = value_loss(t64([[2.0, -1.0, 5.0]]), t64([[0.0, 0.0, 0.0]]), t64([[0.0, 1.0, 0.0]]),
                               t64([[1.0, 1.0, 0.0]]))
    assert loss.item() == pytest.approx(2.0)
    assert metrics["vf_clipfrac"].item() == 0.0
    assert metrics["vpred_mean"].item() == pytest.approx(0.5)
    # V = 3, V_old = 0, R = 3: V_clip = 0.5, so the clipped error 6.25 beats the unclipped 0
    loss, metrics = value_loss(t64([[3.0]]), t64([[0.0]]), t64([[3.0]]), t64([[1.0]]))
    assert loss.item() == pytest.approx(0.5 * 6.25)
    assert metrics["vf_clipfrac"].item() == 1.0
