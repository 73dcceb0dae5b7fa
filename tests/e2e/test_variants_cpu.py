"""Other configurations users run, each for a couple of real steps on CPU: in-reward KL with the adaptive
controller, a critic in its own worker group, token-budget micro-batches and packed forwards; ReMax and RLOO;
dynamic sampling (algorithm.filter_groups)."""

import json

import pytest

from tests.e2e.helpers import read_metrics, run_training, write_reward

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    from strive.data.synthetic import write_dataset

    out = tmp_path_factory.mktemp("arith")
    write_dataset(str(out), n_train=32, n_test=2, seed=2)
    return out


def base(model, data, ckpt, reward, steps=2) -> list[str]:
    return [f"data.train_files={data}/train.parquet", f"data.val_files={data}/test.parquet",
            "data.train_batch_size=4", "data.max_prompt_length=192", "data.max_response_length=8",
            f"actor_rollout_ref.model.path={model}", f"critic.model.path={model}",
            "actor_rollout_ref.actor.ppo_mini_batch_size=2", "actor_rollout_ref.actor.optim.lr=1e-4",
            "trainer.device=cpu", "trainer.logger=['console','file']", "trainer.val_before_train=False",
            f"trainer.total_training_steps={steps}", f"trainer.default_local_dir={ckpt}",
            f"custom_reward_function.path={reward}"]


def test_kl_in_reward_adaptive_separate_critic_dynamic_bsz(tiny_model_dir, data_dir, tmp_path):
    ckpt = tmp_path / "ckpt"
    overrides = base(tiny_model_dir, data_dir, ckpt, write_reward(tmp_path)) + [
        "algorithm.use_kl_in_reward=True", "algorithm.kl_ctrl.type=adaptive", "algorithm.kl_ctrl.kl_coef=0.05",
        "algorithm.kl_ctrl.target_kl=0.01", "algorithm.kl_ctrl.horizon=100", "algorithm.kl_penalty=low_var_kl",
        "trainer.colocate_critic=False", "trainer.n_gpus_per_node=1",
        "actor_rollout_ref.actor.use_dynamic_bsz=True", "actor_rollout_ref.actor.ppo_max_token_len_per_gpu=400",
        "critic.ppo_max_token_len_per_gpu=400", "actor_rollout_ref.model.use_remove_padding=True",
        "critic.model.use_remove_padding=True", "actor_rollout_ref.actor.ppo_epochs=2",
        "actor_rollout_ref.actor.shuffle=True",
    ]
    result = run_training(overrides, cwd=tmp_path)
    assert "placement critic: rank 0" in result.stdout
    rows = read_metrics(ckpt / "logs")
    assert rows[1]["actor/reward_kl_penalty_coeff"] == pytest.approx(0.05)
    assert rows[2]["actor/reward_kl_penalty_coeff"] != pytest.approx(0.05)  # the adaptive β moved
    assert rows[2]["actor/reward_kl_penalty"] >= 0
    assert "critic/vf_loss" in rows[2] and "critic/values/mean" in rows[2]
    assert rows[2]["critic/rewards/mean"] != rows[2]["critic/score/mean"]  # KL entered the reward


@pytest.mark.parametrize("estimator", ["remax", "rloo", "reinforce_plus_plus"])
def test_critic_free_estimators(tiny_model_dir, data_dir, tmp_path, estimator):
    ckpt = tmp_path / "ckpt"
    overrides = base(tiny_model_dir, data_dir, ckpt, write_reward(tmp_path), steps=1) + [
        f"algorithm.adv_estimator={estimator}", "actor_rollout_ref.rollout.n=2", "trainer.n_gpus_per_node=2",
        "actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu=2"]
    run_training(overrides, cwd=tmp_path)
    rows = read_metrics(ckpt / "logs")
    assert "critic/vf_loss" not in rows[1]
    assert rows[1]["critic/advantages/max"] > rows[1]["critic/advantages/min"]  # non-trivial advantages


# The odd-numbered prompts score every response alike, so they carry no GRPO signal; the others score a
# response by the parity of its characters. (tests/gpu reuses it.)
HALF_UNINFORMATIVE_REWARD = '''
def compute_score(data_source, solution_str, ground_truth, extra_info=None):
    if extra_info["index"] % 2:
        return {"score": 0.5, "acc": 0.0}
    acc = float(sum(map(ord, solution_str)) % 2)
    return {"score": acc, "acc": acc}
'''


def test_dynamic_sampling_trains_only_on_groups_with_a_signal(tiny_model_dir, data_dir, tmp_path):
    ckpt, dump = tmp_path / "ckpt", tmp_path / "rollouts"
    reward = tmp_path / "half_reward.py"
    reward.write_text(HALF_UNINFORMATIVE_REWARD)
    overrides = base(tiny_model_dir, data_dir, ckpt, reward, steps=2) + [
        "algorithm.adv_estimator=grpo", "actor_rollout_ref.rollout.n=4", "data.gen_batch_size=3",
        "algorithm.filter_groups.enable=True", "algorithm.filter_groups.metric=acc",
        f"trainer.rollout_data_dir={dump}", "trainer.n_gpus_per_node=2"]
    result = run_training(overrides, cwd=tmp_path)
    assert "dynamic sampling: rounds of data.gen_batch_size 3 prompts" in result.stdout
    rows = read_metrics(ckpt / "logs")
    rounds = [rows[s]["train/num_gen_batches"] for s in (1, 2)]
    assert min(rounds) >= 2  # 3 prompts a round, about half of them without a signal: 4 need two rounds or more
    for step in (1, 2):
        groups: dict[str, list[float]] = {}
        for line in (dump / f"{step}.jsonl").read_text().splitlines():
            row = json.loads(line)
            groups.setdefault(row["input"], []).append(row["score"])
        assert len(groups) == 4 and all(len(s) == 4 and len(set(s)) > 1 for s in groups.values())
        assert rows[step]["train/kept_prompt_frac"] == pytest.approx(4 / (3 * rounds[step - 1]))
        assert rows[step]["critic/advantages/max"] > 0 > rows[step]["critic/advantages/min"]


def test_dynamic_sampling_stops_with_the_keys_to_change(tiny_model_dir, data_dir, tmp_path):
    reward = tmp_path / "flat_reward.py"
    reward.write_text("def compute_score(data_source, solution_str, ground_truth, extra_info=None):\n    return 1.0\n")
    overrides = base(tiny_model_dir, data_dir, tmp_path / "ckpt", reward, steps=1) + [
        "algorithm.adv_estimator=grpo", "actor_rollout_ref.rollout.n=2", "algorithm.filter_groups.enable=True",
        "algorithm.filter_groups.max_num_gen_batches=2", "trainer.n_gpus_per_node=1"]
    with pytest.raises(AssertionError) as err:
        run_training(overrides, cwd=tmp_path)
    assert "only 0 of data.train_batch_size=4 prompts" in str(err.value)
    assert "algorithm.filter_groups.max_num_gen_batches=2 rounds" in str(err.value)
