"""The actor's loss under algorithm.rollout_correction, on a tiny model in one process (world size 1, gloo):
decoupled IS weights reach the policy loss, and bypass mode corrects against the engine's log-probs even when the
update is the batch's only optimizer step (where the plain loss would use the detached current log-probs)."""

import pytest
import torch

from strive.config import prepare
from token_batches import token_batch

BASE = ["trainer.n_gpus_per_node=1", "data.train_batch_size=4", "actor_rollout_ref.actor.ppo_mini_batch_size=4",
        "actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu=2", "actor_rollout_ref.actor.optim.lr=1e-2",
        "actor_rollout_ref.actor.fsdp_config.dtype=float32", "algorithm.adv_estimator=grpo"]


def _actor(model_dir, extra):
    from torch.distributed.device_mesh import init_device_mesh

    from strive.workers.actor import ActorWorker

    run = prepare([f"actor_rollout_ref.model.path={model_dir}", *BASE, *extra])
    torch.manual_seed(0)
    return ActorWorker(run.config.actor_rollout_ref, run.sizes.actor, run.sizes.old_log_prob,
                       init_device_mesh("cpu", (1,)), torch.device("cpu"), total_steps=2,
                       rollout_correction=run.config.algorithm.rollout_correction)


def test_decoupled_weights_scale_the_policy_loss(tiny_model_dir, process_group):
    batch = token_batch()
    actor = _actor(tiny_model_dir, ["algorithm.rollout_correction.rollout_is=token"])
    old = actor.compute_log_probs(batch)["old_log_probs"]
    plain, _ = actor.update(batch.with_fields(old_log_probs=old), step=1)
    actor = _actor(tiny_model_dir, ["algorithm.rollout_correction.rollout_is=token"])
    halved, _ = actor.update(batch.with_fields(old_log_probs=old, rollout_is_weights=torch.full_like(old, 0.5)), step=1)
    assert plain["actor/pg_loss"] != 0
    assert halved["actor/pg_loss"] == pytest.approx(0.5 * plain["actor/pg_loss"], rel=1e-5)
    assert halved["actor/grad_norm"] == pytest.approx(0.5 * plain["actor/grad_norm"], rel=1e-4)


def test_bypass_mode_ratio_is_against_the_engine_log_probs(tiny_model_dir, process_group):
    batch = token_batch()
    rc = "algorithm.rollout_correction."
    actor = _actor(tiny_model_dir, [rc + "bypass_mode=True", rc + "rollout_is=token", rc + "rollout_rs=token_k1",
                                    rc + "rollout_rs_threshold=1.5"])
    current = actor.compute_log_probs(batch)["old_log_probs"]
    shift = torch.where(torch.arange(batch.response_length) % 2 == 0, 0.05, 1.0)  # odd tokens far: rejected
    rollout = (current + shift) * batch.response_mask  # as the controller ships it: old := the engine's
    metrics, _ = actor.update(batch.with_fields(old_log_probs=rollout), step=1)
    mask = batch.response_mask
    # PPO's kl is over the kept tokens (shift 0.05), not 0: the ratio was against the engine's log-probs
    assert metrics["actor/ppo_kl"] == pytest.approx(0.05, rel=1e-3)
    far = (shift == 1.0).float() * mask
    per_micro = [(far[r].sum() / mask[r].sum()).item() for r in (slice(0, 2), slice(2, 4))]  # micro-batches of 2
    assert metrics["rollout_corr/rollout_rs_masked_fraction"] == pytest.approx(sum(per_micro) / 2, rel=1e-6)
    kl = [(((rollout - current) * mask)[r].sum() / mask[r].sum()).item() for r in (slice(0, 2), slice(2, 4))]
    assert metrics["rollout_corr/kl"] == pytest.approx(sum(kl) / 2, rel=1e-3)
    assert not any(k.startswith("actor/rollout_corr") for k in metrics)
