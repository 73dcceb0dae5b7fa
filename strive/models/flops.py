"""Model FLOPs of a training or forward pass, and the card's peak, for `perf/mfu/*` (verl's metric names).

Counted from the model's config, for the real tokens only (padding is not useful work), per sequence of length s:

    linear layers:  2 · P_layers · s              P_layers = per-layer q, k, v, o and MLP weights × layers
    attention:      2 · 2 · layers · heads · head_dim · s²   (Q·Kᵀ and A·V over the whole square, as verl counts it)
    head:           2 · hidden · out · r          r = the tokens the head is applied to (strive's forward applies
                                                   the LM head to response tokens only; the critic's head has out = 1)

A forward is that; forward + backward is three times that (verl's 6·N rule). Gradient-checkpoint recomputation is
not counted: MFU is useful work over time, so recomputation shows up as lower MFU, which is what it costs.

    pytest tests/unit/test_flops.py -q
"""

from __future__ import annotations

from typing import Optional

import torch

# dense bf16 tensor-core peaks, TFLOP/s, by a substring of torch.cuda.get_device_name()
PEAK_BF16_TFLOPS = (("H200", 989.0), ("H100", 989.0), ("H800", 989.0), ("H20", 148.0), ("A100", 312.0),
                    ("A800", 312.0), ("L40S", 362.0), ("B200", 2250.0))


def layer_params(config) -> int:
    """Weights of the decoder layers' matrices (q, k, v, o, gate, up, down) summed over layers."""
    hidden = config.hidden_size
    heads = config.num_attention_heads
    head_dim = getattr(config, "head_dim", None) or hidden // heads
    kv_heads = getattr(config, "num_key_value_heads", None) or heads
    attn = hidden * head_dim * (2 * heads + 2 * kv_heads)  # q and o: heads; k and v: kv_heads
    mlp = 3 * hidden * config.intermediate_size
    return config.num_hidden_layers * (attn + mlp)


def forward_flops(config, seq_lens: torch.Tensor, head_tokens: int, head_out: Optional[int] = None) -> float:
    """FLOPs of one forward over sequences of the given (B,) real lengths; the head over `head_tokens` tokens with
    `head_out` outputs (None: the vocabulary)."""
    lens = seq_lens.double()
    heads = config.num_attention_heads
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // heads
    linear = 2.0 * layer_params(config) * float(lens.sum())
    attention = 4.0 * config.num_hidden_layers * heads * head_dim * float(lens.square().sum())
    out = config.vocab_size if head_out is None else head_out
    return linear + attention + 2.0 * config.hidden_size * out * head_tokens


def peak_tflops(device: torch.device) -> Optional[float]:
    """The card's dense bf16 peak, or None where it is not known (the CPU, unlisted cards): no MFU then."""
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    return next((peak for key, peak in PEAK_BF16_TFLOPS if key in name), None)


def mfu(flops: float, seconds: float, device: torch.device) -> dict[str, float]:
    """{'tflops': achieved, 'mfu': achieved / peak} (mfu only where the peak is known)."""
    achieved = flops / max(seconds, 1e-9) / 1e12
    peak = peak_tflops(device)
    return {"tflops": achieved, **({"mfu": achieved / peak} if peak else {})}
