"""The multi-turn router against static splitting, on responses of very unequal length (CPU, 2 rollout ranks).

Why it exists: `rollout.multi_turn.router=least_loaded` hands a step's requests to the ranks in chunks, so a rank
that drew the long responses does not hold the step; `static` splits them evenly up front. Which one is faster
depends on how much a smaller batch costs the engine, so it is measured, through the entry point.

The job: GRPO on SmolLM2-135M-Instruct, `trainer.n_gpus_per_node=2` on the CPU, every sample through the agent
path (`multi_turn.enable=True`, `single_turn_agent`), 8 prompts × n=4 a step. Half the prompts ask for a long essay
and half for a one-word answer, long ones first, so a static split puts all the long responses on rank 0: the
worst case for static, and the case the router is for. Runs alternate (static, least_loaded, ...) in one sitting.

    python bench/router_cpu.py --rounds 2 --steps 3

Writes bench/results/router_cpu.json: per run, `timing_s/gen` of each step after the first, the mean response
length, and peak RSS per worker.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LONG = ["Write a long, detailed essay about {}. Use at least five paragraphs.",
        "Explain {} in great detail, step by step, with many examples."]
SHORT = ["Answer with one word only: is {} a noun? Yes or no.", "Reply with a single word: the first letter of {}."]
TOPICS = ["the history of bread", "how rivers form", "the life of bees", "why the sky is blue"]
REWARD = "def compute_score(data_source, solution_str, ground_truth, extra_info=None):\n    return 0.0\n"


def write_data(out_dir: str, n_prompts: int) -> str:
    import pyarrow as pa
    import pyarrow.parquet as pq

    half = n_prompts // 2
    texts = [LONG[i % 2].format(TOPICS[i % 4]) for i in range(half)]
    texts += [SHORT[i % 2].format(TOPICS[i % 4]) for i in range(n_prompts - half)]
    rows = [{"data_source": "bench/router", "prompt": [{"role": "user", "content": t}], "ability": "text",
             "reward_model": {"style": "rule", "ground_truth": ""}, "extra_info": {"split": "train", "index": i}}
            for i, t in enumerate(texts)]
    path = os.path.join(out_dir, "train.parquet")
    pq.write_table(pa.Table.from_pylist(rows), path)
    return path


def run(router: str, data: str, reward: str, work: str, args) -> dict:
    ckpt = os.path.join(work, f"ckpt_{router}_{int(time.time())}")
    cmd = [sys.executable, "-m", "strive.trainer.main_ppo", f"data.train_files={data}", f"data.val_files={data}",
           f"data.train_batch_size={args.prompts}", "data.max_prompt_length=128",
           f"data.max_response_length={args.response_length}", "data.shuffle=False",
           f"actor_rollout_ref.model.path={args.model}", "algorithm.adv_estimator=grpo",
           f"actor_rollout_ref.rollout.n={args.n}", f"actor_rollout_ref.actor.ppo_mini_batch_size={args.prompts}",
           "actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu=4", "actor_rollout_ref.actor.optim.lr=1e-7",
           "actor_rollout_ref.rollout.multi_turn.enable=True", f"actor_rollout_ref.rollout.multi_turn.router={router}",
           "trainer.device=cpu", "trainer.n_gpus_per_node=2", f"trainer.total_training_steps={args.steps}",
           "trainer.val_before_train=False", "trainer.test_freq=-1", "trainer.save_freq=-1",
           "trainer.logger=['console','file']", "trainer.plot_curves=False", f"trainer.default_local_dir={ckpt}",
           f"custom_reward_function.path={reward}", "data.seed=7"]
    began = time.perf_counter()
    subprocess.run(cmd, check=True, cwd=work, env=dict(os.environ, HF_HUB_OFFLINE="1"), stdout=subprocess.DEVNULL)
    wall = time.perf_counter() - began
    rows = [json.loads(line) for line in open(os.path.join(ckpt, "logs", "metrics.jsonl")) if line.strip()]
    steps = [r for r in rows if r.get("timing_s/gen") is not None and r["step"] > 1]
    return {"router": router, "wall_s": round(wall, 1), "load_average_after": [round(x, 1) for x in os.getloadavg()], "gen_s": [round(r["timing_s/gen"], 2) for r in steps],
            "response_length": [round(r["response_length/mean"], 1) for r in steps],
            "response_length_max": [r.get("response_length/max") for r in steps],
            "peak_rss_gb_per_worker": round(max(r.get("perf/cpu_memory_used_gb", 0.0) for r in steps), 2)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default=None, help="default: smollm2-135m-instruct from strive's model cache")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--steps", type=int, default=3, help="steps per run; the first is left out (warm-up)")
    ap.add_argument("--prompts", type=int, default=8)
    ap.add_argument("--n", type=int, default=4)
    ap.add_argument("--response-length", type=int, default=192)
    ap.add_argument("--out", default=os.path.join(ROOT, "bench", "results", "router_cpu.json"))
    args = ap.parse_args()
    if args.model is None:
        from strive.models.fetch import ensure_model
        args.model = ensure_model("smollm2-135m-instruct")
    work = tempfile.mkdtemp(prefix="strive_router_bench_")
    data = write_data(work, args.prompts)
    reward = os.path.join(work, "zero_reward.py")
    with open(reward, "w") as f:
        f.write(REWARD)
    runs = []
    for _ in range(args.rounds):
        for router in ("static", "least_loaded"):
            runs.append(run(router, data, reward, work, args))
            print(json.dumps(runs[-1]), flush=True)
    summary = {r: round(sum(sum(x["gen_s"]) for x in runs if x["router"] == r)
                        / sum(len(x["gen_s"]) for x in runs if x["router"] == r), 2)
               for r in ("static", "least_loaded")}
    result = {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "cpu_count": os.cpu_count(),
              "mean_gen_s": summary, "runs": runs, "prompts": args.prompts, "n": args.n,
              "response_length": args.response_length, "model": os.path.basename(args.model.rstrip("/"))}
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(result, f, indent=1)
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
