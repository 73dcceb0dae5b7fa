"""Config blocks shared by several roles: optimizer, FSDP engine, checkpoint contents.

verl mounts the same YAML files (`optim/fsdp.yaml`, `engine/fsdp.yaml`) under the actor, the critic and the
reference; here they are plain dataclasses reused the same way. Defaults are verl's. Each field carries an
attribute docstring, which `strive config --explain KEY` prints.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional


@dataclass
class WrapPolicy:
    min_num_params: int = 0
    """Wrap a submodule in its own FSDP unit only if it has at least this many parameters (0: every layer)."""


@dataclass
class FsdpConfig:
    param_offload: bool = False
    """Keep parameters on the CPU between uses; they move to the device only for forward/backward."""
    optimizer_offload: bool = False
    """Keep optimizer state on the CPU between optimizer steps."""
    offload_policy: bool = False
    """Use FSDP2's own CPUOffloadPolicy (parameters live on the CPU and the optimizer steps there)."""
    reshard_after_forward: bool = True
    """Free gathered parameters after each forward (lower memory, one more all-gather in backward)."""
    fsdp_size: int = -1
    """Size of a sharding group; -1 shards over the whole world. Smaller values give hybrid sharding (HSDP)."""
    forward_prefetch: bool = False
    """Prefetch the next layer's parameters during forward."""
    wrap_policy: WrapPolicy = field(default_factory=WrapPolicy)
    """Which submodules become FSDP units."""
    model_dtype: str = "fp32"
    """Dtype of the master weights and optimizer state (fp32 or bf16). Unset, the reference and the reward model
    (no optimizer) keep their weights in their compute dtype when it is 16-bit: same results, half the memory."""
    dtype: str = "bfloat16"
    """Compute dtype of forward and backward under mixed precision (bfloat16, float16 or float32)."""
    use_orig_params: bool = False
    """FSDP1 option, accepted for compatibility; FSDP2 always exposes the original parameters."""
    seed: int = 42
    """Seed for the model's random initialisation where one is needed."""
    full_determinism: bool = False
    """Ask torch for deterministic algorithms (slower)."""
    ulysses_sequence_parallel_size: int = 1
    """Ulysses sequence-parallel degree; strive supports 1 only and says so when it is set higher."""
    entropy_from_logits_with_chunking: bool = False
    """Compute entropy in chunks over the sequence (strive always does; accepted for compatibility)."""
    use_torch_compile: bool = True
    """torch.compile this model's decoder layers on CUDA (no effect on the CPU). The critic reads it here; the actor
    and the reference need it and their own use_torch_compile."""
    compile_cpp_wrapper: bool = False
    """strive, opt-in: where the decoder layers are compiled (CUDA), their kernels are called from generated C++
    (Inductor's cpp_wrapper) instead of Python, and activation checkpointing keeps the attention outputs (a plain
    checkpoint wraps the recomputed attention in RNG-state operators that have no C++ lowering). Less host time per
    kernel: at verl's micro-batches of 4 an update takes 31-39% less time on an H100; the first update compiles
    about a minute longer (bench/README.md). Needs the padded path (model.use_remove_padding=False): torch's
    varlen attention kernel does not compile under the C++ wrapper, and the start-up check says so."""
    entropy_checkpointing: bool = False
    """Recompute entropy in backward instead of storing it."""
    forward_only: bool = False
    """This model is never trained (reference model): no optimizer, no gradients."""
    strategy: str = "fsdp"
    """Engine strategy name (fsdp or fsdp2 both mean FSDP2 in strive)."""


@dataclass
class OptimConfig:
    lr: float = 1e-6
    """Peak learning rate."""
    lr_warmup_steps: int = -1
    """Warmup steps; negative means lr_warmup_steps_ratio × total training steps."""
    lr_warmup_steps_ratio: float = 0.0
    """Warmup length as a fraction of the total training steps (used when lr_warmup_steps < 0)."""
    total_training_steps: int = -1
    """Filled in by the trainer from the data and trainer.total_epochs / total_training_steps."""
    weight_decay: float = 0.01
    """AdamW weight decay."""
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    """AdamW betas."""
    clip_grad: float = 1.0
    """Gradient-norm clip, verl's engine-worker spelling of the role's grad_clip: used when only it is set."""
    optimizer: str = "AdamW"
    """Optimizer class name, looked up in optimizer_impl."""
    optimizer_impl: str = "torch.optim"
    """Module that holds the optimizer class."""
    lr_scheduler_type: str = "constant"
    """constant or cosine, each after the warmup."""
    warmup_style: Optional[str] = None
    """Deprecated alias of lr_scheduler_type."""
    min_lr_ratio: float = 0.0
    """Cosine schedule floor, as a fraction of lr."""
    num_cycles: float = 0.5
    """Cosine cycles over the decay phase (0.5 = half a cosine, from lr down to the floor)."""
    zero_indexed_step: bool = True
    """The scheduler counts steps from 0 (verl's convention)."""
    override_optimizer_config: Optional[dict] = None
    """Extra keyword arguments for the optimizer constructor."""


@dataclass
class CheckpointConfig:
    save_contents: list[str] = field(default_factory=lambda: ["model", "optimizer", "extra"])
    """What a checkpoint holds: model, optimizer, extra (scheduler and RNG); add hf_model for full HF weights."""
    load_contents: Optional[list[str]] = None
    """What a resume loads; null means the same as save_contents."""
    async_save: bool = False
    """Save in the background (no effect: strive saves synchronously and says so at start)."""
    mbridge_config: dict = field(default_factory=dict)
    """Megatron-bridge options (accepted, unused by FSDP)."""


def default_profiler() -> dict[str, Any]:
    return {"tool": None, "enable": False, "all_ranks": False, "ranks": [], "save_path": None, "tool_config": {}}


@dataclass
class RouterReplay:
    mode: str = "disabled"
    """MoE routing replay mode (accepted; strive runs dense models)."""
    record_file: Optional[str] = None
    """Where routing decisions are recorded."""
    replay_file: Optional[str] = None
    """Where routing decisions are replayed from."""


@dataclass
class PathName:
    path: Optional[str] = None
    """Path of a .py file (or module) that holds the object."""
    name: Optional[str] = None
    """Name of the object inside it."""
