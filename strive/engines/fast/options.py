"""The hf engine's `engine_kwargs.hf` options, and the choice between its plain decode loop and the fast path.

Why a module of its own, free of torch: the choice is made by `strive.engines.base.start_engine` before any model
is loaded, from three things known up front: the options, the device, and `model_type` in the model's config.json.
Keeping it here lets base.py stay torch-free and keeps hf.py, the plain reference engine, ignorant of the fast path.

What it chose:
- `fast=auto` (the default) takes the fast path on CUDA for the model types it implements, else the plain loop;
  `on` takes it on any device (on CPU it runs without CUDA graphs, which is how the tests run it) and is an error
  for a model it cannot run; `off` never takes it.
- config.json's model_type is only a first look: the fast engine checks the loaded model in full
  (`model.unsupported_reason`) and, under `auto`, falls back to the plain loop (`Choice.fallback` says why).
- Unknown keys are refused whichever path runs, so a typo does not silently leave a setting unused.
- The choice is returned as a `Choice` whose `line()` is the one line the run prints about it.

    pytest tests/integration/test_engine_start.py -q
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from typing import Optional

DEFAULT_FAST = "auto"
OPTION_KEYS = ("fast", "fast_sync_every", "fast_prefill_tokens", "fast_compile", "fast_kernels")
SUPPORTED_ARCHS = ("llama", "qwen2")
"""config.model_type values the fast path implements (model.py)."""


@dataclass
class FastOptions:
    mode: str = DEFAULT_FAST
    sync_every: int = 8
    prefill_tokens: int = 16384
    compile: bool = False
    kernels: bool = True

    @staticmethod
    def parse(kwargs: dict, default_prefill_tokens: int = 16384) -> "FastOptions":
        unknown = sorted(set(kwargs) - set(OPTION_KEYS))
        if unknown:
            raise ValueError(f"engine_kwargs.hf: unknown keys {unknown}; the hf engine knows {list(OPTION_KEYS)}")
        mode = str(kwargs.get("fast", DEFAULT_FAST)).lower()
        mode = {"true": "on", "1": "on", "false": "off", "0": "off", "none": "off"}.get(mode, mode)
        if mode not in ("auto", "on", "off"):
            raise ValueError(f"engine_kwargs.hf.fast={kwargs['fast']!r}: use auto, on or off")
        opts = FastOptions(mode=mode, sync_every=int(kwargs.get("fast_sync_every", 8)),
                           prefill_tokens=int(kwargs.get("fast_prefill_tokens", default_prefill_tokens)),
                           compile=_flag(kwargs.get("fast_compile", False)),
                           kernels=_flag(kwargs.get("fast_kernels", True)))
        if opts.sync_every < 1 or opts.prefill_tokens < 1:
            raise ValueError("engine_kwargs.hf.fast_sync_every and fast_prefill_tokens must be ≥ 1")
        return opts

    @staticmethod
    def of(spec) -> "FastOptions":
        """The options in an EngineSpec's engine_kwargs (fast_prefill_tokens defaults to max_num_batched_tokens)."""
        return FastOptions.parse(dict(spec.engine_kwargs or {}), getattr(spec, "max_num_batched_tokens", None) or 16384)


def _flag(value) -> bool:
    return str(value).lower() in ("true", "1", "on")


def arch_reason(model_type: Optional[str]) -> Optional[str]:
    """Why the fast path cannot run this model_type, or None when it implements it."""
    if model_type in SUPPORTED_ARCHS:
        return None
    return f"model_type {model_type!r} (the fast path implements {', '.join(SUPPORTED_ARCHS)})"


@dataclass(frozen=True)
class Choice:
    fast: bool
    reason: str
    """Why, in the user's terms, e.g. "engine_kwargs.hf.fast=auto: device is cpu"."""
    options: FastOptions

    def line(self) -> str:
        path = "fast decode path" if self.fast else "plain decode loop"
        return f"[strive] rollout engine hf: {path} ({self.reason})"

    def fallback(self, unsupported: str) -> "Choice":
        """The plain loop after all: the loaded model has something the fast path does not implement."""
        return Choice(False, f"engine_kwargs.hf.fast={self.options.mode}: the fast path does not support "
                             f"{unsupported}", self.options)


def choose(spec) -> Choice:
    """Plain loop or fast path for this EngineSpec, decided before loading; raises for bad options and for
    fast=on with a model_type the fast path does not implement."""
    opts = FastOptions.of(spec)
    setting = f"engine_kwargs.hf.fast={opts.mode}"
    if opts.mode == "off":
        return Choice(False, setting, opts)
    model_type = config_model_type(spec.model_path)
    # an unreadable config.json (None) is left to the check on the loaded model
    unsupported = arch_reason(model_type) if model_type is not None else None
    if opts.mode == "on":
        if unsupported:
            raise ValueError(f"{setting}, but the fast path does not support {unsupported}; use fast=auto|off")
        return Choice(True, setting, opts)
    device = str(spec.device).split(":")[0]
    if device != "cuda":
        return Choice(False, f"{setting}: device is {device}", opts)
    if unsupported:
        return Choice(False, f"{setting}: the fast path does not support {unsupported}", opts)
    return Choice(True, f"{setting}: device is cuda, model_type {model_type!r}", opts)


def config_model_type(model_path: str) -> Optional[str]:
    """model_type from <model_path>/config.json, None where there is no readable one."""
    try:
        with open(os.path.join(str(model_path), "config.json")) as fh:
            return json.load(fh).get("model_type")
    except (OSError, ValueError):
        return None
