"""The checkpoint form the workers pick: attention-keeping only where Inductor's C++ wrapper compiles the layers."""

import pytest
import torch

from strive.config.common import FsdpConfig
from strive.workers import fsdp as fsdp_mod


@pytest.mark.parametrize("cpp, compiled, device, keeps", [
    (True, True, "cuda", True),
    (True, True, "cpu", False),  # the CPU is not compiled
    (True, False, "cuda", False),  # use_torch_compile off (or activation offload): eager layers
    (False, True, "cuda", False),
    (False, False, "cpu", False),
])
def test_checkpoint_layers_keeps_attention_only_under_the_cpp_wrapper(monkeypatch, cpp, compiled, device, keeps):
    calls = []
    monkeypatch.setattr(fsdp_mod, "enable_activation_checkpointing",
                        lambda model, keep_attention=False: calls.append((model, keep_attention)))
    model = torch.nn.Linear(2, 2)
    fsdp_mod.checkpoint_layers(model, FsdpConfig(compile_cpp_wrapper=cpp), compiled, torch.device(device))
    assert calls == [(model, keeps)]
