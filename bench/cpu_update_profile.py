"""Where the demo's actor update spends its time on the CPU: real ActorWorkers (FSDP2 over gloo), no Ray.

The demo's shape (`strive demo`): SmolLM2-135M, GRPO, 8 prompts × n=4 = 32 sequences per step, one mini-batch, on
2 workers of one thread each (16 sequences per worker in one micro-batch), the on-policy bypass (the update's
forward gives the old log-probs), compute dtype as the demo picks it on this CPU. Prompts of 60-90 tokens (the
demo's questions in ChatML) and 64-token responses. Times the first update and the median of the next `--updates`,
with each worker's peak RSS; `--profile` also runs one more update of every rank under torch.profiler and prints
rank 0's top operators by own CPU time (collectives included: `c10d::` and `FSDP::` rows).

    python bench/cpu_update_profile.py --model ~/.cache/strive/models/smollm2-135m-instruct-b179c9523d0e --profile

writes bench/results/cpu_update_profile.json (or --out), and --profile's table beside it (.txt).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import torch  # noqa: E402
import torch.distributed as dist  # noqa: E402
import torch.multiprocessing as mp  # noqa: E402


def overrides(model: str, workers: int, dtype: str, extra: list[str]) -> list[str]:
    """The demo's own settings (strive.demo.demo_overrides); its data and output folders are never read here."""
    from strive.demo import demo_overrides

    return demo_overrides("/nonexistent/data", "/tmp/strive_cpu_update_profile", model, 10, 0, workers, dtype) + extra


def make_batch(n: int, vocab: int, seed: int, P: int = 128, T: int = 64):
    """n rows: prompts of 60-90 tokens left-padded to P, responses of T tokens; no old log-probs (the bypass)."""
    from strive.batch import Batch

    g = torch.Generator().manual_seed(seed)
    lens = torch.randint(60, 91, (n,), generator=g)
    cols = torch.arange(P + T)
    attn = (cols >= P - lens[:, None]).long()
    prompts = torch.randint(0, vocab, (n, P), generator=g) * attn[:, :P]
    return Batch(prompts, torch.randint(0, vocab, (n, T), generator=g), attn, (attn.cumsum(-1) - 1).clamp(min=0),
                 torch.ones(n, T), advantages=torch.randn(n, T, generator=g))


def peak_rss_gb() -> float:
    with open("/proc/self/status") as fh:
        return next(int(line.split()[1]) for line in fh if line.startswith("VmHWM")) / 2**20


def matmul_probe(dtype: torch.dtype, n: int = 2048, k: int = 576, m: int = 1536, repeats: int = 10) -> float:
    """GFLOP/s of one large matrix product of the model's width on this thread count: what the core sustains."""
    a, b = torch.randn(n, k, dtype=dtype), torch.randn(k, m, dtype=dtype)
    a @ b
    start = time.perf_counter()
    for _ in range(repeats):
        a @ b
    return round(2 * n * k * m * repeats / (time.perf_counter() - start) / 1e9, 1)


def worker(rank: int, world: int, args, port: int, queue) -> None:
    torch.set_num_threads(args.threads)
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    from torch.distributed.device_mesh import init_device_mesh

    from strive.config import prepare
    from strive.config.cpu_dtype import dtype_for_this_cpu
    from strive.workers.actor import ActorWorker

    dtype = args.dtype or dtype_for_this_cpu()
    run = prepare(overrides(args.model, world, dtype, args.override))
    actor = ActorWorker(run.config.actor_rollout_ref, run.sizes.actor, run.sizes.old_log_prob,
                        init_device_mesh("cpu", (world,)), torch.device("cpu"), total_steps=10)
    batch = make_batch(32 // world, actor.module.hf.config.vocab_size - 3, seed=rank)
    times, norms = [], []
    for step in range(1, args.updates + 2):
        dist.barrier()
        start = time.perf_counter()
        metrics, _ = actor.update(batch, step=step, record=True)
        times.append(time.perf_counter() - start)
        norms.append(round(metrics["actor/grad_norm"], 4))
    table, rates = "", {}
    if args.profile:
        from torch.profiler import ProfilerActivity, profile

        with profile(activities=[ProfilerActivity.CPU], with_flops=True) as prof:
            actor.update(batch, step=args.updates + 2, record=True)
        averages = prof.key_averages()
        table = averages.table(sort_by="self_cpu_time_total", row_limit=args.rows)
        mm = [a for a in averages if a.key in ("aten::mm", "aten::addmm", "aten::addmm_")]
        seconds = sum(a.self_cpu_time_total for a in mm) / 1e6
        rates = {"matmul_s": round(seconds, 3), "matmul_gflops": round(sum(a.flops for a in mm) / seconds / 1e9, 1),
                 "profiled_s": round(sum(a.self_cpu_time_total for a in averages) / 1e6, 3),
                 "probe_gflops": matmul_probe(getattr(torch, dtype))}
    queue.put({"rank": rank, "dtype": dtype, "first_s": round(times[0], 3),
               "steady_s": round(statistics.median(times[1:]), 3), "times": [round(t, 3) for t in times],
               "grad_norms": norms, "peak_rss_gb": round(peak_rss_gb(), 2), **rates,
               "table": table if rank == 0 else ""})
    dist.destroy_process_group()


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", required=True, help="a local model dir (the demo's SmolLM2-135M)")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1, help="torch threads per worker (the demo: cores / workers)")
    parser.add_argument("--dtype", default=None, help="bfloat16 or float32 (default: what the demo picks here)")
    parser.add_argument("--updates", type=int, default=3, help="timed updates after the first")
    parser.add_argument("--profile", action="store_true")
    parser.add_argument("--rows", type=int, default=30)
    parser.add_argument("--override", nargs="*", default=[], help="more config overrides (key=value)")
    parser.add_argument("--out", default=os.path.join(ROOT, "bench", "results", "cpu_update_profile.json"))
    args = parser.parse_args()
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    port = 29600 + os.getpid() % 1000
    procs = [ctx.Process(target=worker, args=(r, args.workers, args, port, queue)) for r in range(args.workers)]
    for p in procs:
        p.start()
    results = sorted((queue.get() for _ in procs), key=lambda r: r["rank"])
    for p in procs:
        p.join()
    table = results[0].pop("table")
    out = {"machine": f"{os.cpu_count()}-core CPU", "torch": torch.__version__, "model": os.path.basename(
        args.model.rstrip("/")), "workers": args.workers, "threads": args.threads, "override": args.override,
        "sequences_per_worker": 32 // args.workers, "ranks": results}
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w") as fh:
        json.dump(out, fh, indent=1)
    if table:
        with open(args.out.removesuffix(".json") + ".txt", "w") as fh:
            fh.write(table)
        print(table)
    for r in results:
        print(f"rank {r['rank']} ({r['dtype']}): first {r['first_s']} s, steady {r['steady_s']} s "
              f"{r['times']}, grad norms {r['grad_norms']}, peak RSS {r['peak_rss_gb']} GB")
        if "matmul_s" in r:
            print(f"  profiled update {r['profiled_s']} s: matrix products {r['matmul_s']} s at "
                  f"{r['matmul_gflops']} GFLOP/s (one large product: {r['probe_gflops']} GFLOP/s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
