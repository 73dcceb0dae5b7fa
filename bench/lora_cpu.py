"""Full fine-tuning against LoRA (rank 8/32/64) on the actor: peak memory and time of GRPO-shaped updates.

Each configuration runs in a fresh process (one FSDP2 rank; gloo on the CPU, NCCL on a GPU) that builds the
ActorWorker exactly as a training run does, then takes `--steps` updates of one optimizer step each (GRPO with one
mini-batch per step: the update's forward gives the old log-probs) on a random batch of `--seqs` sequences of
`--prompt` + `--response` tokens, and gathers the weights for the engine after each update (the sync's gather;
merged W + scaling·B·A under LoRA). Times are medians over the steps after the first (the first compiles).

Memory: on the CPU, the process's peak resident set (VmHWM) over the updates (the peak is reset after the model is
built; `rss_build_gb` is what the built worker holds); on a GPU, torch's max_memory_allocated over the updates.

    python bench/lora_cpu.py --model /root/.cache/strive/models/smollm2-135m-instruct-b179c9523d0e
    python bench/lora_cpu.py --device cuda --shape qwen2.5-0.5b --configs full,lora32   # on a GPU
    python bench/lora_cpu.py --device cuda --seqs 64 --prompt 256 --response 256 --budget 16384 --ckpt off
Writes bench/results/lora_<device>_<name>.json (or --out) and prints a table.
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


def _vm(field: str) -> float:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 2**20  # kB → GB
    return float("nan")


def _batch(vocab: int, seqs: int, prompt: int, response: int, seed: int):
    import torch

    from strive.batch import Batch

    g = torch.Generator().manual_seed(seed)
    prompts = torch.randint(0, vocab - 10, (seqs, prompt), generator=g)
    responses = torch.randint(0, vocab - 10, (seqs, response), generator=g)
    attn = torch.ones(seqs, prompt + response, dtype=torch.long)
    pos = (attn.cumsum(-1) - 1).clamp(min=0)
    adv = torch.randn(seqs, response, generator=g)
    return Batch(prompts, responses, attn, pos, torch.ones(seqs, response), advantages=adv)


def _budget_keys(budget: int, ckpt: str) -> list[str]:
    """Token-budget micro-batches (the settings bench/gpu_step.py's *_budget configurations use) or none, and
    gradient checkpointing on or off."""
    keys = [f"actor_rollout_ref.model.enable_gradient_checkpointing={ckpt == 'on'}"]
    if budget:
        keys += ["actor_rollout_ref.actor.use_dynamic_bsz=True",
                 f"actor_rollout_ref.actor.ppo_max_token_len_per_gpu={budget}"]
    return keys


def _profiled(fn, cuda: bool) -> None:
    """Run fn under torch.profiler and print the ops with the most device (or CPU) time."""
    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    with profile(activities=activities) as prof:
        fn()
    key = "self_cuda_time_total" if cuda else "self_cpu_time_total"
    print(prof.key_averages().table(sort_by=key, row_limit=18, max_name_column_width=60), flush=True)


def run_one(args) -> dict:
    """One configuration in this process."""
    import torch
    import torch.distributed as dist
    from torch.distributed.device_mesh import init_device_mesh

    from strive.config import prepare
    from strive.workers.actor import ActorWorker

    cuda = args.device == "cuda"
    dist.init_process_group("nccl" if cuda else "gloo", init_method=f"file://{tempfile.mkdtemp()}/pg", rank=0,
                            world_size=1)
    rank = 0 if args.one == "full" else int(args.one.removeprefix("lora"))
    run = prepare([f"actor_rollout_ref.model.path={args.model}", "trainer.n_gpus_per_node=1",
                   f"trainer.device={args.device}", f"data.train_batch_size={args.seqs}",
                   f"actor_rollout_ref.actor.ppo_mini_batch_size={args.seqs}",
                   f"actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu={args.micro}",
                   "algorithm.adv_estimator=grpo", "actor_rollout_ref.actor.optim.lr=1e-5",
                   f"actor_rollout_ref.model.lora_rank={rank}", f"actor_rollout_ref.model.lora_alpha={2 * rank or 16}",
                   f"actor_rollout_ref.model.use_remove_padding={args.packed}", *_budget_keys(args.budget, args.ckpt)])
    device = torch.device("cuda", 0) if cuda else torch.device("cpu")
    if cuda:
        torch.cuda.set_device(device)
    actor = ActorWorker(run.config.actor_rollout_ref, run.sizes.actor, run.sizes.old_log_prob,
                        init_device_mesh(args.device, (1,)), device, total_steps=args.steps)
    trainable = sum(p.numel() for p in actor.module.parameters() if p.requires_grad)
    total = sum(p.numel() for p in actor.module.parameters())
    vocab = actor.module.hf.config.vocab_size
    build = torch.cuda.memory_allocated() / 2**30 if cuda else _vm("VmRSS")
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    else:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")  # resets VmHWM to the current RSS
    updates, syncs = [], []
    for step in range(1, args.steps + 1):
        batch = _batch(vocab, args.seqs, args.prompt, args.response, seed=step)
        start = time.perf_counter()
        if args.profile and step == args.steps:
            _profiled(lambda: actor.update(batch, step, record=True), cuda)
        else:
            actor.update(batch, step, record=True)
        if cuda:
            torch.cuda.synchronize()
        updates.append(time.perf_counter() - start)
        start = time.perf_counter()
        sent = sum(t.numel() for bucket in actor.full_weight_buckets(512 * 2**20) for _, t in bucket)
        if cuda:
            torch.cuda.synchronize()
        syncs.append(time.perf_counter() - start)
    peak = torch.cuda.max_memory_allocated() / 2**30 if cuda else _vm("VmHWM")
    dist.destroy_process_group()
    later = updates[1:] or updates
    return {"config": args.one, "trainable_params": trainable, "params": total, "sent_numel": sent,
            "update_s": statistics.median(later), "sync_gather_s": sum(syncs[1:] or syncs) / len(syncs[1:] or syncs),
            "updates_s": updates, "peak_gb": peak, "build_gb": build,
            "process_peak_rss_gb": None if cuda else _vm("VmHWM")}


def card(device: str) -> str:
    import torch

    if device == "cuda":
        return torch.cuda.get_device_name(0)
    return f"CPU, {os.cpu_count()} cores visible, torch threads {torch.get_num_threads()}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default=None, help="model directory (else --shape builds a random one)")
    parser.add_argument("--shape", default="qwen2.5-0.5b", help="strive.models.tiny SHAPES name, without --model")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--configs", default="full,lora8,lora32,lora64")
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--seqs", type=int, default=16)
    parser.add_argument("--micro", type=int, default=8)
    parser.add_argument("--prompt", type=int, default=64)
    parser.add_argument("--response", type=int, default=64)
    parser.add_argument("--packed", default="True", help="actor_rollout_ref.model.use_remove_padding")
    parser.add_argument("--budget", type=int, default=0,
                        help="use_dynamic_bsz with this ppo_max_token_len_per_gpu (the settings a user should pick "
                             "on a GPU); 0: micro-batches of --micro")
    parser.add_argument("--ckpt", default="on", choices=["on", "off"], help="gradient checkpointing")
    parser.add_argument("--out", default=None)
    parser.add_argument("--profile", action="store_true", help="print a torch.profiler table of the last update")
    parser.add_argument("--one", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print("RESULT " + json.dumps(run_one(args)), flush=True)
        return 0
    if args.model is None:
        from strive.models.tiny import make_random_model

        args.model = make_random_model(os.path.join(tempfile.gettempdir(), f"strive-{args.shape}"), args.shape)
    name = os.path.basename(os.path.normpath(args.model))
    results = []
    for config in args.configs.split(","):
        cmd = [sys.executable, os.path.abspath(__file__), *sys.argv[1:], "--model", args.model, "--one", config]
        out = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
        line = next((ln for ln in out.stdout.splitlines() if ln.startswith("RESULT ")), None)
        if args.profile:
            print(f"--- {config}\n" + out.stdout.split("RESULT ")[0][-9000:], flush=True)
        if line is None:
            print(out.stdout[-2000:], out.stderr[-4000:])
            raise SystemExit(f"{config} failed")
        results.append(json.loads(line[7:]))
        print(f"[lora bench] {results[-1]['config']}: update {results[-1]['update_s']:.2f} s, "
              f"peak {results[-1]['peak_gb']:.2f} GB", flush=True)
    meta = {k: getattr(args, k) for k in ("device", "steps", "seqs", "micro", "prompt", "response", "packed", "budget", "ckpt")}
    date = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    report = {"model": args.model, "card": card(args.device), "date": date, "load_average_at_end": os.getloadavg(),
              **meta, "results": results}
    out = args.out or os.path.join(ROOT, "bench", "results", f"lora_{args.device}_{name}.json")
    os.makedirs(os.path.dirname(out), exist_ok=True)
    with open(out, "w") as fh:
        json.dump(report, fh, indent=1)
    full = next((r for r in results if r["config"] == "full"), None)
    print(f"\n{report['card']}; {args.seqs} seqs × ({args.prompt}+{args.response}) tokens, micro {args.micro}")
    print("| config | trainable params | update s | sync gather s | peak GB | peak vs full |")
    print("| --- | --- | --- | --- | --- | --- |")
    for r in results:
        rel = f"{r['peak_gb'] / full['peak_gb']:.0%}" if full else "-"
        print(f"| {r['config']} | {r['trainable_params']:,} | {r['update_s']:.2f} | {r['sync_gather_s']:.2f} | "
              f"{r['peak_gb']:.2f} | {rel} |")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
