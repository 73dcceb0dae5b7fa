"""Summarise the Qwen GSM8K CPU run (bench/gsm8k_qwen_cpu.sh): validation curve, training reward, step times, memory.

Reads the run's metrics.jsonl (every step, every validation; a resumed run appends, the last record of a step wins)
and writes bench/results/gsm8k_qwen_cpu.json plus a markdown table on stdout.

    python bench/gsm8k_qwen_cpu_report.py [--run-dir ~/strive_runs/gsm8k_qwen_cpu] [--step0 FILE]

--step0 names another run's metrics.jsonl whose step-0 validation stands for this one (same model, same 200
questions, greedy decoding, so the same score) when this run skipped its own (trainer.val_before_train=False).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
VAL = "val-core/openai/gsm8k/reward/mean@1"
PHASES = ("gen", "old_log_prob", "update_actor", "update_weights", "step")


def read_steps(path: str) -> dict[int, dict]:
    """step -> merged record (validation and training records of one step are separate lines)."""
    steps: dict[int, dict] = {}
    with open(path) as fh:
        for line in fh:
            record = json.loads(line)
            steps.setdefault(int(record["step"]), {}).update(record)
    return steps


def summarize(steps: dict[int, dict], step0: dict[int, dict] | None) -> dict:
    val = {s: r[VAL] for s, r in sorted(steps.items()) if VAL in r}
    if 0 not in val and step0 and VAL in step0.get(0, {}):
        val = {0: step0[0][VAL], **val}
    train = {s: r for s, r in sorted(steps.items()) if "critic/score/mean" in r}
    times = {p: [r[f"timing_s/{p}"] for r in train.values() if f"timing_s/{p}" in r] for p in PHASES}
    return {
        "validation_strict_score": val,
        # under dynamic sampling the trained batch holds only mixed groups: the reward of all sampled responses
        # is train/generated_score_mean, the trained batch's critic/score/mean
        "train_reward": {s: r.get("train/generated_score_mean", r["critic/score/mean"]) for s, r in train.items()},
        "trained_batch_reward": {s: r["critic/score/mean"] for s, r in train.items()},
        "generation_rounds": {s: int(r.get("train/num_gen_batches", 1)) for s, r in train.items()},
        "response_length": {s: r.get("response_length/mean") for s, r in train.items()},
        "truncated_fraction": {s: r.get("response_length/clip_ratio") for s, r in train.items()},
        "entropy": {s: r.get("actor/entropy") for s, r in train.items()},
        "step_time_s": {s: r.get("timing_s/step") for s, r in train.items()},
        "worker_rss_gb_at_step_end": {s: r.get("perf/cpu_memory_rss_gb") for s, r in train.items()},
        "step_time_s_median": {p: round(statistics.median(v), 1) for p, v in times.items() if v},
        "peak_worker_rss_gb": max((r.get("perf/cpu_memory_used_gb", 0.0) for r in train.values()), default=0.0),
        "steps_done": max(train, default=0),
    }


def markdown(summary: dict) -> str:
    lines = ["| step | strict val score (200 test questions, greedy) |", "| --- | --- |"]
    lines += [f"| {s} | {v:.3f} |" for s, v in summary["validation_strict_score"].items()]
    lines += ["", "| step | train reward (all sampled responses) | generation rounds | "
              "mean response tokens (trained) | truncated | entropy | step time (s) | worker RSS at step end (GB) |",
              "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    lines += [f"| {s} | {r:.4f} | {summary['generation_rounds'][s]} | {summary['response_length'][s]:.0f} | "
              f"{summary['truncated_fraction'][s]:.2f} | "
              f"{summary['entropy'][s]:.2f} | {_num(summary['step_time_s'][s], 0)} | "
              f"{_num(summary['worker_rss_gb_at_step_end'][s], 1)} |" for s, r in summary["train_reward"].items()]
    times = ", ".join(f"{p} {t} s" for p, t in summary["step_time_s_median"].items())
    lines += ["", f"median step times: {times}; peak worker RSS {summary['peak_worker_rss_gb']:.1f} GB"]
    return "\n".join(lines)


def _num(value, digits: int) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run-dir", default=os.path.expanduser("~/strive_runs/gsm8k_qwen_cpu"))
    parser.add_argument("--step0", default=None)
    parser.add_argument("--out", default=os.path.join(ROOT, "bench", "results", "gsm8k_qwen_cpu.json"))
    args = parser.parse_args()
    metrics = os.path.join(args.run_dir, "ckpt", "logs", "metrics.jsonl")
    if not os.path.exists(metrics):
        raise SystemExit(f"no metrics at {metrics}: has bench/gsm8k_qwen_cpu.sh run with RUN_DIR={args.run_dir}?")
    summary = summarize(read_steps(metrics), read_steps(args.step0) if args.step0 else None)
    with open(args.out, "w") as fh:
        json.dump(summary, fh, indent=1)
    print(markdown(summary))
    print(f"\nwrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
