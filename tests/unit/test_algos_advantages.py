"""Advantage estimators against float64 references written from spec §4.1 with plain Python loops.

The references work on Python lists, one sequence or one group at a time, and where possible use a
different formulation from the implementation (GAE on the sequence with its masked tokens removed,
RLOO as "minus the mean of the others", REINFORCE++ as an explicit sum over the run of valid tokens).
"""

import math
import random

import pytest
import torch

from strive.algos import (
    ESTIMATORS,
    compute_advantages,
    compute_gae,
    compute_grpo,
    compute_reinforce_pp,
    compute_reinforce_pp_baseline,
    compute_remax,
    compute_rloo,
    whiten,
)

SHAPES = [(2, 3), (5, 8), (16, 33)]
SEEDS = [0, 1, 2]


# ---------------------------------------------------------------- random inputs


def make_mask(rng, batch, length):
    """0/1 rows: row 0 full; others with leading/trailing padding, sometimes an interior hole or empty."""
    rows = [[1.0] * length]
    for _ in range(batch - 1):
        kind = rng.random()
        if kind < 0.08:
            rows.append([0.0] * length)
            continue
        start = rng.randrange(0, max(1, length // 3))
        end = rng.randint(start + 1, length)
        row = [1.0 if start <= t < end else 0.0 for t in range(length)]
        if kind > 0.6 and end - start >= 3:
            hole = rng.randrange(start + 1, end - 1)
            for t in range(hole, min(hole + rng.randint(1, 3), end - 1)):
                row[t] = 0.0
        rows.append(row)
    return rows


def make_groups(rng, batch):
    """Ids with unequal group sizes (1..4), shuffled, and non-contiguous values."""
    ids, gid = [], 0
    while len(ids) < batch:
        ids += [gid * 7 + 3] * rng.randint(1, 4)
        gid += 1
    ids = ids[:batch]
    rng.shuffle(ids)
    return ids


def make_batch(seed, batch, length, sparse=False):
    rng = random.Random(seed)
    mask = make_mask(rng, batch, length)
    if sparse:  # outcome reward on the last valid token only
        rewards = [[0.0] * length for _ in range(batch)]
        for i, row in enumerate(mask):
            valid = [t for t in range(length) if row[t]]
            if valid:
                rewards[i][valid[-1]] = float(rng.choice([0.0, 1.0, rng.uniform(-2, 2)]))
    else:  # dense, like score minus an in-reward KL penalty
        rewards = [[rng.uniform(-1, 1) * m for m in row] for row in mask]
    values = [[rng.uniform(-1, 1) for _ in range(length)] for _ in range(batch)]
    return rewards, values, mask, make_groups(rng, batch)


def t64(x):
    return torch.tensor(x, dtype=torch.float64)


# ---------------------------------------------------------------- references (plain Python)


def ref_whiten(x, mask):
    flat = [x[i][t] for i in range(len(x)) for t in range(len(x[i])) if mask[i][t]]
    n = len(flat)
    mean = sum(flat) / n
    var = sum((v - mean) ** 2 for v in flat) / (n - 1)
    return [[(v - mean) / math.sqrt(var + 1e-8) * m for v, m in zip(xr, mr)] for xr, mr in zip(x, mask)]


def ref_gae_sequence(r, v, m, gamma, lam):
    """Standard GAE on the valid tokens only (masked tokens deleted), scattered back; 0 elsewhere."""
    idx = [t for t in range(len(m)) if m[t]]
    gae = [0.0] * len(m)
    acc = 0.0
    for k in reversed(range(len(idx))):
        t = idx[k]
        v_next = v[idx[k + 1]] if k + 1 < len(idx) else 0.0
        acc = r[t] + gamma * v_next - v[t] + gamma * lam * acc
        gae[t] = acc
    return gae


def ref_gae(rewards, values, mask, gamma, lam):
    gae = [ref_gae_sequence(r, v, m, gamma, lam) for r, v, m in zip(rewards, values, mask)]
    returns = [[(g + vv) * mm for g, vv, mm in zip(gr, vr, mr)] for gr, vr, mr in zip(gae, values, mask)]
    return ref_whiten(gae, mask), returns


def ref_group_members(ids):
    groups = {}
    for i, g in enumerate(ids):
        groups.setdefault(g, []).append(i)
    return groups


def ref_grpo(scores, mask, ids, norm, eps=1e-6):
    adv = [0.0] * len(scores)
    for members in ref_group_members(ids).values():
        vals = [scores[i] for i in members]
        n = len(vals)
        if n == 1:
            mean, std = 0.0, 1.0
        else:
            mean = sum(vals) / n
            std = math.sqrt(sum((s - mean) ** 2 for s in vals) / (n - 1))
        for i in members:
            adv[i] = (scores[i] - mean) / (std + eps) if norm else scores[i] - mean
    return [[a * m for m in row] for a, row in zip(adv, mask)]


def ref_rloo(scores, mask, ids):
    adv = [0.0] * len(scores)
    for members in ref_group_members(ids).values():
        for i in members:
            others = [scores[j] for j in members if j != i]
            adv[i] = scores[i] - sum(others) / len(others) if others else scores[i]
    return [[a * m for m in row] for a, row in zip(adv, mask)]


def ref_rpp_baseline(scores, mask, ids):
    centred = [0.0] * len(scores)
    for members in ref_group_members(ids).values():
        mean = sum(scores[i] for i in members) / len(members) if len(members) > 1 else 0.0
        for i in members:
            centred[i] = scores[i] - mean
    return ref_whiten([[c * m for m in row] for c, row in zip(centred, mask)], mask)


def ref_rpp(rewards, mask, gamma):
    """R_t = Σ_k γ^k r_{t+k} over the run of valid tokens starting at t; 0 on masked tokens."""
    returns = []
    for r, m in zip(rewards, mask):
        row = []
        for t in range(len(m)):
            total, k = 0.0, 0
            while m[t] and t + k < len(m) and m[t + k]:
                total += gamma**k * r[t + k]
                k += 1
            row.append(total)
        returns.append(row)
    return ref_whiten(returns, mask), returns


def ref_remax(rewards, mask, baselines):
    adv, returns = [], []
    for r, m, b in zip(rewards, mask, baselines):
        rtg = [sum(r[u] * m[u] for u in range(t, len(m))) * m[t] for t in range(len(m))]
        returns.append(rtg)
        adv.append([(g - b) * mm for g, mm in zip(rtg, m)])
    return adv, returns


# ---------------------------------------------------------------- comparisons


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("gamma,lam", [(1.0, 1.0), (0.99, 0.95), (0.7, 0.3)])
def test_gae_matches_reference(seed, shape, gamma, lam):
    rewards, values, mask, _ = make_batch(seed, *shape)
    adv, ret = compute_gae(t64(rewards), t64(values), t64(mask), gamma, lam)
    ref_adv, ref_ret = ref_gae(rewards, values, mask, gamma, lam)
    torch.testing.assert_close(adv, t64(ref_adv))
    torch.testing.assert_close(ret, t64(ref_ret))


def test_gae_hand_example_skips_hole():
    # token 1 is masked (e.g. tool output): its reward and value must be ignored
    r, v, m = t64([[0.0, 5.0, 1.0]]), t64([[0.5, 9.0, 0.25]]), t64([[1.0, 0.0, 1.0]])
    _, ret = compute_gae(r, v, m, gamma=0.9, lam=0.8)
    # G_2 = 1 − 0.25 = 0.75;  G_0 = (0.9·0.25 − 0.5) + 0.72·0.75 = 0.265
    torch.testing.assert_close(ret, t64([[0.765, 0.0, 1.0]]))


@pytest.mark.parametrize("seed", SEEDS)
def test_gae_monte_carlo_property(seed):
    rewards, values, mask, _ = make_batch(seed, 16, 33, sparse=True)
    adv, ret = compute_gae(t64(rewards), t64(values), t64(mask), 1.0, 1.0)
    scores = t64(rewards).sum(-1, keepdim=True)  # (B, 1)
    m = t64(mask)
    torch.testing.assert_close(ret, scores * m)  # returns = s on every valid token
    raw = [[(s - v) * mm for v, mm in zip(vr, mr)] for s, vr, mr in zip(scores.squeeze(-1).tolist(), values, mask)]
    torch.testing.assert_close(adv, t64(ref_whiten(raw, mask)))  # raw advantage = s − V


def test_gae_float32_close_to_float64():
    rewards, values, mask, _ = make_batch(5, 16, 33)
    adv32, _ = compute_gae(torch.tensor(rewards), torch.tensor(values), torch.tensor(mask), 0.99, 0.95)
    adv64, _ = compute_gae(t64(rewards), t64(values), t64(mask), 0.99, 0.95)
    assert adv32.dtype == torch.float32
    torch.testing.assert_close(adv32.double(), adv64, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("norm", [True, False])
def test_grpo_matches_reference(seed, shape, norm):
    rewards, _, mask, ids = make_batch(seed, *shape, sparse=True)
    scores = [sum(r) for r in rewards]
    adv, ret = compute_grpo(t64(scores), t64(mask), torch.tensor(ids), norm_by_std=norm)
    torch.testing.assert_close(adv, t64(ref_grpo(scores, mask, ids, norm)))
    torch.testing.assert_close(ret, adv)


@pytest.mark.parametrize("seed", SEEDS)
def test_grpo_zero_group_mean_and_constant_group(seed):
    rng = random.Random(seed)
    ids = [0] * 5 + [1] * 3 + [2] * 4
    scores = [rng.uniform(-1, 1) for _ in range(8)] + [0.5] * 4  # group 2 is constant (exactly representable)
    mask = torch.ones(12, 6, dtype=torch.float64)
    adv, _ = compute_grpo(t64(scores), mask, torch.tensor(ids))
    seq_adv = adv[:, 0]  # (B,)
    for g in (0, 1, 2):
        members = torch.tensor([i for i, x in enumerate(ids) if x == g])
        assert abs(seq_adv[members].mean().item()) < 1e-12
    assert torch.all(seq_adv[8:] == 0)
    assert seq_adv[:8].abs().min() > 0


def test_grpo_singleton_group_uses_mean0_std1():
    adv, _ = compute_grpo(t64([2.0, 1.0, 3.0]), torch.ones(3, 2, dtype=torch.float64), torch.tensor([4, 9, 9]))
    torch.testing.assert_close(adv[0], t64([2.0, 2.0]) / (1 + 1e-6))
    dr, _ = compute_grpo(t64([2.0]), torch.ones(1, 2, dtype=torch.float64), torch.tensor([0]), norm_by_std=False)
    torch.testing.assert_close(dr, t64([[2.0, 2.0]]))


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("shape", SHAPES)
def test_rloo_matches_reference(seed, shape):
    rewards, _, mask, ids = make_batch(seed, *shape, sparse=True)
    scores = [sum(r) for r in rewards]
    adv, ret = compute_rloo(t64(scores), t64(mask), torch.tensor(ids))
    torch.testing.assert_close(adv, t64(ref_rloo(scores, mask, ids)))
    torch.testing.assert_close(ret, adv)


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("shape", SHAPES)
def test_reinforce_pp_baseline_matches_reference(seed, shape):
    rewards, _, mask, ids = make_batch(seed, *shape)
    scores = [sum(r) for r in rewards]
    adv, ret = compute_reinforce_pp_baseline(t64(scores), t64(mask), torch.tensor(ids))
    torch.testing.assert_close(adv, t64(ref_rpp_baseline(scores, mask, ids)))
    torch.testing.assert_close(ret, adv)


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("gamma", [1.0, 0.9])
def test_reinforce_pp_matches_reference(seed, shape, gamma):
    rewards, _, mask, _ = make_batch(seed, *shape)
    adv, ret = compute_reinforce_pp(t64(rewards), t64(mask), gamma)
    ref_adv, ref_ret = ref_rpp(rewards, mask, gamma)
    torch.testing.assert_close(adv, t64(ref_adv))
    torch.testing.assert_close(ret, t64(ref_ret))


def test_reinforce_pp_restarts_after_masked_token():
    _, ret = compute_reinforce_pp(t64([[1.0, 2.0, 7.0, 4.0]]), t64([[1.0, 1.0, 0.0, 1.0]]), gamma=0.5)
    torch.testing.assert_close(ret, t64([[2.0, 2.0, 0.0, 4.0]]))


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("shape", SHAPES)
def test_remax_matches_reference(seed, shape):
    rewards, _, mask, _ = make_batch(seed, *shape)
    baselines = [random.Random(seed + 100).uniform(-1, 1) for _ in mask]
    adv, ret = compute_remax(t64(rewards), t64(mask), t64(baselines))
    ref_adv, ref_ret = ref_remax(rewards, mask, baselines)
    torch.testing.assert_close(adv, t64(ref_adv))
    torch.testing.assert_close(ret, t64(ref_ret))


# ---------------------------------------------------------------- whiten, dispatch


def test_whiten_properties():
    x = t64([[1.0, 2.0, 100.0], [3.0, 4.0, -50.0]])
    m = t64([[1.0, 1.0, 0.0], [1.0, 1.0, 0.0]])
    out = whiten(x, m)
    valid = out[m.bool()]
    assert abs(valid.mean().item()) < 1e-12
    assert abs(valid.var(unbiased=True).item() - 1.0) < 1e-6  # var 5/3 → 1 (up to the 1e-8 eps)
    kept = whiten(x, m, shift_mean=False)[m.bool()]
    assert abs(kept.mean().item() - 2.5) < 1e-12
    with pytest.raises(ValueError, match="at least 2"):
        whiten(x, t64([[1.0, 0.0, 0.0], [0.0, 0.0, 0.0]]))


def test_gae_accepts_bool_mask_and_grpo_list_ids():
    rewards, values, mask, ids = make_batch(6, 5, 8)
    r, v, m = t64(rewards), t64(values), t64(mask)
    for got, want in zip(compute_gae(r, v, m.bool(), 0.9, 0.9), compute_gae(r, v, m, 0.9, 0.9)):
        torch.testing.assert_close(got, want)
    s = r.sum(-1)
    torch.testing.assert_close(compute_grpo(s, m, ids)[0], compute_grpo(s, m, torch.tensor(ids))[0])


def test_dispatch_matches_direct_calls():
    rewards, values, mask, ids = make_batch(3, 8, 10)
    r, v, m, g = t64(rewards), t64(values), t64(mask), torch.tensor(ids)
    s = r.sum(-1)
    b = t64([0.1] * 8)
    expected = {
        "gae": compute_gae(r, v, m, 0.9, 0.8),
        "grpo": compute_grpo(s, m, g, norm_by_std=False),
        "rloo": compute_rloo(s, m, g),
        "reinforce_plus_plus": compute_reinforce_pp(r, m, 0.9),
        "reinforce_plus_plus_baseline": compute_reinforce_pp_baseline(s, m, g),
        "remax": compute_remax(r, m, b),
    }
    assert set(expected) == set(ESTIMATORS)
    for name, (adv, ret) in expected.items():
        got_adv, got_ret = compute_advantages(
            name, token_rewards=r, mask=m, group_ids=g, values=v, gamma=0.9, lam=0.8,
            norm_adv_by_std_in_grpo=False, reward_baselines=b,
        )
        torch.testing.assert_close(got_adv, adv)
        torch.testing.assert_close(got_ret, ret)


def test_dispatch_errors():
    r, m = torch.zeros(2, 3), torch.ones(2, 3)
    with pytest.raises(ValueError, match="'opo'.*grpo.*remax"):
        compute_advantages("opo", token_rewards=r, mask=m)
    with pytest.raises(ValueError, match="values"):
        compute_advantages("gae", token_rewards=r, mask=m)
    with pytest.raises(ValueError, match="group_ids"):
        compute_advantages("grpo", token_rewards=r, mask=m)
    with pytest.raises(ValueError, match="reward_baselines"):
        compute_advantages("remax", token_rewards=r, mask=m)
