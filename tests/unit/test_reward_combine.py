"""reward_model.combine (strive/reward/combine.py) and the reward stage that uses it
(strive/trainer/model_reward.py:score_with_model), with a fake model scorer and the real rule manager."""

import pytest
import torch

from strive.batch import Batch, Meta
from strive.models.tiny import build_tokenizer
from strive.reward.combine import combine, model_rows, on_last_token, rule_rows
from strive.reward.manager import RewardManager
from strive.trainer import phases
from strive.trainer.model_reward import score_with_model

SOURCES = ["chat", "math", "chat", "math"]


def test_rm_mode_is_the_model_score_alone():
    model, rule = torch.tensor([0.5, -1.0, 2.0, 0.0]), None
    assert combine(model, rule, SOURCES, "rm").tolist() == [0.5, -1.0, 2.0, 0.0]
    assert rule_rows(SOURCES, "rm", []) == [False] * 4


def test_sum_mode_adds_both():
    out = combine(torch.tensor([0.5, -1.0, 2.0, 0.0]), torch.tensor([1.0, 1.0, 0.0, 0.0]), SOURCES, "sum")
    assert out.tolist() == [1.5, 0.0, 2.0, 0.0]


def test_by_data_source_takes_each_row_from_its_scorer():
    assert model_rows(SOURCES, "by_data_source", ["chat"]) == [True, False, True, False]
    assert rule_rows(SOURCES, "by_data_source", ["chat"]) == [False, True, False, True]
    out = combine(torch.tensor([0.5, 9.0, 2.0, 9.0]), torch.tensor([7.0, 1.0, 7.0, 0.0]), SOURCES, "by_data_source",
                  ["chat"])
    assert out.tolist() == [0.5, 1.0, 2.0, 0.0]


def test_unknown_mode_is_refused():
    with pytest.raises(ValueError, match="reward_model.combine='mean'"):
        combine(torch.zeros(1), None, ["a"], "mean")


def test_score_sits_on_the_last_real_token():
    valid = torch.tensor([[1, 1, 1, 0], [1, 0, 0, 0], [0, 0, 0, 0]])  # (B, T)
    out = on_last_token(torch.tensor([2.0, 3.0, 4.0]), valid)
    assert out.tolist() == [[0, 0, 2.0, 0], [3.0, 0, 0, 0], [0, 0, 0, 0]]


class FakeModel:
    key = "rm_score"

    def __init__(self, mode, sources=()):
        self.mode, self.sources, self.seen = mode, list(sources), None

    def __call__(self, batch, rows):
        self.seen = rows
        return torch.tensor([10.0 + i for i in rows]), {}


def _batch(tok, texts, sources):
    T, P = 8, 2
    responses = torch.full((len(texts), T), tok.pad_token_id)  # (B, T)
    attn = torch.zeros(len(texts), P + T, dtype=torch.long)  # (B, L)
    attn[:, :P] = 1
    for i, t in enumerate(texts):
        ids = tok.encode(t, add_special_tokens=False)
        responses[i, : len(ids)] = torch.tensor(ids)
        attn[i, P: P + len(ids)] = 1
    prompts = torch.full((len(texts), P), 65)  # (B, P)
    b = Batch(prompts, responses, attn, (attn.cumsum(-1) - 1).clamp(min=0), attn[:, P:].float())
    return b.with_fields(meta=Meta(list(sources), ["g"] * len(texts), [None] * len(texts)))


def rule(data_source, solution_str, ground_truth, extra_info=None):
    if data_source == "chat":
        raise NotImplementedError("no rule for chat")  # by_data_source must not ask the rule about chat rows
    return {"score": float(len(solution_str)), "acc": True}


@pytest.mark.parametrize("mode, sources, expected, rule_seen", [
    ("rm", [], [10.0, 11.0, 12.0, 13.0], None),
    ("by_data_source", ["chat"], [10.0, 2.0, 12.0, 4.0], [None, 2.0, None, 4.0]),
])
def test_reward_stage_combines_and_reports_each_score(mode, sources, expected, rule_seen):
    tok = build_tokenizer()
    batch = _batch(tok, ["a", "bb", "ccc", "dddd"], SOURCES)
    model = FakeModel(mode, sources)
    scored, extra = score_with_model(RewardManager(tok, rule), model, batch, phases.score)
    assert scored.token_level_scores.sum(-1).tolist() == expected
    assert extra["combined_score"] == expected
    assert extra.get("rule_score") == rule_seen
    lengths = batch.response_valid.sum(-1)
    assert all(scored.token_level_scores[i, lengths[i] - 1] == expected[i] for i in range(4))  # on the last token
    if mode == "by_data_source":
        assert model.seen == [0, 2] and extra["acc"] == [None, True, None, True]


def test_sum_mode_scores_every_row_with_both():
    tok = build_tokenizer()
    batch = _batch(tok, ["a", "bb"], ["math", "math"])
    scored, extra = score_with_model(RewardManager(tok, rule), FakeModel("sum"), batch, phases.score)
    assert extra["rm_score"] == [10.0, 11.0] and extra["rule_score"] == [1.0, 2.0]
    assert scored.token_level_scores.sum(-1).tolist() == [11.0, 13.0]
