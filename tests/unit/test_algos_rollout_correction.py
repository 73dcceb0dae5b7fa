"""Rollout correction (strive/algos/rollout_correction.py) against float64 references written as plain Python
loops over sequences and tokens, plus the edge cases: everything rejected, padding ignored, a bound hit exactly."""

import math
import random

import pytest
import torch

from strive.algos.losses import aggregate_loss, policy_loss
from strive.algos.names import ROLLOUT_RS_OPTIONS, parse_rejection
from strive.algos.rollout_correction import (Correction, bypass_policy_loss, correct, is_weights,
                                             offpolicy_metrics, reinforce_loss, rejection_mask)

SEEDS = [0, 1, 2]


def t64(x):
    return torch.tensor(x, dtype=torch.float64)


def make_inputs(seed, batch=6, length=9):
    """old / rollout log-probs close with a few far tokens; rows with padding, one empty; garbage on padding."""
    rng = random.Random(seed)
    mask = [[1.0] * length]
    for i in range(batch - 1):
        if i == 2:
            mask.append([0.0] * length)
            continue
        end = rng.randint(1, length)
        mask.append([1.0 if t < end else 0.0 for t in range(length)])
    rollout = [[-rng.uniform(0.05, 3) for _ in range(length)] for _ in range(batch)]
    old = [[v + rng.choice([rng.gauss(0, 0.05), rng.gauss(0, 0.05), rng.gauss(0, 1.0)]) for v in row]
           for row in rollout]
    for i in range(batch):
        for t in range(length):
            if mask[i][t] == 0:
                old[i][t], rollout[i][t] = rng.uniform(-50, 0), rng.uniform(-50, 0)  # must not matter
    return old, rollout, mask


def clamp(x, lo=-20.0, hi=20.0):
    return max(lo, min(hi, x))


# --- references ------------------------------------------------------------------------------------------------
def ref_is_weights(old, rollout, mask, level, threshold, normalize):
    B, T = len(mask), len(mask[0])
    w = [[0.0] * T for _ in range(B)]
    for i in range(B):
        seq = sum(old[i][t] - rollout[i][t] for t in range(T) if mask[i][t])
        for t in range(T):
            if mask[i][t]:
                d = old[i][t] - rollout[i][t] if level == "token" else seq
                w[i][t] = min(math.exp(clamp(d)), threshold)
    if normalize:
        if level == "token":
            vals = [w[i][t] for i in range(B) for t in range(T) if mask[i][t]]
        else:
            vals = [sum(w[i][t] for t in range(T) if mask[i][t]) / sum(mask[i]) for i in range(B) if sum(mask[i])]
        norm = sum(vals) / len(vals)
        w = [[x / norm for x in row] for row in w]
    return w


def ref_statistic(name, old, rollout, mask, i):
    """Per token list (token_*) or one number (seq_*) for row i."""
    def k(d):
        d = clamp(d)
        return {"k1": -d, "k2": 0.5 * d * d, "k3": math.exp(d) - 1 - d}[name[-2:]]
    T = len(mask[0])
    vals = [k(old[i][t] - rollout[i][t]) for t in range(T)]
    valid = [vals[t] for t in range(T) if mask[i][t]]
    if name.startswith("token_"):
        return vals
    if name.startswith("seq_sum_"):
        return sum(valid)
    if name.startswith("seq_mean_"):
        return sum(valid) / len(valid) if valid else 0.0
    return max(valid) if valid else 0.0


def ref_rejection(old, rollout, mask, rules):
    B, T = len(mask), len(mask[0])
    keep = [[mask[i][t] for t in range(T)] for i in range(B)]
    for name, lower, upper in rules:
        for i in range(B):
            stat = ref_statistic(name, old, rollout, mask, i)
            for t in range(T):
                s = stat[t] if isinstance(stat, list) else stat
                ok = math.log(lower) <= s <= math.log(upper) if name.endswith("k1") else s <= upper
                if not ok:
                    keep[i][t] = 0.0
    return keep


# --- importance weights ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("level", ["token", "sequence"])
@pytest.mark.parametrize("threshold", [1.5, 2.0, 1e9])
@pytest.mark.parametrize("normalize", [False, True])
def test_is_weights_match_loop_reference(seed, level, threshold, normalize):
    old, rollout, mask = make_inputs(seed)
    got, metrics = is_weights(t64(old) - t64(rollout), t64(mask), level, threshold, normalize)
    want = t64(ref_is_weights(old, rollout, mask, level, threshold, normalize))
    assert got.dtype == torch.float64 and not got.requires_grad
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)
    raw = ref_is_weights(old, rollout, mask, level, 1e300, False)
    valid = [raw[i][t] for i in range(len(mask)) for t in range(len(mask[0])) if mask[i][t]]
    assert metrics["rollout_is_mean"].item() == pytest.approx(sum(valid) / len(valid), rel=1e-12)
    assert metrics["rollout_is_max"].item() == pytest.approx(max(valid), rel=1e-12)
    assert metrics["rollout_is_ratio_fraction_high"].item() == pytest.approx(
        sum(v > threshold for v in valid) / len(valid))


def test_is_weights_are_detached_and_zero_on_padding():
    old, rollout, mask = make_inputs(3)
    log_ratio = (t64(old) - t64(rollout)).requires_grad_()
    w, _ = is_weights(log_ratio, t64(mask), "token", 2.0)
    assert not w.requires_grad
    assert (w[t64(mask) == 0] == 0).all()


def test_sequence_weight_is_the_product_of_token_ratios():
    log_ratio = t64([[0.1, -0.3, 0.05, 7.0]])
    mask = t64([[1, 1, 1, 0]])
    w, _ = is_weights(log_ratio, mask, "sequence", 1e9)
    prod = math.exp(0.1) * math.exp(-0.3) * math.exp(0.05)
    torch.testing.assert_close(w, t64([[prod, prod, prod, 0.0]]), rtol=1e-14, atol=0)


# --- rejection -------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("spec", [("token_k1", "2.0"), ("token_k1", "0.7_1.2"), ("token_k2", "0.05"),
                                  ("token_k3", "0.02"), ("seq_sum_k1", "0.5_1.5"), ("seq_sum_k2", "0.1"),
                                  ("seq_sum_k3", "0.1"), ("seq_mean_k1", "1.05"), ("seq_mean_k2", "0.01"),
                                  ("seq_mean_k3", "0.01"), ("seq_max_k2", "0.1"), ("seq_max_k3", "0.1"),
                                  ("token_k1,seq_max_k3", "2.0,0.3"), ("geometric", "1.02")])
def test_rejection_matches_loop_reference(seed, spec):
    old, rollout, mask = make_inputs(seed)
    rules = parse_rejection(*spec)
    got, metrics = rejection_mask(t64(old) - t64(rollout), t64(mask), rules)
    want = ref_rejection(old, rollout, mask, rules)
    assert got.tolist() == want
    valid = sum(map(sum, mask))
    dropped = valid - sum(map(sum, want))
    assert metrics["rollout_rs_masked_fraction"].item() == pytest.approx(dropped / valid, rel=1e-12)
    seqs = sum(1 for i in range(len(mask)) if sum(mask[i]) != sum(want[i]))
    assert metrics["rollout_rs_seq_masked_fraction"].item() == pytest.approx(seqs / len(mask))


def test_every_option_is_reachable_and_aliases_are_verl_older_names():
    assert {r[0] for o in ROLLOUT_RS_OPTIONS for r in parse_rejection(o, "2.0")} == set(ROLLOUT_RS_OPTIONS)
    assert parse_rejection("token", 2.0) == (("token_k1", 0.5, 2.0),)
    assert parse_rejection("sequence,geometric", "3") == (("seq_sum_k1", 1 / 3, 3.0), ("seq_mean_k1", 1 / 3, 3.0))


@pytest.mark.parametrize("options,threshold", [("token_k4", 2.0), ("token_k1", None), ("token_k1", 0),
                                               ("token_k1", -2), ("token_k2", "0.5_2"), ("token_k1", "two"),
                                               ("token_k1,token_k2", "1,2,3"), ("token_k1", "3_2"), ("", 2.0)])
def test_bad_rejection_settings_are_refused(options, threshold):
    with pytest.raises(ValueError):
        parse_rejection(options, threshold)


def test_a_bound_hit_exactly_is_kept():
    # −δ = log 2 exactly on token 0 (upper bound of token_k1 at 2.0), log 0.5 on token 1 (lower bound); token 2 beyond
    rollout = t64([[math.log(2.0), math.log(0.5), math.log(2.5)]])
    old = torch.zeros_like(rollout)
    kept, _ = rejection_mask(old - rollout, torch.ones_like(old), parse_rejection("token_k1", 2.0))
    assert kept.tolist() == [[1.0, 1.0, 0.0]]
    # k2 upper bound hit exactly: ½δ² = 0.125 at δ = 0.5
    kept, _ = rejection_mask(t64([[0.5, 0.6]]), t64([[1, 1]]), (("token_k2", None, 0.125),))
    assert kept.tolist() == [[1.0, 0.0]]
    # IS truncation at exactly the threshold leaves the weight equal to it
    w, m = is_weights(t64([[math.log(2.0)]]), t64([[1]]), "token", 2.0)
    assert w.item() == 2.0 and m["rollout_is_ratio_fraction_high"].item() == 0.0


def test_padding_never_matters():
    old, rollout, mask = make_inputs(4)
    old2 = [[o if m else o - 30 for o, m in zip(ro, rm)] for ro, rm in zip(old, mask)]
    corr = Correction("sequence", 2.0, True, parse_rejection("token_k1,seq_mean_k3", "2.0,0.5"))
    a = correct(t64(old), t64(rollout), t64(mask), corr)
    b = correct(t64(old2), t64(rollout), t64(mask), corr)
    torch.testing.assert_close(a[0], b[0], rtol=0, atol=0)
    assert a[1].tolist() == b[1].tolist()
    for k in a[2]:
        torch.testing.assert_close(a[2][k], b[2][k], rtol=1e-12, atol=1e-12)


def test_all_rejected_gives_an_empty_mask_and_a_zero_loss():
    old, rollout, mask = make_inputs(5)
    corr = Correction("token", 2.0, False, (("token_k1", 0.999999, 1.000001),))
    old = [[r + 0.5 for r in row] for row in rollout]  # every ratio e^0.5: outside the band
    w, kept, metrics = correct(t64(old), t64(rollout), t64(mask), corr)
    assert kept.sum() == 0
    assert metrics["rollout_corr/rollout_rs_masked_fraction"].item() == 1.0
    logp = t64(old).requires_grad_()
    adv = torch.ones_like(logp)
    loss, _ = policy_loss(logp, t64(old), adv, kept, weights=w)
    loss.backward()
    assert loss.item() == 0.0 and (logp.grad == 0).all()


# --- off-policy metrics ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("seed", SEEDS)
def test_offpolicy_metrics_match_loop_reference(seed):
    old, rollout, mask = make_inputs(seed)
    got = offpolicy_metrics(t64(old), t64(rollout), t64(mask))
    rows = [i for i in range(len(mask)) if sum(mask[i])]
    toks = [(i, t) for i in rows for t in range(len(mask[0])) if mask[i][t]]
    mean_lp = {i: sum(old[i][t] for t in range(len(mask[0])) if mask[i][t]) / sum(mask[i]) for i in rows}
    mean_rp = {i: sum(rollout[i][t] for t in range(len(mask[0])) if mask[i][t]) / sum(mask[i]) for i in rows}
    diff = [mean_rp[i] - mean_lp[i] for i in rows]
    want = {
        "kl": sum(rollout[i][t] - old[i][t] for i, t in toks) / len(toks),
        "k3_kl": sum(math.exp(old[i][t] - rollout[i][t]) - (old[i][t] - rollout[i][t]) - 1
                     for i, t in toks) / len(toks),
        "training_ppl": sum(math.exp(-mean_lp[i]) for i in rows) / len(rows),
        "rollout_ppl": sum(math.exp(-mean_rp[i]) for i in rows) / len(rows),
        "log_ppl_diff": sum(diff) / len(diff), "log_ppl_diff_max": max(diff),
        "ppl_ratio": sum(math.exp(d) for d in diff) / len(diff),
        "chi2_token": sum(math.exp(2 * clamp(old[i][t] - rollout[i][t])) for i, t in toks) / len(toks) - 1,
        "chi2_seq": sum(math.exp(2 * clamp(sum(old[i][t] - rollout[i][t] for t in range(len(mask[0])) if mask[i][t])))
                        for i in rows) / len(rows) - 1,
    }
    for k, v in want.items():
        assert got[k].item() == pytest.approx(v, rel=1e-10, abs=1e-12), k


# --- losses ----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("agg", ["token-mean", "seq-mean-token-sum", "seq-mean-token-mean"])
def test_policy_loss_with_weights_matches_loop_and_without_is_unchanged(agg):
    old, rollout, mask = make_inputs(6)
    rng = random.Random(6)
    adv = [[rng.gauss(0, 1) for _ in row] for row in mask]
    noise = torch.randn(len(mask), len(mask[0]), dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    logp = t64(old) + 0.3 * noise
    base, _ = policy_loss(logp, t64(old), t64(adv), t64(mask), agg=agg)
    none, _ = policy_loss(logp, t64(old), t64(adv), t64(mask), agg=agg, weights=None)
    assert torch.equal(base, none)
    w = t64(ref_is_weights(old, rollout, mask, "token", 2.0, False))
    got, _ = policy_loss(logp, t64(old), t64(adv), t64(mask), agg=agg, weights=w)
    per_token = []
    for i in range(len(mask)):
        row = []
        for t in range(len(mask[0])):
            r = math.exp(clamp(logp[i, t].item() - old[i][t]))
            a = adv[i][t]
            lp = max(-a * r, -a * min(max(r, 0.8), 1.2))
            lp = min(lp, -a * 3.0) if a < 0 else lp
            row.append(lp * w[i, t].item())
        per_token.append(row)
    want = aggregate_loss(t64(per_token), t64(mask), agg)
    assert got.item() == pytest.approx(want.item(), rel=1e-12, abs=1e-14)


def test_reinforce_loss_and_its_gradient():
    old, rollout, mask = make_inputs(7)
    adv = [[0.5 - (i + t) % 3 for t in range(len(mask[0]))] for i in range(len(mask))]
    w = t64(ref_is_weights(old, rollout, mask, "sequence", 2.0, False))
    logp = t64(old).requires_grad_()
    loss = reinforce_loss(logp, t64(adv), t64(mask), w)
    n = sum(map(sum, mask))
    want = sum(-adv[i][t] * old[i][t] * w[i, t].item() for i in range(len(mask)) for t in range(len(mask[0]))
               if mask[i][t]) / n
    assert loss.item() == pytest.approx(want, rel=1e-12)
    loss.backward()
    torch.testing.assert_close(logp.grad, -t64(adv) * w * t64(mask) / n, rtol=1e-12, atol=1e-15)


def test_bypass_ppo_clip_is_ppo_against_the_rollout_on_kept_tokens():
    old, rollout, mask = make_inputs(8)
    adv = torch.randn(len(mask), len(mask[0]), dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    corr = Correction("token", 2.0, False, parse_rejection("token_k1", "1.5"), "ppo_clip")
    loss, metrics = bypass_policy_loss(t64(old), t64(rollout), adv, t64(mask), corr)
    kept = t64(ref_rejection(old, rollout, mask, corr.rejection))
    want, _ = policy_loss(t64(old), t64(rollout), adv, kept)  # no IS weights: the ratio is the correction
    assert loss.item() == pytest.approx(want.item(), rel=1e-12)
    assert "rollout_corr/rollout_is_mean" in metrics and "pg_clipfrac" in metrics


def test_bypass_reinforce_uses_current_policy_weights():
    old, rollout, mask = make_inputs(9)
    adv = torch.ones(len(mask), len(mask[0]), dtype=torch.float64)
    corr = Correction("token", 2.0, False, (), "reinforce")
    logp = t64(old)
    loss, metrics = bypass_policy_loss(logp, t64(rollout), adv, t64(mask), corr)
    w = t64(ref_is_weights(old, rollout, mask, "token", 2.0, False))  # π_θ (= old here) over π_rollout
    assert loss.item() == pytest.approx(reinforce_loss(logp, adv, t64(mask), w).item(), rel=1e-12)
    assert metrics["ppo_kl"].item() == pytest.approx(
        ((t64(rollout) - logp) * t64(mask)).sum().item() / t64(mask).sum().item(), rel=1e-12)
