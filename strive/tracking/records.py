"""Metric values as plain numbers: converting what workers return, reducing per-mini-batch dicts, reading a run back.

The trainer hands the tracker whatever its workers produced: Python floats, numpy scalars, 0-d or 1-d torch
tensors, lists of per-micro-batch values. They are turned into one float here, once, so every backend (console,
JSONL, TensorBoard, W&B) shows the same number. A value that is not a finite number becomes None: the JSONL file
keeps it as null, so a NaN loss stays visible as a hole at its step, and the other backends skip it.

Torch is never imported; tensors are recognised by their `detach` method.

    /work/venv/bin/pytest tests/unit -q -k tracking
"""

from __future__ import annotations

import json
import math
import os
import sys
from typing import Any, Iterable

import numpy as np


def _numbers(value: Any) -> list[float]:
    """Every number inside a metric value (scalar, tensor, array, or a list of those), as Python floats."""
    if value is None or isinstance(value, (str, bytes, dict)):
        return []
    if hasattr(value, "detach"):  # torch.Tensor, on any device
        return value.detach().double().cpu().reshape(-1).tolist()
    if isinstance(value, (list, tuple)):
        return [x for item in value for x in _numbers(item)]
    if hasattr(value, "__array__"):  # numpy arrays and numpy scalars
        arr = np.asarray(value)
        return arr.astype(np.float64).reshape(-1).tolist() if arr.dtype.kind in "biuf" else []
    try:
        return [float(value)]
    except (TypeError, ValueError):
        return []


def as_float(value: Any) -> float | None:
    """One finite float for a metric value (several numbers are averaged), or None if there is none."""
    nums = _numbers(value)
    if not nums:
        return None
    out = float(np.mean(nums)) if len(nums) > 1 else nums[0]
    return out if math.isfinite(out) else None


def reduce_metrics(metrics: list[dict[str, Any]] | dict[str, Any]) -> dict[str, float]:
    """Reduce per-mini-batch metric dicts to one dict of floats.

    All numbers logged under a key (lists and tensors are flattened) are pooled, then reduced as verl's
    `reduce_metrics` does: max if the key contains "max", min if it contains "min", mean otherwise. So
    `perf/max_memory_allocated_gb` stays a maximum while `actor/pg_loss` is averaged. verl's own input form, one
    dict of lists, is accepted too. NaN is kept (a NaN loss in one mini-batch makes the mean NaN); keys with no
    numbers at all are dropped.
    """
    dicts = [metrics] if isinstance(metrics, dict) else metrics
    pooled: dict[str, list[float]] = {}
    for d in dicts:
        for key, value in d.items():
            pooled.setdefault(key, []).extend(_numbers(value))
    out = {}
    for key, nums in pooled.items():
        if nums:
            reduce = np.max if "max" in key else np.min if "min" in key else np.mean
            out[key] = float(reduce(nums))
    return out


def jsonl_path(path: str | os.PathLike) -> str:
    """A run directory means its metrics.jsonl."""
    path = os.fspath(path)
    return os.path.join(path, "metrics.jsonl") if os.path.isdir(path) else path


def read_jsonl(path: str | os.PathLike) -> list[dict]:
    """The rows of a metrics.jsonl (or of a run directory holding one), in file order.

    A line that does not parse (a run killed mid-write leaves one) is skipped with a note on stderr.
    """
    rows, bad = [], 0
    with open(jsonl_path(path), encoding="utf-8") as f:
        for line in f:
            if not line.strip():
                continue
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                bad += 1
    if bad:
        print(f"[strive] {jsonl_path(path)}: skipped {bad} unreadable line(s)", file=sys.stderr)
    return rows


def by_step(rows: Iterable[dict]) -> dict[int, dict]:
    """Merge rows that share a step; a later value wins.

    A resumed run re-logs the steps after its checkpoint and validates again at the resumed step, so one step
    can have several rows; the latest one is what the resumed run actually saw.
    """
    merged: dict[int, dict] = {}
    for row in rows:
        if "step" not in row:
            continue
        step = int(row["step"])
        merged.setdefault(step, {}).update({k: v for k, v in row.items() if k != "step" and v is not None})
    return dict(sorted(merged.items()))


def val_key(keys: Iterable[str]) -> str | None:
    """The headline validation metric: the first `val-core/<source>/<var>/mean@N` key, sorted by name."""
    found = sorted({k for k in keys if k.startswith("val-core/") and "/mean@" in k})
    return found[0] if found else None
