"""Saving and loading one rank's share of a trained role, in verl's checkpoint layout.

    <dir>/model_world_size_W_rank_R.pt        this rank's parameter shards (plain tensors, HF names)
    <dir>/optim_world_size_W_rank_R.pt        this rank's optimizer state shards
    <dir>/extra_state_world_size_W_rank_R.pt  LR scheduler and RNG states
    <dir>/fsdp_config.json                    {"FSDP_version": 2, "world_size": W, "shard_dim": 0}
    <dir>/huggingface/                        config, generation config, tokenizer (rank 0)

Shards are FSDP2's: dim-0 chunks in rank order, so `strive merge` rebuilds a full tensor by concatenation. Under
LoRA the model shards hold the adapter only (and <dir>/lora_adapter/ its PEFT config): the frozen base is model.path.
Resuming needs the same world size; the error says so.
"""

from __future__ import annotations

import json
import os
import random

import numpy as np
import torch
from torch import nn

from strive.models.forward import hf_state_name


def _local(t: torch.Tensor) -> torch.Tensor:
    return (t.to_local() if hasattr(t, "to_local") else t).detach().cpu().clone()


def saved_parameters(module: nn.Module) -> list[tuple[str, torch.Tensor]]:
    """The parameters a checkpoint holds: all of them, or under LoRA (frozen base weights present) only the
    trainable adapter, since the frozen base is read again from model.path."""
    params = list(module.named_parameters())
    trainable = [(n, p) for n, p in params if p.requires_grad]
    return trainable if len(trainable) < len(params) else params


def _files(path: str, world: int, rank: int) -> dict[str, str]:
    tag = f"world_size_{world}_rank_{rank}.pt"
    return {k: os.path.join(path, f"{k}_{tag}") for k in ("model", "optim", "extra_state")}


def rng_state() -> dict:
    state = {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state()
    return state


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"])


def save_shards(path: str, module: nn.Module, optimizer, scheduler, rank: int, world: int, contents) -> None:
    os.makedirs(path, exist_ok=True)
    files = _files(path, world, rank)
    if "model" in contents:
        torch.save({hf_state_name(n): _local(p) for n, p in saved_parameters(module)}, files["model"])
    if "optimizer" in contents and optimizer is not None:
        sd = optimizer.state_dict()
        state = {i: {k: _local(v) if isinstance(v, torch.Tensor) else v for k, v in s.items()}
                 for i, s in sd["state"].items()}
        torch.save({"state": state, "param_groups": sd["param_groups"]}, files["optim"])
    if "extra" in contents:
        torch.save({"lr_scheduler": scheduler.state_dict() if scheduler else None, "rng": rng_state()},
                   files["extra_state"])
    if rank == 0:
        with open(os.path.join(path, "fsdp_config.json"), "w") as fh:
            json.dump({"FSDP_version": 2, "world_size": world, "shard_dim": 0}, fh)


def load_shards(path: str, module: nn.Module, optimizer, scheduler, rank: int, world: int, contents) -> None:
    meta_path = os.path.join(path, "fsdp_config.json")
    if os.path.exists(meta_path):
        with open(meta_path) as fh:
            saved_world = json.load(fh)["world_size"]
        if saved_world != world:
            raise RuntimeError(f"checkpoint {path} was written by {saved_world} ranks; this run has {world}. Resume "
                               "with the same trainer.n_gpus_per_node × trainer.nnodes, or `strive merge` it and "
                               "start from the merged model")
    files = _files(path, world, rank)
    configured = [g.get("initial_lr", g["lr"]) for g in optimizer.param_groups] if optimizer is not None else []
    if "model" in contents:
        saved = torch.load(files["model"], map_location="cpu", weights_only=True)
        with torch.no_grad():
            for name, param in saved_parameters(module):
                if hf_state_name(name) not in saved:
                    raise RuntimeError(f"{files['model']} lacks {hf_state_name(name)}: was it written with "
                                       "another actor_rollout_ref.model.lora_rank / target_modules?")
                local = param.to_local() if hasattr(param, "to_local") else param.data
                local.copy_(saved[hf_state_name(name)])
    if "optimizer" in contents and optimizer is not None and os.path.exists(files["optim"]):
        _load_optimizer(optimizer, torch.load(files["optim"], map_location="cpu", weights_only=False))
    if "extra" in contents and os.path.exists(files["extra_state"]):
        extra = torch.load(files["extra_state"], map_location="cpu", weights_only=False)
        if scheduler is not None and extra.get("lr_scheduler") is not None:
            scheduler.load_state_dict(extra["lr_scheduler"])
        set_rng_state(extra["rng"])
    if optimizer is not None and scheduler is not None:
        keep_configured_lr(optimizer, scheduler, configured, path if rank == 0 else None)


def keep_configured_lr(optimizer, scheduler, configured: list[float], path: str | None) -> None:
    """A resumed run trains at the `optim.lr` of its own config, not the checkpoint's: the saved optimizer and
    scheduler bring back the lr they were built with, so a changed lr would otherwise be silently ignored. The
    scheduler's position (warm-up, decay) is kept."""
    saved = [g.get("initial_lr", g["lr"]) for g in optimizer.param_groups]  # what the loaded state brought back
    if saved == configured and list(scheduler.base_lrs) == configured:
        return
    scheduler.base_lrs = list(configured)
    for i, group in enumerate(optimizer.param_groups):
        group["initial_lr"] = configured[i]
        group["lr"] = configured[i] * scheduler.lr_lambdas[i](scheduler.last_epoch)
    scheduler._last_lr = [g["lr"] for g in optimizer.param_groups]
    if path is not None:
        print(f"[strive] {path}: the checkpoint was trained at optim.lr={saved[0]:g}; this run's config says "
              f"{configured[0]:g}, which is used from here on", flush=True)


def _load_optimizer(optimizer, saved: dict) -> None:
    from torch.distributed.tensor import DTensor

    params = [p for group in optimizer.param_groups for p in group["params"]]
    for index, state in saved["state"].items():
        param = params[int(index)]
        restored = {}
        for key, value in state.items():
            if isinstance(value, torch.Tensor) and isinstance(param, DTensor) and value.dim() > 0:
                value = DTensor.from_local(value.to(param.device), param.device_mesh, param.placements,
                                           shape=param.shape, stride=param.stride())
            elif isinstance(value, torch.Tensor) and value.dim() > 0:
                value = value.to(param.device)
            restored[key] = value
        optimizer.state[param] = restored
    for group, saved_group in zip(optimizer.param_groups, saved["param_groups"]):
        group.update({k: v for k, v in saved_group.items() if k != "params"})
