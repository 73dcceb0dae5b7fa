"""Where an actor update's time goes at verl's quickstart micro-batch size, one GPU, no Ray.

One ActorWorker (FSDP2 on a world of one, NCCL), the Qwen2.5-0.5B shape with random weights, one mini-batch of 64
sequences (505-token prompts, 512-token responses) in micro-batches of 4, as `bench/gpu_step.py --configs ppo_fast`
runs it. Times the first update of each variant (compilation included) and the median of the next three, with peak
memory; `--profile` also profiles the default and prints the top operators, `--cprofile` the host's Python
functions over one update (at micro-batches of 4 the host, not the device, sets the pace). The variant `critic`
times the critic's update (GAE's value model, `critic.ppo_micro_batch_size_per_gpu=4`) on the same batch. Run one
variant per process for a clean comparison: compiled graphs keep an earlier variant's worker, and its memory, alive.

    python bench/update_profile.py [VARIANT ...] [--profile] [--src=DIR] [--name=NAME]

writes $OUT/NAME.json (default update_profile; and .txt with --profile). `--src=DIR` imports strive from DIR instead
of this checkout (e.g. `git archive OLD strive | tar -x -C DIR`), so an old commit is timed in the same call.
"""

from __future__ import annotations

import json
import os
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SRC = next((a.split("=", 1)[1] for a in sys.argv[1:] if a.startswith("--src=")), ROOT)
NAME = next((a.split("=", 1)[1] for a in sys.argv[1:] if a.startswith("--name=")), "update_profile")
sys.path.insert(0, os.path.abspath(SRC))

import torch  # noqa: E402
import torch.distributed as dist  # noqa: E402

from strive.batch import Batch  # noqa: E402
from strive.config import prepare  # noqa: E402
from strive.workers import actor as actor_module  # noqa: E402

OVERRIDES = ["data.train_batch_size=64", "actor_rollout_ref.actor.ppo_mini_batch_size=64",
             "actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu=4", "data.max_prompt_length=512",
             "data.max_response_length=512", "trainer.n_gpus_per_node=1", "actor_rollout_ref.actor.optim.lr=1e-6"]


def make_batch(n: int, P: int = 512, T: int = 512, prompt: int = 505, vocab: int = 151900) -> Batch:
    g = torch.Generator().manual_seed(0)
    prompts = torch.full((n, P), 0, dtype=torch.long)
    prompts[:, P - prompt:] = torch.randint(0, vocab, (n, prompt), generator=g)
    responses = torch.randint(0, vocab, (n, T), generator=g)
    attn = torch.cat([torch.zeros(n, P - prompt, dtype=torch.long), torch.ones(n, prompt + T, dtype=torch.long)], 1)
    return Batch(prompts, responses, attn, (attn.cumsum(-1) - 1).clamp(min=0), torch.ones(n, T),
                 advantages=torch.randn(n, T, generator=g), old_log_probs=torch.randn(n, T, generator=g) - 5)


def critic_batch(batch: Batch) -> Batch:
    """The batch with what the critic's loss reads: old values and returns."""
    g = torch.Generator().manual_seed(1)
    n, T = batch.responses.shape
    batch.values = torch.randn(n, T, generator=g)
    batch.returns = torch.randn(n, T, generator=g)
    return batch


def hf_checkpointing(hf_model) -> None:
    """Variant: transformers' own activation checkpointing (what strive called before it wrapped each layer's
    forward itself; on transformers 5.17 it wraps the layer's __call__, outside the compiled forward)."""
    hf_model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})


def no_fsdp(module, layers, mesh, fsdp, compile_layers=False):
    """Variant (an upper bound, not a training setup): no FSDP2 at all, the module in bf16 (no fp32 master
    weights), its layers compiled as the default compiles them."""
    from strive.workers.fsdp import compile_in_place

    module.to(device="cuda", dtype=torch.bfloat16)
    if compile_layers:
        compile_in_place(list(layers))
    return module


PATCHES = {"HF_CKPT": ("enable_activation_checkpointing", hf_checkpointing), "NO_FSDP": ("apply_fsdp", no_fsdp)}
# Inductor settings a variant turns on for its own compilation (torch._dynamo.reset() first, restored after; the C++
# wrapper is no longer one of them: strive's fsdp_config.compile_cpp_wrapper scopes it to the layers):
# COMBO fuses independent small kernels into one launch, CUDAGRAPHS replays each compiled graph as a CUDA graph
# (what mode="reduce-overhead" turns on).
INDUCTOR = {"COMBO": ("combo_kernels", True), "CUDAGRAPHS": ("triton.cudagraphs", True)}
FLAGS = {"PER_MICRO", *INDUCTOR}  # handled in main(), not overrides


def set_inductor(flags: list[str]):
    """Turn on the INDUCTOR flags among `flags`; returns the patch to undo with restore_inductor (or None)."""
    import torch._inductor.config as inductor

    wanted = dict(INDUCTOR[f] for f in flags if f in INDUCTOR)
    if not wanted:
        return None
    patch = inductor.patch(wanted)
    patch.__enter__()
    torch._dynamo.reset()  # compile again under the new settings
    return patch


def restore_inductor(patch) -> None:
    if patch is not None:
        patch.__exit__(None, None, None)
        torch._dynamo.reset()


def build(model: str, extra: list[str]):
    originals = {}
    for flag, (name, patch) in PATCHES.items():
        if flag in extra:
            originals[name] = getattr(actor_module, name)
            setattr(actor_module, name, patch)
    extra = [e for e in extra if e not in PATCHES and e not in FLAGS]
    from torch.distributed.device_mesh import init_device_mesh

    run = prepare([f"actor_rollout_ref.model.path={model}", *OVERRIDES, *extra])
    mesh = init_device_mesh("cuda", (1,))
    worker = actor_module.ActorWorker(run.config.actor_rollout_ref, run.sizes.actor, run.sizes.old_log_prob, mesh,
                                      torch.device("cuda"), total_steps=10)
    for name, original in originals.items():
        setattr(actor_module, name, original)
    return worker


def build_critic(model: str, extra: list[str]):
    """The critic as bench/gpu_step.py's ppo_fast runs it (verl's quickstart: micro-batches of 4, checkpointing)."""
    from torch.distributed.device_mesh import init_device_mesh

    from strive.workers.critic import CriticWorker

    run = prepare([f"actor_rollout_ref.model.path={model}", f"critic.model.path={model}", *OVERRIDES,
                   "algorithm.adv_estimator=gae", "critic.ppo_micro_batch_size_per_gpu=4", "critic.optim.lr=1e-5",
                   "critic.model.enable_gradient_checkpointing=True", *extra])
    mesh = init_device_mesh("cuda", (1,))
    return CriticWorker(run.config.critic, run.sizes.critic, run.sizes.values, mesh, torch.device("cuda"),
                        total_steps=10)


def timed_update(worker, batch: Batch, repeats: int = 3) -> tuple[float, float, float, list]:
    """(first update incl. warm-up/compile, median of the next `repeats` updates, peak GB, each update's gradient
    norm). The same weights and batch give the same first norm in every variant, to bf16 rounding: a variant whose
    norms differ computes something else."""
    torch.cuda.reset_peak_memory_stats()
    times, norms = [], []
    for step in range(1, repeats + 2):
        start = time.perf_counter()
        out = worker.update(batch, step=step)
        torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
        metrics = out[0] if isinstance(out, tuple) else out
        norms.append(round(float(next((v for k, v in metrics.items() if k.endswith("grad_norm")), float("nan"))), 4))
    return times[0], sorted(times[1:])[len(times[1:]) // 2], torch.cuda.max_memory_allocated() / 2**30, norms


def host_profile(model: str, batch: Batch, out_dir: str) -> None:
    """cProfile of one default update after a warm-up one: where the host's time goes."""
    import cProfile
    import io
    import pstats

    worker = build(model, [])
    worker.update(batch, step=1)
    torch.cuda.synchronize()
    prof = cProfile.Profile()
    prof.enable()
    worker.update(batch, step=2)
    torch.cuda.synchronize()
    prof.disable()
    text = io.StringIO()
    for key in ("tottime", "cumulative"):
        pstats.Stats(prof, stream=text).sort_stats(key).print_stats(45)
    with open(os.path.join(out_dir, f"{NAME}_cprofile.txt"), "w") as fh:
        fh.write(text.getvalue())
    print(text.getvalue()[:9000])


def profile(model: str, batch: Batch, out_dir: str) -> None:
    """Top operators of the default update, 4 micro-batches under the profiler."""
    worker = build(model, [])
    worker.update(batch, step=1)
    small = batch.select(slice(0, 16))
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU,
                                            torch.profiler.ProfilerActivity.CUDA]) as prof:
        worker.update(small, step=2)
        torch.cuda.synchronize()
    averages = prof.key_averages()
    text = (averages.table(sort_by="self_cuda_time_total", row_limit=25) + "\n\n"
            + averages.table(sort_by="self_cpu_time_total", row_limit=25))
    with open(os.path.join(out_dir, "update_profile.txt"), "w") as fh:
        fh.write(text)
    print(text[:6000])


def main() -> int:
    from strive.models.tiny import make_random_model

    os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
    os.environ.setdefault("MASTER_PORT", "29533")
    dist.init_process_group("nccl", rank=0, world_size=1)
    torch.cuda.set_device(0)
    model = make_random_model("/tmp/strive_bench/qwen2.5-0.5b", "qwen2.5-0.5b")
    batch = make_batch(64)
    out_dir = os.environ.get("OUT") or os.path.join(ROOT, "bench", "results")
    variants = {
        "default": [],
        "eager (use_torch_compile=False)": ["actor_rollout_ref.actor.use_torch_compile=False"],
        "reshard_after_forward=True": ["actor_rollout_ref.actor.fsdp_config.reshard_after_forward=True"],
        "no gradient checkpointing": ["actor_rollout_ref.model.enable_gradient_checkpointing=False"],
        "packed varlen (packed_attention=varlen)": ["actor_rollout_ref.model.packed_attention=varlen"],
        "eager, no gradient checkpointing": ["actor_rollout_ref.actor.use_torch_compile=False",
                                             "actor_rollout_ref.model.enable_gradient_checkpointing=False"],
        "reduce and reshard after every micro-batch (before)": ["PER_MICRO"],
        "transformers' checkpointing (around __call__ on 5.17)": ["HF_CKPT"],
        "no FSDP, bf16 module (upper bound)": ["NO_FSDP"],
        "no FSDP, bf16 module, no gradient checkpointing": [
            "NO_FSDP", "actor_rollout_ref.model.enable_gradient_checkpointing=False"],
        "critic": [],
        "critic, transformers' checkpointing": ["HF_CKPT"],
        "critic, reshard_after_forward=True": ["critic.model.fsdp_config.reshard_after_forward=True"],
        "critic, reduce and reshard after every micro-batch": ["PER_MICRO"],
        "before 2026-12-05 (both)": ["HF_CKPT", "PER_MICRO"],
        "critic, before 2026-12-05 (both)": ["HF_CKPT", "PER_MICRO"],
        "C++ wrapper, checkpoint keeps attention (compile_cpp_wrapper=True)": [
            "actor_rollout_ref.actor.fsdp_config.compile_cpp_wrapper=True",
            "actor_rollout_ref.model.use_remove_padding=False"],
        "critic, C++ wrapper, checkpoint keeps attention": ["critic.model.fsdp_config.compile_cpp_wrapper=True"],
        "combo kernels": ["COMBO"],
        "CUDA graphs of the compiled layers": ["CUDAGRAPHS"],
    }
    wanted = [a for a in sys.argv[1:] if not a.startswith("--")] or list(variants)
    micro = 4
    results = {}
    from strive.workers import critic as critic_module

    local_step = getattr(actor_module, "accumulation_step", None)  # absent from a --src older than it
    for name in wanted:
        extra = variants[name]
        previous = None
        try:
            previous = set_inductor(extra)
            if "PER_MICRO" in extra:  # what FSDP2 did by default: reduce and reshard around every micro-batch
                actor_module.accumulation_step = critic_module.accumulation_step = lambda *a, **k: None
            if name.startswith("critic"):
                patched = critic_module.enable_activation_checkpointing
                if "HF_CKPT" in extra:
                    critic_module.enable_activation_checkpointing = hf_checkpointing
                worker = build_critic(model, [e for e in extra if e not in PATCHES and e not in FLAGS])
                critic_module.enable_activation_checkpointing = patched
                batch = critic_batch(batch)
            else:
                worker = build(model, extra + [f"actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu={micro}"])
            first, second, peak, norms = timed_update(worker, batch)
            results[name] = {"first_s": round(first, 3), "steady_s": round(second, 3), "peak_gb": round(peak, 2),
                             "grad_norms": norms}
        except Exception as exc:  # one failing variant must not hide the others
            results[name] = {"error": f"{type(exc).__name__}: {str(exc)[:300]}"}
        restore_inductor(previous)
        if local_step is not None:
            actor_module.accumulation_step = critic_module.accumulation_step = local_step
        print(f"{name}: {results[name]} (64 sequences, micro-batches of {micro})", flush=True)
        worker = None
        torch.cuda.empty_cache()
    with open(os.path.join(out_dir, f"{NAME}.json"), "w") as fh:
        json.dump({"card": torch.cuda.get_device_name(0), "torch": torch.__version__, "src": SRC, "updates": results}, fh,
                  indent=1)
    if "--profile" in sys.argv:
        profile(model, batch, out_dir)
    if "--cprofile" in sys.argv:
        host_profile(model, make_batch(64), out_dir)
    dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
