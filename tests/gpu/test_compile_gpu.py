"""fsdp_config.compile_cpp_wrapper (opt-in, with the padded path): the actor's compiled, checkpointed layers launch
their kernels from generated C++ and keep their attention outputs; an update gives the numbers of the Python wrapper
with the plain checkpoint, on varied-length rows (one process, world size 1, the 0.5B shape)."""

import gc

import pytest
import torch

from strive.batch import Batch
from tests.gpu.workers import one_gpu_actor

pytestmark = pytest.mark.gpu


def _actor(model_dir, cpp_wrapper: bool):
    return one_gpu_actor(model_dir, [
        "data.train_batch_size=8", "actor_rollout_ref.actor.ppo_mini_batch_size=8",
        "actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu=4",
        "actor_rollout_ref.model.enable_gradient_checkpointing=True",
        f"actor_rollout_ref.actor.fsdp_config.compile_cpp_wrapper={cpp_wrapper}",
        "actor_rollout_ref.model.use_remove_padding=False"])


def test_cpp_wrapper_update_equals_python_wrapper(qwen05_dir, nccl_group):
    g = torch.Generator().manual_seed(0)
    B, P, T = 8, 128, 128
    prompts, responses = torch.randint(0, 1000, (B, P), generator=g), torch.randint(0, 1000, (B, T), generator=g)
    prompt_lens, response_lens = torch.randint(8, P + 1, (B,), generator=g), torch.randint(1, T + 1, (B,), generator=g)
    cols = torch.arange(P + T)
    attn = ((cols >= P - prompt_lens[:, None]) & (cols < P + response_lens[:, None])).long()
    batch = Batch(prompts, responses, attn, (attn.cumsum(-1) - 1).clamp(min=0), attn[:, P:].float(),
                  advantages=torch.randn(B, T, generator=g))
    metrics = {}
    for cpp_wrapper in (False, True):
        gc.collect()
        torch.cuda.empty_cache()
        torch._dynamo.reset()  # the other variant's graphs of the same layer code must not be reused
        actor = _actor(qwen05_dir, cpp_wrapper)
        old = actor.compute_log_probs(batch)["old_log_probs"]
        metrics[cpp_wrapper], _ = actor.update(batch.with_fields(old_log_probs=old), step=1)
        del actor, old
    print({k: (m["actor/pg_loss"], m["actor/grad_norm"]) for k, m in metrics.items()})
    assert metrics[True]["actor/pg_loss"] == pytest.approx(metrics[False]["actor/pg_loss"], rel=1e-3, abs=1e-5)
    assert metrics[True]["actor/grad_norm"] == pytest.approx(metrics[False]["actor/grad_norm"], rel=1e-2)
