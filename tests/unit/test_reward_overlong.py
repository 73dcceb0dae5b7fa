"""DAPO's overlong penalty (strive.reward.overlong) against a float64 hand reference, its kwargs as verl spells
them, the `dapo` manager adding it to scores, the per-step reward-extra metrics, and the config checks."""

import pytest
import torch

from strive.config import ConfigError, prepare
from strive.models.tiny import build_tokenizer
from strive.reward.manager import RewardManager
from strive.reward.overlong import OverlongBuffer, overlong_from_kwargs, overlong_penalty
from strive.trainer.metrics import reward_extra_metrics


def reference_penalty(length: int, max_resp_len: int, buffer_len: int, factor: float) -> float:
    """verl's per-sample formula, in Python floats (float64)."""
    expected = max_resp_len - buffer_len
    return min(-(length - expected) / buffer_len * factor, 0.0)


@pytest.mark.parametrize("max_resp_len,buffer_len,factor", [(20, 8, 1.0), (20, 3, 0.5), (7, 7, 2.0), (5, 9, 1.0)])
def test_penalty_matches_the_float64_reference(max_resp_len, buffer_len, factor):
    lengths = torch.arange(0, max_resp_len + 2)  # (B,) includes 0, the buffer edges and past the limit
    buf = OverlongBuffer(max_resp_len=max_resp_len, len=buffer_len, penalty_factor=factor)
    got = overlong_penalty(lengths, buf)
    want = torch.tensor([reference_penalty(n, max_resp_len, buffer_len, factor) for n in lengths.tolist()],
                        dtype=torch.float64)
    assert got.dtype == torch.float32 and got.shape == lengths.shape
    torch.testing.assert_close(got.double(), want, rtol=1e-6, atol=1e-7)  # float32 result


def test_penalty_hand_values():
    buf = OverlongBuffer(max_resp_len=16, len=4, penalty_factor=1.0)
    # expected length 12: no penalty up to 12 tokens, −1/4 per token after, −1 at the limit
    assert overlong_penalty(torch.tensor([3, 12, 13, 14, 16]), buf).tolist() == [0.0, 0.0, -0.25, -0.5, -1.0]


def test_kwargs_as_verl_recipes_write_them():
    kw = {"overlong_buffer_cfg": {"enable": True, "len": 512, "penalty_factor": 1.0, "log": False},
          "max_resp_len": 2048}
    assert overlong_from_kwargs(kw) == OverlongBuffer(max_resp_len=2048, len=512, penalty_factor=1.0, log=False)
    assert overlong_from_kwargs({}) is None
    assert overlong_from_kwargs({**kw, "overlong_buffer_cfg": {**kw["overlong_buffer_cfg"], "enable": False}}) is None


@pytest.mark.parametrize("kwargs,names", [
    ({"overlong_buffer_cfg": {"enable": True, "len": 4, "penalty_factor": 1.0}}, "max_resp_len"),
    ({"max_resp_len": 8, "overlong_buffer": {}}, "reward_kwargs.overlong_buffer"),
    ({"max_resp_len": 8, "overlong_buffer_cfg": {"enable": True, "len": 0, "penalty_factor": 1.0}}, ".len"),
    ({"max_resp_len": 8, "overlong_buffer_cfg": {"enable": True, "len": 4}}, "penalty_factor"),
    ({"max_resp_len": 8, "overlong_buffer_cfg": {"enable": True, "len": 4, "penalty_factor": 1, "lenght": 3}},
     "overlong_buffer_cfg.lenght"),
])
def test_bad_kwargs_name_the_key(kwargs, names):
    with pytest.raises(ValueError, match=names.replace(".", r"\.")):
        overlong_from_kwargs(kwargs)


def test_buffer_longer_than_the_limit_warns():
    with pytest.warns(UserWarning, match="every response length is penalised"):
        overlong_from_kwargs({"max_resp_len": 4, "overlong_buffer_cfg": {"enable": True, "len": 8,
                                                                         "penalty_factor": 1.0}})


def _padded(tokenizer, texts, width):
    ids = torch.full((len(texts), width), tokenizer.pad_token_id)  # (B, T)
    mask = torch.zeros(len(texts), width, dtype=torch.long)  # (B, T)
    for i, text in enumerate(texts):
        row = tokenizer.encode(text, add_special_tokens=False)
        ids[i, : len(row)], mask[i, : len(row)] = torch.tensor(row), 1
    return ids, mask


def test_dapo_manager_adds_the_penalty_and_logs_it():
    tok = build_tokenizer()
    texts = ["abc", "abcdefghij", "abcdefghijkl"]  # 3, 10, 12 byte tokens
    responses, mask = _padded(tok, texts, width=12)
    score = lambda data_source, solution_str, ground_truth, extra_info=None: {"score": 1.0, "acc": 1.0}  # noqa: E731
    buf = OverlongBuffer(max_resp_len=12, len=4, penalty_factor=2.0, log=True)
    result = RewardManager(tok, score, overlong=buf).score(responses, mask, ["d"] * 3, [None] * 3)
    want = [1.0 + reference_penalty(n, 12, 4, 2.0) for n in (3, 10, 12)]  # 1, 0, −1
    assert result.scores.tolist() == pytest.approx(want)
    assert result.token_scores[1, 9] == pytest.approx(want[1]) and result.token_scores[2, 11] == pytest.approx(-1.0)
    assert result.extra["score"] == [1.0, 1.0, 1.0]  # the scorer's own value, as in verl
    assert result.extra["overlong_reward"] == pytest.approx([0.0, -1.0, -2.0])
    assert result.extra["overlong"] == [False, True, True]
    quiet = RewardManager(tok, score, overlong=OverlongBuffer(12, 4, 2.0, log=False))
    assert "overlong" not in quiet.score(responses, mask, ["d"] * 3, [None] * 3).extra


def test_reward_extra_metrics():
    extra = {"overlong_reward": [0.0, -1.0, -0.5, 0.0], "overlong": [False, True, True, False],
             "acc": [1.0, None, 0.0, 1.0], "pred": ["1", "2", "3", "4"]}
    m = reward_extra_metrics(extra)
    assert m["reward_extra/overlong_reward/mean"] == pytest.approx(-0.375)
    assert m["reward_extra/overlong_reward/min"] == -1.0 and m["reward_extra/overlong_reward/max"] == 0.0
    assert m["reward_extra/overlong/mean"] == 0.5  # the fraction penalised
    assert m["reward_extra/acc/mean"] == pytest.approx(2 / 3)
    assert not any(k.startswith("reward_extra/pred") for k in m)


DAPO_KEYS = ["reward_model.reward_manager=dapo", "+reward_model.reward_kwargs.overlong_buffer_cfg.enable=True",
             "+reward_model.reward_kwargs.overlong_buffer_cfg.len=256",
             "+reward_model.reward_kwargs.overlong_buffer_cfg.penalty_factor=1.0",
             "+reward_model.reward_kwargs.overlong_buffer_cfg.log=False",
             "+reward_model.reward_kwargs.max_resp_len=512"]


def test_config_accepts_verls_dapo_keys_and_checks_them_early():
    run = prepare(DAPO_KEYS)
    assert run.config.reward_manager.name == "dapo"
    assert run.config.reward_model.reward_kwargs["overlong_buffer_cfg"]["len"] == 256
    with pytest.raises(ConfigError, match="max_resp_len"):
        prepare(DAPO_KEYS[:-1])
    with pytest.raises(ConfigError, match="reward_manager=dapo only"):
        prepare(DAPO_KEYS[1:])  # overlong settings under the naive manager would be dropped
    notes = prepare(DAPO_KEYS[:-1] + ["+reward_model.reward_kwargs.max_resp_len=1024"]).notes
    assert any("max_resp_len=1024 differs" in n for n in notes)


def test_recipe_spelling_becomes_the_reward_kwargs():
    """verl's DAPO docs and recipe write reward_model.overlong_buffer.* (measured against max_response_length)."""
    recipe = ["reward_model.reward_manager=dapo", "data.max_response_length=64",
              "reward_model.overlong_buffer.enable=True", "reward_model.overlong_buffer.len=16",
              "reward_model.overlong_buffer.penalty_factor=1.0"]
    run = prepare(recipe)
    assert overlong_from_kwargs(run.config.reward_model.reward_kwargs) == OverlongBuffer(64, 16, 1.0, False)
    with pytest.raises(ConfigError, match="needs reward_model.reward_manager=dapo"):
        prepare(recipe[1:])
    with pytest.raises(ConfigError, match="both set"):
        prepare(recipe + DAPO_KEYS[1:])
    assert prepare(recipe[:1] + ["reward_model.overlong_buffer.len=16"]).config.reward_model.reward_kwargs == {}
