"""The compiled-layer settings CUDA runs by default (fsdp_config.compile_cpp_wrapper), exercised on the CPU where
Inductor compiles C++ too: each decoder layer compiled in place with the C++ wrapper and checkpointed keeping its
attention outputs gives the eager, un-checkpointed gradients and runs no RNG-state operators. With the plain
checkpoint the recomputed attention would be wrapped in those operators, which the C++ wrapper cannot lower, so
this compile would fail. ~30 s on 2 cores."""

import torch
import torch._prims.rng_prims as rng_prims

from strive.models.forward import decoder_layers, enable_activation_checkpointing
from strive.models.loading import load_causal_lm
from strive.workers.fsdp import compile_in_place


def _gradients(model, ids) -> dict:
    model.zero_grad()
    model(input_ids=ids, use_cache=False).logits.float().pow(2).mean().backward()
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


def test_cpp_wrapper_with_attention_keeping_checkpoint_matches_eager(tiny_qwen_dir, monkeypatch):
    calls = []
    for name in ("run_and_save_rng_state", "run_with_rng_state"):
        hop = getattr(rng_prims, name)
        call = type(hop).__call__
        monkeypatch.setattr(type(hop), "__call__", lambda self, *a, _call=call, **k: calls.append(self) or _call(
            self, *a, **k))
    ids = torch.randint(0, 200, (2, 24), generator=torch.Generator().manual_seed(0))
    torch.manual_seed(0)
    reference = _gradients(load_causal_lm(tiny_qwen_dir, dtype="float32").train(), ids)

    torch._dynamo.reset()
    model = load_causal_lm(tiny_qwen_dir, dtype="float32").train()
    enable_activation_checkpointing(model, keep_attention=True)
    compile_in_place(decoder_layers(model), cpp_wrapper=True)
    assert all(layer._compiled_call_impl is not None for layer in decoder_layers(model))
    _gradients(model, ids)  # compiles forward and backward
    grads = _gradients(model, ids)
    torch._dynamo.reset()
    assert calls == []
    assert grads.keys() == reference.keys() and len(grads) > 0
    for name in reference:
        torch.testing.assert_close(grads[name], reference[name], atol=1e-6, rtol=1e-4, msg=name)
