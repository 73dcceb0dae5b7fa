"""Entropy and log-probs from logits against a float64 per-row Python reference, for several
leading shapes, extreme logits and bf16 input."""

import math
import random

import pytest
import torch

from strive.algos import entropy_from_logits, logprobs_from_logits


def ref_row(row, label):
    """(entropy, log p[label]) of one logit row, via −Σ p log p with a max-shifted softmax."""
    top = max(row)
    z = sum(math.exp(v - top) for v in row)
    logps = [v - top - math.log(z) for v in row]
    return -sum(math.exp(lp) * lp for lp in logps), logps[label]


def random_logits(seed, shape, scale=3.0):
    gen = torch.Generator().manual_seed(seed)
    logits = torch.randn(*shape, generator=gen, dtype=torch.float64) * scale
    labels = torch.randint(0, shape[-1], shape[:-1], generator=gen)
    return logits, labels


def reference(logits, labels):
    rows = logits.reshape(-1, logits.shape[-1]).tolist()
    pairs = [ref_row(r, y) for r, y in zip(rows, labels.reshape(-1).tolist())]
    lead = logits.shape[:-1]
    ent = torch.tensor([p[0] for p in pairs], dtype=torch.float64).reshape(lead)
    lp = torch.tensor([p[1] for p in pairs], dtype=torch.float64).reshape(lead)
    return ent, lp


@pytest.mark.parametrize("shape", [(7,), (3, 11), (2, 5, 13), (2, 3, 4, 50)])
@pytest.mark.parametrize("seed", [0, 1])
def test_matches_reference_any_leading_shape(shape, seed):
    logits, labels = random_logits(seed, shape)
    ent, lp = entropy_from_logits(logits), logprobs_from_logits(logits, labels)
    ref_ent, ref_lp = reference(logits, labels)
    assert ent.shape == lp.shape == shape[:-1]
    assert ent.dtype == lp.dtype == torch.float32
    torch.testing.assert_close(ent.double(), ref_ent, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(lp.double(), ref_lp, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("vocab", [2, 17, 1000])
def test_uniform_logits_entropy_is_log_vocab(vocab):
    ent = entropy_from_logits(torch.full((3, 4, vocab), 1.7))
    torch.testing.assert_close(ent, torch.full((3, 4), math.log(vocab)))
    lp = logprobs_from_logits(torch.zeros(2, vocab), torch.tensor([0, vocab - 1]))
    torch.testing.assert_close(lp, torch.full((2,), -math.log(vocab)))


def test_extreme_logits_stay_finite():
    logits = torch.tensor([[1e4, 0.0, -1e4], [50.0, 50.0, -50.0]])
    ent = entropy_from_logits(logits)
    lp = logprobs_from_logits(logits, torch.tensor([1, 0]))
    assert torch.isfinite(ent).all() and torch.isfinite(lp).all()
    torch.testing.assert_close(ent, torch.tensor([0.0, math.log(2.0)]), atol=1e-6, rtol=0)
    torch.testing.assert_close(lp, torch.tensor([-1e4, -math.log(2.0)]), atol=1e-3, rtol=0)


def test_bf16_input_computed_in_float32():
    logits, labels = random_logits(3, (4, 6, 300))
    bf16 = logits.to(torch.bfloat16)
    ent, lp = entropy_from_logits(bf16), logprobs_from_logits(bf16, labels)
    assert ent.dtype == lp.dtype == torch.float32
    # exact answer for the bf16-rounded logits: only the input rounding may differ from float64
    ref_ent, ref_lp = reference(bf16.double(), labels)
    torch.testing.assert_close(ent.double(), ref_ent, atol=1e-4, rtol=1e-5)
    torch.testing.assert_close(lp.double(), ref_lp, atol=1e-4, rtol=1e-5)


def test_gradient_of_logprob_is_onehot_minus_softmax():
    rng = random.Random(0)
    logits = torch.tensor([[rng.gauss(0, 1) for _ in range(6)]], dtype=torch.float64, requires_grad=True)
    logprobs_from_logits(logits, torch.tensor([2])).sum().backward()
    expected = -torch.softmax(logits.detach(), -1)
    expected[0, 2] += 1
    torch.testing.assert_close(logits.grad, expected, atol=1e-6, rtol=1e-6)
