"""The LM head + log-softmax of the actor, alone: autograd per checkpointed chunk (before) vs the fused head
(strive/models/head.py), eager and (CUDA) compiled.

Two passes per variant, as the trainer runs them: `train` is forward + backward of log p(y) with the entropy
reported but not differentiated (the actor's update with entropy_coeff=0); `forward` is the no-grad pass with the
entropy (old log-probs). Random bf16 hidden states and head weight of a model's shape, N response tokens, the
trainer's chunk (HEAD_CHUNK_BYTES of fp32 logits). Median of --iters after one warm-up; peak memory is what the
pass allocated above its inputs (CUDA: max_memory_allocated; CPU: the process's peak RSS growth, first variant
only is meaningful there, so run one variant per process on the CPU).

    python bench/head_kernels.py                                   # CUDA, Qwen2.5-0.5B's head (V 151,936, H 896)
    python bench/head_kernels.py --vocab 49152 --hidden 576 --tokens 1280 --variants autograd   # CPU, SmolLM2
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import torch  # noqa: E402
from torch import nn  # noqa: E402

from strive.models.forward import HEAD_CHUNK_BYTES, _autograd_head  # noqa: E402
from strive.models.head import linear_log_probs  # noqa: E402


def run_pass(variant: str, head: nn.Linear, h: torch.Tensor, y: torch.Tensor, train: bool) -> None:
    chunk = max(1, HEAD_CHUNK_BYTES // (4 * head.weight.shape[0]))
    with torch.set_grad_enabled(train):
        if variant == "autograd":
            logp, _ = _autograd_head(head, h, y, 1.0, chunk, True, False)
        else:
            logp, _ = linear_log_probs(h, head.weight, y, 1.0, chunk, True, False, compiled=variant == "compiled")
        if train:
            logp.sum().backward()


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def measure(variant: str, vocab: int, hidden: int, tokens: int, train: bool, iters: int,
            device: torch.device) -> dict:
    torch.manual_seed(0)
    head = nn.Linear(hidden, vocab, bias=False, device=device, dtype=torch.bfloat16)
    h = torch.randn(tokens, hidden, device=device, dtype=torch.bfloat16).requires_grad_(train)
    y = torch.randint(0, vocab, (tokens,), device=device)
    run_pass(variant, head, h, y, train)  # warm-up (compiles)
    sync(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    times = []
    for _ in range(iters):
        head.weight.grad, h.grad = None, None
        sync(device)
        start = time.perf_counter()
        run_pass(variant, head, h, y, train)
        sync(device)
        times.append(time.perf_counter() - start)
    if device.type == "cuda":
        peak_gb = (torch.cuda.max_memory_allocated() - base) / 2**30
    else:
        peak_gb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss0) / 2**20
    seconds = statistics.median(times)
    flops = 2 * tokens * hidden * vocab * (4 if train else 1)  # forward; with grad: + recompute + two products
    return dict(variant=variant, pass_="train" if train else "forward", tokens=tokens, seconds=round(seconds, 4),
                tflops=round(flops / seconds / 1e12, 1), peak_gb=round(peak_gb, 2))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--vocab", type=int, default=151936)
    ap.add_argument("--hidden", type=int, default=896)
    ap.add_argument("--tokens", type=int, nargs="+", default=[2048, 16384, 131072])
    ap.add_argument("--variants", nargs="+", default=None, help="autograd, fused, compiled (CUDA)")
    ap.add_argument("--iters", type=int, default=5)
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    variants = args.variants or (["autograd", "fused", "compiled"] if device.type == "cuda" else ["autograd", "fused"])
    rows = []
    for tokens in args.tokens:
        for train in (True, False):
            for variant in variants:
                row = measure(variant, args.vocab, args.hidden, tokens, train, args.iters, device)
                rows.append(row)
                print(json.dumps(row), flush=True)
    card = torch.cuda.get_device_name(0) if device.type == "cuda" else "cpu"
    result = dict(card=card, torch=torch.__version__, vocab=args.vocab, hidden=args.hidden, rows=rows)
    out = args.out or os.path.join(os.environ.get("OUT", "."), f"head_kernels_{device.type}.json")
    with open(out, "w") as f:
        json.dump(result, f, indent=1)
    print("wrote", out)


if __name__ == "__main__":
    main()
