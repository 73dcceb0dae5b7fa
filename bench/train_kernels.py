"""Forward + backward of the actor's log-prob forward: padded vs packed, with each packed-attention backend.

What the actor's update does per micro-batch (strive.models.forward.PolicyForward: backbone, LM head in chunks on
the response tokens, gradient checkpointing as the actor's default), without FSDP or Ray, so that the attention
path is what differs. Sequences have random prompt and response lengths (up to P and T); rows are P + T wide as
in the trainer. Variants:

- padded: the padded batch with its attention mask (use_remove_padding=False);
- packed_dense: the real tokens packed into one row and handed to transformers' SDPA, which builds an N × N
  block mask (what use_remove_padding=True did before strive.models.attention);
- packed_<backend>: packed, attention per sequence (sdpa_loop, varlen, varlen_aten, flash_attn: whichever can run
  here; varlen_aten is varlen's kernel through its aten op, what `--compile cpp` needs);
- auto: what use_remove_padding=True does by default (packed_attention=auto: the backend auto picks, and on CUDA
  micro-batches of at most CUDA_PADDED_UP_TO padded tokens run padded).

Micro-batches of a fixed number of sequences, and token budgets (use_dynamic_bsz: as many sequences as fit).
Reports the median seconds of `--iters` runs after one warm-up, tokens/s, model TFLOP/s and MFU (GPU), peak memory.
The dtype is what the trainer computes in on the machine (bf16 on CUDA; float32 on a CPU without bf16 units,
strive/config/cpu_dtype.py), or `--dtype`.

    python bench/train_kernels.py                           # GPU: Qwen2.5-0.5B shape, random weights
    python bench/train_kernels.py --model ~/.cache/strive/models/smollm2-135m-instruct-b179c9523d0e   # CPU
    python bench/train_kernels.py --model ... --variants padded --compile cpp    # layers compiled, C++ wrapper
    python bench/train_kernels.py --variants padded packed_varlen_aten auto --compile cpp   # the same, packed (GPU)
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import torch  # noqa: E402

from strive.config.cpu_dtype import dtype_for_this_cpu  # noqa: E402
from strive.models import forward as fw  # noqa: E402
from strive.models.attention import padded_up_to, resolve_backend  # noqa: E402
from strive.models.flops import forward_flops, mfu  # noqa: E402
from strive.models.forward import PolicyForward, decoder_layers, enable_activation_checkpointing  # noqa: E402
from strive.models.loading import load_causal_lm  # noqa: E402
from strive.workers.fsdp import compile_in_place  # noqa: E402


def make_batch(n: int, P: int, T: int, vocab: int, seed: int):
    """n rows: prompt lengths U[P/4, P], response lengths U[T/4, T]; left-padded prompts, right-padded responses."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.zeros(n, P + T, dtype=torch.long)
    am = torch.zeros(n, P + T, dtype=torch.long)
    rmask = torch.zeros(n, T)
    for i in range(n):
        p = int(torch.randint(P // 4, P + 1, (1,), generator=g))
        r = int(torch.randint(T // 4, T + 1, (1,), generator=g))
        ids[i, P - p: P + r] = torch.randint(0, vocab, (p + r,), generator=g)
        am[i, P - p: P + r] = 1
        rmask[i, :r] = 1
    return ids, am, (am.cumsum(-1) - 1).clamp(min=0), rmask


def budget_batch(budget: int, P: int, T: int, vocab: int, seed: int):
    """As many rows as fit in `budget` real tokens (at least one), as use_dynamic_bsz cuts a micro-batch."""
    big = make_batch(max(4, 4 * budget // (P + T) + 8), P, T, vocab, seed)
    lengths = big[1].sum(-1).cumsum(0)
    n = max(1, int((lengths <= budget).sum()))
    return tuple(x[:n] for x in big)


def dense_packed_hidden(backbone, input_ids, attention_mask, position_ids, T, packed_backend, index=None):
    """The old packed forward: one row, no mask, transformers' SDPA (which then builds an N × N block mask)."""
    B, L = input_ids.shape
    flat = attention_mask.reshape(-1).nonzero().squeeze(1)
    packed = backbone(input_ids=input_ids.reshape(-1)[flat][None], position_ids=position_ids.reshape(-1)[flat][None],
                      attention_mask=None, use_cache=False).last_hidden_state[0]
    full = packed.new_zeros(B * L, packed.shape[-1]).index_copy(0, flat, packed)
    return full.view(B, L, -1)[:, L - T - 1: L - 1]


def peak_memory_reset(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    else:
        with open("/proc/self/clear_refs", "w") as fh:  # resets VmHWM, the peak RSS
            fh.write("5")


def peak_memory_gb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**30
    with open("/proc/self/status") as fh:
        return next(int(line.split()[1]) for line in fh if line.startswith("VmHWM")) / 2**20


def time_variant(model, variant: str, batch, device: torch.device, iters: int, cpp_wrapper: bool = False) -> dict:
    dtype = next(model.parameters()).dtype
    original = fw.response_hidden
    if variant == "packed_dense":
        wrapper = PolicyForward(model, packed_backend="dense")  # the name only routes to the packed branch
        model.set_attn_implementation("sdpa")
        fw.response_hidden = dense_packed_hidden
    elif variant == "auto":
        wrapper = PolicyForward(model, resolve_backend("auto", device, dtype, cpp_wrapper=cpp_wrapper),
                                padded_up_to("auto", device))
    else:
        wrapper = PolicyForward(model, None if variant == "padded" else variant.removeprefix("packed_"))
    ids, am, pos, rm = (x.to(device) for x in batch)
    times = []
    try:
        peak_memory_reset(device)
        for i in range(iters + 1):
            model.zero_grad(set_to_none=True)
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            start = time.perf_counter()
            logp, _ = wrapper(ids, am, pos, rm)
            logp.sum().backward()
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            if i:  # the first is a warm-up
                times.append(time.perf_counter() - start)
    except torch.OutOfMemoryError:
        return {"error": "out of memory"}
    except Exception as exc:  # e.g. a backend the C++ wrapper cannot compile: a row saying so, the next variant runs
        first = (str(exc).strip().splitlines() or [""])[0]
        return {"error": f"{type(exc).__name__}: {first[:300]}"}
    finally:
        fw.response_hidden = original
        model.zero_grad(set_to_none=True)
    seconds = statistics.median(times)
    tokens = int(am.sum())
    flops = 3.0 * forward_flops(model.config, am.sum(-1), int(rm.sum()))
    return {"seconds": round(seconds, 4), "tokens_per_s": round(tokens / seconds, 1),
            **{k: round(v, 4) for k, v in mfu(flops, seconds, device).items()},
            "peak_memory_gb": round(peak_memory_gb(device), 2)}


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default=None, help="model dir (default: a random Qwen2.5-0.5B-shaped model)")
    parser.add_argument("--micro", type=int, nargs="*", default=None, help="sequences per micro-batch")
    parser.add_argument("--budgets", type=int, nargs="*", default=None, help="token budgets per micro-batch")
    parser.add_argument("--prompt", type=int, default=None)
    parser.add_argument("--response", type=int, default=None)
    parser.add_argument("--iters", type=int, default=3)
    parser.add_argument("--no-checkpointing", action="store_true")
    parser.add_argument("--compile", choices=("none", "python", "cpp"), default="none",
                        help="torch.compile each decoder layer as use_torch_compile does on CUDA (python), or with the "
                        "C++ wrapper and the attention-keeping checkpoint (cpp: fsdp_config.compile_cpp_wrapper); "
                        "the warm-up run of each shape includes its compilation")
    parser.add_argument("--dtype", default=None, help="bfloat16 or float32 (default: what the trainer computes in "
                                                       "here: bf16 on CUDA, float32 on a CPU without bf16 units)")
    parser.add_argument("--variants", nargs="*", default=None, help="only these variants (default: all that run here)")
    parser.add_argument("--dense-max-tokens", type=int, default=20000,
                        help="skip packed_dense above this many tokens (its N × N attention takes minutes there)")
    parser.add_argument("--out", default=os.path.join(os.environ.get("OUT") or os.path.join(ROOT, "bench", "results"),
                                                      "train_kernels.json"))
    args = parser.parse_args()
    cuda = torch.cuda.is_available()
    device = torch.device("cuda" if cuda else "cpu")
    micro = args.micro if args.micro is not None else ([4, 16, 64] if cuda else [4, 16])
    budgets = args.budgets if args.budgets is not None else ([8192, 32768, 65536] if cuda else [2048, 4096])
    P, T = args.prompt or (512 if cuda else 256), args.response or (512 if cuda else 64)
    path = args.model
    if path is None:
        from strive.models.tiny import make_random_model

        path = make_random_model("/tmp/strive_bench/qwen2.5-0.5b", "qwen2.5-0.5b")
    dtype = args.dtype or ("bfloat16" if cuda else dtype_for_this_cpu())
    model = load_causal_lm(path, dtype=dtype, device=device)
    model.config.use_cache = False
    if not args.no_checkpointing:
        enable_activation_checkpointing(model, keep_attention=args.compile == "cpp")
    if args.compile != "none":
        compile_in_place(decoder_layers(model), cpp_wrapper=args.compile == "cpp")
    backends = []
    for name, cpp in (("sdpa_loop", False), ("varlen", False), ("varlen", True), ("flash_attn", False)):
        try:  # ("varlen", True): varlen_aten, the kernel the C++ wrapper's compiled layers call
            backends.append(resolve_backend(name, device, getattr(torch, dtype), cpp_wrapper=cpp))
        except ValueError:
            pass
    variants = ["padded", "packed_dense"] + [f"packed_{b}" for b in backends] + ["auto"]
    if args.variants:
        variants = [v for v in variants if v in args.variants]
    vocab = model.config.vocab_size - 3
    shapes = [("micro", m, make_batch(m, P, T, vocab, seed=m)) for m in micro]
    shapes += [("budget", b, budget_batch(b, P, T, vocab, seed=b)) for b in budgets]
    rows = []
    for kind, size, batch in shapes:
        for variant in variants:
            if variant == "packed_dense" and int(batch[1].sum()) > args.dense_max_tokens:
                result = {"error": f"skipped: above --dense-max-tokens {args.dense_max_tokens}"}
            else:
                result = time_variant(model, variant, batch, device, args.iters, cpp_wrapper=args.compile == "cpp")
            row = {"kind": kind, "size": size, "sequences": len(batch[0]), "tokens": int(batch[1].sum()),
                   "variant": variant, **result}
            rows.append(row)
            print(json.dumps(row), flush=True)
    card = torch.cuda.get_device_name(0) if cuda else f"CPU ({os.cpu_count()} cores, {torch.get_num_threads()} threads)"
    out = {"card": card, "model": os.path.basename(path.rstrip("/")), "prompt": P, "response": T, "dtype": dtype,
           "checkpointing": not args.no_checkpointing, "compile": args.compile, "torch": torch.__version__, "rows": rows}
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w") as fh:
        json.dump(out, fh, indent=1)
    print(f"\n{card}, {out['model']}, rows {P}+{T} wide, {dtype}, checkpointing {out['checkpointing']}")
    print(f"{'micro-batch':>16} {'variant':>18} {'tokens':>7} {'seconds':>8} {'tok/s':>9} {'MFU':>6} {'peak GB':>8}")
    for r in rows:
        label = f"{r['size']} seqs" if r["kind"] == "micro" else f"{r['size']} tok ({r['sequences']})"
        if "error" in r:
            print(f"{label:>16} {r['variant']:>18} {r['tokens']:>7} {r['error']}")
            continue
        print(f"{label:>16} {r['variant']:>18} {r['tokens']:>7} {r['seconds']:>8.3f} {r['tokens_per_s']:>9.0f} "
              f"{(format(r['mfu'], '.1%') if 'mfu' in r else '-'):>6} {r['peak_memory_gb']:>8.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
