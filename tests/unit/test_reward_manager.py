"""RewardManager: decoding, last-valid-token placement, extra-key collection, examples printed."""

import asyncio

import pytest
import torch

from strive.models.tiny import build_tokenizer
from strive.reward.custom import wrap_reward_function
from strive.reward.manager import RewardManager, RewardResult

@pytest.fixture(scope="module")
def tokenizer():
    """Byte-level tokenizer (one token per byte, exact round trip) with ChatML specials."""
    return build_tokenizer()


def _right_padded(tokenizer, texts, width, eos=True):
    ids = torch.full((len(texts), width), tokenizer.pad_token_id)  # (B, T)
    mask = torch.zeros(len(texts), width, dtype=torch.long)  # (B, T)
    for i, text in enumerate(texts):
        row = tokenizer.encode(text, add_special_tokens=False) + ([tokenizer.eos_token_id] if eos and text else [])
        ids[i, : len(row)] = torch.tensor(row)
        mask[i, : len(row)] = 1
    return ids, mask


def test_scores_land_on_the_last_valid_token(tokenizer):
    texts = ["so #### 72", "#### 7", ""]
    responses, mask = _right_padded(tokenizer, texts, width=16)
    result = RewardManager(tokenizer).score(responses, mask, ["openai/gsm8k"] * 3, ["72", "72", "72"])
    assert isinstance(result, RewardResult)
    assert result.token_scores.shape == (3, 16) and result.token_scores.dtype == torch.float32
    valid = mask.sum(-1)
    assert valid.tolist() == [11, 7, 0]
    assert result.token_scores[0, 10] == 1.0 and result.token_scores[0].sum() == 1.0  # on the EOS
    assert result.token_scores[1].sum() == 0.0
    assert result.token_scores[2].abs().sum() == 0.0  # nothing placed for an empty response
    assert result.scores.tolist() == [1.0, 0.0, 0.0]
    assert result.extra == {}


def test_special_tokens_are_skipped_when_decoding(tokenizer):
    seen = []

    def record(data_source, solution_str, ground_truth, extra_info):
        seen.append(solution_str)
        return 0.0

    responses, mask = _right_padded(tokenizer, ["hi <|im_start|>there"], width=24)
    RewardManager(tokenizer, compute_score=record).score(responses, mask, ["x"], ["y"])
    assert seen == ["hi there"]


def test_padding_inside_mask_is_respected(tokenizer):
    """Tokens past sum(mask) are never decoded, even if they are not pad ids."""
    responses, mask = _right_padded(tokenizer, ["#### 5"], width=12, eos=False)
    responses[0, 6:] = torch.tensor(tokenizer.encode("#### 9", add_special_tokens=False))
    result = RewardManager(tokenizer).score(responses, mask, ["openai/gsm8k"], ["5"])
    assert result.token_scores[0, 5] == 1.0


def test_dict_results_fill_extra_aligned_with_batch(tokenizer):
    def scorer(data_source, solution_str, ground_truth, extra_info):
        if extra_info["index"] == 1:
            return 0.5
        return {"score": float(extra_info["index"]), "acc": extra_info["index"] == 0, "pred": solution_str}

    responses, mask = _right_padded(tokenizer, ["a", "b", "c"], width=4)
    infos = [{"index": 0}, {"index": 1}, {"index": 2}]
    result = RewardManager(tokenizer, compute_score=scorer).score(responses, mask, ["d"] * 3, ["g"] * 3, infos)
    assert result.scores.tolist() == [0.0, 0.5, 2.0]
    assert result.extra == {"score": [0.0, None, 2.0], "acc": [True, None, False], "pred": ["a", None, "c"]}
    assert result.token_scores[2, 1] == 2.0


def test_async_scorer_is_gathered_concurrently(tokenizer):
    running, peak = 0, 0

    async def slow(data_source, solution_str, ground_truth, extra_info, weight=1.0):
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        await asyncio.sleep(0.01)
        running -= 1
        return weight * len(solution_str)

    responses, mask = _right_padded(tokenizer, ["aa", "bbb", "c", "dddd"], width=6, eos=False)
    fn = wrap_reward_function(slow, {"weight": 2.0})
    result = RewardManager(tokenizer, compute_score=fn).score(responses, mask, ["d"] * 4, ["g"] * 4)
    assert result.scores.tolist() == [4.0, 6.0, 2.0, 8.0]
    assert peak == 4
    raw = RewardManager(tokenizer, compute_score=slow).score(responses, mask, ["d"] * 4, ["g"] * 4)
    assert raw.scores.tolist() == [2.0, 3.0, 1.0, 4.0]


def test_num_examine_prints_per_data_source(tokenizer, capsys):
    prompts = torch.full((3, 8), tokenizer.pad_token_id)  # (B, P) left-padded
    prompt_mask = torch.zeros(3, 8, dtype=torch.long)
    for i, text in enumerate(["Q0", "Q1", "Q2"]):
        prompts[i, -2:] = torch.tensor(tokenizer.encode(text, add_special_tokens=False))
        prompt_mask[i, -2:] = 1
    responses, mask = _right_padded(tokenizer, ["#### 1", "#### 2", "\\boxed{3}"], width=12)
    sources = ["openai/gsm8k", "openai/gsm8k", "math"]
    RewardManager(tokenizer, num_examine=1).score(
        responses, mask, sources, ["1", "2", "3"], prompts=prompts, prompt_mask=prompt_mask
    )
    out = capsys.readouterr().out
    assert "[prompt] Q0" in out and "[prompt] Q2" in out and "Q1" not in out
    assert "[response] #### 1" in out and "[ground_truth] 3" in out and out.count("[score] 1.0") == 2


def test_length_mismatch_is_reported(tokenizer):
    responses, mask = _right_padded(tokenizer, ["a", "b"], width=3)
    with pytest.raises(ValueError, match="ground_truths has 1 entries for 2 responses"):
        RewardManager(tokenizer).score(responses, mask, ["openai/gsm8k"] * 2, ["1"])
