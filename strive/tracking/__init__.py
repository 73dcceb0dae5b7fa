"""Experiment tracking: verl's `trainer.logger` backends and metric names, plus a look at a run without a dashboard.

    from strive.tracking import Tracker, reduce_metrics, reward_table, plot_curves
    tracker = Tracker(cfg.trainer.logger, project, experiment, log_dir, config, total_steps)
    tracker.log(metrics, step)                    # console line, metrics.jsonl, TensorBoard, W&B, ...
    print(reward_table(f"{log_dir}/metrics.jsonl"))
    python -m strive.tracking.plot runs/gsm8k/metrics.jsonl --out curves.png

Importing this package loads neither torch, tensorboard, matplotlib, wandb nor mlflow; each backend imports its
library when it is opened.

    /work/venv/bin/pytest tests/unit -q -k tracking
"""

from strive.tracking.backends import BACKEND_NAMES
from strive.tracking.report import plot_curves, reward_table
from strive.tracking.records import as_float, by_step, read_jsonl, reduce_metrics, val_key
from strive.tracking.tracker import Tracker

__all__ = [
    "BACKEND_NAMES", "Tracker", "as_float", "by_step", "plot_curves", "read_jsonl", "reduce_metrics",
    "reward_table", "val_key",
]
