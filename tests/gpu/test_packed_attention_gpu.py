"""Packed attention on CUDA: torch's varlen flash kernel (and SDPA per sequence) against the padded forward, bf16."""

import pytest
import torch

from strive.models.attention import resolve_backend
from strive.models.forward import PolicyForward
from strive.models.loading import load_causal_lm
from tests.unit.test_attention import varied_batch

pytestmark = pytest.mark.gpu


@pytest.mark.parametrize("backend", ["varlen", "sdpa_loop"])
def test_packed_equals_padded_on_cuda(tiny_qwen_dir, backend):
    device = torch.device("cuda")
    assert resolve_backend("auto", device, torch.bfloat16) in ("varlen", "flash_attn")
    batch = [x.to(device) for x in varied_batch(260, [12, 3, 7, 1, 9], [8, 2, 0, 5, 8])]
    results = []
    for packed in (None, backend):
        model = load_causal_lm(tiny_qwen_dir, dtype="bfloat16", device=device)
        logp, _ = PolicyForward(model, packed_backend=packed)(*batch)
        logp.sum().backward()
        results.append((logp.detach().float(), model.lm_head.weight.grad.float()))
    (lp0, g0), (lp1, g1) = results
    torch.testing.assert_close(lp1, lp0, atol=2e-2, rtol=2e-2)
    torch.testing.assert_close(g1, g0, atol=2e-2, rtol=5e-2)


@pytest.mark.parametrize("packed", [None, "varlen"])
def test_compiled_layers_under_checkpointing_equal_eager(tiny_qwen_dir, packed):
    """use_torch_compile's in-place layer compile, recomputed under activation checkpointing: same log-probs and
    gradients as eager (bf16 tolerance), and the layers really run compiled."""
    from torch._dynamo.utils import counters

    from strive.models.forward import decoder_layers, enable_activation_checkpointing
    from strive.workers.fsdp import compile_in_place

    device = torch.device("cuda")
    batch = [x.to(device) for x in varied_batch(260, [12, 3, 7, 1, 9], [8, 2, 0, 5, 8])]
    results = []
    counters.clear()
    for compiled in (False, True):
        model = load_causal_lm(tiny_qwen_dir, dtype="bfloat16", device=device)
        enable_activation_checkpointing(model)
        wrapper = PolicyForward(model, packed_backend=packed).train()
        if compiled:
            compile_in_place(decoder_layers(model))
        logp, _ = wrapper(*batch)
        logp.sum().backward()
        results.append((logp.detach().float(), model.model.layers[0].mlp.up_proj.weight.grad.float()))
    (lp0, g0), (lp1, g1) = results
    assert counters["stats"]["unique_graphs"] >= 1 and counters["aot_autograd"]["ok"] >= 1
    torch.testing.assert_close(lp1, lp0, atol=2e-2, rtol=2e-2)
    torch.testing.assert_close(g1, g0, atol=2e-2, rtol=5e-2)
