"""The hf engine with the fast decode path: HFEngine's model and weights, FastGenerator's generate and KV cache.

Why a subclass of HFEngine: the two engines differ only in how they decode. Loading, update_weights and
release/resume of the weights are HFEngine's, unchanged, so the plain engine stays the reference the fast one is
checked against (tests/integration/test_fast_engine.py compares them) and hf.py needs no trace of this one.
What this class adds: generate (through generate_until) goes to the FastGenerator (generator.py) on the same
model; release/resume of "kv_cache" reach its preallocated cache, release of "weights" also drops its packed
projection buffers.

A run with rollout.name=hf gets this class when `strive.engines.base.start_engine` chooses the fast path
(engine_kwargs.hf.fast, options.py). Built directly, `FastHFEngine(spec)` runs the fast path on any device (on CPU
without CUDA graphs). The loaded model is checked in full (`model.unsupported_reason`): unsupported is an error,
except under fast=auto, where this engine decodes with HFEngine's plain loop and `unsupported` says why.

    pytest tests/integration/test_fast_engine.py -q
"""

from __future__ import annotations

from typing import Callable, Optional

from strive.engines.base import Completion, EngineSpec, SamplingParams, StopCheck
from strive.engines.fast.generator import FastGenerator
from strive.engines.fast.model import unsupported_reason
from strive.engines.fast.options import FastOptions
from strive.engines.hf import HFEngine


class FastHFEngine(HFEngine):
    """RolloutEngine: HFEngine whose generate and KV cache belong to a FastGenerator (`self.fast`)."""

    def __init__(self, spec: EngineSpec):
        opts = FastOptions.of(spec)  # before loading: bad options fail fast
        super().__init__(spec)
        self.unsupported: Optional[str] = unsupported_reason(self.model)
        self.fast: Optional[FastGenerator] = None
        if self.unsupported is None:
            self.fast = FastGenerator(self.model, self.spec, opts)
        elif opts.mode != "auto":
            raise ValueError(f"engine_kwargs.hf.fast={opts.mode}, but the fast path does not support "
                             f"{self.unsupported}; use fast=auto|off")

    def generate_until(self, prompts: list[list[int]], params: SamplingParams,
                       should_stop: Optional[Callable[[], bool]], every: int) -> list[Completion]:
        if self.fast is None:  # fast=auto fell back (see `unsupported`)
            return super().generate_until(prompts, params, should_stop, every)
        rows = self._rows(prompts, params)
        if not rows:
            return []
        return self.fast.generate(rows, [self._max_new(len(r), params) for r in rows], params,
                                  StopCheck(should_stop, every))

    def release(self, tags: tuple[str, ...] = ("weights", "kv_cache")) -> None:
        # the generator first: it drops its packed buffers and cache, then HFEngine frees the parameters and
        # empties the allocator cache once for both
        if self.fast is not None:
            self.fast.release(tags)
        super().release(tags)

    def resume(self, tags: tuple[str, ...] = ("weights", "kv_cache")) -> None:
        super().resume(tags)
        if self.fast is not None:
            self.fast.resume(tags)
