"""Where an actor update's time goes at verl's quickstart micro-batch size, one GPU, no Ray.

One ActorWorker (FSDP2 on a world of one, NCCL), the Qwen2.5-0.5B shape with random weights, one mini-batch of 64
sequences (505-token prompts, 512-token responses) in micro-batches of 4, as `bench/gpu_step.py --configs ppo_fast`
runs it. Times one update per variant after a warm-up, then profiles the default and prints the top operators.

    python bench/update_profile.py          # writes $OUT/update_profile.json and update_profile.txt
"""

from __future__ import annotations

import json
import os
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import torch  # noqa: E402
import torch.distributed as dist  # noqa: E402

from strive.batch import Batch  # noqa: E402
from strive.config import prepare  # noqa: E402
from strive.workers import actor as actor_module  # noqa: E402

OVERRIDES = ["data.train_batch_size=64", "actor_rollout_ref.actor.ppo_mini_batch_size=64",
             "actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu=4", "data.max_prompt_length=512",
             "data.max_response_length=512", "trainer.n_gpus_per_node=1", "actor_rollout_ref.actor.optim.lr=1e-6"]


def make_batch(n: int, P: int = 512, T: int = 512, prompt: int = 505, vocab: int = 151900) -> Batch:
    g = torch.Generator().manual_seed(0)
    prompts = torch.full((n, P), 0, dtype=torch.long)
    prompts[:, P - prompt:] = torch.randint(0, vocab, (n, prompt), generator=g)
    responses = torch.randint(0, vocab, (n, T), generator=g)
    attn = torch.cat([torch.zeros(n, P - prompt, dtype=torch.long), torch.ones(n, prompt + T, dtype=torch.long)], 1)
    return Batch(prompts, responses, attn, (attn.cumsum(-1) - 1).clamp(min=0), torch.ones(n, T),
                 advantages=torch.randn(n, T, generator=g), old_log_probs=torch.randn(n, T, generator=g) - 5)


def sync_on_last_micro(worker) -> None:
    """Variant: FSDP2 reduces gradients only after the last micro-batch of a mini-batch (accumulating in fp32)."""
    original = actor_module.split_micro

    def split(mini, micro, max_tokens):
        parts = original(mini, micro, max_tokens)
        for i, part in enumerate(parts):
            worker.module.set_requires_gradient_sync(i == len(parts) - 1)
            yield part
    actor_module.split_micro = split


def build(model: str, extra: list[str]):
    from torch.distributed.device_mesh import init_device_mesh

    run = prepare([f"actor_rollout_ref.model.path={model}", *OVERRIDES, *extra])
    mesh = init_device_mesh("cuda", (1,))
    return actor_module.ActorWorker(run.config.actor_rollout_ref, run.sizes.actor, run.sizes.old_log_prob, mesh,
                                    torch.device("cuda"), total_steps=10)


def timed_update(worker, batch: Batch) -> float:
    worker.update(batch, step=1)  # warm-up
    torch.cuda.synchronize()
    start = time.perf_counter()
    worker.update(batch, step=2)
    torch.cuda.synchronize()
    return time.perf_counter() - start


def main() -> int:
    from strive.models.tiny import make_random_model

    os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
    os.environ.setdefault("MASTER_PORT", "29533")
    dist.init_process_group("nccl", rank=0, world_size=1)
    torch.cuda.set_device(0)
    model = make_random_model("/tmp/strive_bench/qwen2.5-0.5b", "qwen2.5-0.5b")
    batch = make_batch(64)
    out_dir = os.environ.get("OUT") or os.path.join(ROOT, "bench", "results")
    variants = {
        "default (packed varlen, checkpointing, reshard after forward)": [],
        "reshard_after_forward=False": ["actor_rollout_ref.actor.fsdp_config.reshard_after_forward=False"],
        "no gradient checkpointing": ["actor_rollout_ref.model.enable_gradient_checkpointing=False"],
        "padded (use_remove_padding=False)": ["actor_rollout_ref.model.use_remove_padding=False"],
        "gradient sync on the last micro-batch only": ["SYNC_LAST"],
    }
    results = {}
    original_split = actor_module.split_micro
    for name, extra in variants.items():
        worker = build(model, [e for e in extra if e != "SYNC_LAST"])
        if "SYNC_LAST" in extra:
            sync_on_last_micro(worker)
        results[name] = round(timed_update(worker, batch), 3)
        actor_module.split_micro = original_split
        print(f"{name}: {results[name]} s for 16 micro-batches of 4", flush=True)
        del worker
        torch.cuda.empty_cache()
    worker = build(model, [])
    worker.update(batch, step=1)
    small = batch.select(slice(0, 16))  # 4 micro-batches under the profiler
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU,
                                            torch.profiler.ProfilerActivity.CUDA]) as prof:
        worker.update(small, step=2)
        torch.cuda.synchronize()
    averages = prof.key_averages()
    text = (averages.table(sort_by="self_cuda_time_total", row_limit=25) + "\n\n"
            + averages.table(sort_by="self_cpu_time_total", row_limit=25))
    with open(os.path.join(out_dir, "update_profile.txt"), "w") as fh:
        fh.write(text)
    with open(os.path.join(out_dir, "update_profile.json"), "w") as fh:
        json.dump({"card": torch.cuda.get_device_name(0), "seconds_per_update": results}, fh, indent=1)
    print(text[:6000])
    dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
