"""Where a fast-path decode step spends its time, on one GPU: model graph vs sampler graph, then per kernel.

Runs bench/rollout_gpu.py's setting (Qwen2.5-0.5B shape, random bf16 weights, B prompts of P tokens, G sampled,
EOS disabled) through the fast path once to capture its CUDA graphs, then
  1. replays the captured (model, sampler) graphs on their own, timed with CUDA events: ms per replay of each;
  2. profiles decode steps without graphs (enforce_eager, same kernels) with torch.profiler and prints the kernels
     ranked by GPU time per step, grouped by name.
Writes $OUT/rollout_profile.json (or bench/results/; smoke runs: the temp directory) and prints both tables.

    python bench/rollout_profile.py                 # ~1 min on one H100
    python bench/rollout_profile.py --quick --device cpu    # the script's logic, no GPU
"""

from __future__ import annotations

import argparse
import json
import os
import sys

import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
import rollout_gpu as rg  # noqa: E402  (bench/ is on sys.path when run as a script)

from strive.engines.base import SamplingParams  # noqa: E402
from strive.engines.hf import SDPA_BACKENDS  # noqa: E402


def replay_ms(graph, n: int) -> float:
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    graph.replay()
    start.record()
    for _ in range(n):
        graph.replay()
    end.record()
    torch.cuda.synchronize()
    return start.elapsed_time(end) / n


def graph_times(model, prompts, args) -> dict:
    gen = rg.make_fast(model, args)
    params = SamplingParams(max_new_tokens=args.gen, ignore_eos=True, seed=0)
    gen.generate(prompts, [args.gen] * len(prompts), params)
    out = {}
    for key, graph in gen._rt.graphs.items():
        out["/".join(str(k) for k in key)] = replay_ms(graph, 50)
    del gen
    return out


def kernel_table(model, prompts, args, steps: int) -> list[dict]:
    from torch.profiler import ProfilerActivity, profile

    gen = rg.make_fast(model, args, enforce_eager=True)
    params = SamplingParams(max_new_tokens=steps, ignore_eos=True, seed=0)
    gen.generate(prompts, [steps] * len(prompts), params)  # warm-up
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if rg.DEVICE == "cuda" else [])
    with profile(activities=activities) as prof:
        gen.generate(prompts, [steps] * len(prompts), params)
    rows = []
    for e in prof.key_averages():
        dev_us = getattr(e, "self_device_time_total", 0) or getattr(e, "self_cuda_time_total", 0)
        if rg.DEVICE != "cuda":
            dev_us = e.self_cpu_time_total
        if dev_us > 0:
            rows.append({"name": e.key[:90], "calls": e.count, "us_per_step": dev_us / steps})
    rows.sort(key=lambda r: -r["us_per_step"])
    return rows[:30]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--steps", type=int, default=32, help="decode steps profiled without graphs")
    parser.add_argument("--shape", default="qwen2.5-0.5b")
    args = parser.parse_args(argv)
    rg.DEVICE = args.device
    args.prompt_len, args.gen = (16, 16) if args.quick else (128, 256)
    if args.quick:
        args.batch = 16
    model = rg.build_model(args.shape, 2 if args.quick else None)
    prompts = torch.randint(2, model.config.vocab_size, (args.batch, args.prompt_len),
                            generator=torch.Generator().manual_seed(1)).tolist()
    result = {"device": torch.cuda.get_device_name() if args.device == "cuda" else "cpu", "args": vars(args)}
    torch.backends.cuda.enable_cudnn_sdp(False)
    with torch.nn.attention.sdpa_kernel(SDPA_BACKENDS):
        if args.device == "cuda":
            result["graph_ms"] = graph_times(model, prompts, args)
        result["kernels"] = kernel_table(model, prompts, args, min(args.steps, args.gen))
    with open(os.path.join(rg.results_dir(args.quick or args.device != "cuda"), "rollout_profile.json"), "w") as fh:
        json.dump(result, fh, indent=1)
    print(f"{result['device']}  B={args.batch} P={args.prompt_len} {args.shape}")
    for key, ms in result.get("graph_ms", {}).items():
        print(f"graph {key:30} {ms:8.3f} ms per replay")
    print(f"{'kernel':90} {'calls':>7} {'us/step':>9}")
    for r in result["kernels"]:
        print(f"{r['name']:90} {r['calls']:>7} {r['us_per_step']:>9.1f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
