"""The seed's command line, and GRPO with a KL loss, run for real on CPU: Ray, two FSDP2 ranks (gloo), the hf
engine, a tiny model. Each run goes through `python -m strive.trainer.main_ppo` like a user's would."""

import os

import pytest

from tests.e2e.helpers import read_metrics, run_training, write_reward

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    from strive.data.synthetic import write_dataset

    out = tmp_path_factory.mktemp("arith")
    write_dataset(str(out), n_train=64, n_test=6, seed=0)
    return out


def seed_command(model: str, data, ckpt, reward: str) -> list[str]:
    """The seed's single-machine PPO command line; only paths, sizes, the engine and the device differ."""
    return [
        f"data.train_files={data}/train.parquet", f"data.val_files={data}/test.parquet",
        "data.train_batch_size=8", "data.max_prompt_length=192", "data.max_response_length=12",
        "actor_rollout_ref.rollout.name=hf", f"actor_rollout_ref.model.path={model}",
        "actor_rollout_ref.actor.optim.lr=1e-4", "actor_rollout_ref.actor.ppo_mini_batch_size=4",
        "actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu=2",
        "actor_rollout_ref.rollout.log_prob_micro_batch_size_per_gpu=4",
        "actor_rollout_ref.model.enable_gradient_checkpointing=True",
        "actor_rollout_ref.actor.fsdp_config.param_offload=True",
        "actor_rollout_ref.actor.fsdp_config.optimizer_offload=True",
        "actor_rollout_ref.rollout.tensor_model_parallel_size=2", "actor_rollout_ref.rollout.gpu_memory_utilization=0.8",
        "actor_rollout_ref.ref.log_prob_micro_batch_size_per_gpu=4", "critic.optim.lr=1e-4",
        f"critic.model.path={model}", "critic.ppo_micro_batch_size_per_gpu=2",
        "critic.model.fsdp_config.param_offload=True", "critic.model.fsdp_config.optimizer_offload=True",
        "algorithm.kl_ctrl.kl_coef=0.001", "trainer.logger=['console','file']", "trainer.val_before_train=False",
        "trainer.default_hdfs_dir=null", "trainer.n_gpus_per_node=2", "trainer.nnodes=1", "trainer.save_freq=2",
        "trainer.test_freq=2", "trainer.total_epochs=15", "trainer.total_training_steps=3", "trainer.device=cpu",
        f"trainer.default_local_dir={ckpt}", f"custom_reward_function.path={reward}",
    ]


def test_seed_command_ppo_with_critic(tiny_model_dir, data_dir, tmp_path):
    ckpt = tmp_path / "ckpt"
    result = run_training(seed_command(tiny_model_dir, data_dir, ckpt, write_reward(tmp_path)), cwd=tmp_path)
    assert "derived sizes" in result.stdout
    rows = read_metrics(ckpt / "logs")
    assert sorted(rows) == [1, 2, 3]
    for step in (1, 2, 3):
        for key in ("critic/score/mean", "critic/vf_loss", "critic/values/mean", "actor/pg_loss", "actor/entropy",
                    "response_length/mean", "timing_s/gen", "timing_s/update_critic", "perf/throughput",
                    "weight_sync/bytes", "perf/tflops/actor", "perf/tflops/critic"):
            assert key in rows[step], (step, key)
    assert "val-core/strive/arithmetic/reward/mean@1" in rows[2]
    assert rows[1]["critic/score/mean"] > 0  # the letter reward is non-trivial, so gradients flow
    assert rows[1]["actor/grad_norm"] > 0 and rows[1]["critic/grad_norm"] > 0
    if os.access("/proc/self/clear_refs", os.W_OK):  # Linux: each phase's peak host memory (device_memory.py)
        phases = {k.rsplit("/", 1)[1]: v for k, v in rows[2].items() if k.startswith("perf/cpu_memory_used_gb/")}
        assert {"generate", "update_critic"} <= set(phases), sorted(phases)
        assert 0 < max(phases.values()) <= rows[2]["perf/cpu_memory_used_gb"] + 1e-6
    assert (ckpt / "latest_checkpointed_iteration.txt").read_text() == "3"
    for role in ("actor", "critic"):
        for rank in (0, 1):
            assert (ckpt / "global_step_2" / role / f"model_world_size_2_rank_{rank}.pt").exists()
    assert (ckpt / "global_step_2" / "data.pt").exists()
    assert (ckpt / "logs" / "curves.png").stat().st_size > 0


def test_grpo_with_kl_loss(tiny_model_dir, data_dir, tmp_path):
    ckpt = tmp_path / "ckpt"
    overrides = seed_command(tiny_model_dir, data_dir, ckpt, write_reward(tmp_path)) + [
        "algorithm.adv_estimator=grpo", "actor_rollout_ref.actor.use_kl_loss=True",
        "actor_rollout_ref.actor.kl_loss_type=low_var_kl", "actor_rollout_ref.rollout.n=4",
        "data.train_batch_size=4", "actor_rollout_ref.actor.ppo_mini_batch_size=2", "trainer.total_training_steps=2",
        # fp32 everywhere, so the engine's log-probs must equal the actor's after each weight sync
        "actor_rollout_ref.rollout.dtype=float32", "actor_rollout_ref.actor.fsdp_config.dtype=float32",
        "actor_rollout_ref.ref.fsdp_config.dtype=float32",
    ]
    result = run_training(overrides, cwd=tmp_path)
    rows = read_metrics(ckpt / "logs")
    assert sorted(rows) == [1, 2]
    assert not (ckpt / "global_step_2" / "critic").exists()  # GRPO needs no critic
    assert "critic/vf_loss" not in rows[1]
    assert "actor/kl_loss" in rows[1] and rows[2]["actor/kl_loss"] >= 0
    assert rows[1]["actor/kl_coef"] == pytest.approx(0.001)
    assert "samples per step: 16" in result.stdout
    for step in (1, 2):  # step 2 samples with the weights synced after step 1's update
        assert rows[step]["training/rollout_logprob_diff_mean"] < 1e-4, rows[step]
        assert rows[step]["training/rollout_probs_diff_max"] < 1e-3, rows[step]
