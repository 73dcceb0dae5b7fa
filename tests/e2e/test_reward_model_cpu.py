"""Model-scored rewards through the entry point (Ray, FSDP2 on gloo, the hf engine, tiny policy), on CPU:

- PPO with a critic (GAE) scored by a reward model (a tiny random LlamaForSequenceClassification with SmolLM2's
  tokenizer, so the policy's chats are re-rendered for it) plus the rule reward (reward_model.combine=sum);
- GRPO scored by an LLM judge (SmolLM2-135M-Instruct on a second hf engine in each worker).

The reward-model, rule, judge and combined scores must all be in the step metrics, and finite."""

import math

import pytest

from tests.e2e.helpers import read_metrics, run_training, write_reward
from tests.e2e.test_ppo_cpu import seed_command

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    from strive.data.synthetic import write_dataset

    out = tmp_path_factory.mktemp("arith")
    write_dataset(str(out), n_train=64, n_test=4, seed=0)
    return out


def _finite(row: dict, key: str) -> float:
    assert key in row, (key, sorted(k for k in row if k.startswith("reward")))
    assert math.isfinite(row[key]), (key, row[key])
    return row[key]


def test_ppo_with_critic_scored_by_reward_model_plus_rule(tiny_model_dir, tiny_rm_dir, data_dir, tmp_path):
    ckpt = tmp_path / "ckpt"
    overrides = seed_command(tiny_model_dir, data_dir, ckpt, write_reward(tmp_path)) + [
        "algorithm.adv_estimator=gae", "data.train_batch_size=4", "actor_rollout_ref.actor.ppo_mini_batch_size=4",
        "trainer.total_training_steps=2", "trainer.save_freq=0", "trainer.test_freq=2", "data.max_response_length=8",
        "reward_model.enable=True", f"reward_model.model.path={tiny_rm_dir}", "reward_model.combine=sum",
        "reward_model.micro_batch_size_per_gpu=2", "reward_model.max_length=48",
    ]
    result = run_training(overrides, cwd=tmp_path)
    assert "reward model inputs: re-rendered with the reward model's chat template" in result.stdout
    assert "reward = model score + rule score (reward_model.combine=sum)" in result.stdout
    # SmolLM2's template adds a system prompt: some inputs pass max_length=48, and the warning comes once
    assert result.stdout.count("longer than reward_model.max_length=48") == 1
    rows = read_metrics(ckpt / "logs")
    assert sorted(rows) == [1, 2]
    for step in (1, 2):
        rm = _finite(rows[step], "reward_extra/rm_score/mean")
        rule = _finite(rows[step], "reward_extra/rule_score/mean")
        combined = _finite(rows[step], "reward_extra/combined_score/mean")
        assert combined == pytest.approx(rm + rule, abs=1e-5)
        assert rows[step]["critic/score/mean"] == pytest.approx(combined, abs=1e-5)
        assert rows[step]["reward_extra/rm_score/max"] > rows[step]["reward_extra/rm_score/min"]  # a real forward
        _finite(rows[step], "critic/vf_loss")
    assert any(k.startswith("val-aux/") and "rm_score" in k for k in rows[2]), sorted(rows[2])


def test_grpo_scored_by_llm_judge(tiny_model_dir, smollm2_dir, data_dir, tmp_path):
    ckpt = tmp_path / "ckpt"
    overrides = seed_command(tiny_model_dir, data_dir, ckpt, write_reward(tmp_path)) + [
        "algorithm.adv_estimator=grpo", "actor_rollout_ref.rollout.n=2", "data.train_batch_size=2",
        "actor_rollout_ref.actor.ppo_mini_batch_size=2", "trainer.total_training_steps=1", "trainer.save_freq=0",
        "trainer.test_freq=0", "data.max_response_length=6",
        "reward_model.judge.enable=True", f"reward_model.judge.path={smollm2_dir}", "reward_model.judge.engine=hf",
        "reward_model.judge.max_new_tokens=4", "reward_model.judge.dtype=float32",
    ]
    result = run_training(overrides, cwd=tmp_path)
    assert "LLM judge" in result.stdout
    rows = read_metrics(ckpt / "logs")
    assert sorted(rows) == [1]
    judge = _finite(rows[1], "reward_extra/judge_score/mean")
    assert 0.0 <= judge <= 1.0
    assert _finite(rows[1], "reward_extra/combined_score/mean") == pytest.approx(judge, abs=1e-6)
    _finite(rows[1], "reward_extra/judge_parsed/mean")
    assert "reward_extra/rule_score/mean" not in rows[1]  # combine=rm: as in verl, no rule score
