"""Experiment tracking: verl's `trainer.logger` backends and metric names, plus a look at a run without a dashboard.

    from strive.tracking import Tracker, reduce_metrics, reward_table, plot_curves
    tracker = Tracker(cfg.trainer.logger, project, experiment, log_dir, config, total_steps)
    tracker.log(metrics, step)                    # console line, metrics.jsonl, TensorBoard, W&B, ...
    print(reward_table(f"{log_dir}/metrics.jsonl"))
    python -m strive.tracking.plot runs/gsm8k/metrics.jsonl --out curves.png

Importing this package loads neither torch, tensorboard, matplotlib, wandb nor mlflow; each backend imports its
library when it is opened. It loads no numpy either: `strive.config` checks `trainer.logger` against
`strive.tracking.backends.BACKEND_NAMES`, so the names below are imported from their modules on first use
(PEP 562 `__getattr__`).

    /work/venv/bin/pytest tests/unit -q -k tracking
"""

from __future__ import annotations

from strive.lazy import lazy_exports

# public name -> the module of this package that defines it
_HOME = {
    "BACKEND_NAMES": "backends",
    "plot_curves": "report",
    "reward_table": "report",
    "as_float": "records",
    "by_step": "records",
    "read_jsonl": "records",
    "reduce_metrics": "records",
    "val_key": "records",
    "Tracker": "tracker",
}

__all__ = sorted(_HOME)
__getattr__, __dir__ = lazy_exports(__name__, _HOME)
