"""Validation metrics as verl names them: `val-core/<data_source>/<var>/mean@N` and friends (spec §5.3).

Per prompt, over its N responses: mean@N; with N > 1 also std@N and bootstrap best@k / worst@k (1000
resamples, seed 42, k = 2, 4, ..., N) and maj@k when the scorer returns a `pred`. Prompt-level values are
averaged within each data source. The core variable is `acc` when the scorer returns one, else `reward`.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from typing import Any

import numpy as np


def _bootstrap(values: np.ndarray, k: int, pick, rng: np.random.Generator, draws: int = 1000) -> tuple[float, float]:
    samples = rng.choice(values, size=(draws, k), replace=True)
    best = pick(samples, axis=1)
    return float(best.mean()), float(best.std())


def _majority(preds: list[Any], values: np.ndarray, k: int, rng: np.random.Generator, draws: int = 1000):
    results = []
    for _ in range(draws):
        idx = rng.choice(len(preds), size=k, replace=True)
        top = Counter(str(preds[i]) for i in idx).most_common(1)[0][0]
        results.append(float(np.mean([values[i] for i in idx if str(preds[i]) == top])))
    return float(np.mean(results)), float(np.std(results))


def prompt_metrics(values: list[float], preds: list[Any] | None) -> dict[str, float]:
    arr = np.asarray(values, dtype=np.float64)
    n = len(arr)
    out = {f"mean@{n}": float(arr.mean())}
    if n > 1:
        out[f"std@{n}"] = float(arr.std())
        rng = np.random.default_rng(42)
        ks = sorted({k for k in range(2, n + 1, 2)} | {n})
        for k in ks:
            out[f"best@{k}/mean"], out[f"best@{k}/std"] = _bootstrap(arr, k, np.max, rng)
            out[f"worst@{k}/mean"], out[f"worst@{k}/std"] = _bootstrap(arr, k, np.min, rng)
            if preds is not None:
                out[f"maj@{k}/mean"], out[f"maj@{k}/std"] = _majority(preds, arr, k, rng)
    return out


def validation_metrics(data_sources: list[str], prompt_ids: list[int], variables: dict[str, list[Any]],
                       n: int) -> dict[str, float]:
    """variables: name → per-response values (reward, acc, pred, ...), aligned with data_sources."""
    core_var = "acc" if "acc" in variables else "reward"
    preds = variables.get("pred")
    grouped: dict[tuple[str, int], list[int]] = defaultdict(list)
    for i, (source, pid) in enumerate(zip(data_sources, prompt_ids)):
        grouped[(source, pid)].append(i)
    per_source: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    for var, values in variables.items():
        if var == "pred" or not all(isinstance(v, (int, float, bool)) for v in values if v is not None):
            continue
        for (source, _), idx in grouped.items():
            vals = [float(values[i]) for i in idx if values[i] is not None]
            if not vals:
                continue
            p = [preds[i] for i in idx] if preds is not None else None
            for metric, value in prompt_metrics(vals, p).items():
                per_source[source][f"{var}/{metric}"].append(value)
    out = {}
    for source, metrics in per_source.items():
        for name, vals in metrics.items():
            var, metric = name.split("/", 1)
            core = var == core_var and metric.split("/")[0] in (f"mean@{n}", f"maj@{n}", f"best@{n}")
            out[f"{'val-core' if core else 'val-aux'}/{source}/{name}"] = float(np.mean(vals))
    return out


def pick_generations(rows: list[dict], n: int) -> list[dict]:
    """`trainer.log_val_generations=n`: the same n validation samples at every validation (rows sorted by input,
    then shuffled with seed 42, as verl picks them), so a table shows how one prompt's answer changes."""
    if n <= 0 or not rows:
        return []
    order = sorted(range(len(rows)), key=lambda i: (rows[i]["input"], i))
    np.random.RandomState(42).shuffle(order)
    return [rows[i] for i in order[:n]]

