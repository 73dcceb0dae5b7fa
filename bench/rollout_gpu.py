"""Rollout throughput on one GPU: transformers' generate against the hf engine's fast path, same weights.

For the Qwen2.5-0.5B and Qwen2.5-1.5B shapes (random bf16 weights built from the config, no files), B prompts of
P random tokens, G sampled tokens each (T = 1, no top-k/top-p), EOS disabled, it times:
  hf-dynamic   model.generate, DynamicCache (what the hf engine does without the fast path)
  hf-static    model.generate(cache_implementation="static"): transformers 5.x compiles the forward itself
               (torch.compile, mode="reduce-overhead"); the first call's time is reported as setup_s
  fast         the fast path (strive/engines/fast/generator.py): preallocated cache, CUDA graphs, sampling in the
               graph; capture as setup_s
  fast-compile the same with engine_kwargs fast_compile=true (inductor-fused layers); compile + capture as setup_s
  fast-eager   the fast path without CUDA graphs (enforce_eager), to show what the graphs buy
  fast-torch   the fast path with fast_kernels=false (torch ops for attention, RoPE, SiLU·up and sampling), to
               show what the Triton kernels buy
and reports tokens/s (B·G / wall time of one generate call, prefill included), ms per decode step
((full call − a call generating 1 token) / (G − 1); hf-static: full call / G), peak GPU memory during the call,
and the fraction of the memory-bandwidth floor: (weight bytes + mean KV bytes attended per step) / card bandwidth
(H100 SXM 3.35 TB/s, H100 PCIe 2.0, H200 4.8) ÷ measured ms per step. The fast rows also check the path against
transformers on this shape: greedy first-token agreement with model.generate, and the mean |Δ log-prob| of
sampled tokens against a teacher-forced forward.

Each measurement runs in its own try/except and the JSON is rewritten after each one, so a failure or a timeout
keeps what was measured. Measurements run most important first and are skipped once --budget seconds are spent.

    python bench/rollout_gpu.py            # ~5 min on one H100; writes $OUT/rollout_gpu.json or bench/results/
    python bench/rollout_gpu.py --quick    # smoke run: 2 layers, B=16, P=16, G=16
    python bench/rollout_gpu.py --quick --device cpu --only fast,hf-dynamic    # the script's logic, no GPU
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import sys
import tempfile
import time
import traceback

import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from strive.engines.base import EngineSpec, SamplingParams  # noqa: E402
from strive.engines.fast.generator import FastGenerator  # noqa: E402
from strive.engines.fast.options import FastOptions  # noqa: E402
from strive.engines.hf import SDPA_BACKENDS  # noqa: E402

SHAPES = {
    "qwen2.5-0.5b": dict(vocab_size=151936, hidden_size=896, num_hidden_layers=24, num_attention_heads=14,
                         num_key_value_heads=2, intermediate_size=4864, tie_word_embeddings=True),
    "qwen2.5-1.5b": dict(vocab_size=151936, hidden_size=1536, num_hidden_layers=28, num_attention_heads=12,
                         num_key_value_heads=2, intermediate_size=8960, tie_word_embeddings=True),
}
ORDER = [("qwen2.5-0.5b", "fast"), ("qwen2.5-0.5b", "hf-dynamic"), ("qwen2.5-0.5b", "hf-static"),
         ("qwen2.5-1.5b", "fast"), ("qwen2.5-1.5b", "hf-dynamic"), ("qwen2.5-1.5b", "hf-static"),
         ("qwen2.5-0.5b", "fast-torch"), ("qwen2.5-0.5b", "fast-eager"), ("qwen2.5-1.5b", "fast-torch"),
         ("qwen2.5-0.5b", "fast-compile"), ("qwen2.5-1.5b", "fast-compile")]


def card_bandwidth(name: str):
    if "H200" in name:
        return 4.8e12
    if "H100" in name:
        return 2.0e12 if "PCIe" in name else 3.35e12
    return None


def build_model(shape: str, layers):
    from transformers import AutoModelForCausalLM, Qwen2Config

    kw = dict(SHAPES[shape])
    if layers:
        kw["num_hidden_layers"] = layers
    config = Qwen2Config(**kw, rope_theta=1e6, max_position_embeddings=32768, rms_norm_eps=1e-6,
                         bos_token_id=None, eos_token_id=None, pad_token_id=0)
    if getattr(config, "rope_parameters", None) is not None:  # transformers 5.x keeps rope_theta here
        config.rope_parameters["rope_theta"] = 1e6
    torch.manual_seed(0)
    with torch.device(DEVICE):
        model = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16, attn_implementation="sdpa")
    return model.eval().requires_grad_(False)


DEVICE = "cuda"


def results_dir(smoke: bool) -> str:
    """$OUT when set; else bench/results, except for smoke runs (--quick, CPU), which must not overwrite the
    measured results there: they go to the temp directory."""
    out = os.environ.get("OUT") or (tempfile.gettempdir() if smoke else
                                    os.path.join(os.path.dirname(os.path.abspath(__file__)), "results"))
    os.makedirs(out, exist_ok=True)
    return out


def sync() -> None:
    if DEVICE == "cuda":
        torch.cuda.synchronize()


def reset_peak() -> None:
    if DEVICE == "cuda":
        torch.cuda.reset_peak_memory_stats()


def peak_gib() -> float:
    return torch.cuda.max_memory_allocated() / 2**30 if DEVICE == "cuda" else 0.0


def timed(fn):
    sync()
    start = time.perf_counter()
    out = fn()
    sync()
    return time.perf_counter() - start, out


def floor_ms(model, args, bandwidth):
    """(weight bytes + mean KV bytes attended per decode step) / bandwidth, in ms."""
    if bandwidth is None:
        return None
    c = model.config
    weights = sum(p.numel() * p.element_size() for p in model.parameters())
    head_dim = c.hidden_size // c.num_attention_heads
    mean_len = args.prompt_len + args.gen / 2
    kv = c.num_hidden_layers * 2 * c.num_key_value_heads * head_dim * 2 * args.batch * mean_len
    return (weights + kv) / bandwidth * 1e3


# ---- the methods ----------------------------------------------------------------------------------------------


def hf_generate(model, prompts, gen: int, static: bool):
    from transformers import GenerationConfig

    config = GenerationConfig(do_sample=True, temperature=1.0, top_k=0, top_p=1.0, max_new_tokens=gen,
                              min_new_tokens=gen, pad_token_id=0, eos_token_id=None,
                              cache_implementation="static" if static else None)
    ids = torch.tensor(prompts, device=DEVICE)
    with torch.inference_mode():
        return model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), generation_config=config)


def run_hf(model, prompts, args, static: bool) -> dict:
    rec = {}
    if static:  # the first call compiles (and captures transformers' own CUDA graphs)
        rec["setup_s"], _ = timed(lambda: hf_generate(model, prompts, args.gen, True))
    else:
        timed(lambda: hf_generate(model, prompts[:8], 4, False))  # warm-up
        rec["prefill_s"], _ = timed(lambda: hf_generate(model, prompts, 1, False))
    reset_peak()
    rec["wall_s"], out = timed(lambda: hf_generate(model, prompts, args.gen, static))
    assert out.shape[1] == args.prompt_len + args.gen, out.shape
    return rec


def make_fast(model, args, **opts) -> FastGenerator:
    spec = EngineSpec(model_path="<in memory>", device=DEVICE, dtype="bfloat16", eos_token_ids=[1], pad_token_id=0,
                      max_model_len=args.prompt_len + args.gen, max_num_seqs=args.batch, gpu_memory_utilization=0.6,
                      enforce_eager=opts.pop("enforce_eager", False))
    return FastGenerator(model, spec, FastOptions(mode="on", **opts))


def run_fast(model, prompts, args, **opts) -> dict:
    gen = make_fast(model, args, **opts)
    sampled = SamplingParams(max_new_tokens=args.gen, ignore_eos=True, seed=0)
    limits = [args.gen] * len(prompts)
    rec = {}
    rec["setup_s"], _ = timed(lambda: gen.generate(prompts, limits, sampled))  # allocation, compile, capture
    rec["capture_s"], rec["captures"] = gen.stats["capture_seconds"], gen.stats["captures"]
    if "graph_error" in gen.stats:
        rec["graph_error"] = gen.stats["graph_error"]
    rec["prefill_s"], _ = timed(lambda: gen.generate(prompts, [1] * len(prompts), sampled))
    reset_peak()
    rec["wall_s"], out = timed(lambda: gen.generate(prompts, limits, sampled))
    assert all(len(c.token_ids) == args.gen for c in out)
    rec["cache_shape"] = list(gen.cache_shape)
    rec["peak_gib"] = peak_gib()
    rec.update(check_against_transformers(model, gen, prompts, args, out))
    return rec


@torch.inference_mode()
def check_against_transformers(model, gen: FastGenerator, prompts, args, sampled) -> dict:
    """Greedy first-token agreement with model.generate (8 prompts) and |Δ log-prob| of 4 sampled completions."""
    few = prompts[:8]
    ours = gen.generate(few, [8] * len(few), SamplingParams(max_new_tokens=8, do_sample=False, ignore_eos=True))
    ids = torch.tensor(few, device=DEVICE)
    theirs = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), do_sample=False, max_new_tokens=8,
                            min_new_tokens=8, pad_token_id=0, top_k=None, top_p=None, temperature=None)
    theirs = theirs[:, len(few[0]):].tolist()
    prefix = [next((i for i, (a, b) in enumerate(zip(o.token_ids, t)) if a != b), 8) for o, t in zip(ours, theirs)]
    diffs = []
    for prompt, c in zip(prompts[:4], sampled[:4]):
        full = torch.tensor([prompt + c.token_ids], device=DEVICE)
        logits = model(full).logits[0, len(prompt) - 1:-1].float()  # (G, V)
        ref = torch.log_softmax(logits, -1).gather(-1, torch.tensor(c.token_ids, device=DEVICE)[:, None])[:, 0]
        diffs.append((torch.tensor(c.logprobs, device=DEVICE) - ref).abs())
    diffs = torch.cat(diffs)
    return {"greedy_first_token_agree": sum(p > 0 for p in prefix) / len(prefix),
            "greedy_mean_common_prefix": sum(prefix) / len(prefix),
            "logprob_mean_abs_diff": float(diffs.mean()), "logprob_max_abs_diff": float(diffs.max())}


def measure(shape: str, method: str, model, args, bandwidth) -> dict:
    gen_rng = torch.Generator().manual_seed(1)
    prompts = torch.randint(2, model.config.vocab_size, (args.batch, args.prompt_len), generator=gen_rng).tolist()
    if method.startswith("hf-"):
        rec = run_hf(model, prompts, args, static=method == "hf-static")
        rec["peak_gib"] = peak_gib()
    else:
        opts = {"fast-compile": dict(compile=True), "fast-eager": dict(enforce_eager=True),
                "fast-torch": dict(kernels=False)}.get(method, {})
        rec = run_fast(model, prompts, args, **opts)
    tokens = args.batch * args.gen
    rec["tokens_per_s"] = tokens / rec["wall_s"]
    if "prefill_s" in rec:
        rec["ms_per_step"] = (rec["wall_s"] - rec["prefill_s"]) / max(1, args.gen - 1) * 1e3
    else:
        rec["ms_per_step"] = rec["wall_s"] / args.gen * 1e3
    floor = floor_ms(model, args, bandwidth)
    if floor is not None:
        rec["floor_ms"] = floor
        rec["floor_fraction"] = floor / rec["ms_per_step"]
    return rec


# ---- driver ---------------------------------------------------------------------------------------------------


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="smoke run: 2 layers, B=16, P=16, G=16")
    parser.add_argument("--batch", type=int, help="prompts (default 256, --quick 16)")
    parser.add_argument("--prompt-len", type=int, help="prompt tokens (default 128, --quick 16)")
    parser.add_argument("--gen", type=int, help="sampled tokens per prompt (default 256, --quick 16)")
    parser.add_argument("--layers", type=int, help="override the shapes' layer count (default: real, --quick 2)")
    parser.add_argument("--budget", type=float, default=330.0, help="skip measurements once this many s are spent")
    parser.add_argument("--only", default="", help="comma-separated methods to run (default: all)")
    parser.add_argument("--device", default="cuda", help="cpu runs the script's logic without a GPU (slow)")
    args = parser.parse_args(argv)
    global DEVICE
    DEVICE = args.device
    for key, full, quick in (("batch", 256, 16), ("prompt_len", 128, 16), ("gen", 256, 16), ("layers", None, 2)):
        if getattr(args, key) is None:
            setattr(args, key, quick if args.quick else full)
    layers = args.layers
    path = os.path.join(results_dir(args.quick or DEVICE != "cuda"), "rollout_gpu.json")
    torch.backends.cuda.enable_cudnn_sdp(False)  # cuDNN SDPA re-plans on every new shape (see strive/engines/hf.py)
    name = torch.cuda.get_device_name() if DEVICE == "cuda" else DEVICE
    bandwidth = card_bandwidth(name)
    result = {"device": name, "bandwidth_Bps": bandwidth, "torch": torch.__version__, "args": vars(args),
              "layers_override": layers, "runs": []}
    import transformers

    result["transformers"] = transformers.__version__
    start, models = time.perf_counter(), {}
    only = set(filter(None, args.only.split(",")))
    for shape, method in ORDER:
        if only and method not in only:
            continue
        rec = {"shape": shape, "method": method}
        if time.perf_counter() - start > args.budget:
            rec["skipped"] = f"time budget of {args.budget:.0f} s spent"
        else:
            try:
                if shape not in models:
                    models[shape] = build_model(shape, layers)
                with torch.nn.attention.sdpa_kernel(SDPA_BACKENDS):
                    rec.update(measure(shape, method, models[shape], args, bandwidth))
            except Exception as exc:  # one failure must not lose the other measurements
                rec["error"] = f"{type(exc).__name__}: {exc}"
                rec["traceback"] = traceback.format_exc()[-3000:]
                print(rec["traceback"], file=sys.stderr)
            gc.collect()
            if DEVICE == "cuda":
                torch.cuda.empty_cache()
        rec["elapsed_s"] = time.perf_counter() - start
        result["runs"].append(rec)
        with open(path, "w") as fh:
            json.dump(result, fh, indent=1)
        print(f"[{rec['elapsed_s']:6.1f} s] {shape} {method}: " + (rec.get("error") or rec.get("skipped") or
              f"{rec['tokens_per_s']:,.0f} tok/s"), flush=True)
    print_table(result)
    print(f"wrote {path}")
    return 0


def print_table(result: dict) -> None:
    print(f"\n{result['device']}, torch {result['torch']}, transformers {result['transformers']}, "
          f"B={result['args']['batch']} P={result['args']['prompt_len']} G={result['args']['gen']}")
    head = (f"{'shape':14} {'method':13} {'tokens/s':>10} {'ms/step':>8} {'floor':>6} {'peak GiB':>8} "
            f"{'setup s':>8}  note")
    print(head)
    print("-" * len(head))
    for r in result["runs"]:
        if "tokens_per_s" not in r:
            print(f"{r['shape']:14} {r['method']:13} {(r.get('error') or r.get('skipped', ''))[:80]}")
            continue
        floor = f"{r['floor_fraction']:.2f}" if "floor_fraction" in r else "-"
        setup = f"{r['setup_s']:.1f}" if "setup_s" in r else "-"
        note = ""
        if "greedy_first_token_agree" in r:
            note = (f"greedy 1st-token agree {r['greedy_first_token_agree']:.2f}, "
                    f"|Δlogprob| mean {r['logprob_mean_abs_diff']:.3f} max {r['logprob_max_abs_diff']:.3f}")
        if "graph_error" in r:
            note = f"NO CUDA GRAPHS ({r['graph_error'][:60]}) " + note
        print(f"{r['shape']:14} {r['method']:13} {r['tokens_per_s']:>10,.0f} {r['ms_per_step']:>8.2f} {floor:>6} "
              f"{r['peak_gib']:>8.2f} {setup:>8}  {note}")


if __name__ == "__main__":
    raise SystemExit(main())
