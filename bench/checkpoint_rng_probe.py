"""Why a compiled, checkpointed decoder layer runs RNG-state operators at dropout 0, on the CPU.

torch tags SDPA's ops `nondeterministic_seeded`. When activation checkpointing recomputes such an op inside a
compiled region, AOTAutograd's partitioner wraps it in `run_and_save_rng_state` (forward) and
`run_with_rng_state` (recompute), whatever the dropout. bench/README.md's host profile at micro-batches of 4 on an
H100 counted 768 such calls per update. This script builds a tiny Qwen2 model, checkpoints its layers as strive does
(strive.models.forward.enable_activation_checkpointing), compiles them (strive.workers.fsdp.compile_in_place), and
counts those operators over one forward and backward: with the plain checkpoint and with the selective one that keeps
the attention op's outputs (`enable_activation_checkpointing(keep_attention=True)`), each with Inductor's Python and
C++ wrappers (`compile_in_place(cpp_wrapper=...)`; fsdp_config.compile_cpp_wrapper=True, opt-in on CUDA, is both on).
It also checks each against the eager, un-checkpointed gradients.

    python bench/checkpoint_rng_probe.py        # ~30 s on 2 cores; writes bench/results/checkpoint_rng_probe.json
"""

from __future__ import annotations

import json
import os
import tempfile

import torch
import torch._prims.rng_prims as rng_prims

from strive.models import forward as forward_module
from strive.models.tiny import make_tiny_model
from strive.workers.fsdp import compile_in_place

COUNTS = {"run_and_save_rng_state": 0, "run_with_rng_state": 0}


def count_rng_operators() -> None:
    for name in COUNTS:
        hop = getattr(rng_prims, name)
        call = type(hop).__call__

        def counted(self, *args, _call=call, _hop=hop, _name=name, **kwargs):
            if self is _hop:
                COUNTS[_name] += 1
            return _call(self, *args, **kwargs)

        type(hop).__call__ = counted


def gradients(model, ids) -> list[torch.Tensor]:
    model.zero_grad()
    model(input_ids=ids, use_cache=False).logits.float().pow(2).mean().backward()
    return [p.grad.clone() for p in model.parameters()]


def variant(model_dir: str, ids, keep_attention: bool, cpp_wrapper: bool, reference) -> dict:
    from transformers import AutoModelForCausalLM

    torch._dynamo.reset()  # dynamo would reuse the previous variant's graphs: the layer's code is the same
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).train()
    forward_module.enable_activation_checkpointing(model, keep_attention=keep_attention)
    compile_in_place(forward_module.decoder_layers(model), cpp_wrapper=cpp_wrapper)
    try:
        gradients(model, ids)  # compiles
    except Exception as exc:  # the C++ wrapper cannot lower the RNG-state operators
        return {"error": f"{type(exc).__name__}: {str(exc)[:200]}"}
    for name in COUNTS:
        COUNTS[name] = 0
    grads = gradients(model, ids)
    diff = max((g - r).abs().max().item() for g, r in zip(grads, reference))
    return {**COUNTS, "layers": len(forward_module.decoder_layers(model)), "max_grad_diff_vs_eager": diff}


def main() -> int:
    from transformers import AutoModelForCausalLM

    model_dir = make_tiny_model(tempfile.mkdtemp(), arch="qwen2")
    ids = torch.randint(0, 200, (2, 24), generator=torch.Generator().manual_seed(0))
    torch.manual_seed(0)
    eager = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).train()
    reference = gradients(eager, ids)
    count_rng_operators()
    results = {"plain checkpoint": variant(model_dir, ids, False, False, reference),
               "checkpoint keeps attention outputs": variant(model_dir, ids, True, False, reference),
               "plain checkpoint, C++ wrapper": variant(model_dir, ids, False, True, reference),
               "checkpoint keeps attention outputs, C++ wrapper (compile_cpp_wrapper=True)": variant(
                   model_dir, ids, True, True, reference)}
    for name, row in results.items():
        print(f"{name}: {row}")
    out = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results", "checkpoint_rng_probe.json")
    with open(out, "w") as fh:
        json.dump({"torch": torch.__version__, "device": "cpu", "note": "per forward+backward of the tiny model",
                   "variants": results}, fh, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
