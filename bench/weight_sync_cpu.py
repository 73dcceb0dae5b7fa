"""Weight sync into a rollout engine on the CPU: the full model pushed in buckets, as `RolloutWorker.sync_from` does.

For each engine (each in its own process, so that peak RSS is its own): build the engine with dummy weights, take
the HF model's parameters in `named_parameters` order (the actor's order; a tied lm_head is not repeated) grouped
into buckets of --bucket-mb, then time `update_weights(bucket)` for every bucket + `flush_cache()` (the vllm
engine finishes the sync there). One untimed warm-up sync, then --runs timed ones; the median is reported. A greedy
generation is compared with the HF model's afterwards, so a fast but wrong sync cannot pass.

    python bench/weight_sync_cpu.py --engines hf vllm     # writes bench/results/weight_sync_cpu.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time

DEFAULT_MODEL = os.path.expanduser("~/.cache/strive/models/smollm2-135m-instruct-b179c9523d0e")
RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results", "weight_sync_cpu.json")


def rss_mb() -> float:
    from strive.controller.host_memory import current_rss_gb

    return current_rss_gb() * 1024


def buckets_of(model, bucket_bytes: int) -> list[list]:
    buckets, bucket, size = [], [], 0
    for name, param in model.named_parameters():
        bucket.append((name, param.detach()))
        size += param.numel() * param.element_size()
        if size >= bucket_bytes:
            buckets.append(bucket)
            bucket, size = [], 0
    return buckets + ([bucket] if bucket else [])


def measure(engine_name: str, model_path: str, runs: int, bucket_mb: int) -> dict:
    import torch

    from strive.engines import load_engine_class
    from strive.engines.base import EngineSpec, SamplingParams
    from strive.models.loading import load_causal_lm

    model = load_causal_lm(model_path, dtype="float32").eval()
    buckets = buckets_of(model, bucket_mb * 2**20)
    nbytes = sum(t.numel() * t.element_size() for b in buckets for _, t in b)
    t0 = time.perf_counter()
    engine = load_engine_class(engine_name)(EngineSpec(model_path=model_path, dtype="float32", load_format="dummy",
                                                       max_model_len=512, max_num_seqs=8))
    start_s = time.perf_counter() - t0
    rss_before = rss_mb()
    times = []
    for i in range(runs + 1):
        t0 = time.perf_counter()
        for bucket in buckets:
            engine.update_weights(bucket)
        engine.flush_cache()
        if i:  # the first sync is a warm-up
            times.append(time.perf_counter() - t0)
    prompt = [1, 504, 3250, 314, 253, 1345, 30]  # any ids of the vocabulary
    out = engine.generate([prompt], SamplingParams(max_new_tokens=12, do_sample=False, ignore_eos=True))[0]
    with torch.inference_mode():
        ref = model.generate(torch.tensor([prompt]), max_new_tokens=12, do_sample=False, min_new_tokens=12)
    median = statistics.median(times)
    return {"engine": engine_name, "model": os.path.basename(model_path.rstrip("/")), "dtype": "float32",
            "bucket_mb": bucket_mb, "buckets": len(buckets), "tensors": sum(len(b) for b in buckets),
            "bytes": nbytes, "runs": runs, "seconds_median": median, "seconds_all": times,
            "gb_per_s": nbytes / median / 1e9, "engine_start_s": start_s, "rss_before_sync_mb": rss_before,
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "greedy_matches_hf": out.token_ids == ref[0, len(prompt):].tolist(), "torch_threads": torch.get_num_threads()}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--engines", nargs="+", default=["hf", "vllm"])
    parser.add_argument("--model", default=DEFAULT_MODEL)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--bucket-mb", type=int, default=512, help="rollout.update_weights_bucket_megabytes")
    parser.add_argument("--note", default="", help="what else ran on the machine")
    parser.add_argument("--out", default=RESULTS)
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print("RESULT " + json.dumps(measure(args.worker, args.model, args.runs, args.bucket_mb)), flush=True)
        return 0
    rows = []
    for name in args.engines:
        cmd = [sys.executable, os.path.abspath(__file__), "--worker", name, "--model", args.model,
               "--runs", str(args.runs), "--bucket-mb", str(args.bucket_mb)]
        proc = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})
        lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
        if proc.returncode or not lines:
            print(proc.stdout[-2000:], proc.stderr[-4000:], file=sys.stderr)
            raise SystemExit(f"{name}: failed ({proc.returncode})")
        rows.append(json.loads(lines[-1][len("RESULT "):]))
    print(f"{'engine':8} {'MB':>7} {'buckets':>7} {'median s':>9} {'GB/s':>6} {'peak RSS MB':>11} {'greedy ok':>9}")
    for r in rows:
        print(f"{r['engine']:8} {r['bytes'] / 1e6:7.1f} {r['buckets']:7d} {r['seconds_median']:9.3f} "
              f"{r['gb_per_s']:6.2f} {r['peak_rss_mb']:11.0f} {str(r['greedy_matches_hf']):>9}")
    machine = {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(), "note": args.note,
               "when": time.strftime("%Y-%m-%d %H:%M")}
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w") as fh:
        json.dump({"machine": machine, "results": rows}, fh, indent=1)
    print(f"wrote {args.out}")
    return 0 if all(r["greedy_matches_hf"] for r in rows) else 1


if __name__ == "__main__":
    raise SystemExit(main())
