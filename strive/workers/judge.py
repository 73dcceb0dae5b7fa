"""The LLM judge role: a second inference engine, with its own model, that reads judge prompts and writes replies.

It is a plain `RolloutEngine` (strive/engines/base.py) started from reward_model.judge.* with the checkpoint's own
weights, on any engine strive has (hf by default). Every worker process runs one and answers its share of the
batch's judge prompts; it never receives weight updates. The engine keeps its memory between steps (on a GPU,
reward_model.judge.gpu_memory_utilization bounds what vLLM/SGLang preallocate beside the rollout engine).
"""

from __future__ import annotations

import torch

from strive.config.sections import JudgeConfig
from strive.engines import SamplingParams, start_engine
from strive.engines.base import EngineSpec
from strive.models.loading import resolve_model_path


class JudgeWorker:
    def __init__(self, cfg: JudgeConfig, device: torch.device, seed: int):
        self.cfg = cfg
        spec = EngineSpec(model_path=resolve_model_path(cfg.path), device=str(device), dtype=cfg.dtype,
                          load_format="auto", gpu_memory_utilization=cfg.gpu_memory_utilization,
                          tensor_parallel_size=1, engine_kwargs=dict(cfg.engine_kwargs), seed=seed,
                          free_cache_engine=False)  # never released: no sleep mode needed
        self.engine = start_engine(cfg.engine, spec, announce=False)

    def generate(self, prompts: list[list[int]], params: SamplingParams) -> list[list[int]]:
        """The judge's reply (token ids) to each prompt, in order."""
        if not prompts:
            return []
        return [c.token_ids for c in self.engine.generate(prompts, params)]
