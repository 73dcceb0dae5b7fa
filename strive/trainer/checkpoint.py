"""Checkpoint directories, the tracker file and resume, in verl's layout (spec §5.4), saved so a crash cannot
leave a checkpoint that looks complete.

    <trainer.default_local_dir>/latest_checkpointed_iteration.txt   the last complete step, written last
    <trainer.default_local_dir>/global_step_N/{actor,critic}/        written by the workers (rank shards)
    <trainer.default_local_dir>/global_step_N/data.pt                sampler state + trainer state
    <trainer.default_local_dir>/global_step_N/strive_checkpoint.json the completion marker (step, world size)
    <trainer.default_local_dir>/logs/                                config.yaml as it ran, metrics.jsonl, curves.png

A save writes everything into `global_step_N.partial/`, then the marker, then renames the folder to
`global_step_N/`, and only then replaces the tracker (write a temporary file, `os.replace`). A run killed while
saving leaves a `.partial` folder, which resume ignores with a notice, and the tracker at the previous step.

`resume_mode=auto` takes the step the tracker names when its folder is complete; when that folder is gone or
incomplete it takes the newest complete one, with a notice. A folder is complete when it has the marker, or, for
checkpoints written before the marker existed, when the tracker has reached its step. `resume_mode=resume_path`
with a missing or incomplete folder is an error. All of this, and the check that every file holds only tensors
and plain values, runs before Ray starts (`plan_resume`).
"""

from __future__ import annotations

import json
import os
import re
import shutil
from typing import Optional

import torch

from strive.config.sections import TrainerConfig
from strive.workers.checkpoint import CheckpointError, load_file, saved_world_size

TRACKER = "latest_checkpointed_iteration.txt"
MARKER = "strive_checkpoint.json"
PARTIAL = ".partial"
_STEP = re.compile(r"global_step_(\d+)")


def root_dir(trainer: TrainerConfig) -> str:
    return os.path.abspath(os.path.expanduser(trainer.default_local_dir))


def log_dir(trainer: TrainerConfig) -> str:
    return os.path.join(root_dir(trainer), "logs")


def step_dir(trainer: TrainerConfig, step: int) -> str:
    return os.path.join(root_dir(trainer), f"global_step_{step}")


def step_of(path: str) -> int:
    match = _STEP.search(os.path.basename(os.path.normpath(path)))
    if not match:
        raise ValueError(f"{path} is not a global_step_N directory")
    return int(match.group(1))


def tracker_step(root: str) -> Optional[int]:
    """The step the tracker file names, or None without a readable one."""
    tracker = os.path.join(root, TRACKER)
    if not os.path.exists(tracker):
        return None
    with open(tracker) as fh:
        text = fh.read().strip()
    if not text.isdigit():
        print(f"[strive] notice: {tracker} holds {text[:40]!r}, not a step number; it is ignored", flush=True)
        return None
    return int(text)


def is_complete(path: str, tracked: Optional[int]) -> bool:
    """A finished save: the marker is there, or (written before markers existed) the tracker has reached it and
    the actor's shards are there."""
    if os.path.exists(os.path.join(path, MARKER)):
        return True
    return (tracked is not None and step_of(path) <= tracked
            and os.path.exists(os.path.join(path, "actor", "fsdp_config.json")))


def find_resume_dir(trainer: TrainerConfig) -> Optional[str]:
    """The global_step_N directory to resume from, or None to start fresh; says why when it passes one over."""
    if trainer.resume_mode == "disable":
        return None
    if trainer.resume_mode == "resume_path":
        path = os.path.abspath(os.path.expanduser(str(trainer.resume_from_path)))
        if not os.path.isdir(path):
            raise CheckpointError(f"trainer.resume_from_path={trainer.resume_from_path} does not exist")
        if not is_complete(path, tracker_step(os.path.dirname(path))):
            raise CheckpointError(f"trainer.resume_from_path={trainer.resume_from_path} is an incomplete checkpoint "
                                  f"(no {MARKER}: its save did not finish); pick a complete global_step_N")
        return path
    root = root_dir(trainer)
    if not os.path.isdir(root):
        return None
    tracked = tracker_step(root)
    complete = []
    for name in sorted(os.listdir(root)):
        path = os.path.join(root, name)
        if not _STEP.fullmatch(name.removesuffix(PARTIAL)) or not os.path.isdir(path):
            continue
        if name.endswith(PARTIAL) or not is_complete(path, tracked):
            print(f"[strive] notice: {path} is a half-written checkpoint (its save did not finish); ignored",
                  flush=True)
        else:
            complete.append(path)
    if tracked is not None and step_dir(trainer, tracked) in complete:
        return step_dir(trainer, tracked)
    newest = max(complete, key=step_of, default=None)
    if tracked is not None or newest is not None:
        said = f"there is no {TRACKER}"
        if tracked is not None:
            gone = "is gone" if not os.path.exists(step_dir(trainer, tracked)) else "is incomplete"
            said = f"{TRACKER} names step {tracked}, whose folder {gone}"
        then = f"resuming from the newest complete checkpoint, {newest}" if newest else "starting from step 1"
        print(f"[strive] notice: {said}; {then}", flush=True)
    return newest


def plan_resume(trainer: TrainerConfig, world_size: int) -> Optional[str]:
    """Before Ray starts: the folder to resume from, its files checked to hold nothing that unpickling could run,
    and a note when it was written by another world size (the shards are re-cut on load)."""
    path = find_resume_dir(trainer)
    if path is None:
        return None
    for role in ("actor", "critic"):
        saved = saved_world_size(os.path.join(path, role))
        if saved is not None and saved != world_size:
            print(f"[strive] notice: {path}/{role} was written by {saved} ranks and this run has {world_size}; "
                  "its shards are re-cut to fit (each rank reads them all once)", flush=True)
    for folder, _, files in os.walk(path):
        for name in sorted(files):
            if name.endswith(".pt"):
                check_safe(os.path.join(folder, name))
    return path


def check_safe(file: str) -> None:
    """Refuse a .pt file whose pickle names anything but tensors, plain values, and (for the RNG state of
    checkpoints written before the change to weights_only loading) numpy's array types. Reads the pickle
    without running it."""
    from torch.serialization import get_unsafe_globals_in_checkpoint

    legacy = {"numpy.dtype", "numpy.ndarray", "numpy.dtypes.UInt32DType", "numpy._core.multiarray._reconstruct",
              "numpy.core.multiarray._reconstruct"}
    try:
        unsafe = [g for g in get_unsafe_globals_in_checkpoint(file) if g not in legacy]
    except Exception as exc:
        raise CheckpointError(f"{file} cannot be read as a torch checkpoint: {exc}") from None
    if unsafe:
        raise CheckpointError(f"{file} holds objects other than tensors and plain Python values ({', '.join(unsafe)}"
                              "); strive does not unpickle those, since a crafted checkpoint could run code when "
                              "loaded. Use a checkpoint strive wrote, or start without it (trainer.resume_mode="
                              "disable)")


def begin_save(trainer: TrainerConfig, step: int) -> str:
    """A fresh `global_step_N.partial` folder for the workers and the controller to write into."""
    tmp = step_dir(trainer, step) + PARTIAL
    shutil.rmtree(tmp, ignore_errors=True)  # left by a save that was killed
    os.makedirs(tmp)
    return tmp


def save_driver_state(path: str, state: dict) -> None:
    os.makedirs(path, exist_ok=True)
    torch.save(state, os.path.join(path, "data.pt"))


def finish_save(trainer: TrainerConfig, step: int, tmp: str, world_size: int) -> str:
    """Marker, rename `global_step_N.partial` → `global_step_N`, then the tracker; returns the final folder."""
    with open(os.path.join(tmp, MARKER), "w") as fh:
        json.dump({"step": step, "world_size": world_size, "format": 1}, fh)
    final = step_dir(trainer, step)
    if os.path.exists(final):  # the same step saved again (e.g. after a restart): the new one replaces it
        old = final + ".old"
        shutil.rmtree(old, ignore_errors=True)
        os.rename(final, old)
        os.rename(tmp, final)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.rename(tmp, final)
    mark_complete(trainer, step)
    return final


def load_driver_state(path: str) -> Optional[dict]:
    file = os.path.join(path, "data.pt")
    if not os.path.exists(file):
        print(f"[strive] warning: {file} is missing; the data order restarts from the beginning of the epoch")
        return None
    return load_file(file)


def mark_complete(trainer: TrainerConfig, step: int) -> None:
    tracker = os.path.join(root_dir(trainer), TRACKER)
    tmp = tracker + ".tmp"
    with open(tmp, "w") as fh:
        fh.write(str(step))
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, tracker)
    _rotate(trainer)


def _rotate(trainer: TrainerConfig) -> None:
    keep = [k for k in (trainer.max_actor_ckpt_to_keep, trainer.max_critic_ckpt_to_keep) if k]
    if not keep:
        return
    root = root_dir(trainer)
    steps = sorted(int(m.group(1)) for d in os.listdir(root) if (m := _STEP.fullmatch(d)))
    for step in steps[: max(0, len(steps) - max(keep))]:
        shutil.rmtree(os.path.join(root, f"global_step_{step}"), ignore_errors=True)
