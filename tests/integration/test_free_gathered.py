"""Forward-only passes leave no gathered weights behind (strive.workers.fsdp.forward_only).

On one worker `fsdp_config.reshard_after_forward` defaults to False, and FSDP2 then keeps each unit's unsharded
weights after a no-grad forward until the unit's next backward. The reference and the reward model never run one,
and every role shares the device, so without the explicit free each would hold a compute-dtype copy of its model
through the other roles' updates. Sharded parameters are DTensors and gathered ones plain tensors, which is what
these tests read (one process, gloo)."""

import pytest
import torch
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.tensor import DTensor

from strive.config import prepare
from token_batches import token_batch

OVERRIDES = ["trainer.n_gpus_per_node=1", "trainer.device=cpu", "data.train_batch_size=4",
             "algorithm.adv_estimator=gae", "actor_rollout_ref.actor.ppo_mini_batch_size=4",
             "actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu=2", "actor_rollout_ref.actor.use_kl_loss=True",
             "actor_rollout_ref.rollout.log_prob_micro_batch_size_per_gpu=2",
             "actor_rollout_ref.ref.log_prob_micro_batch_size_per_gpu=2", "critic.ppo_mini_batch_size=4",
             "critic.ppo_micro_batch_size_per_gpu=2", "critic.forward_micro_batch_size_per_gpu=2"]


def _gathered(module) -> list[str]:
    """Names of parameters currently registered as gathered (plain, not DTensor) tensors."""
    return [name for name, p in module.named_parameters() if not isinstance(p, DTensor)]


@pytest.fixture
def run(tiny_model_dir):
    run = prepare([f"actor_rollout_ref.model.path={tiny_model_dir}", f"critic.model.path={tiny_model_dir}",
                   *OVERRIDES])
    arr = run.config.actor_rollout_ref
    # the default these tests are about; with True FSDP2 frees after every forward by itself
    assert not arr.actor.fsdp_config.reshard_after_forward and not arr.ref.fsdp_config.reshard_after_forward
    assert not run.config.critic.model.fsdp_config.reshard_after_forward
    return run


def test_policy_passes_free_their_weights_and_gather_again(run, process_group):
    from strive.workers.actor import ActorWorker
    from strive.workers.ref import RefWorker

    mesh = init_device_mesh("cpu", (1,))
    cfg = run.config.actor_rollout_ref
    actor = ActorWorker(cfg, run.sizes.actor, run.sizes.old_log_prob, mesh, torch.device("cpu"), total_steps=2)
    ref = RefWorker(cfg, run.sizes.ref, mesh, torch.device("cpu"))
    batch = token_batch(T=4)

    first = actor.compute_log_probs(batch)["old_log_probs"]
    assert _gathered(actor.module) == []
    ref_logp = ref.compute_log_probs(batch)["ref_log_probs"]
    assert _gathered(ref.module) == []
    torch.testing.assert_close(ref_logp, first)  # same initial weights, gathered independently
    again = actor.compute_log_probs(batch)["old_log_probs"]
    torch.testing.assert_close(again, first, rtol=0, atol=0)  # the second gather reads the same weights

    batch.old_log_probs, batch.ref_log_probs = first, ref_logp
    actor.update(batch, step=1)  # the update gathers again after the freed pass, and trains
    after = actor.compute_log_probs(batch)["old_log_probs"]
    assert _gathered(actor.module) == []
    assert not torch.equal(after, first)


def test_values_pass_frees_the_critic_weights(run, process_group):
    from strive.workers.critic import CriticWorker

    critic = CriticWorker(run.config.critic, run.sizes.critic, run.sizes.values, init_device_mesh("cpu", (1,)),
                          torch.device("cpu"), total_steps=2)
    batch = token_batch(T=4)
    values = critic.compute_values(batch)["values"]
    assert _gathered(critic.module) == []
    assert values.shape == batch.responses.shape


def test_reward_model_scores_free_its_weights(process_group, tiny_rm_dir, tiny_model_dir):
    from strive.workers.reward_model import RewardModelWorker

    run = prepare([f"actor_rollout_ref.model.path={tiny_model_dir}", *OVERRIDES[:3],
                   "actor_rollout_ref.actor.ppo_mini_batch_size=4", "reward_model.enable=True",
                   f"reward_model.model.path={tiny_rm_dir}", "reward_model.micro_batch_size_per_gpu=2",
                   "reward_model.model.fsdp_config.reshard_after_forward=False"])  # its default is True
    worker = RewardModelWorker(run.config.reward_model, run.sizes.reward_model, init_device_mesh("cpu", (1,)),
                               torch.device("cpu"))
    scores = worker.score([[1, 2, 3], [4, 5], [6, 7, 8, 9]])
    assert scores.shape == (3,)
    assert _gathered(worker.module) == []
