"""LoRA on the actor through PEFT: wrapping the plain HF model, the merged weights the engine gets, and saving.

`actor_rollout_ref.model.lora_rank > 0` wraps the loaded causal LM with PEFT (`get_peft_model`, or
`PeftModel.from_pretrained` for `lora_adapter_path`) *before* FSDP2 shards it: the LoRA layers are injected in
place, so the decoder layers stay the FSDP units and the parameter names only gain `.base_layer` / `.lora_A.default`
/ `.lora_B.default`. Base weights are frozen; only the adapter trains and sits in the optimizer.

- Reference policy: the same model with its adapter switched off (`adapter_disabled`, PEFT's per-layer switch;
  strive/workers/ref.py: AdapterOffReference), so no second copy of the base weights is loaded.
- Weight sync: `merged_parameters` yields every weight under its original HF name, a LoRA layer's weight as
  W + scaling·B·A computed on the gathered tensors; the trained model is never merged in place. Every engine takes
  these through its ordinary `update_weights`.
- Checkpoints keep the adapter only (the frozen base comes from model.path) and its PEFT config in
  `lora_adapter/adapter_config.json`, which `strive merge` reads.

peft is an optional dependency (`pip install 'strive[lora]'`), imported only when LoRA is on.
Exercised by: pytest tests/integration/test_lora.py
"""

from __future__ import annotations

import contextlib
import os
from typing import Any, Iterator

import torch
from torch import nn

from strive.models.forward import hf_state_name

ADAPTER_DIR = "lora_adapter"  # inside a role's checkpoint directory: the PEFT adapter config


def import_peft():
    """The peft module, or an ImportError that says how to install it."""
    try:
        import peft
    except ImportError as exc:
        raise ImportError("actor_rollout_ref.model.lora_rank > 0 needs the peft package: pip install 'strive[lora]' "
                          f"(or pip install peft) ({exc})") from exc
    return peft


def _modules(value) -> Any:
    """target_modules / exclude_modules as PEFT takes them: 'all-linear', a regex string, or a list of names."""
    if value is None or isinstance(value, str):
        return value
    return [str(v) for v in value]


def lora_config(model_cfg) -> Any:
    """A peft.LoraConfig from actor_rollout_ref.model's lora_rank, lora_alpha, target_modules, exclude_modules."""
    peft = import_peft()
    return peft.LoraConfig(r=int(model_cfg.lora_rank), lora_alpha=int(model_cfg.lora_alpha),
                           target_modules=_modules(model_cfg.target_modules),
                           exclude_modules=_modules(model_cfg.exclude_modules), lora_dropout=0.0, bias="none",
                           task_type="CAUSAL_LM")


def apply_lora(hf: nn.Module, model_cfg, base_path: str) -> Any:
    """Inject LoRA layers into `hf` in place and return the PeftModel around it (`hf` keeps its own forward and
    names; the PeftModel gives disable_adapter and the config). Only adapter parameters require grad."""
    peft = import_peft()
    if model_cfg.lora_adapter_path:
        path = os.path.abspath(os.path.expanduser(model_cfg.lora_adapter_path))
        if not os.path.isfile(os.path.join(path, "adapter_config.json")):
            raise FileNotFoundError(f"actor_rollout_ref.model.lora_adapter_path={model_cfg.lora_adapter_path}: no "
                                    "adapter_config.json there (expected a directory saved by PEFT's save_pretrained "
                                    "or `strive merge --lora adapter`)")
        wrapped = peft.PeftModel.from_pretrained(hf, path, is_trainable=True)
    else:
        wrapped = peft.get_peft_model(hf, lora_config(model_cfg))
    wrapped.peft_config["default"].base_model_name_or_path = base_path
    layers = lora_layers(hf)
    if not layers:
        raise ValueError(f"actor_rollout_ref.model.target_modules={model_cfg.target_modules} matched no module of "
                         f"{type(hf).__name__}")
    odd = [n for n, m in layers.items() if not isinstance(m.get_base_layer(), nn.Linear)]
    if odd:
        raise ValueError(f"actor_rollout_ref.model.target_modules: strive's LoRA adapts linear layers only; "
                         f"{odd[0]} is a {type(layers[odd[0]].get_base_layer()).__name__}")
    _refuse_tied(hf, layers)
    return wrapped


def _refuse_tied(hf: nn.Module, layers: dict[str, nn.Module]) -> None:
    """An adapted weight shared with another module (lm_head tied to the input embeddings) cannot be sent merged
    under both names: the engine would keep one of them unmerged."""
    seen: dict[int, int] = {}
    for _, p in hf.named_parameters(remove_duplicate=False):
        seen[id(p)] = seen.get(id(p), 0) + 1
    tied = [n for n, m in layers.items() if seen.get(id(m.get_base_layer().weight), 0) > 1]
    if tied:
        raise ValueError(f"actor_rollout_ref.model.target_modules: {tied[0]} shares its weight with another module "
                         "(tie_word_embeddings); strive's LoRA cannot adapt a tied weight. Leave it out of "
                         "target_modules (all-linear already does) or add it to exclude_modules")


def lora_layers(module: nn.Module) -> dict[str, nn.Module]:
    """Name → PEFT LoRA layer, for every LoRA layer inside `module`."""
    from peft.tuners.lora import LoraLayer

    return {name: m for name, m in module.named_modules() if isinstance(m, LoraLayer)}


@contextlib.contextmanager
def adapter_disabled(module: nn.Module):
    """The model without its adapter (the base policy) inside the block: each LoRA layer's forward skips its
    adapter, as under PEFT's `disable_adapter()`.

    PEFT's own context also sets requires_grad=False on the adapter weights and back to True after. Under FSDP2
    that breaks training: FSDP2 creates a layer's unsharded parameters at its first all-gather with the
    requires_grad the sharded ones have then, and swaps the two objects in and out of the module, so after a
    reference pass that ran first the toggle back reaches only one of them and the adapter stops learning
    (tests/integration/test_lora.py runs the reference first for this reason). Here only PEFT's per-layer
    switch, the one its forward reads, is flipped."""
    layers = list(lora_layers(module).values())
    if any(not hasattr(layer, "_disable_adapters") for layer in layers):
        raise RuntimeError("this peft version has no per-layer _disable_adapters switch; strive's LoRA reference "
                           "needs peft>=0.13")
    was = [layer._disable_adapters for layer in layers]
    for layer in layers:
        layer._disable_adapters = True
    try:
        yield
    finally:
        for layer, before in zip(layers, was):
            layer._disable_adapters = before


def _full(t: torch.Tensor) -> torch.Tensor:
    return (t.full_tensor() if hasattr(t, "full_tensor") else t).detach()


def lora_delta(layer: nn.Module, adapter: str = "default") -> torch.Tensor:
    """scaling · B·A of one LoRA linear layer, in fp32: (out, in). Gathers A and B (a collective under FSDP2)."""
    a = _full(layer.lora_A[adapter].weight).float()  # (r, in)
    b = _full(layer.lora_B[adapter].weight).float()  # (out, r)
    return (b @ a) * layer.scaling[adapter]


def merged_parameters(module: nn.Module) -> Iterator[tuple[str, torch.Tensor]]:
    """(HF name, full tensor) for every weight of the model with each LoRA layer merged (W + scaling·B·A), under
    the names of the model without LoRA. Adapter tensors themselves are not yielded. A collective under FSDP2:
    every rank must iterate it to the end, in the same order."""
    layers = lora_layers(module)
    for name, param in module.named_parameters():
        owner, _, leaf = name.rpartition(".")
        if ".lora_" in name:
            continue  # consumed with its base layer's weight
        if owner.endswith(".base_layer") and owner[: -len(".base_layer")] in layers:
            layer_name = owner[: -len(".base_layer")]
            full = _full(param)
            if leaf == "weight":
                full = (full.float() + lora_delta(layers[layer_name])).to(full.dtype)
            yield hf_state_name(f"{layer_name}.{leaf}"), full
        else:
            yield hf_state_name(name), _full(param)


def save_adapter_config(peft_model, out_dir: str) -> None:
    """The PEFT adapter config (rank, alpha, targets, base model path) beside a checkpoint's adapter shards."""
    peft_model.peft_config["default"].save_pretrained(out_dir)
