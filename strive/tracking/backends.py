"""Where metrics go: one small class per `trainer.logger` name, each with `log(metrics, step)`,
`log_generations(rows, step)` (validation samples, trainer.log_val_generations) and `finish()`.

The names are verl's (console, file, tensorboard, wandb, mlflow, swanlab, trackio, vemlp_wandb, clearml), so a
verl command line's `trainer.logger=['console','wandb']` works unchanged. console and file need nothing;
tensorboard and the hosted trackers are imported only when named, and a library that is not installed costs one
warning instead of the run: a run that already holds GPUs should not die for want of a dashboard.

Metrics arrive converted by `records.as_float`: a float, or None for anything that was not a finite number.
None is written as null by `file` and skipped by every other backend.

BACKEND_NAMES is the one list of `trainer.logger` names: `strive.config` validates against it, so importing this
module must stay cheap (no numpy, no backend library).
"""

from __future__ import annotations

import importlib
import json
import os
import re
import sys
from typing import Any

BUILTIN = ("console", "file", "tensorboard")
# name -> (module to import, pip package to suggest)
EXTERNAL = {
    "wandb": ("wandb", "wandb"),
    "mlflow": ("mlflow", "mlflow"),
    "swanlab": ("swanlab", "swanlab"),
    "trackio": ("trackio", "trackio"),
    "vemlp_wandb": ("volcengine_ml_platform", "volcengine-ml-platform"),
    "clearml": ("clearml", "clearml"),
}
BACKEND_NAMES = BUILTIN + tuple(EXTERNAL)


def warn(message: str) -> None:
    print(f"[strive] warning: {message}", file=sys.stderr, flush=True)


def format_duration(seconds: float) -> str:
    """41 -> '41s', 662 -> '11m02s', 3900 -> '1h05m'."""
    s = int(round(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{s % 3600 // 60:02d}m"


class Console:
    """One progress line per step, a line of validation metrics when there are any, everything if verbose.

        [step 3/20 | 15%] reward 0.412 | val 0.380 | resp_len 87.2 | step 41.3s | eta 11m02s
    """

    def __init__(self, total_steps: int | None = None, verbose: bool = False):
        self.total_steps = total_steps
        self.verbose = verbose
        self.step_times: list[float] = []  # this process's `timing_s/step` values, for the ETA

    def progress_line(self, metrics: dict[str, float], step: int) -> str:
        head = f"step {step}"
        if self.total_steps:
            head += f"/{self.total_steps} | {100 * step / self.total_steps:.0f}%"
        from strive.tracking.records import val_key  # here, not at the top: records imports numpy

        vkey = val_key(metrics)
        fields = [
            ("reward", metrics.get("critic/score/mean"), "{:.3f}"),
            ("all sampled", metrics.get("train/generated_score_mean"), "{:.3f}"),  # under dynamic sampling
            ("rounds", metrics.get("train/num_gen_batches"), "{:.0f}"),
            ("val", metrics.get(vkey) if vkey else None, "{:.3f}"),
            ("resp_len", metrics.get("response_length/mean"), "{:.1f}"),
            ("step", metrics.get("timing_s/step"), "{:.1f}s"),
        ]
        parts = [f"{name} {fmt.format(value)}" for name, value, fmt in fields if value is not None]
        if self.total_steps and self.step_times:
            mean_step = sum(self.step_times) / len(self.step_times)
            parts.append(f"eta {format_duration(mean_step * max(self.total_steps - step, 0))}")
        return f"[{head}] " + " | ".join(parts)

    def log(self, metrics: dict[str, float | None], step: int) -> None:
        shown = {k: v for k, v in metrics.items() if v is not None}
        if "timing_s/step" in shown:
            self.step_times.append(shown["timing_s/step"])
        print(self.progress_line(shown, step), flush=True)
        val = sorted((k for k in shown if k.startswith("val-")), key=lambda k: (not k.startswith("val-core/"), k))
        if val:
            print("  validation: " + " | ".join(f"{k} {shown[k]:.4f}" for k in val), flush=True)
        if self.verbose:
            print(verl_line(shown, step), flush=True)

    def log_generations(self, rows: list[dict], step: int) -> None:
        for i, row in enumerate(rows):
            print(f"  val sample {i} (step {step}, score {row['score']:.3f})\n    input: {row['input']!r}\n"
                  f"    output: {row['output']!r}", flush=True)

    def finish(self) -> None:
        pass


def verl_line(metrics: dict[str, float], step: int) -> str:
    """verl's console format, so log greps written for verl keep working: `step:N - key:value - ...`, in the
    order the metrics came, each value at full precision (Python's repr, as verl ≥ 0.5 prints); whole numbers
    without a trailing .0, since verl's counters are ints."""
    def show(v: float) -> str:
        return str(int(v)) if v.is_integer() and abs(v) < 2**53 else repr(v)

    return " - ".join([f"step:{step}"] + [f"{k}:{show(v)}" for k, v in metrics.items()])


class JsonlFile:
    """`{log_dir}/metrics.jsonl`, one `{"step": N, ...}` object per log call, appended so a resumed run continues
    the same file; `{log_dir}/config.json` holds the config."""

    def __init__(self, log_dir: str, config: dict | None = None):
        os.makedirs(log_dir, exist_ok=True)
        if config is not None:
            with open(os.path.join(log_dir, "config.json"), "w", encoding="utf-8") as f:
                json.dump(config, f, indent=2, default=str)
        self.path = os.path.join(log_dir, "metrics.jsonl")
        torn = False  # a run killed mid-write leaves a last line without "\n"; don't glue the next row onto it
        if os.path.exists(self.path) and os.path.getsize(self.path) > 0:
            with open(self.path, "rb") as f:
                f.seek(-1, os.SEEK_END)
                torn = f.read(1) != b"\n"
        self._file = open(self.path, "a", encoding="utf-8")
        if torn:
            self._file.write("\n")

    def log(self, metrics: dict[str, float | None], step: int) -> None:
        self._file.write(json.dumps({"step": step, **metrics}, allow_nan=False) + "\n")
        self._file.flush()

    def log_generations(self, rows: list[dict], step: int) -> None:
        """Appended to `{log_dir}/val_generations.jsonl`, one line per sample."""
        with open(os.path.join(os.path.dirname(self.path), "val_generations.jsonl"), "a", encoding="utf-8") as f:
            for row in rows:
                f.write(json.dumps({"step": step, **row}) + "\n")

    def finish(self) -> None:
        self._file.close()


class TensorBoard:
    """`{log_dir}/tensorboard`: one scalar per metric, flushed every step so a crash loses nothing."""

    def __init__(self, log_dir: str):
        from torch.utils.tensorboard import SummaryWriter  # needs the tensorboard package too

        self.writer = SummaryWriter(log_dir=os.path.join(log_dir, "tensorboard"))

    def log(self, metrics: dict[str, float | None], step: int) -> None:
        for key, value in metrics.items():
            if value is not None:
                self.writer.add_scalar(key, value, global_step=step)
        self.writer.flush()

    def log_generations(self, rows: list[dict], step: int) -> None:
        self.writer.add_text("val/generations", generations_markdown(rows), global_step=step)
        self.writer.flush()

    def finish(self) -> None:
        self.writer.close()


class WandbLike:
    """wandb, swanlab, trackio and vemlp_wandb share one shape: `init(...)`, `log(dict, step=)`, `finish()`."""

    def __init__(self, module: Any, **init_kwargs: Any):
        self.module = module
        module.init(**init_kwargs)

    def log(self, metrics: dict[str, float | None], step: int) -> None:
        self.module.log({k: v for k, v in metrics.items() if v is not None}, step=step)

    def log_generations(self, rows: list[dict], step: int) -> None:
        table = getattr(self.module, "Table", None)
        if table is None:  # trackio and vemlp_wandb: one text entry instead of a table
            self.module.log({"val/generations": generations_markdown(rows)}, step=step)
            return
        columns = ["step", "input", "output", "score"]
        data = [[step, r["input"], r["output"], r["score"]] for r in rows]
        self.module.log({"val/generations": table(columns=columns, data=data)}, step=step)

    def finish(self) -> None:
        self.module.finish()


def generations_markdown(rows: list[dict]) -> str:
    """Validation samples as a markdown table (TensorBoard text, MLflow artifact)."""
    def cell(text: Any) -> str:
        return str(text).replace("|", "\\|").replace("\n", "<br>")

    lines = ["| input | output | score |", "| --- | --- | --- |"]
    lines += [f"| {cell(r['input'])} | {cell(r['output'])} | {r['score']:.4f} |" for r in rows]
    return "\n".join(lines)


def _flatten(config: dict, prefix: str = "") -> dict[str, Any]:
    out = {}
    for key, value in config.items():
        if isinstance(value, dict):
            out.update(_flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


class Mlflow:
    """MLflow takes its server from MLFLOW_TRACKING_URI (default ./mlruns); it rejects '@' in metric names,
    so `val-core/.../mean@1` is logged as `val-core/.../mean_at_1`, as verl does."""

    def __init__(self, module: Any, project: str, experiment: str, config: dict | None):
        self.module = module
        module.set_experiment(project)
        module.start_run(run_name=experiment)
        if config:
            try:
                module.log_params({k: str(v)[:500] for k, v in _flatten(config).items()})
            except Exception as exc:  # params are a convenience; a server limit must not stop the run
                warn(f"mlflow did not take the config as params ({exc})")

    def log(self, metrics: dict[str, float | None], step: int) -> None:
        clean = {re.sub(r"[^\w\-. /]", "_", k.replace("@", "_at_")): v for k, v in metrics.items() if v is not None}
        self.module.log_metrics(clean, step=step)

    def log_generations(self, rows: list[dict], step: int) -> None:
        self.module.log_text(generations_markdown(rows), f"val_generations/step_{step}.md")

    def finish(self) -> None:
        self.module.end_run()


class ClearML:
    """ClearML plots a scalar by (title, series): the title is the metric's first path part."""

    def __init__(self, module: Any, project: str, experiment: str, config: dict | None):
        self.task = module.Task.init(project_name=project, task_name=experiment)
        if config:
            self.task.connect_configuration(config, name="strive")
        self.logger = self.task.get_logger()

    def log(self, metrics: dict[str, float | None], step: int) -> None:
        for key, value in metrics.items():
            if value is not None:
                self.logger.report_scalar(title=key.split("/")[0], series=key, value=value, iteration=step)

    def log_generations(self, rows: list[dict], step: int) -> None:
        self.logger.report_text(generations_markdown(rows), iteration=step)

    def finish(self) -> None:
        self.task.close()


def open_backend(name: str, project: str, experiment: str, log_dir: str, config: dict | None,
                 total_steps: int | None, verbose: bool = False) -> Any | None:
    """The backend called `name`, or None (after one warning) if its library is not installed."""
    if name == "console":
        return Console(total_steps, verbose)
    if name == "file":
        return JsonlFile(log_dir, config)
    os.makedirs(log_dir, exist_ok=True)
    module_name, pip_name = EXTERNAL.get(name, ("tensorboard", "tensorboard"))
    try:
        if name == "tensorboard":
            return TensorBoard(log_dir)
        module = importlib.import_module(module_name)
    except ImportError:
        warn(f"trainer.logger includes '{name}' but {module_name} is not installed; skipping it "
             f"(pip install {pip_name})")
        return None
    if name == "mlflow":
        return Mlflow(module, project, experiment, config)
    if name == "clearml":
        return ClearML(module, project, experiment, config)
    if name == "wandb":
        return WandbLike(module, project=project, name=experiment, config=config, dir=log_dir)
    if name == "swanlab":
        return WandbLike(module, project=project, experiment_name=experiment, config=config,
                         logdir=os.path.join(log_dir, "swanlog"))
    if name == "trackio":
        return WandbLike(module, project=project, name=experiment, config=config)
    if name == "vemlp_wandb":
        return WandbLike(module.wandb, project=project, name=experiment, config=config, sync_tensorboard=True)
    raise ValueError(f"unknown backend {name!r}")
