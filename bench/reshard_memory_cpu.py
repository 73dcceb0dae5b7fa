"""What `fsdp_config.reshard_after_forward` does to an update's peak memory on one worker, measured on the CPU.

On one worker strive leaves FSDP2's gathered bf16 weights in place between forward and backward (the one-worker
default reshard_after_forward=False, strive/config/resolve.py). That costs memory: this script measures how much,
where no GPU is at hand. One ActorWorker (FSDP2 on a gloo world of one), the Qwen2.5-0.5B shape with random
weights, bf16 compute over fp32 master weights as on a GPU, one mini-batch of 16 short sequences in micro-batches
of 4 (memory from the weights does not depend on the length). Each variant runs in a process of its own: one warm-up
update, then the kernel's peak resident memory (VmHWM) is reset and a second update is measured; the two variants
run twice, alternately.
Times here are CPU times and say nothing about a GPU's.

    python bench/reshard_memory_cpu.py            # writes bench/results/reshard_memory_cpu.json
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
VARIANTS = {"one-worker default (reshard_after_forward=False)": [],
            "reshard_after_forward=True": ["actor_rollout_ref.actor.fsdp_config.reshard_after_forward=True"]}
OVERRIDES = ["data.train_batch_size=16", "actor_rollout_ref.actor.ppo_mini_batch_size=16",
             "actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu=4", "data.max_prompt_length=32",
             "data.max_response_length=32", "trainer.n_gpus_per_node=1", "trainer.device=cpu",
             "actor_rollout_ref.actor.fsdp_config.dtype=bfloat16", "actor_rollout_ref.actor.optim.lr=1e-6",
             "actor_rollout_ref.model.enable_gradient_checkpointing=True"]


def _kib(field: str) -> int:
    with open("/proc/self/status") as fh:
        return next(int(line.split()[1]) for line in fh if line.startswith(field + ":"))


def one_variant(extra: list[str]) -> dict:
    import torch
    import torch.distributed as dist
    from torch.distributed.device_mesh import init_device_mesh

    sys.path.insert(0, ROOT)
    from bench.update_profile import make_batch
    from strive.config import prepare
    from strive.models.tiny import make_random_model
    from strive.workers.actor import ActorWorker

    os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
    os.environ.setdefault("MASTER_PORT", "29541")
    dist.init_process_group("gloo", rank=0, world_size=1)
    model = make_random_model("/tmp/strive_bench/qwen2.5-0.5b", "qwen2.5-0.5b")
    run = prepare([f"actor_rollout_ref.model.path={model}", *OVERRIDES, *extra])
    worker = ActorWorker(run.config.actor_rollout_ref, run.sizes.actor, run.sizes.old_log_prob,
                         init_device_mesh("cpu", (1,)), torch.device("cpu"), total_steps=10)
    batch = make_batch(16, P=32, T=32, prompt=28)
    worker.update(batch, step=1)  # warm-up: optimizer state exists from here on
    before = _kib("VmRSS")
    with open("/proc/self/clear_refs", "w") as fh:
        fh.write("5")  # reset VmHWM to the current resident size
    start = time.perf_counter()
    worker.update(batch, step=2)
    seconds = time.perf_counter() - start
    peak = _kib("VmHWM")
    dist.destroy_process_group()
    return {"rss_before_gb": round(before / 2**20, 3), "peak_gb": round(peak / 2**20, 3),
            "update_rise_gb": round((peak - before) / 2**20, 3), "update_s": round(seconds, 1)}


def main() -> int:
    if len(sys.argv) > 2 and sys.argv[1] == "--child":
        print(json.dumps(one_variant(json.loads(sys.argv[2]))))
        return 0
    results = {name: [] for name in VARIANTS}
    for _ in range(2):  # A B A B: the second pair shows how much one process's numbers move
        for name, extra in VARIANTS.items():
            out = subprocess.run([sys.executable, __file__, "--child", json.dumps(extra)], capture_output=True,
                                 text=True, env=dict(os.environ, PYTHONPATH=ROOT))
            row = json.loads(out.stdout.strip().splitlines()[-1]) if out.returncode == 0 else {"error": out.stderr[-2000:]}
            results[name].append(row)
            print(f"{name}: {row}", flush=True)
    path = os.path.join(ROOT, "bench", "results", "reshard_memory_cpu.json")
    with open(path, "w") as fh:
        json.dump({"machine": os.uname().machine, "cpus": os.cpu_count(), "results": results}, fh, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
