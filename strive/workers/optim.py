"""AdamW and verl's learning-rate schedules (constant or cosine, each after a linear warmup).

The scheduler steps once per update call, i.e. once per training step, as in verl.
"""

from __future__ import annotations

import importlib
import math

import torch

from strive.config.common import OptimConfig


def build_optimizer(params, cfg: OptimConfig) -> torch.optim.Optimizer:
    module = importlib.import_module(cfg.optimizer_impl)
    cls = getattr(module, cfg.optimizer, None)
    if cls is None:
        raise ValueError(f"optim.optimizer={cfg.optimizer} not found in optim.optimizer_impl={cfg.optimizer_impl}")
    kwargs = dict(lr=cfg.lr, betas=tuple(cfg.betas), weight_decay=cfg.weight_decay)
    kwargs.update(cfg.override_optimizer_config or {})
    return cls([p for p in params if p.requires_grad], **kwargs)


def warmup_steps(cfg: OptimConfig, total_steps: int) -> int:
    if cfg.lr_warmup_steps is not None and cfg.lr_warmup_steps >= 0:
        return cfg.lr_warmup_steps
    return int(cfg.lr_warmup_steps_ratio * total_steps)


def lr_multiplier(step: int, cfg: OptimConfig, total_steps: int) -> float:
    """Factor applied to optim.lr at scheduler step `step` (0-based)."""
    warm = warmup_steps(cfg, total_steps)
    if step < warm:
        return step / max(1, warm)
    if cfg.lr_scheduler_type == "constant":
        return 1.0
    if cfg.lr_scheduler_type != "cosine":
        raise ValueError(f"optim.lr_scheduler_type={cfg.lr_scheduler_type}: constant or cosine")
    progress = (step - warm) / max(1, total_steps - warm)
    cosine = 0.5 * (1.0 + math.cos(math.pi * cfg.num_cycles * 2.0 * progress))
    return max(0.0, cosine * (1.0 - cfg.min_lr_ratio) + cfg.min_lr_ratio)


def build_scheduler(optimizer: torch.optim.Optimizer, cfg: OptimConfig, total_steps: int):
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: lr_multiplier(step, cfg, total_steps))
