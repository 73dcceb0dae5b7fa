"""FSDP2 as a function applied to a plain model, and the offload helpers around it.

Model code never mentions FSDP: `apply_fsdp` shards each decoder layer as its own unit and the wrapper module
as the root (embeddings, final norm and LM head, tied or not, live in the root unit). Mixed precision follows
`fsdp_config`: master weights in `model_dtype`, compute in `dtype`, gradients reduced in fp32.

The same code runs on CPU (gloo) and GPU (NCCL); on CPU the offload helpers are no-ops.
"""

from __future__ import annotations

import contextlib
import gc
from typing import Iterable

import torch
from torch import nn
from torch.distributed.fsdp import CPUOffloadPolicy, FSDPModule, MixedPrecisionPolicy, OffloadPolicy, fully_shard

from strive.config.common import FsdpConfig
from strive.models.forward import enable_activation_checkpointing
from strive.models.loading import torch_dtype


def apply_fsdp(module: nn.Module, layers: Iterable[nn.Module], mesh, fsdp: FsdpConfig,
               compile_layers: bool = False) -> nn.Module:
    """Shard `module` in place: one FSDP unit per layer, then the root. compile_layers: on CUDA, also
    torch.compile each layer (`compile_in_place`)."""
    compute = torch_dtype(fsdp.dtype)
    mp = MixedPrecisionPolicy(param_dtype=compute, reduce_dtype=torch.float32, cast_forward_inputs=True)
    offload = CPUOffloadPolicy() if fsdp.offload_policy else OffloadPolicy()
    kwargs = dict(mesh=mesh, mp_policy=mp, offload_policy=offload)
    layers = list(layers)
    for layer in layers:
        fully_shard(layer, reshard_after_forward=fsdp.reshard_after_forward, **kwargs)
    fully_shard(module, reshard_after_forward=fsdp.reshard_after_forward, **kwargs)
    if compile_layers and mesh.device_type == "cuda":
        compile_in_place(layers, cpp_wrapper=fsdp.compile_cpp_wrapper)
    return module


def accumulation_step(module: nn.Module, last: bool, local: bool) -> None:
    """Before each micro-batch's forward in a mini-batch. local (a world of one, where nothing is sharded): until the
    mini-batch's last micro-batch FSDP2 keeps the unsharded parameters after backward and accumulates the gradients
    unreduced, instead of resharding, "reducing" over one rank and gathering again around every micro-batch; the last
    one reduces and reshards as usual, so the optimizer sees the same gradients. At micro-batches of 4 that per-unit
    work was ~1 s of a 2.5 s actor update on an H100 (bench/update_profile.py)."""
    if local and hasattr(module, "set_requires_gradient_sync"):
        module.set_requires_gradient_sync(last)
        module.set_reshard_after_backward(last)


@contextlib.contextmanager
def forward_only(module: nn.Module):
    """A forward-only pass (old log-probs, reference, values, reward scores): eval mode and no autograd inside; on
    the way out, every unit's gathered weights are freed. Under `reshard_after_forward=False` (one worker's default)
    a no-grad forward leaves each unit's unsharded (compute-dtype) parameters allocated until that unit's next
    backward, which a forward-only role never runs. All roles share one device, so each such copy (1 GB for the 0.5B
    model in bf16) would sit beside every later phase, the other roles' updates included. The next pass gathers
    once per unit again."""
    module.eval()
    try:
        with torch.no_grad():
            yield
    finally:
        for unit in module.modules():
            if isinstance(unit, FSDPModule):
                unit.reshard()


def checkpoint_layers(hf_model: nn.Module, fsdp: FsdpConfig, compile_layers: bool, device: torch.device) -> None:
    """Gradient checkpointing of each decoder layer, in the form the layers' compilation needs: Inductor's C++
    wrapper (`fsdp_config.compile_cpp_wrapper`, compiled layers on CUDA) needs the checkpoint that keeps attention
    outputs; everything else recomputes the whole layer."""
    enable_activation_checkpointing(hf_model, keep_attention=compile_layers and device.type == "cuda"
                                    and fsdp.compile_cpp_wrapper)


def compile_in_place(layers: list[nn.Module], cpp_wrapper: bool = False) -> None:
    """torch.compile each decoder layer in place (`use_torch_compile`, CUDA only): parameter names stay, FSDP2's
    hooks stay eager (dynamo skips them), and activation checkpointing (wrapped around each layer's forward,
    strive.models.forward.enable_activation_checkpointing) is traced into the layer's graphs. Fewer, fused
    kernels: an update at micro-batches of 4 takes 26% less time on an H200 (bench/update_profile.py); the first
    step pays ~10 s of compilation. The CPU is not compiled: on 2 cores it cut a forward and backward's peak memory
    but not reliably its time, and compiling the packed path took minutes (bench/README.md, "Compiled layers on the
    CPU").

    cpp_wrapper (`fsdp_config.compile_cpp_wrapper`): the graphs launch their kernels from generated C++, for these
    layers only (a compile option, not Inductor's global config; it covers the backward graphs too). It needs the
    checkpoint that keeps attention outputs (`enable_activation_checkpointing(keep_attention=True)`)."""
    import torch._dynamo

    # transformers records layer outputs through a context variable; a recomputed forward need not replay that,
    # and without this flag dynamo falls back to eager under activation checkpointing
    torch._dynamo.config.skip_fwd_side_effects_in_bwd_under_checkpoint = True
    options = _cpp_wrapper_options() if cpp_wrapper else None
    for layer in layers:
        layer.compile(options=options)


def _cpp_wrapper_options() -> dict:
    """Inductor options for the C++ wrapper: cpp_wrapper plus the Triton settings it needs (kernel binaries kept
    for the C++ launcher). Inductor adds those itself around the forward's compilation; torch 2.11 does not around
    a backward compiled later, which then fails ("CudaKernelParamCache not populated"), so they are passed here."""
    from torch._inductor import compile_fx

    options = {"cpp_wrapper": True}
    settings = getattr(compile_fx, "get_cpp_wrapper_config", None)
    if settings is not None:
        options.update(settings())
    return options


def offload_params(module: nn.Module) -> None:
    """Move this rank's parameter shards (and gradients) to the CPU."""
    if _on_cpu(module):
        return
    module.to("cpu")
    _free_device_memory()


def reload_params(module: nn.Module, device: torch.device) -> None:
    if device.type == "cpu":
        return
    module.to(device)


def offload_optimizer(optimizer: torch.optim.Optimizer) -> None:
    _move_optimizer_state(optimizer, torch.device("cpu"))
    _free_device_memory()


def reload_optimizer(optimizer: torch.optim.Optimizer, device: torch.device) -> None:
    if device.type != "cpu":
        _move_optimizer_state(optimizer, device)


def _move_optimizer_state(optimizer: torch.optim.Optimizer, device: torch.device) -> None:
    for state in optimizer.state.values():
        for key, value in state.items():
            if isinstance(value, torch.Tensor) and key != "step":
                state[key] = value.to(device, non_blocking=True)


def _on_cpu(module: nn.Module) -> bool:
    first = next(module.parameters(), None)
    return first is None or first.device.type == "cpu"


def _free_device_memory() -> None:
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def reload_role(module: nn.Module, optimizer, fsdp: FsdpConfig, device: torch.device) -> None:
    """Bring back what `offload_role` moved out, before a phase that uses it."""
    if fsdp.param_offload:
        reload_params(module, device)
    if fsdp.optimizer_offload and optimizer is not None:
        reload_optimizer(optimizer, device)


def offload_role(module: nn.Module, optimizer, fsdp: FsdpConfig) -> None:
    """After a phase: parameters and/or optimizer state to the CPU, as fsdp_config asks."""
    if fsdp.param_offload:
        offload_params(module)
    if fsdp.optimizer_offload and optimizer is not None:
        offload_optimizer(optimizer)


def activation_offload(enabled: bool, device: torch.device):
    """`model.enable_activation_offload`: tensors saved for backward go to pinned CPU memory during the training
    forward and come back for backward (torch.autograd.graph.save_on_cpu). On a CPU device they are there already,
    so this is a no-op. Not yet measured on a GPU."""
    if enabled and device.type == "cuda":
        return torch.autograd.graph.save_on_cpu(pin_memory=True)
    return contextlib.nullcontext()

