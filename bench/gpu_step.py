"""One PPO step's breakdown on GPUs, at verl's quickstart settings, with a Qwen2.5-0.5B-shaped random model.

256 prompts of 512 tokens, 512-token responses, a critic, a reference (in-reward KL); PPO with n=1 and GRPO with
n=5. Runs the real entry point (`python -m strive.trainer.main_ppo`) for 2 steps per configuration and reports the
second step: time per phase, tokens/s/GPU as verl computes `perf/throughput`, the actor update's model FLOP
utilisation (6 · params · tokens per update ÷ time ÷ GPUs ÷ peak bf16), peak GPU memory.

    python bench/gpu_step.py --gpus 1 --configs ppo_hf ppo_fast grpo_fast      # writes $OUT/gpu_step_*.json
    python bench/gpu_step.py --configs ppo_budget grpo_budget                  # token budgets (BUDGETS below)
    python bench/gpu_step.py --configs grpo_fast grpo_split_shared --steps 3 --report-step 2   # one-step-off, 1 GPU
    python bench/gpu_step.py --gpus 3 --rollout-gpus 1 --configs grpo_split --steps 3 --report-step 2   # 3 + 1 GPUs

actor_mfu is the script's own 6·params·tokens ÷ update time (kept for comparison with earlier rows); mfu_actor and
mfu_critic are the trainer's perf/mfu/* metrics (strive/models/flops.py: attention and the response-only head
counted).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

PEAK_BF16_TFLOPS = {"H100": 989.0, "H200": 989.0}  # dense bf16, SXM
PHASES = ("gen", "old_log_prob", "ref", "values", "adv", "update_critic", "update_actor", "update_weights", "step")
# what a user of a 0.5B model on an H200 should pick instead of fixed micro-batches of 4: token budgets per
# micro-batch (packed, so a budget is real tokens), larger ones for the forward-only passes, a packed critic, and no
# activation recomputation (memory is plentiful at this size)
BUDGETS = ["actor_rollout_ref.actor.use_dynamic_bsz=True", "actor_rollout_ref.actor.ppo_max_token_len_per_gpu=32768",
           "actor_rollout_ref.rollout.log_prob_max_token_len_per_gpu=65536",
           "actor_rollout_ref.ref.log_prob_max_token_len_per_gpu=65536",
           "actor_rollout_ref.model.enable_gradient_checkpointing=False", "critic.model.use_remove_padding=True",
           "critic.use_dynamic_bsz=True", "critic.ppo_max_token_len_per_gpu=32768",
           "critic.forward_max_token_len_per_gpu=65536", "critic.model.enable_gradient_checkpointing=False"]
# one-step-off-policy on the same card: the engine in a process of its own beside the trainer's (docs/async.md)
SHARED = ["actor_rollout_ref.hybrid_engine=False", "rollout.n_gpus_per_node=1", "rollout.share_trainer_gpus=True",
          "trainer.max_staleness=1"]
RESHARD = [f"{k}.fsdp_config.reshard_after_forward=True"
           for k in ("actor_rollout_ref.actor", "actor_rollout_ref.ref", "critic.model")]
# the compiled layers with Inductor's C++ wrapper (fsdp_config.compile_cpp_wrapper, opt-in; it needs the padded path)
CPP = [f"{k}.fsdp_config.compile_cpp_wrapper=True"
       for k in ("actor_rollout_ref.actor", "actor_rollout_ref.ref", "critic.model")] + [
    "actor_rollout_ref.model.use_remove_padding=False"]
CONFIGS = {
    "ppo_hf": dict(n=1, estimator="gae", fast="off"),
    "ppo_fast": dict(n=1, estimator="gae", fast="on"),
    "grpo_hf": dict(n=5, estimator="grpo", fast="off"),
    "grpo_fast": dict(n=5, estimator="grpo", fast="on"),
    # verl's settings with the forward-only passes kept in their micro-batches (trainer.forward_min_tokens=0)
    "ppo_fast_micro": dict(n=1, estimator="gae", fast="on", extra=["trainer.forward_min_tokens=0"]),
    "grpo_fast_micro": dict(n=5, estimator="grpo", fast="on", extra=["trainer.forward_min_tokens=0"]),
    # verl's settings with FSDP2 resharding after forward, as on several workers (the one-worker default is off)
    "ppo_fast_reshard": dict(n=1, estimator="gae", fast="on", extra=RESHARD),
    "grpo_fast_reshard": dict(n=5, estimator="grpo", fast="on", extra=RESHARD),
    "ppo_fast_cpp": dict(n=1, estimator="gae", fast="on", extra=CPP),
    "grpo_fast_cpp": dict(n=5, estimator="grpo", fast="on", extra=CPP),
    "ppo_budget": dict(n=1, estimator="gae", fast="on", extra=BUDGETS),
    "grpo_budget": dict(n=5, estimator="grpo", fast="on", extra=BUDGETS),
    "grpo_split_shared": dict(n=5, estimator="grpo", fast="on", extra=SHARED),
    # engines on GPUs of their own (--rollout-gpus R), the trainer on --gpus G: G + R cards (the multi-GPU issue)
    "grpo_split": dict(n=5, estimator="grpo", fast="on", extra=["actor_rollout_ref.hybrid_engine=False",
                                                                "trainer.max_staleness=1"]),
    "grpo_split_partial": dict(n=5, estimator="grpo", fast="on",
                               extra=SHARED + ["async_training.partial_rollout=True",
                                               "async_training.partial_rollout_chunk=128"]),
}


def overrides(model: str, data: str, ckpt: str, gpus: int, n: int, estimator: str, fast: str, steps: int) -> list[str]:
    return [f"data.train_files={data}/train.parquet", f"data.val_files={data}/test.parquet",
            "data.train_batch_size=256", "data.max_prompt_length=512", "data.max_response_length=512",
            f"actor_rollout_ref.model.path={model}", f"critic.model.path={model}",
            "actor_rollout_ref.actor.optim.lr=1e-6", "actor_rollout_ref.actor.ppo_mini_batch_size=64",
            "actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu=4",
            "actor_rollout_ref.rollout.log_prob_micro_batch_size_per_gpu=8",
            "actor_rollout_ref.rollout.tensor_model_parallel_size=1",
            "actor_rollout_ref.rollout.gpu_memory_utilization=0.4",
            "actor_rollout_ref.ref.log_prob_micro_batch_size_per_gpu=4", "critic.optim.lr=1e-5",
            "critic.ppo_micro_batch_size_per_gpu=4", "algorithm.kl_ctrl.kl_coef=0.001",
            "algorithm.use_kl_in_reward=True", f"algorithm.adv_estimator={estimator}",
            f"actor_rollout_ref.rollout.n={n}", f"+actor_rollout_ref.rollout.engine_kwargs.hf.fast={fast}",
            "actor_rollout_ref.rollout.ignore_eos=True", "trainer.device=cuda", f"trainer.n_gpus_per_node={gpus}",
            f"trainer.total_training_steps={steps}", "trainer.val_before_train=False", "trainer.test_freq=-1",
            "trainer.save_freq=-1", "trainer.logger=['console','file']", f"trainer.default_local_dir={ckpt}"]


def param_count(model_dir: str) -> int:
    from transformers import AutoConfig, AutoModelForCausalLM
    import torch

    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(model_dir))
    return sum(p.numel() for p in model.parameters())


def card() -> str:
    import torch

    name = torch.cuda.get_device_name(0)
    return next((k for k in PEAK_BF16_TFLOPS if k in name), name)


def _wait_copying_metrics(proc: subprocess.Popen, metrics: str, copy: str) -> int:
    """Wait for the run, copying its metrics.jsonl beside the log every few seconds: a run cut off by the machine's
    time limit still brings back the steps it finished."""
    while True:
        try:
            code = proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            code = None
        if os.path.exists(metrics) and os.environ.get("OUT"):
            shutil.copyfile(metrics, copy)
        if code is not None:
            return code


def run_config(name: str, gpus: int, model: str, data: str, work: str, steps: int, src: str = ROOT,
               report_step: int = 0, rollout_gpus: int = 1) -> dict:
    spec = CONFIGS[name]
    ckpt = os.path.join(work, f"{name}_{gpus}gpu")
    cmd = [sys.executable, "-m", "strive.trainer.main_ppo",
           *overrides(model, data, ckpt, gpus, spec["n"], spec["estimator"], spec["fast"], steps), *spec.get("extra", [])]
    if name == "grpo_split":
        cmd.append(f"rollout.n_gpus_per_node={rollout_gpus}")
    log = os.path.join(os.environ.get("OUT") or work, f"train_{name}_{gpus}gpu.log")  # kept if this is cut off
    start = time.time()
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in (src, os.environ.get("PYTHONPATH")) if p))
    with open(log, "w") as fh:
        proc = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, text=True, cwd=src, env=env)
        code = _wait_copying_metrics(proc, os.path.join(ckpt, "logs", "metrics.jsonl"), log[:-4] + "_metrics.jsonl")
    wall = time.time() - start
    if code != 0:
        with open(log) as fh:
            return {"config": name, "gpus": gpus, "error": fh.read()[-4000:]}
    rows = {}
    with open(os.path.join(ckpt, "logs", "metrics.jsonl")) as fh:
        for line in fh:
            r = json.loads(line)
            rows[r["step"]] = r
    step = report_step or max(rows)
    last = rows[step]
    return {"config": name, "gpus": gpus, "rollout_gpus": rollout_gpus if name == "grpo_split" else 0,
            "n": spec["n"], "fast": spec["fast"], "wall_s": wall, "step": step,
            "first_step_s": rows[min(rows)].get("timing_s/step"),  # compilation included
            "metrics": {k: v for k, v in last.items() if isinstance(v, (int, float))}}


def summarize(result: dict, params: int, peak_tflops: float) -> dict:
    m = result["metrics"]
    tokens = m["perf/total_num_tokens"]
    flops = 6.0 * params * tokens  # one PPO epoch over every token (model FLOPs; no recompute counted)
    row = {f"{p}_s": round(m.get(f"timing_s/{p}", 0.0), 2) for p in PHASES}
    row.update(config=result["config"], gpus=result["gpus"], rollout_gpus=result.get("rollout_gpus", 0),
               first_step_s=round(result.get("first_step_s") or 0.0, 2),
               tokens=int(tokens),
               throughput_tok_s_gpu=round(m["perf/throughput"], 1),
               actor_mfu=round(flops / max(m.get("timing_s/update_actor", 1e-9), 1e-9) / result["gpus"] / (peak_tflops * 1e12), 4),
               mfu_actor=round(m.get("perf/mfu/actor", float("nan")), 4),
               mfu_critic=round(m.get("perf/mfu/critic", float("nan")), 4),
               peak_mem_gb=round(m.get("perf/max_memory_allocated_gb", 0.0), 2),
               phase_peak_gb={k.rsplit("/", 1)[1]: round(v, 2) for k, v in m.items()
                              if k.startswith("perf/max_memory_allocated_gb/")},
               weight_sync_s=round(m.get("weight_sync/time_s", 0.0), 3),
               gen_wait_s=round(m.get("timing_s/gen_wait", 0.0), 2),
               weight_transfer_s=round(m.get("timing_s/weight_transfer", 0.0), 2),
               rollout_logprob_diff=round(m.get("training/rollout_logprob_diff_mean", float("nan")), 4))
    responses = m.get("response_length/mean", 0.0) * (tokens / max(m.get("response_length/mean", 0.0) + m.get("prompt_length/mean", 0.0), 1e-9))
    row["gen_tok_s"] = round(responses / max(m.get("timing_s/gen", 1e-9), 1e-9), 1)
    return row


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--gpus", type=int, nargs="+", default=[1])
    parser.add_argument("--configs", nargs="+", default=["ppo_hf", "ppo_fast", "grpo_fast"], choices=sorted(CONFIGS))
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--rollout-gpus", type=int, default=1, help="grpo_split: GPUs of the rollout pool, beside "
                        "the --gpus of the trainer")
    parser.add_argument("--report-step", type=int, default=0, help="the step to report (default: the last); with "
                        "one-step-off configs run --steps 3 and report 2, the last step having nothing to overlap")
    parser.add_argument("--work", default="/tmp/strive_gpu_step")
    parser.add_argument("--src", default=ROOT, help="run the entry point of the strive in this folder (an old commit's "
                        "`git archive OLD strive | tar -x -C DIR`) to time it in the same call")
    parser.add_argument("--name", default="", help="results file name (default gpu_step_<gpus>gpu.json)")
    args = parser.parse_args()
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    from strive.data.synthetic import write_token_dataset
    from strive.models.tiny import make_random_model

    model = make_random_model(os.path.join(args.work, "qwen2.5-0.5b"), "qwen2.5-0.5b")
    data = os.path.join(args.work, "data")
    write_token_dataset(data, n_train=256 * args.steps, n_test=8, prompt_words=500, vocab_size=151936)
    params, kind = param_count(model), card()
    peak = PEAK_BF16_TFLOPS.get(kind, 989.0)
    rows, raw = [], []
    out_dir = os.environ.get("OUT") or os.path.join(ROOT, "bench", "results")
    name = args.name or f"gpu_step_{'_'.join(str(g) for g in args.gpus)}gpu.json"
    out_file = os.path.join(out_dir, name)
    for gpus in args.gpus:
        for name in args.configs:
            result = run_config(name, gpus, model, data, args.work, args.steps, os.path.abspath(args.src),
                                args.report_step, args.rollout_gpus)
            raw.append(result)
            if "error" in result:
                print(f"{name} on {gpus} GPU(s) failed:\n{result['error']}", flush=True)
            else:
                rows.append(summarize(result, params, peak))
                print(json.dumps(rows[-1]), flush=True)
            with open(out_file, "w") as fh:  # after every configuration, so a cut-off run keeps what it measured
                json.dump({"card": kind, "params": params, "rows": rows, "raw": raw}, fh, indent=1)
    cols = ["config", "gpus"] + [f"{p}_s" for p in PHASES] + ["throughput_tok_s_gpu", "gen_tok_s", "actor_mfu",
                                                               "mfu_actor", "mfu_critic",
                                                               "peak_mem_gb", "weight_sync_s", "gen_wait_s",
                                                               "weight_transfer_s", "rollout_logprob_diff"]
    print(f"\ncard: {kind}, params {params / 1e6:.0f}M")
    print(" | ".join(cols))
    for r in rows:
        print(" | ".join(str(r.get(c, "")) for c in cols))
    return 0


if __name__ == "__main__":
    sys.exit(main())
