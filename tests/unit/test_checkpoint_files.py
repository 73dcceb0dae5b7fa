"""Checkpoint files on their own (no Ray, no workers): what resume picks, what it refuses, and re-cutting shards.

The run-level versions (through the entry point) are in tests/reliability/test_checkpoint_faults.py.
"""

from __future__ import annotations

import json
import os
import random

import numpy as np
import pytest
import torch

from strive.config.sections import TrainerConfig
from strive.trainer import checkpoint as ckpt
from strive.workers import checkpoint as wck
from strive.workers.checkpoint import CheckpointError


class WritesMarker:
    """Unpickling this runs `open(path, "w")`: what a crafted checkpoint could do with os.system."""

    def __init__(self, path: str):
        self.path = path

    def __reduce__(self):
        return (open, (self.path, "w"))


def _trainer(root, **kw) -> TrainerConfig:
    return TrainerConfig(default_local_dir=str(root), **kw)


def _save(trainer: TrainerConfig, step: int) -> str:
    """A complete save as the loop does it, with a stand-in for the workers' shards."""
    tmp = ckpt.begin_save(trainer, step)
    os.makedirs(os.path.join(tmp, "actor"))
    torch.save({"w": torch.full((4,), float(step))}, os.path.join(tmp, "actor", "model_world_size_1_rank_0.pt"))
    ckpt.save_driver_state(tmp, {"global_step": step})
    return ckpt.finish_save(trainer, step, tmp, world_size=1)


def test_crafted_data_pt_is_refused_before_it_runs(tmp_path, capsys):
    trainer = _trainer(tmp_path)
    path = _save(trainer, 2)
    marker = tmp_path / "marker"
    torch.save({"global_step": 2, "x": WritesMarker(str(marker))}, os.path.join(path, "data.pt"))
    with pytest.raises(CheckpointError, match="data.pt holds objects other than tensors"):
        ckpt.plan_resume(trainer, world_size=1)
    with pytest.raises(CheckpointError, match=r"global_step_2/data\.pt"):
        ckpt.load_driver_state(path)  # the load itself refuses too (weights_only=True)
    assert not marker.exists()


def test_rng_state_round_trips_through_weights_only(tmp_path):
    random.seed(3), np.random.seed(4), torch.manual_seed(5)
    file = tmp_path / "extra.pt"
    torch.save({"rng": wck.rng_state()}, file)
    expected = (random.random(), np.random.rand(), torch.rand(1).item())
    random.seed(0), np.random.seed(0), torch.manual_seed(0)
    wck.set_rng_state(wck.load_file(str(file))["rng"])  # weights_only=True, nothing allow-listed
    assert (random.random(), np.random.rand(), torch.rand(1).item()) == expected


def test_old_extra_state_with_numpy_rng_still_loads(tmp_path):
    """The format before this change pickled np.random.get_state() (a uint32 array) and random.getstate()."""
    np.random.seed(7), random.seed(8)
    file = tmp_path / "extra_state_world_size_1_rank_0.pt"
    torch.save({"lr_scheduler": None, "rng": {"torch": torch.get_rng_state(), "numpy": np.random.get_state(),
                                              "python": random.getstate()}}, file)
    expected = (np.random.rand(), random.random())
    ckpt.check_safe(str(file))  # only the allow-listed numpy types
    with pytest.raises(CheckpointError):
        wck.load_file(str(file))  # without the allow-list it is refused
    wck.set_rng_state(wck.load_file(str(file), legacy_numpy=True)["rng"])
    assert (np.random.rand(), random.random()) == expected


def test_crash_after_the_model_shard_leaves_the_previous_checkpoint(tmp_path, monkeypatch, capsys):
    trainer = _trainer(tmp_path)
    _save(trainer, 2)

    def crash(*args, **kwargs):
        raise KeyboardInterrupt("killed mid-save")

    monkeypatch.setattr(ckpt, "save_driver_state", crash)  # the shards are written, then the driver dies
    with pytest.raises(KeyboardInterrupt):
        _save(trainer, 4)
    assert (tmp_path / "global_step_4.partial" / "actor").is_dir() and not (tmp_path / "global_step_4").exists()
    assert (tmp_path / ckpt.TRACKER).read_text() == "2"
    assert ckpt.find_resume_dir(trainer) == str(tmp_path / "global_step_2")
    assert "global_step_4.partial is a half-written checkpoint" in capsys.readouterr().out


def test_auto_falls_back_when_the_tracker_names_a_missing_folder(tmp_path, capsys):
    trainer = _trainer(tmp_path)
    _save(trainer, 2), _save(trainer, 4)
    os.rename(tmp_path / "global_step_4", tmp_path / "moved")
    assert ckpt.find_resume_dir(trainer) == str(tmp_path / "global_step_2")
    out = capsys.readouterr().out
    assert "names step 4, whose folder is gone" in out and "global_step_2" in out


def test_auto_falls_back_when_the_tracker_names_an_incomplete_folder(tmp_path, capsys):
    trainer = _trainer(tmp_path)
    _save(trainer, 2)
    os.makedirs(tmp_path / "global_step_4")  # no marker, no shards, although the tracker names it
    (tmp_path / ckpt.TRACKER).write_text("4")
    os.makedirs(tmp_path / "global_step_6")  # newer than the tracker, no marker: half-written
    assert ckpt.find_resume_dir(trainer) == str(tmp_path / "global_step_2")
    out = capsys.readouterr().out
    assert "global_step_6 is a half-written checkpoint" in out
    assert "names step 4, whose folder is incomplete; resuming from the newest complete checkpoint" in out


def _old_layout(folder) -> None:
    os.makedirs(folder / "actor")
    (folder / "actor" / "fsdp_config.json").write_text('{"FSDP_version": 2, "world_size": 2, "shard_dim": 0}')


def test_checkpoints_from_before_the_marker_resume(tmp_path):
    """Old layout: no marker; the tracker (written last) vouches for its step and the ones before."""
    for step in (1, 2, 3):
        _old_layout(tmp_path / f"global_step_{step}")
    (tmp_path / ckpt.TRACKER).write_text("2")
    trainer = _trainer(tmp_path)
    assert ckpt.find_resume_dir(trainer) == str(tmp_path / "global_step_2")
    assert ckpt.is_complete(str(tmp_path / "global_step_1"), 2)
    assert not ckpt.is_complete(str(tmp_path / "global_step_3"), 2)


def test_resume_path_missing_or_incomplete_is_an_error(tmp_path):
    trainer = _trainer(tmp_path, resume_mode="resume_path", resume_from_path=str(tmp_path / "global_step_9"))
    with pytest.raises(CheckpointError, match="global_step_9 does not exist"):
        ckpt.find_resume_dir(trainer)
    _old_layout(tmp_path / "global_step_9")  # no marker, and no tracker vouches for it
    with pytest.raises(CheckpointError, match="incomplete checkpoint"):
        ckpt.find_resume_dir(trainer)
    _save(_trainer(tmp_path), 9)  # replaces it with a complete one
    assert ckpt.find_resume_dir(trainer) == str(tmp_path / "global_step_9")


def test_saving_a_step_again_replaces_it(tmp_path):
    trainer = _trainer(tmp_path)
    _save(trainer, 2)
    os.remove(tmp_path / "global_step_2" / "data.pt")
    _save(trainer, 2)
    assert sorted(os.listdir(tmp_path)) == ["global_step_2", ckpt.TRACKER]
    assert json.loads((tmp_path / "global_step_2" / ckpt.MARKER).read_text())["step"] == 2
    assert (tmp_path / "global_step_2" / "data.pt").exists()


@pytest.mark.parametrize("rows,saved,new", [(7, 2, 1), (7, 2, 3), (2, 1, 4), (8, 4, 2)])
def test_reshard_matches_fsdp2_dim0_pieces(rows, saved, new):
    full = torch.arange(rows * 3, dtype=torch.float64).reshape(rows, 3)
    shards = [{"w": piece} for piece in (wck._piece(full, saved, r) for r in range(saved))]
    assert torch.equal(torch.cat([s["w"] for s in shards]), full)
    for rank in range(new):
        expected = list(torch.chunk(full, new))[rank] if rank < len(torch.chunk(full, new)) else full[:0]
        assert torch.equal(wck._reshard(shards, rank, new, "ckpt")["w"], expected), (rank, new)
    optim = [{"state": {0: {"step": torch.tensor(5.0), "exp_avg": s["w"] * 2}}, "param_groups": [{"lr": 1.0}]}
             for s in shards]
    got = wck._reshard_optimizer(optim, 0, new, "ckpt")["state"][0]
    assert got["step"].item() == 5.0 and torch.equal(got["exp_avg"], wck._piece(full * 2, new, 0))
