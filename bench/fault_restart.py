"""A CPU GRPO run whose worker processes are SIGKILLed at random, restarted by `trainer.max_restarts`, against the
same run left alone: the final step's metrics must be equal.

    PYTHONPATH=$PWD python bench/fault_restart.py --steps 100 --kill-every 20 --out bench/results/fault_restart.json

Both runs use a tiny random Llama (strive.models.tiny), the synthetic arithmetic data set, 2 worker processes (gloo,
FSDP2), the hf engine, `trainer.save_freq` steps between checkpoints. In the faulted run, once the metrics file
shows step k·kill_every + r (r drawn at random in [0, kill_every), seeded), the script SIGKILLs one worker process
(`ray::WorkerProcess`, a random rank) of the driver's process tree, whatever phase it is in; the driver sees
WorkerDied, tears Ray down and resumes from its newest complete checkpoint. Compared: every metric of the last step
except those that measure time or memory (timing_s/*, timing_per_token_ms/*, perf/*, and weight_sync's seconds and
GB/s), which differ from one run to the next anyway.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time

VOLATILE = ("timing_s/", "timing_per_token_ms/", "perf/", "weight_sync/time", "weight_sync/gbps",
            "weight_sync/seconds", "weight_sync/gb_per_s")

REWARD = '''
def compute_score(data_source, solution_str, ground_truth, extra_info=None):
    if not solution_str:
        return 0.0
    return sum(c.islower() for c in solution_str) / len(solution_str)
'''


def command(model: str, data: str, ckpt: str, reward: str, steps: int, save_freq: int, restarts: int) -> list[str]:
    return [sys.executable, "-m", "strive.trainer.main_ppo",
            f"data.train_files={data}/train.parquet", f"data.val_files={data}/test.parquet",
            "data.train_batch_size=4", "data.max_prompt_length=192", "data.max_response_length=8",
            "algorithm.adv_estimator=grpo", "actor_rollout_ref.rollout.n=2", "actor_rollout_ref.rollout.name=hf",
            f"actor_rollout_ref.model.path={model}", "actor_rollout_ref.actor.optim.lr=1e-4",
            "actor_rollout_ref.actor.ppo_mini_batch_size=2", "actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu=2",
            "actor_rollout_ref.rollout.log_prob_micro_batch_size_per_gpu=4",
            "actor_rollout_ref.actor.use_kl_loss=True", "actor_rollout_ref.ref.log_prob_micro_batch_size_per_gpu=4",
            "trainer.logger=['console','file']", "trainer.val_before_train=False", "trainer.test_freq=-1",
            "trainer.n_gpus_per_node=2", "trainer.nnodes=1", "trainer.device=cpu", "trainer.plot_curves=False",
            f"trainer.total_training_steps={steps}", f"trainer.save_freq={save_freq}",
            "trainer.max_actor_ckpt_to_keep=2", f"trainer.max_restarts={restarts}",
            f"trainer.default_local_dir={ckpt}", f"custom_reward_function.path={reward}"]


def env() -> dict:
    e = dict(os.environ, HF_HUB_OFFLINE="1", PYTHONUNBUFFERED="1", RAY_DEDUP_LOGS="0")
    e.setdefault("RAY_AUTH_MODE", "disabled")
    e["RAY_ADDRESS"] = "local"  # a cluster of its own: never join (or be joined by) another run's
    # On a shared machine Ray's memory monitor kills workers for other programs' memory; here only the SIGKILLs
    # this script sends should interrupt a run.
    e.setdefault("RAY_memory_monitor_refresh_ms", "0")
    return e


def last_step(metrics_file: str) -> int:
    if not os.path.exists(metrics_file):
        return 0
    with open(metrics_file) as fh:
        steps = [json.loads(line)["step"] for line in fh if line.strip().endswith("}")]
    return max(steps, default=0)


def worker_pids(root_pid: int) -> list[int]:
    """The Ray worker processes hosting strive's WorkerProcess actors under `root_pid`."""
    import psutil

    try:
        children = psutil.Process(root_pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return []
    pids = []
    for p in children:
        try:
            if "WorkerProcess" in " ".join(p.cmdline()):
                pids.append(p.pid)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            pass
    return sorted(pids)


def run(cmd: list[str], log: str, metrics_file: str, kill_at: list[int], seed: int, max_delay: float) -> dict:
    """Run `cmd`; SIGKILL one worker a random 0..max_delay seconds after the metrics file first reaches each step in
    `kill_at` (so the kill lands in whatever phase the next step is in)."""
    rng, kills, start = random.Random(seed), [], time.time()
    with open(log, "w") as out:
        proc = subprocess.Popen(cmd, env=env(), stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        pending, due = sorted(kill_at), None
        while proc.poll() is None:
            if pending and due is None and last_step(metrics_file) >= pending[0]:
                due = time.time() + rng.uniform(0, max_delay)
            if due is not None and time.time() >= due:
                pids = worker_pids(proc.pid)
                if pids:
                    victim = rng.choice(pids)
                    os.kill(victim, signal.SIGKILL)
                    kills.append({"after_step": last_step(metrics_file), "pid": victim,
                                  "t_s": round(time.time() - start, 1)})
                    pending.pop(0)
                    due = None
            time.sleep(0.1)
    return {"returncode": proc.returncode, "wall_s": round(time.time() - start, 1), "kills": kills}


def final_metrics(metrics_file: str) -> dict:
    rows: dict[int, dict] = {}
    with open(metrics_file) as fh:
        for line in fh:
            if line.strip():
                row = json.loads(line)
                rows.setdefault(row["step"], {}).update(row)
    last = rows[max(rows)]
    return {k: v for k, v in sorted(last.items()) if not k.startswith(VOLATILE)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--kill-every", type=int, default=20)
    parser.add_argument("--save-freq", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--max-delay", type=float, default=3.0, help="seconds; the kill waits a random 0..this")
    parser.add_argument("--workdir", default=None)
    parser.add_argument("--out", default="bench/results/fault_restart.json")
    parser.add_argument("--reuse", action="store_true",
                        help="keep a run that already finished in --out's JSON (same --workdir), run the others")
    args = parser.parse_args()
    from strive.data.synthetic import write_dataset
    from strive.models.tiny import make_tiny_model

    work = os.path.abspath(args.workdir or tempfile.mkdtemp(prefix="fault_restart_"))
    model = make_tiny_model(os.path.join(work, "model"), arch="llama")  # the same weights every time (seeded)
    data = os.path.join(work, "data")
    write_dataset(data, n_train=64, n_test=4, seed=1)
    reward = os.path.join(work, "reward.py")
    with open(reward, "w") as fh:
        fh.write(REWARD)
    rng = random.Random(args.seed)
    # one kill at a random step of each window of kill_every steps: after step w·E + r, r in [1, E)
    kill_at = [w * args.kill_every + rng.randrange(1, args.kill_every) for w in range(args.steps // args.kill_every)]
    results, before = {}, {}
    if args.reuse and os.path.exists(args.out):
        with open(args.out) as fh:
            before = json.load(fh)
    for name, kills, restarts in (("uninterrupted", [], 0), ("faulted", kill_at, len(kill_at))):
        if before.get(name, {}).get("returncode") == 0 and before.get("workdir") == work:
            results[name] = before[name]
            continue
        ckpt = os.path.join(work, name)
        shutil.rmtree(ckpt, ignore_errors=True)
        cmd = command(model, data, ckpt, reward, args.steps, args.save_freq, restarts)
        metrics_file = os.path.join(ckpt, "logs", "metrics.jsonl")
        results[name] = run(cmd, os.path.join(work, f"{name}.log"), metrics_file, kills, args.seed, args.max_delay)
        results[name]["final_metrics"] = final_metrics(metrics_file) if os.path.exists(metrics_file) else {}
        with open(os.path.join(work, f"{name}.log")) as fh:
            results[name]["restarts"] = [line.strip()[:300] for line in fh if line.startswith("[strive] restart")]
        print(json.dumps({k: v for k, v in results[name].items() if k != "final_metrics"}), flush=True)
    a, b = results["uninterrupted"]["final_metrics"], results["faulted"]["final_metrics"]
    differ = {k: (a.get(k), b.get(k)) for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)}
    results.update(steps=args.steps, kill_every=args.kill_every, save_freq=args.save_freq, workdir=work,
                   max_delay_s=args.max_delay,
                   equal=not differ and bool(a), differ=differ)
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w") as fh:
        json.dump(results, fh, indent=2)
    print(f"final metrics equal: {results['equal']} ({len(a)} compared); differ: {differ}")
    return 0 if results["equal"] else 1


if __name__ == "__main__":
    sys.exit(main())
