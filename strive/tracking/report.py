"""A run at a glance without TensorBoard: its main curves as one PNG, its rewards as a text table.

Both read the `file` backend's metrics.jsonl, so they work on a finished run, a running one, or a run copied off
a GPU machine. `reward_table` is printed at the end of a run; `plot_curves` is what `python -m
strive.tracking.plot` calls. matplotlib is imported inside `plot_curves` and drawn with the Agg canvas directly
(no pyplot), so nothing here needs a display or touches global plotting state.

    /work/venv/bin/python -m strive.tracking.plot runs/gsm8k/metrics.jsonl --out curves.png
"""

from __future__ import annotations

import fnmatch
import json
import math
import os
from typing import Iterable

from strive.tracking.records import by_step, jsonl_path, read_jsonl, val_key

# (panel title, key patterns): a panel plots the matches of its first pattern that matches any key.
PANELS = [
    # under dynamic sampling critic/score/mean covers only the kept (mixed) groups
    ("reward (all sampled responses)", ["train/generated_score_mean", "critic/score/mean"]),
    ("validation", ["val-core/*"]),
    # scorers that report these (strive/arithmetic) show the format and the arithmetic apart
    ("validation: answers in the `#### N` format", ["val-aux/*/formatted/mean@*"]),
    # `right` (after `####`) and, where reported, `right_any_format` (the last number written) on one panel
    ("validation: right answers", ["val-aux/*/right*/mean@*"]),
    ("response length (mean)", ["response_length/mean"]),
    ("entropy", ["actor/entropy"]),
    ("policy loss", ["actor/pg_loss"]),
    ("KL", ["actor/kl_loss", "actor/ppo_kl"]),
    ("value loss", ["critic/vf_loss"]),
    ("step time (s)", ["timing_s/step"]),
]


def _rows(source: str | os.PathLike | Iterable[dict]) -> list[dict]:
    return read_jsonl(source) if isinstance(source, (str, os.PathLike)) else list(source)


def _series(merged: dict[int, dict], key: str) -> tuple[list[int], list[float]]:
    points = [(step, row[key]) for step, row in merged.items() if isinstance(row.get(key), (int, float))]
    return [s for s, _ in points], [v for _, v in points]


def _title(path: str) -> str:
    """trainer.experiment_name from the config.json beside the metrics, else the run directory's name."""
    run_dir = os.path.dirname(os.path.abspath(path))
    try:
        with open(os.path.join(run_dir, "config.json"), encoding="utf-8") as f:
            name = json.load(f).get("trainer", {}).get("experiment_name")
    except (OSError, ValueError, AttributeError):
        name = None
    return name or os.path.basename(run_dir)


def _panels(keys: set[str], wanted: list[str] | None) -> list[tuple[str, list[str]]]:
    specs = PANELS if wanted is None else [(k, [k]) for k in wanted]
    panels = []
    for title, patterns in specs:
        for pattern in patterns:
            found = sorted(fnmatch.filter(keys, pattern))
            if found:
                panels.append((title, found))
                break
    return panels


def plot_curves(jsonl_path_: str | os.PathLike, out_png: str | os.PathLike | None = None,
                keys: list[str] | None = None, title: str | None = None) -> str:
    """Draw the run's main curves against step into one PNG and return its path.

    keys: metric names or glob patterns (`val-core/*`), one panel each; by default the PANELS present.
    out_png: defaults to curves.png beside the metrics file. title: defaults to the experiment name.
    Validation series (`val-*`) and series of a single point are drawn with markers.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    path = jsonl_path(jsonl_path_)
    out_png = os.fspath(out_png) if out_png else os.path.join(os.path.dirname(os.path.abspath(path)), "curves.png")
    merged = by_step(read_jsonl(path))
    panels = _panels({k for row in merged.values() for k in row}, keys)

    ncols = 1 if len(panels) <= 1 else 2
    nrows = max(1, math.ceil(len(panels) / ncols))
    fig = Figure(figsize=(6 * ncols, 3.2 * nrows), layout="constrained")
    FigureCanvasAgg(fig)
    fig.suptitle(title or _title(path))
    if not panels:
        ax = fig.add_subplot(1, 1, 1)
        ax.text(0.5, 0.5, f"no known metrics in {path}", ha="center", va="center")
        ax.set_axis_off()
    for i, (panel_title, found) in enumerate(panels):
        ax = fig.add_subplot(nrows, ncols, i + 1)
        for key in found:
            steps, values = _series(merged, key)
            marker = "o" if key.startswith("val-") or len(steps) == 1 else None
            ax.plot(steps, values, marker=marker, markersize=4, label=key)
        ax.set_title(panel_title, fontsize=10)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
        if len(found) > 1 or panel_title != found[0]:
            ax.legend(fontsize=7)
    os.makedirs(os.path.dirname(os.path.abspath(out_png)), exist_ok=True)
    fig.savefig(out_png, dpi=100)
    return out_png


def reward_table(source: str | os.PathLike | Iterable[dict], key: str = "critic/score/mean", every: int = 1) -> str:
    """A text table of step | reward | val | resp_len from a metrics.jsonl (or its rows).

    Shows every `every`-th step, plus every validated step and the last one. The val column appears when a
    `val-core/*/mean@N` key was logged; resp_len is `response_length/mean`.
    """
    merged = by_step(_rows(source))
    vkey = val_key(k for row in merged.values() for k in row)
    cols = [("reward", key)] + ([("val", vkey)] if vkey else []) + [("resp_len", "response_length/mean")]
    steps = [s for s, row in merged.items() if row.get(key) is not None or (vkey and row.get(vkey) is not None)]
    if not steps:
        return f"(no {key} or validation metrics logged)"
    shown = [s for s in steps if s % max(every, 1) == 0 or s == steps[-1] or (vkey and vkey in merged[s])]

    legend = ", ".join(f"{name} = {k}" for name, k in cols)
    lines = [legend, f"{'step':>6}" + "".join(f"  {name:>9}" for name, _ in cols)]
    for step in shown:
        cells = []
        for name, k in cols:
            value = merged[step].get(k)
            fmt = "{:>9.1f}" if name == "resp_len" else "{:>9.3f}"
            cells.append(fmt.format(value) if isinstance(value, (int, float)) else f"{'-':>9}")
        lines.append(f"{step:>6}" + "".join(f"  {c}" for c in cells))
    return "\n".join(lines)
