"""The reference stored in its compute dtype (strive.config.fsdp_defaults.forward_only_storage) gives exactly the
log-probs of fp32 storage, since FSDP2 casts fp32 weights to that dtype for every forward anyway; its weights take
half the bytes (one process, gloo, bf16 compute)."""

import torch
from torch.distributed.device_mesh import init_device_mesh

from strive.config import prepare
from token_batches import token_batch

BASE = ["trainer.n_gpus_per_node=1", "trainer.device=cpu", "data.train_batch_size=4",
        "actor_rollout_ref.actor.ppo_mini_batch_size=4", "actor_rollout_ref.actor.use_kl_loss=True",
        "actor_rollout_ref.ref.log_prob_micro_batch_size_per_gpu=2",
        "actor_rollout_ref.ref.fsdp_config.dtype=bfloat16"]  # set: a CPU without bf16 units would compute in fp32


def _reference(model_dir, *extra):
    from strive.workers.ref import RefWorker

    run = prepare([f"actor_rollout_ref.model.path={model_dir}", *BASE, *extra])
    return RefWorker(run.config.actor_rollout_ref, run.sizes.ref, init_device_mesh("cpu", (1,)), torch.device("cpu"))


def _bytes(module) -> int:
    return sum(p.to_local().numel() * p.element_size() for p in module.parameters())


def test_reference_in_compute_dtype_gives_the_same_log_probs(tiny_qwen_dir, process_group):
    batch = token_batch(T=6)
    default = _reference(tiny_qwen_dir)
    fp32 = _reference(tiny_qwen_dir, "actor_rollout_ref.ref.fsdp_config.model_dtype=fp32")
    assert {p.dtype for p in default.module.parameters()} == {torch.bfloat16}
    assert {p.dtype for p in fp32.module.parameters()} == {torch.float32}
    assert 2 * _bytes(default.module) == _bytes(fp32.module)
    got = default.compute_log_probs(batch)["ref_log_probs"]
    want = fp32.compute_log_probs(batch)["ref_log_probs"]
    torch.testing.assert_close(got, want, rtol=0, atol=0)
    assert got.abs().sum() > 0
