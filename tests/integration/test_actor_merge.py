"""An actor trained one step, saved in verl's layout and merged by `strive merge`, loads with
AutoModelForCausalLM and gives the actor's log-probs (one process, world size 1, gloo)."""

import os

import pytest
import torch

from strive.config import prepare
from token_batches import token_batch


def test_merged_checkpoint_gives_actor_logprobs(tiny_model_dir, tmp_path, process_group):
    from torch.distributed.device_mesh import init_device_mesh
    from transformers import AutoModelForCausalLM

    from strive.controller.process import _write_hf_meta
    from strive.trainer.merge import merge
    from strive.workers.actor import ActorWorker
    from strive.workers.checkpoint import save_shards

    run = prepare([f"actor_rollout_ref.model.path={tiny_model_dir}", "trainer.n_gpus_per_node=1",
                   "data.train_batch_size=4", "actor_rollout_ref.actor.ppo_mini_batch_size=4",
                   "actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu=2", "actor_rollout_ref.actor.optim.lr=1e-2",
                   "actor_rollout_ref.actor.fsdp_config.dtype=float32", "algorithm.adv_estimator=grpo"])
    mesh = init_device_mesh("cpu", (1,))
    actor = ActorWorker(run.config.actor_rollout_ref, run.sizes.actor, run.sizes.old_log_prob, mesh,
                        torch.device("cpu"), total_steps=2)
    batch = token_batch()
    before = actor.compute_log_probs(batch)["old_log_probs"]
    metrics, _ = actor.update(batch.with_fields(old_log_probs=before), step=1)
    assert metrics["actor/grad_norm"] > 0
    after = actor.compute_log_probs(batch)["old_log_probs"]
    assert not torch.allclose(before, after)  # the update changed the policy
    ckpt = tmp_path / "global_step_1" / "actor"
    save_shards(str(ckpt), actor.module, actor.optimizer, actor.scheduler, 0, 1, ["model", "optimizer", "extra"])
    _write_hf_meta(actor.module, str(ckpt / "huggingface"), tiny_model_dir)
    out = merge(str(tmp_path / "global_step_1"), str(tmp_path / "merged"))
    model = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32).eval()
    T = batch.response_length
    logits = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask,
                   position_ids=batch.position_ids).logits[:, -T - 1:-1]
    logp = torch.log_softmax(logits.float(), -1).gather(-1, batch.responses[..., None]).squeeze(-1)
    torch.testing.assert_close(logp * batch.response_mask, after, atol=1e-4, rtol=1e-4)
    assert os.path.exists(os.path.join(out, "tokenizer_config.json"))


def test_on_policy_bypass_gives_the_same_update_and_old_log_probs(tiny_model_dir, process_group):
    """One optimizer step per batch: the update without a separate old log-prob pass (record=True) gives the same
    metrics and the same new weights as the update after that pass, and the old log-probs it records (in the
    batch's row order, although its mini-batch is shuffled) equal the pass's."""
    from torch.distributed.device_mesh import init_device_mesh

    from strive.workers.actor import ActorWorker

    run = prepare([f"actor_rollout_ref.model.path={tiny_model_dir}", "trainer.n_gpus_per_node=1",
                   "data.train_batch_size=4", "actor_rollout_ref.actor.ppo_mini_batch_size=4",
                   "actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu=2", "actor_rollout_ref.actor.optim.lr=1e-2",
                   "actor_rollout_ref.actor.fsdp_config.dtype=float32", "algorithm.adv_estimator=grpo",
                   "actor_rollout_ref.actor.shuffle=True"])
    assert run.sizes.bypass_old_log_probs
    mesh = init_device_mesh("cpu", (1,))
    batch = token_batch()
    results = []
    for bypass in (False, True):
        torch.manual_seed(0)
        actor = ActorWorker(run.config.actor_rollout_ref, run.sizes.actor, run.sizes.old_log_prob, mesh,
                            torch.device("cpu"), total_steps=2)
        if bypass:
            metrics, seen = actor.update(batch, step=1, record=True)
        else:
            seen = actor.compute_log_probs(batch)
            metrics, _ = actor.update(batch.with_fields(old_log_probs=seen["old_log_probs"]), step=1)
        weights = {n: p.detach().full_tensor().clone() for n, p in actor.module.named_parameters()}
        results.append((metrics, seen, weights))
    (m0, s0, w0), (m1, s1, w1) = results
    for key in ("actor/pg_loss", "actor/grad_norm", "actor/pg_clipfrac", "actor/ppo_kl"):
        assert m1[key] == pytest.approx(m0[key], rel=1e-6, abs=1e-9), key
    torch.testing.assert_close(s1["old_log_probs"], s0["old_log_probs"], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(s1["entropy"], s0["entropy"], atol=1e-5, rtol=1e-5)
    for name in w0:
        torch.testing.assert_close(w1[name], w0[name], atol=1e-6, rtol=1e-6, msg=name)
