"""LoRA GRPO through the entry point (Ray, two FSDP2 ranks on gloo, the hf engine, tiny model): the engine serves
the merged weights after each sync (its log-probs equal the actor's in fp32), the KL reference is the actor with
its adapter off, checkpoints hold the adapter only, and a run killed after its checkpoint and started again gives
the same step as a run never interrupted."""

import pytest

from tests.e2e.helpers import read_metrics, run_training, train_command, write_reward
from tests.e2e.test_ppo_cpu import seed_command
from tests.e2e.test_resume_cpu import _kill_after_checkpoint

pytestmark = pytest.mark.slow
pytest.importorskip("peft")

COMPARED = ("critic/score/mean", "response_length/mean", "actor/pg_loss", "actor/entropy", "actor/grad_norm",
            "actor/kl_loss", "training/rollout_logprob_diff_mean")


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    from strive.data.synthetic import write_dataset

    out = tmp_path_factory.mktemp("arith")
    write_dataset(str(out), n_train=64, n_test=4, seed=0)
    return out


def _overrides(model, data, ckpt, reward) -> list[str]:
    return seed_command(model, data, ckpt, reward) + [
        "algorithm.adv_estimator=grpo", "actor_rollout_ref.actor.use_kl_loss=True", "actor_rollout_ref.rollout.n=4",
        "data.train_batch_size=4", "actor_rollout_ref.actor.ppo_mini_batch_size=4", "trainer.total_training_steps=3",
        "trainer.save_freq=2", "trainer.test_freq=0", "actor_rollout_ref.actor.optim.lr=2e-2",
        "actor_rollout_ref.model.lora_rank=8", "actor_rollout_ref.model.lora_alpha=16",
        "actor_rollout_ref.model.target_modules=all-linear", "actor_rollout_ref.rollout.load_format=safetensors",
        # fp32 everywhere, so the engine's log-probs must equal the actor's after each weight sync
        "actor_rollout_ref.rollout.dtype=float32", "actor_rollout_ref.actor.fsdp_config.dtype=float32",
    ]


def test_lora_grpo_runs_syncs_and_resumes(tiny_model_dir, data_dir, tmp_path):
    reward = write_reward(tmp_path)
    straight = tmp_path / "straight"
    result = run_training(_overrides(tiny_model_dir, data_dir, straight, reward), cwd=tmp_path)
    assert "the reference policy is the actor with its adapter disabled" in result.stdout
    rows = read_metrics(straight / "logs")
    assert sorted(rows) == [1, 2, 3]
    for step in (1, 2, 3):  # steps 2 and 3 sample with the merged weights synced after the previous update
        assert rows[step]["training/rollout_logprob_diff_mean"] < 1e-4, rows[step]
        assert rows[step]["actor/grad_norm"] > 0
    assert rows[1]["actor/kl_loss"] == pytest.approx(0.0, abs=1e-6)  # adapter B starts at 0: policy = reference
    assert rows[3]["actor/kl_loss"] > 0  # the adapter moved the policy away from the base
    actor_dir = straight / "global_step_2" / "actor"
    assert (actor_dir / "lora_adapter" / "adapter_config.json").exists()
    import torch

    shard = torch.load(actor_dir / "model_world_size_2_rank_0.pt", weights_only=True)
    assert shard and all(".lora_" in name for name in shard)

    resumed = tmp_path / "resumed"
    overrides = _overrides(tiny_model_dir, data_dir, resumed, reward)
    _kill_after_checkpoint(train_command(overrides), tmp_path, resumed / "latest_checkpointed_iteration.txt", 2)
    result = run_training(overrides, cwd=tmp_path)
    assert "resumed from" in result.stdout
    again = read_metrics(resumed / "logs")
    for key in COMPARED:
        assert again[3][key] == pytest.approx(rows[3][key], rel=1e-5, abs=1e-6), key
