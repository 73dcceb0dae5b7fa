"""Dynamic sampling (algorithm.filter_groups): which groups carry a GRPO signal, and how the kept rows are taken."""

import torch

from strive.algos import compute_advantages
from strive.batch import Batch, Meta
from strive.trainer.sampling import filter_values, informative_groups, take_groups


def scored_batch(scores: list[float], n: int) -> tuple[Batch, dict]:
    """A scored batch whose ground truths name their group, and the reward function's extra dict ("acc")."""
    B, P, T = len(scores), 2, 3
    mask = torch.ones(B, T)
    token_scores = torch.zeros(B, T)
    token_scores[:, -1] = torch.tensor(scores)
    attn = torch.ones(B, P + T, dtype=torch.long)
    batch = Batch(torch.arange(B)[:, None].repeat(1, P), torch.arange(B)[:, None].repeat(1, T), attn,
                  attn.cumsum(-1) - 1, mask, token_level_scores=token_scores,
                  group_ids=torch.arange(B) // n)
    uids = (torch.arange(B) // n).tolist()
    batch.meta = Meta(["gsm8k"] * B, [f"gt{u}" for u in uids], [None] * B)
    return batch, {"acc": [s > 0 for s in scores]}


def test_informative_groups_are_those_with_differing_values():
    values = torch.tensor([0, 0, 0, 1, 1, 0.5, 0.5, 0.2, 0.2, 0.2, 0.2, 0.2], dtype=torch.float64)
    group_ids = torch.arange(12) // 3  # groups 0: equal, 1: 1 1 0.5 differ, 2: 0.5 0.2 0.2 differ, 3: equal
    assert informative_groups(values, group_ids).tolist() == [1, 2]
    assert informative_groups(torch.ones(6, dtype=torch.float64), torch.arange(6) // 2).tolist() == []


def test_dropped_groups_are_exactly_those_grpo_gives_zero_advantage():
    scores = [0.0, 0.0, 1.0, 0.0, 1.0, 1.0, 1.0, 1.0, 0.0, 1.0, 1.0, 0.0, 0.0, 0.0, 0.0, 0.0]
    batch, _ = scored_batch(scores, n=4)
    adv, _ = compute_advantages("grpo", token_rewards=batch.token_level_scores, mask=batch.response_mask,
                                group_ids=batch.group_ids, values=None, gamma=1.0, lam=1.0,
                                norm_adv_by_std_in_grpo=True)
    with_signal = {int(g) for g in batch.group_ids[adv.abs().sum(-1) > 0]}
    kept = informative_groups(filter_values(batch, {}, "seq_reward"), batch.group_ids)
    assert set(kept.tolist()) == with_signal == {0, 2}


def test_filter_values_use_the_named_reward_entry_else_the_summed_score():
    batch, extra = scored_batch([0.0, 2.5, 1.0, 1.0], n=2)
    assert filter_values(batch, extra, "acc").tolist() == [0.0, 1.0, 1.0, 1.0]
    assert filter_values(batch, {}, "acc").tolist() == [0.0, 2.5, 1.0, 1.0]
    assert filter_values(batch, extra, "seq_reward").tolist() == [0.0, 2.5, 1.0, 1.0]


def test_take_groups_keeps_rows_in_group_order_and_renumbers():
    batch, _ = scored_batch([0, 1, 0, 0, 1, 0, 1, 1], n=2)  # groups 0 and 2 informative
    kept = take_groups(batch, torch.tensor([2, 0]), first_id=5)
    assert kept.prompts[:, 0].tolist() == [4, 5, 0, 1]  # group 2's rows, then group 0's
    assert kept.group_ids.tolist() == [5, 5, 6, 6]
    assert kept.meta.ground_truths == ["gt2", "gt2", "gt0", "gt0"]  # the text side moved with its rows
    joined = Batch.cat([kept, batch.select([0, 1])])
    assert joined.meta.ground_truths == ["gt2", "gt2", "gt0", "gt0", "gt0", "gt0"]
    assert joined.prompts[:, 0].tolist() == [4, 5, 0, 1, 0, 1]


def test_filter_values_count_a_failed_reward_as_zero():
    import torch

    from strive.trainer.sampling import filter_values

    class _Batch:
        token_level_scores = torch.zeros(3, 2)

    values = filter_values(_Batch(), {"acc": [True, None, False]}, "acc")  # None: scored 0 after a reward error
    assert values.tolist() == [1.0, 0.0, 0.0]
