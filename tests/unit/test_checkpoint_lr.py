"""Resuming with a changed optim.lr: the new lr is used, the scheduler's position (warm-up) is kept."""

import pytest
import torch
from torch import nn

from strive.config.common import OptimConfig
from strive.workers.checkpoint import load_shards, save_shards
from strive.workers.optim import build_optimizer, build_scheduler, lr_multiplier

CONTENTS = ["model", "optimizer", "extra"]


def _role(lr: float, warmup: int):
    torch.manual_seed(0)
    module = nn.Linear(4, 3)
    cfg = OptimConfig(lr=lr, lr_warmup_steps=warmup)
    optimizer = build_optimizer(module.parameters(), cfg)
    return module, optimizer, build_scheduler(optimizer, cfg, total_steps=20), cfg


def _train(module, optimizer, scheduler, steps: int) -> None:
    for _ in range(steps):
        module(torch.ones(2, 4)).sum().backward()
        optimizer.step()
        optimizer.zero_grad()
        scheduler.step()


@pytest.mark.parametrize("new_lr", [5e-6, 1e-5])
def test_resume_uses_the_configured_lr_and_keeps_the_warmup_position(tmp_path, capsys, new_lr):
    module, optimizer, scheduler, _ = _role(5e-6, warmup=10)
    _train(module, optimizer, scheduler, 3)
    save_shards(str(tmp_path), module, optimizer, scheduler, 0, 1, CONTENTS)

    module2, optimizer2, scheduler2, cfg2 = _role(new_lr, warmup=10)
    load_shards(str(tmp_path), module2, optimizer2, scheduler2, 0, 1, CONTENTS)
    expected = new_lr * lr_multiplier(3, cfg2, 20)  # step 3 of a 10-step warm-up
    assert optimizer2.param_groups[0]["lr"] == pytest.approx(expected)
    assert scheduler2.get_last_lr()[0] == pytest.approx(expected)
    _train(module2, optimizer2, scheduler2, 1)
    assert optimizer2.param_groups[0]["lr"] == pytest.approx(new_lr * lr_multiplier(4, cfg2, 20))
    assert ("this run's config says" in capsys.readouterr().out) == (new_lr != 5e-6)


def test_resume_without_the_scheduler_state_still_uses_the_configured_lr(tmp_path):
    module, optimizer, scheduler, _ = _role(5e-6, warmup=0)
    _train(module, optimizer, scheduler, 2)
    save_shards(str(tmp_path), module, optimizer, scheduler, 0, 1, CONTENTS)

    module2, optimizer2, scheduler2, _ = _role(1e-5, warmup=0)
    load_shards(str(tmp_path), module2, optimizer2, scheduler2, 0, 1, ["model", "optimizer"])
    assert optimizer2.param_groups[0]["lr"] == pytest.approx(1e-5)
