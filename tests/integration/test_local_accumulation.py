"""On a world of one, FSDP2 accumulates a mini-batch's micro-batches without reducing and resharding after each
(strive.workers.fsdp.accumulation_step): the actor's and the critic's updates give the same metrics and the same new
weights as with a reduce and reshard around every micro-batch (one process, gloo, bf16 compute)."""

import pytest
import torch

from strive.config import prepare
from token_batches import token_batch


def _updates(worker_module, build, update, monkeypatch):
    """(metrics, weights) after one update with local accumulation, then with a reduce after every micro-batch;
    also how often the module was told to skip the reduce."""
    results, calls = [], []
    original = worker_module.accumulation_step
    for local in (True, False):
        if not local:
            monkeypatch.setattr(worker_module, "accumulation_step", lambda *a, **k: None)
        else:
            def counting(module, last, local):
                calls.append(last)
                original(module, last, local)
            monkeypatch.setattr(worker_module, "accumulation_step", counting)
        torch.manual_seed(0)
        worker = build()
        initial = {n: p.detach().full_tensor().clone() for n, p in worker.module.named_parameters()}
        metrics = update(worker)
        weights = {n: p.detach().full_tensor().clone() for n, p in worker.module.named_parameters()}
        assert any(not torch.equal(w, initial[n]) for n, w in weights.items())  # the update moved the weights
        results.append((metrics, weights))
    return results, calls


def _assert_same(results, keys):
    (m0, w0), (m1, w1) = results
    for key in keys:
        assert m1[key] == pytest.approx(m0[key], rel=1e-5, abs=1e-8), key
    for name in w0:
        torch.testing.assert_close(w1[name], w0[name], atol=1e-6, rtol=1e-5, msg=name)


# two mini-batches of 3 sequences in micro-batches of 2 and 1: the last micro-batch of each reduces
OVERRIDES = ["trainer.n_gpus_per_node=1", "data.train_batch_size=6", "algorithm.adv_estimator=gae",
             "actor_rollout_ref.actor.ppo_mini_batch_size=3", "actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu=2",
             "actor_rollout_ref.actor.optim.lr=1e-2", "critic.ppo_mini_batch_size=3",
             "critic.ppo_micro_batch_size_per_gpu=2", "critic.optim.lr=1e-2"]


def _actor(run, mesh):
    from strive.workers.actor import ActorWorker

    return ActorWorker(run.config.actor_rollout_ref, run.sizes.actor, run.sizes.old_log_prob, mesh,
                       torch.device("cpu"), total_steps=2)


def _critic(run, mesh):
    from strive.workers.critic import CriticWorker

    return CriticWorker(run.config.critic, run.sizes.critic, run.sizes.values, mesh, torch.device("cpu"),
                        total_steps=2)


ROLES = {  # role: (its worker module, build, one update's metrics, metrics compared)
    "actor": ("strive.workers.actor", _actor, lambda w: w.update(token_batch(B=6), step=1)[0],
              ("actor/pg_loss", "actor/grad_norm", "actor/pg_clipfrac")),
    "critic": ("strive.workers.critic", _critic, lambda w: w.update(token_batch(B=6), step=1),
               ("critic/vf_loss", "critic/grad_norm")),
}


@pytest.mark.parametrize("role", sorted(ROLES))
def test_update_is_the_same(role, tiny_model_dir, process_group, monkeypatch):
    import importlib

    from torch.distributed.device_mesh import init_device_mesh

    module_name, build, update, keys = ROLES[role]
    run = prepare([f"actor_rollout_ref.model.path={tiny_model_dir}", f"critic.model.path={tiny_model_dir}",
                   *OVERRIDES])
    mesh = init_device_mesh("cpu", (1,))
    results, calls = _updates(importlib.import_module(module_name), lambda: build(run, mesh), update, monkeypatch)
    assert calls == [False, True, False, True]  # per mini-batch: the first micro-batch keeps, the last reduces
    _assert_same(results, keys)
