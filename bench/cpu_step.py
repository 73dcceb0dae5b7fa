"""Step-time breakdown of the CPU demo configuration (GRPO, SmolLM2-135M-Instruct, 2 FSDP2 ranks on gloo).

Runs `strive demo` (or reads an existing run with --from-run) and reports, per phase, the mean over the steps after
the first `--skip` (warm-up), with peak memory per worker process.

    python bench/cpu_step.py --steps 12                  # runs the demo, then summarises
    python bench/cpu_step.py --from-run strive_demo       # summarises a finished run
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PHASES = ("gen", "reward", "old_log_prob", "ref", "values", "adv", "update_critic", "update_actor", "update_weights",
          "step")


def summarize(run_dir: str, skip: int) -> dict:
    rows = []
    with open(os.path.join(run_dir, "logs", "metrics.jsonl")) as fh:
        for line in fh:
            r = json.loads(line)
            if r.get("timing_s/step") is not None and r["step"] > skip:
                rows.append(r)
    if not rows:
        raise SystemExit(f"no training steps after step {skip} in {run_dir}")
    mean = lambda k: sum(r.get(k, 0.0) or 0.0 for r in rows) / len(rows)  # noqa: E731
    out = {f"{p}_s": round(mean(f"timing_s/{p}"), 2) for p in PHASES if any(f"timing_s/{p}" in r for r in rows)}
    out.update(steps=[r["step"] for r in rows], throughput_tok_s_worker=round(mean("perf/throughput"), 1),
               response_length=round(mean("response_length/mean"), 1),
               peak_rss_gb_per_worker=round(max(r.get("perf/cpu_memory_used_gb", 0.0) for r in rows), 2),
               peak_rss_gb_per_phase={k.rsplit("/", 1)[1]: round(max(r.get(k, 0.0) for r in rows), 2)
                                      for k in sorted({k for r in rows for k in r})
                                      if k.startswith("perf/cpu_memory_used_gb/")},
               weight_sync_s=round(mean("weight_sync/time_s"), 3),
               weight_sync_mb=round(mean("weight_sync/bytes") / 2**20, 1))
    return out


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--from-run", default=None)
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--skip", type=int, default=2, help="warm-up steps left out of the means")
    parser.add_argument("--out", default=os.path.join(ROOT, "bench", "results", "cpu_step.json"))
    args = parser.parse_args()
    run_dir = args.from_run
    if run_dir is None:
        run_dir = "/tmp/strive_cpu_step"
        subprocess.run([sys.executable, "-m", "strive.cli", "demo", "--steps", str(args.steps), "--out", run_dir],
                       check=True)
    result = {"machine": f"{os.cpu_count()}-core CPU", "run": os.path.abspath(run_dir), **summarize(run_dir, args.skip)}
    with open(args.out, "w") as fh:
        json.dump(result, fh, indent=1)
    print(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
