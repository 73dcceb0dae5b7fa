"""An actor trained one step, saved in verl's layout and merged by `strive merge`, loads with
AutoModelForCausalLM and gives the actor's log-probs (one process, world size 1, gloo)."""

import os

import pytest
import torch
import torch.distributed as dist

from strive.batch import Batch
from strive.config import prepare


@pytest.fixture
def process_group(tmp_path):
    if dist.is_initialized():
        pytest.skip("a process group already exists in this test process")
    dist.init_process_group("gloo", init_method=f"file://{tmp_path}/pg", rank=0, world_size=1)
    yield
    dist.destroy_process_group()


def _batch(vocab: int, B: int = 4, P: int = 6, T: int = 5) -> Batch:
    g = torch.Generator().manual_seed(0)
    prompts = torch.randint(0, vocab - 3, (B, P), generator=g)
    responses = torch.randint(0, vocab - 3, (B, T), generator=g)
    attn = torch.ones(B, P + T, dtype=torch.long)
    attn[0, :2] = 0
    resp_mask = torch.ones(B, T)
    resp_mask[1, 3:] = 0
    attn[1, P + 3:] = 0
    pos = (attn.cumsum(-1) - 1).clamp(min=0)
    adv = torch.randn(B, T, generator=g) * resp_mask
    return Batch(prompts, responses, attn, pos, resp_mask, advantages=adv)


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
    batch = _batch(259)
    before = actor.compute_log_probs(batch)["old_log_probs"]
    metrics = actor.update(batch.with_fields(old_log_probs=before), step=1)
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
