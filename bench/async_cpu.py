"""Synchronous (colocated) vs one-step-off vs staleness-2 GRPO on the CPU: step time against generation and
training time, and the reward curves side by side.

Each configuration is one run of the entry point with the same seed, data and sizes (the demo's GRPO on
SmolLM2-135M-Instruct, arithmetic problems scored like GSM8K, smaller batches), one after the other in this sitting:

    sync        actor_rollout_ref.hybrid_engine=True, 1 worker process (engine and trainer take turns)
    one_step    hybrid_engine=False, 1 rollout process + 1 trainer process, trainer.max_staleness=1
    stale2      the same with trainer.max_staleness=2
    partial     one_step with partial rollout (async_training.partial_rollout=True, mode continue, a check every
                16 tokens): a push stops the generation in flight, which goes on under the new weights (the hf
                engine stops in place; before commit ee31e40 it was called in pieces of 16 tokens)

The CPU is split by processes (strive gives each worker cpus / processes threads), so the colocated run's one
process gets every core and the split runs' two processes half each: the comparison is at equal hardware. Per
configuration: medians over the steps after the first of step time, generation (`timing_s/gen`, the rollout's own
time), training (old log-probs + ref + update), the trainer's wait for a batch (`timing_s/gen_wait`) and the weight
transfer; the oldest and the average token's staleness; the trainer processes' peak resident memory; the
machine's load (`uptime`) before and after each run.

    python bench/async_cpu.py                       # writes bench/results/async_cpu.json and async_cpu.png
    python bench/async_cpu.py --steps 3 --configs sync,one_step
    python bench/async_cpu.py --steps 6 --prompts 1 --response 256 --extra actor_rollout_ref.rollout.ignore_eos=True \
        --out bench/results/async_cpu_long.json     # generation longer than training: what partial rollout is for
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIGS = {
    "sync": [],
    "one_step": ["actor_rollout_ref.hybrid_engine=False", "rollout.n_gpus_per_node=1", "trainer.max_staleness=1"],
    "stale2": ["actor_rollout_ref.hybrid_engine=False", "rollout.n_gpus_per_node=1", "trainer.max_staleness=2"],
    "partial": ["actor_rollout_ref.hybrid_engine=False", "rollout.n_gpus_per_node=1", "trainer.max_staleness=1",
                "async_training.partial_rollout=True", "async_training.partial_rollout_chunk=16"],
}
TRAIN = ("old_log_prob", "ref", "values", "adv", "update_critic", "update_actor")


def overrides(data: str, out: str, model: str, args) -> list[str]:
    from strive.demo import demo_overrides

    return demo_overrides(data, out, model, args.steps, args.seed, workers=1) + [
        f"data.train_batch_size={args.prompts}", f"actor_rollout_ref.actor.ppo_mini_batch_size={args.prompts}",
        f"data.max_response_length={args.response}", "trainer.val_before_train=False", "trainer.test_freq=-1",
        "trainer.plot_curves=False", "trainer.logger=['file']"]


def summarize(log_dir: str) -> dict:
    with open(os.path.join(log_dir, "metrics.jsonl")) as fh:
        rows = sorted((json.loads(line) for line in fh if line.strip()), key=lambda r: r["step"])
    rows = [r for r in rows if "timing_s/step" in r]
    later = rows[1:] or rows
    med = lambda key: round(statistics.median(r.get(key, 0.0) for r in later), 2)  # noqa: E731
    train = [sum(r.get(f"timing_s/{p}", 0.0) for p in TRAIN) for r in later]
    return {"step_s": med("timing_s/step"), "gen_s": med("timing_s/gen"), "train_s": round(statistics.median(train), 2),
            "gen_wait_s": med("timing_s/gen_wait"), "weight_sync_s": med("timing_s/update_weights"),
            "weight_transfer_s": med("timing_s/weight_transfer"),
            "staleness": [r.get("async/staleness_max", 0.0) for r in rows],
            "token_staleness": [round(r.get("async/token_staleness_mean", r.get("async/staleness_max", 0.0)), 3)
                                for r in rows],
            "interrupted_frac": [round(r.get("async/partial_interrupted_frac", 0.0), 3) for r in rows],
            "peak_trainer_rss_gb": round(max(r.get("perf/cpu_memory_used_gb", 0.0) for r in rows), 2),
            "reward": [r["critic/score/mean"] for r in rows], "steps": [r["step"] for r in rows]}


def plot(results: dict, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    for name, r in results.items():
        left.plot(r["steps"], r["reward"], marker="o", label=name)
    left.set(xlabel="step", ylabel="critic/score/mean", title="reward (same seed)")
    left.legend()
    names = list(results)
    for i, key in enumerate(("step_s", "gen_s", "train_s", "gen_wait_s")):
        right.bar([x + 0.2 * i for x in range(len(names))], [results[n][key] for n in names], width=0.2, label=key)
    right.set_xticks([x + 0.3 for x in range(len(names))], names)
    right.set(ylabel="seconds (median, steps ≥ 2)", title="step time vs generation and training")
    right.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def uptime() -> str:
    return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=8)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--prompts", type=int, default=4, help="data.train_batch_size (4 responses each)")
    p.add_argument("--response", type=int, default=48, help="data.max_response_length")
    p.add_argument("--configs", default=",".join(CONFIGS))
    p.add_argument("--extra", nargs="*", default=[], help="more key=value overrides for every configuration")
    p.add_argument("--out", default=os.path.join(ROOT, "bench", "results", "async_cpu.json"))
    args = p.parse_args()
    from strive.data.synthetic import write_dataset
    from strive.models.fetch import ensure_model

    model = ensure_model("smollm2-135m-instruct")
    work = tempfile.mkdtemp(prefix="async_cpu_")
    write_dataset(os.path.join(work, "data"), n_train=400, n_test=8, seed=args.seed)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "RAY_ADDRESS": "local", "PYTHONPATH": ROOT}
    results, load = {}, {"before": uptime()}
    for name in args.configs.split(","):
        out = os.path.join(work, name)
        start = time.time()
        cmd = [sys.executable, "-m", "strive.trainer.main_ppo", *overrides(os.path.join(work, "data"), out, model, args),
               *CONFIGS[name], *args.extra]
        run = subprocess.run(cmd, env=env, capture_output=True, text=True)
        if run.returncode:
            print(run.stdout[-3000:], run.stderr[-3000:])
            raise SystemExit(f"{name} failed")
        results[name] = {**summarize(os.path.join(out, "logs")), "wall_s": round(time.time() - start, 1)}
        load[name] = uptime()
        r = results[name]
        print(f"{name:9s} step {r['step_s']:6.2f} s  gen {r['gen_s']:6.2f}  train {r['train_s']:6.2f}  "
              f"gen_wait {r['gen_wait_s']:6.2f}  weight sync {r['weight_sync_s']:5.2f} (transfer "
              f"{r['weight_transfer_s']:.2f})  reward {' '.join(f'{x:.2f}' for x in r['reward'])}", flush=True)
    doc = {"configs": {n: CONFIGS[n] for n in results}, "args": vars(args), "cpus": os.cpu_count(), "load": load,
           "results": results}
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w") as fh:
        json.dump(doc, fh, indent=1)
    plot(results, os.path.splitext(args.out)[0] + ".png")
    print(f"wrote {args.out} and {os.path.splitext(args.out)[0]}.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
