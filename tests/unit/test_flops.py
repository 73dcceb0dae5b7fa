"""Model FLOPs for perf/mfu/*: the formula against a count by hand, and against the parameters of a real model."""

import torch

from strive.models.flops import forward_flops, layer_params, mfu, peak_tflops


class Cfg:
    hidden_size, num_attention_heads, num_key_value_heads, head_dim = 64, 4, 2, 16
    intermediate_size, num_hidden_layers, vocab_size = 128, 3, 1000


def test_forward_flops_by_hand():
    c = Cfg()
    per_layer = 64 * 16 * (2 * 4 + 2 * 2) + 3 * 64 * 128  # q,o: 4 heads; k,v: 2 heads; gate, up, down
    assert layer_params(c) == 3 * per_layer
    lens = torch.tensor([10, 5])
    expected = 2 * 3 * per_layer * 15 + 4 * 3 * 4 * 16 * (100 + 25) + 2 * 64 * 1000 * 7
    assert forward_flops(c, lens, head_tokens=7) == expected
    assert forward_flops(c, lens, head_tokens=7, head_out=1) == expected - 2 * 64 * 999 * 7


def test_layer_params_match_a_real_model(tiny_qwen_dir):
    from strive.models.loading import load_causal_lm

    model = load_causal_lm(tiny_qwen_dir)
    weights = sum(p.numel() for n, p in model.named_parameters() if ".layers." in n and n.endswith("proj.weight"))
    assert layer_params(model.config) == weights


def test_mfu_only_where_the_peak_is_known():
    out = mfu(2e12, 2.0, torch.device("cpu"))
    assert out == {"tflops": 1.0} and peak_tflops(torch.device("cpu")) is None
