"""Checkpoint directories, the tracker file and resume, in verl's layout (spec §5.4).

    <trainer.default_local_dir>/latest_checkpointed_iteration.txt   the last complete step, written last
    <trainer.default_local_dir>/global_step_N/{actor,critic}/        written by the workers (rank shards)
    <trainer.default_local_dir>/global_step_N/data.pt                sampler state + trainer state
    <trainer.default_local_dir>/logs/                                config.yaml as it ran, metrics.jsonl, curves.png

The tracker file is written only after every rank and the controller have finished, so a run killed while
saving resumes from the previous complete checkpoint.
"""

from __future__ import annotations

import os
import re
import shutil
from typing import Optional

import torch

from strive.config.sections import TrainerConfig

TRACKER = "latest_checkpointed_iteration.txt"


def root_dir(trainer: TrainerConfig) -> str:
    return os.path.abspath(os.path.expanduser(trainer.default_local_dir))


def log_dir(trainer: TrainerConfig) -> str:
    return os.path.join(root_dir(trainer), "logs")


def step_dir(trainer: TrainerConfig, step: int) -> str:
    return os.path.join(root_dir(trainer), f"global_step_{step}")


def find_resume_dir(trainer: TrainerConfig) -> Optional[str]:
    """The global_step_N directory to resume from, or None to start fresh."""
    if trainer.resume_mode == "disable":
        return None
    if trainer.resume_mode == "resume_path":
        path = os.path.abspath(os.path.expanduser(trainer.resume_from_path))
        if not os.path.isdir(path):
            raise FileNotFoundError(f"trainer.resume_from_path={trainer.resume_from_path} does not exist")
        return path
    tracker = os.path.join(root_dir(trainer), TRACKER)
    if not os.path.exists(tracker):
        return None
    with open(tracker) as fh:
        step = int(fh.read().strip())
    path = step_dir(trainer, step)
    return path if os.path.isdir(path) else None


def step_of(path: str) -> int:
    match = re.search(r"global_step_(\d+)", path)
    if not match:
        raise ValueError(f"{path} is not a global_step_N directory")
    return int(match.group(1))


def save_driver_state(path: str, state: dict) -> None:
    os.makedirs(path, exist_ok=True)
    torch.save(state, os.path.join(path, "data.pt"))


def load_driver_state(path: str) -> Optional[dict]:
    file = os.path.join(path, "data.pt")
    if not os.path.exists(file):
        print(f"[strive] warning: {file} is missing; the data order restarts from the beginning of the epoch")
        return None
    return torch.load(file, map_location="cpu", weights_only=False)


def mark_complete(trainer: TrainerConfig, step: int) -> None:
    tracker = os.path.join(root_dir(trainer), TRACKER)
    tmp = tracker + ".tmp"
    with open(tmp, "w") as fh:
        fh.write(str(step))
    os.replace(tmp, tracker)
    _rotate(trainer)


def _rotate(trainer: TrainerConfig) -> None:
    keep = [k for k in (trainer.max_actor_ckpt_to_keep, trainer.max_critic_ckpt_to_keep) if k]
    if not keep:
        return
    root = root_dir(trainer)
    steps = sorted(int(m.group(1)) for d in os.listdir(root) if (m := re.fullmatch(r"global_step_(\d+)", d)))
    for step in steps[: max(0, len(steps) - max(keep))]:
        shutil.rmtree(os.path.join(root, f"global_step_{step}"), ignore_errors=True)
