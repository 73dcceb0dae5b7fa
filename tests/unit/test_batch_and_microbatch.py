"""Batch splitting/joining, balancing across ranks, micro-batch cutting and the LR schedules."""

import math

import pytest
import torch

from strive.batch import Batch, balance_order
from strive.config.common import OptimConfig
from strive.workers.microbatch import WeightedSums, split_micro, split_mini
from strive.workers.optim import lr_multiplier


def make_batch(B=7, P=3, T=4, seed=0) -> Batch:
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(1, T + 1, (B,), generator=g)
    resp_mask = (torch.arange(T)[None] < lengths[:, None]).float()
    attn = torch.cat([torch.ones(B, P, dtype=torch.long), resp_mask.long()], 1)
    return Batch(torch.randint(0, 9, (B, P), generator=g), torch.randint(0, 9, (B, T), generator=g), attn,
                 (attn.cumsum(-1) - 1).clamp(min=0), resp_mask, advantages=torch.randn(B, T, generator=g),
                 group_ids=torch.arange(B) // 2)


def test_chunk_and_cat_round_trip():
    b = make_batch()
    parts = b.chunk(3)
    assert [len(p) for p in parts] == [3, 2, 2]
    back = Batch.cat(parts)
    for name in ("prompts", "responses", "attention_mask", "advantages", "group_ids"):
        assert torch.equal(getattr(back, name), getattr(b, name))
    assert back.old_log_probs is None
    only = b.only("advantages")
    assert only.group_ids is None and torch.equal(only.advantages, b.advantages)


def test_balance_order_is_a_permutation_that_evens_token_counts():
    lengths = torch.tensor([10, 9, 8, 7, 6, 5, 4, 3])
    order = balance_order(lengths, 2)
    assert sorted(order.tolist()) == list(range(8))
    loads = [int(lengths[order[:4]].sum()), int(lengths[order[4:]].sum())]
    assert abs(loads[0] - loads[1]) <= 2  # the contiguous split gives 34 vs 18
    assert torch.equal(balance_order(lengths, 2), order)  # deterministic


def test_split_micro_weights_sum_to_one_and_cover_rows():
    b = make_batch(B=7)
    parts = split_micro(b, micro=3, max_tokens=None)
    assert [len(p) for p, _ in parts] == [3, 3, 1]
    assert sum(w for _, w in parts) == pytest.approx(1.0)
    parts = split_micro(b, micro=None, max_tokens=14)
    assert sum(len(p) for p, _ in parts) == 7
    for p, _ in parts:
        assert len(p) == 1 or p.attention_mask.sum() <= 14


def test_weighted_micro_losses_equal_full_batch_loss():
    """Gradient accumulation with uneven micro-batches: Σ w_i · mean_i == overall mean (per sequence)."""
    b = make_batch(B=7)
    per_seq = b.advantages.sum(-1)
    total = sum(w * per_seq[i: i + len(p)].mean() for i, (p, w) in zip(range(0, 7, 3), split_micro(b, 3, None)))
    assert total == pytest.approx(per_seq.mean().item(), rel=1e-6)


def test_split_mini_shuffle_is_seeded():
    b = make_batch(B=8)
    a1 = [m.prompts for m in split_mini(b, 4, shuffle=True, seed=5)]
    a2 = [m.prompts for m in split_mini(b, 4, shuffle=True, seed=5)]
    a3 = [m.prompts for m in split_mini(b, 4, shuffle=False, seed=5)]
    assert all(torch.equal(x, y) for x, y in zip(a1, a2))
    assert torch.equal(a3[0], b.prompts[:4])


def test_lr_schedules():
    cfg = OptimConfig(lr=1.0, lr_warmup_steps=2)
    assert [lr_multiplier(s, cfg, 10) for s in range(4)] == [0.0, 0.5, 1.0, 1.0]
    cos = OptimConfig(lr=1.0, lr_warmup_steps_ratio=0.2, lr_scheduler_type="cosine", min_lr_ratio=0.1)
    assert lr_multiplier(0, cos, 10) == 0.0 and lr_multiplier(1, cos, 10) == 0.5
    assert lr_multiplier(2, cos, 10) == pytest.approx(1.0)
    mid = 0.5 * (1 + math.cos(math.pi * 0.5)) * 0.9 + 0.1
    assert lr_multiplier(6, cos, 10) == pytest.approx(mid)
    assert lr_multiplier(10, cos, 10) == pytest.approx(0.1)
    assert lr_multiplier(5, OptimConfig(), 10) == 1.0


def test_meta_moves_with_its_rows_and_never_ships():
    from strive.batch import Meta

    b = make_batch(B=5)
    b.meta = Meta([f"src{i}" for i in range(5)], [f"gt{i}" for i in range(5)], [{"i": i} for i in range(5)])
    picked = b.select([3, 0])
    assert picked.meta.ground_truths == ["gt3", "gt0"] and picked.meta.extra_infos == [{"i": 3}, {"i": 0}]
    assert b.select(slice(1, 3)).meta.data_sources == ["src1", "src2"]
    parts = b.chunk(2)
    assert [p.meta.ground_truths for p in parts] == [["gt0", "gt1", "gt2"], ["gt3", "gt4"]]
    assert Batch.cat(parts).meta == b.meta
    assert b.only("advantages").meta is None  # workers get tensors only
    assert Batch.cat([b, b.only()]).meta is None  # a part without text makes the join text-less, not misaligned


def test_one_even_split_rule_for_ranks_prompts_and_balancing():
    from strive.batch import even_sizes, rank_loads, split_evenly

    assert even_sizes(10, 4) == [3, 3, 2, 2] and even_sizes(2, 4) == [1, 1, 0, 0]
    assert [len(p) for p in make_batch(B=10).chunk(4)] == even_sizes(10, 4)
    assert [len(p) for p in split_evenly(list(range(10)), 4)] == even_sizes(10, 4)
    lengths = torch.tensor([5, 1, 1, 1, 9, 2, 2, 2, 2, 2])
    order = balance_order(lengths, 4)
    sizes = even_sizes(10, 4)
    assert [len(p) for p in torch.split(order, sizes)] == sizes
    # the loads reported for balancing are what Batch.chunk hands each rank (torch.chunk would give 3,3,3,1)
    assert rank_loads(lengths, 4).tolist() == [7, 12, 4, 4]


def test_weighted_sums_read_once_and_keep_key_order():
    sums = WeightedSums()
    sums.add({"loss": torch.tensor(2.0, requires_grad=True) * 1, "coef": 0.5}, 0.25)
    sums.add({"loss": torch.tensor(4.0), "coef": 0.5}, 0.75)
    sums.add({"grad_norm": torch.tensor(3.0)}, 1.0)
    out = sums.read()
    assert list(out) == ["loss", "coef", "grad_norm"]
    assert out == {"loss": 3.5, "coef": 0.5, "grad_norm": 3.0}
    assert all(type(v) is float for v in out.values())
