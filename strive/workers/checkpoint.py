"""Saving and loading one rank's share of a trained role, in verl's checkpoint layout.

    <dir>/model_world_size_W_rank_R.pt        this rank's parameter shards (plain tensors, HF names)
    <dir>/optim_world_size_W_rank_R.pt        this rank's optimizer state shards
    <dir>/extra_state_world_size_W_rank_R.pt  LR scheduler and RNG states
    <dir>/fsdp_config.json                    {"FSDP_version": 2, "world_size": W, "shard_dim": 0}
    <dir>/huggingface/                        config, generation config, tokenizer (rank 0)

Shards are FSDP2's: dim-0 chunks in rank order, so `strive merge` rebuilds a full tensor by concatenation. Under
LoRA the model shards hold the adapter only (and <dir>/lora_adapter/ its PEFT config): the frozen base is model.path.
A run with another world size resumes by re-cutting them: every rank reads all the saved shards of the model and the
optimizer state, concatenates each tensor and keeps its own dim-0 piece (so each rank holds one full copy on the
host while loading); the LR scheduler comes from rank 0's file and the RNG state only to ranks that existed.

Every file is read with `torch.load(weights_only=True)`: a checkpoint holds tensors and plain Python values, and
unpickling anything else could run code. The RNG states are stored as tensors and lists for that reason; the
numpy types that checkpoints written before this change carry (numpy's RNG state array) are the only extra types
allowed, and only for the `extra_state` files.
"""

from __future__ import annotations

import json
import os
import random

import numpy as np
import torch
from torch import nn

from strive.models.forward import hf_state_name


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be resumed from: unsafe contents, missing or incomplete files."""


# What numpy's RNG state (np.random.get_state(): a uint32 array) needs to unpickle; old extra_state files hold it.
def _legacy_numpy_globals() -> list:
    import importlib

    reconstruct = importlib.import_module("numpy._core.multiarray")._reconstruct
    # numpy 1.x pickles name it numpy.core.multiarray._reconstruct: the same function
    return [np.dtype, np.ndarray, np.dtypes.UInt32DType, reconstruct,
            (reconstruct, "numpy.core.multiarray._reconstruct")]


def load_file(file: str, legacy_numpy: bool = False):
    """`torch.load(file, weights_only=True)`; a file that needs more than tensors and plain values is refused."""
    import pickle

    try:
        if legacy_numpy:
            with torch.serialization.safe_globals(_legacy_numpy_globals()):
                return torch.load(file, map_location="cpu", weights_only=True)
        return torch.load(file, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        first = str(exc).strip().splitlines()[-1][:300]
        raise CheckpointError(f"{file} holds objects other than tensors and plain Python values, and strive does "
                              f"not unpickle those (a crafted checkpoint could run code when loaded); torch said: "
                              f"{first}. Use a checkpoint strive wrote, or start without it "
                              f"(trainer.resume_mode=disable)") from None


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
    """The RNG states as tensors, strings, ints and lists only, so they load with weights_only=True."""
    name, keys, pos, has_gauss, cached = np.random.get_state(legacy=True)  # type: ignore[misc]
    keys = np.asarray(keys)
    version, internal, gauss = random.getstate()
    state = {"torch": torch.get_rng_state(),
             "numpy": [name, torch.from_numpy(keys.astype(np.int64)), int(pos), int(has_gauss), float(cached)],
             "python": [version, list(internal), gauss]}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state()
    return state


def set_rng_state(state: dict) -> None:
    """Restore what `rng_state` saved, or the tuples with a numpy array that older checkpoints hold."""
    torch.set_rng_state(state["torch"])
    name, keys, pos, has_gauss, cached = state["numpy"]
    keys = keys.numpy() if isinstance(keys, torch.Tensor) else np.asarray(keys)
    np.random.set_state((name, keys.astype(np.uint32), pos, has_gauss, cached))
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
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


def saved_world_size(path: str) -> int | None:
    """The world size a role directory was written with (its fsdp_config.json), or None without one."""
    meta_path = os.path.join(path, "fsdp_config.json")
    if not os.path.exists(meta_path):
        return None
    with open(meta_path) as fh:
        return int(json.load(fh)["world_size"])


def load_shards(path: str, module: nn.Module, optimizer, scheduler, rank: int, world: int, contents) -> None:
    saved_world = saved_world_size(path) or world
    saved = [_files(path, saved_world, r) for r in range(saved_world)]
    own = saved[rank] if rank < saved_world else None  # this rank's files when the world size is unchanged
    configured = [g.get("initial_lr", g["lr"]) for g in optimizer.param_groups] if optimizer is not None else []
    if "model" in contents:
        state = _reshard([load_file(f["model"]) for f in saved], rank, world, path)
        with torch.no_grad():
            for name, param in saved_parameters(module):
                if hf_state_name(name) not in state:
                    raise CheckpointError(f"{path}: the saved model lacks {hf_state_name(name)}: was it written with "
                                          "another actor_rollout_ref.model.lora_rank / target_modules?")
                local = param.to_local() if hasattr(param, "to_local") else param.data
                piece = state[hf_state_name(name)]
                if piece.shape != local.shape:
                    raise CheckpointError(f"{path}: {hf_state_name(name)} has shape {tuple(piece.shape)} on rank "
                                          f"{rank} of {world}; the model here expects {tuple(local.shape)}")
                local.copy_(piece)
    if "optimizer" in contents and optimizer is not None and os.path.exists(saved[0]["optim"]):
        _load_optimizer(optimizer, _reshard_optimizer([load_file(f["optim"]) for f in saved], rank, world, path))
    extra_file = (own or saved[0])["extra_state"]
    if "extra" in contents and os.path.exists(extra_file):
        extra = load_file(extra_file, legacy_numpy=True)
        if scheduler is not None and extra.get("lr_scheduler") is not None:
            scheduler.load_state_dict(extra["lr_scheduler"])
        if own is not None:
            set_rng_state(extra["rng"])
    if optimizer is not None and scheduler is not None:
        keep_configured_lr(optimizer, scheduler, configured, path if rank == 0 else None)


def _piece(full: torch.Tensor, world: int, rank: int) -> torch.Tensor:
    """Rank `rank`'s dim-0 piece of `full` under FSDP2's Shard(0): ceil(n / world) rows each, the last ones short
    or empty (torch.chunk's split)."""
    size = -(-full.shape[0] // world)
    start = min(rank * size, full.shape[0])
    return full[start:min(start + size, full.shape[0])].clone()


def _reshard(shards: list[dict], rank: int, world: int, path: str) -> dict:
    """{name: tensor} of each saved rank → this rank's pieces (the saved rank's own dict when nothing changed)."""
    if len(shards) == world:
        return shards[rank]
    names = shards[0].keys()
    if any(s.keys() != names for s in shards):
        raise CheckpointError(f"{path}: the saved ranks' shards hold different parameter names")
    return {n: _piece(torch.cat([s[n] for s in shards], dim=0), world, rank) for n in names}


def _reshard_optimizer(saved: list[dict], rank: int, world: int, path: str) -> dict:
    """The optimizer state re-cut like the parameters: tensors with a dim 0 are concatenated and split again; scalars
    (the step count) are the same on every rank and come from rank 0."""
    if len(saved) == world:
        return saved[rank]
    state = {}
    for index, first in saved[0]["state"].items():
        state[index] = {key: _piece(torch.cat([s["state"][index][key] for s in saved], dim=0), world, rank)
                        if isinstance(value, torch.Tensor) and value.dim() > 0 else value
                        for key, value in first.items()}
    return {"state": state, "param_groups": saved[0]["param_groups"]}


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
