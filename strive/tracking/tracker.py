"""The one object the trainer logs through: `trainer.logger` names in, every backend fed from one `log` call.

    tracker = Tracker(["console", "file"], "strive_examples", "gsm8k", "runs/gsm8k", config, total_steps=20)
    tracker.log({"critic/score/mean": 0.41, "timing_s/step": 41.3}, step=1)
    tracker.finish()

It plays the part of verl's `Tracking` (verl/utils/tracking.py): the same backend names and the same metric
names (reference/verl_compat_spec.md §5.3), so runs compare side by side with verl's. Values are converted once
here (`records.as_float`) and every backend gets the same floats.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from strive.tracking.backends import BACKEND_NAMES, open_backend
from strive.tracking.records import as_float


def _plain_config(config: Any) -> dict | None:
    """A dataclass config tree (strive.config) becomes a dict; dicts pass through."""
    if config is None or isinstance(config, dict):
        return config
    if dataclasses.is_dataclass(config):
        return dataclasses.asdict(config)
    return dict(config)


class Tracker:
    """Logs step metrics to the backends named in `trainer.logger`.

    backends: verl's names (console, file, tensorboard, wandb, mlflow, swanlab, trackio, vemlp_wandb, clearml);
        a single string is taken as a one-name list. Unknown names raise ValueError; a named library that is
        not installed is skipped with one warning.
    log_dir: where `file` writes metrics.jsonl and config.json and `tensorboard` its event files.
    total_steps: shown by the console as `step 3/20 | 15%` and used for its ETA.
    verbose: the console also prints every metric on one line in verl's format (`step:N - key:value - ...`).
    """

    def __init__(self, backends: list[str] | str, project: str, experiment: str, log_dir: str,
                 config: dict | None = None, total_steps: int | None = None, verbose: bool = False):
        names = [backends] if isinstance(backends, str) else list(backends)
        unknown = [n for n in names if n not in BACKEND_NAMES]
        if unknown:
            raise ValueError(f"trainer.logger has unknown backend(s) {unknown}; valid: {', '.join(BACKEND_NAMES)}")
        self.project, self.experiment, self.log_dir = project, experiment, log_dir
        config = _plain_config(config)
        self.backends: dict[str, Any] = {}
        for name in dict.fromkeys(names):  # drop repeats, keep order
            backend = open_backend(name, project, experiment, log_dir, config, total_steps, verbose)
            if backend is not None:
                self.backends[name] = backend

    def log(self, metrics: dict[str, Any], step: int) -> None:
        """Send one step's metrics to every backend; tensors, numpy values and lists become floats (mean)."""
        clean = {str(k): as_float(v) for k, v in metrics.items()}
        for backend in self.backends.values():
            backend.log(clean, step)

    def log_generations(self, rows: list[dict], step: int) -> None:
        """Validation samples (`input`, `output`, `score`, ...) to every backend that can show them
        (trainer.log_val_generations)."""
        for name, backend in self.backends.items():
            try:
                backend.log_generations(rows, step)
            except Exception as exc:  # samples are a convenience; a dashboard's API must not stop the run
                print(f"[strive] warning: {name} did not take the validation samples ({exc})", flush=True)

    def finish(self) -> None:
        """Flush and close every backend; a second call does nothing."""
        backends, self.backends = self.backends, {}
        for backend in backends.values():
            backend.finish()
