"""The reward sections of the config: reward_model (a learned model or an LLM judge), reward_manager and
custom_reward_function. Key names and defaults are verl's (reference/verl_compat_spec.md); the judge and the
combination keys are strive's own (docs/reward.md).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

from strive.config.common import (
    FsdpConfig,
    PathName,
    default_profiler,
)


@dataclass
class RewardModelModel:
    input_tokenizer: Optional[str] = None
    """Tokenizer of the policy, when it differs from the reward model's."""
    path: str = "~/models/FsfairX-LLaMA3-RM-v0.1"
    """The learned reward model."""
    external_lib: Optional[str] = None
    """Module imported to register custom models."""
    trust_remote_code: bool = False
    """Allow code shipped with the checkpoint."""
    override_config: dict = field(default_factory=dict)
    """HF config overrides."""
    use_shm: bool = False
    """Stage weights through /dev/shm."""
    use_remove_padding: bool = False
    """Packed forward."""
    use_fused_kernels: bool = False
    """Fused kernels."""
    fsdp_config: FsdpConfig = field(default_factory=lambda: FsdpConfig(forward_only=True))
    """FSDP2 settings."""


@dataclass
class SandboxFusion:
    url: Optional[str] = None
    """Remote code-execution sandbox for code datasets."""
    max_concurrent: int = 64
    """Concurrent sandbox requests."""
    memory_limit_mb: int = 1024
    """Memory limit per sandbox run."""


@dataclass
class OverlongBufferConfig:
    """verl's DAPO recipe spelling of the dapo manager's overlong_buffer_cfg (docs/algo/dapo.md); measured
    against data.max_response_length."""

    enable: bool = False
    """Penalise responses that reach into the last `len` tokens before data.max_response_length."""
    len: int = 0
    """Buffer width in tokens (> 0 when enabled)."""
    penalty_factor: float = 0.0
    """Penalty at exactly data.max_response_length tokens."""
    log: bool = False
    """Also report overlong_reward / overlong per response."""


@dataclass
class JudgeConfig:
    """strive: a generative reward model (LLM judge) run on a second inference engine in the worker processes; see
    docs/reward.md. verl configures its generative reward model under reward_model.rollout.* inside its reward
    loop; strive names what it needs here instead."""

    enable: bool = False
    """strive: score responses with an LLM judge (its score joins the rule score as reward_model.combine says)."""
    path: Optional[str] = None
    """strive: the judge model (a local directory or a name `strive models` knows); required when enabled."""
    engine: str = "hf"
    """strive: the judge's inference engine (hf, vllm, sglang), independent of the rollout's."""
    prompt_template: str = ("Rate the answer to the question on a scale of 0 to 10.\n\nQuestion: {prompt}\n\n"
                            "Answer: {response}\n\nReference answer: {ground_truth}\n\nReply with the number only.")
    """strive: the judge's user message; {prompt}, {response} and {ground_truth} are filled per sample (the prompt
    as text, the response decoded without special tokens); rendered with the judge's chat template."""
    score_regex: str = r"(-?\d+(?:\.\d+)?)"
    """strive: the first match's group 1 (or the whole match) in the judge's reply is the score; no match scores 0
    and counts in reward/judge_parse_failures."""
    max_score: float = 10.0
    """strive: the parsed score is divided by this and clipped to [0, 1]."""
    max_new_tokens: int = 16
    """strive: tokens the judge may generate per reply."""
    temperature: float = 0.0
    """strive: the judge's sampling temperature (0: greedy)."""
    dtype: str = "bfloat16"
    """strive: the judge engine's dtype."""
    gpu_memory_utilization: float = 0.2
    """strive: share of the device memory the judge engine may take (vllm, sglang)."""
    engine_kwargs: dict = field(default_factory=dict)
    """strive: passed through to the judge engine's constructor."""


@dataclass
class RewardModelConfig:
    enable: bool = False
    """Score responses with a learned (discriminative) reward model: a sequence-classification model with one
    output, run forward-only on its own FSDP2 role in the worker processes."""
    enable_resource_pool: bool = False
    """Separate GPUs for the reward model."""
    n_gpus_per_node: int = 8
    """GPUs per node of that pool."""
    nnodes: int = 0
    """Nodes of that pool."""
    strategy: str = "fsdp"
    """Strategy of the reward model."""
    ulysses_sequence_parallel_size: int = 1
    """Sequence parallelism of the reward model (verl's ppo_trainer.yaml has it; refused above 1)."""
    model: RewardModelModel = field(default_factory=RewardModelModel)
    """The reward model itself."""
    micro_batch_size: Optional[int] = None
    """Deprecated global micro-batch."""
    micro_batch_size_per_gpu: Optional[int] = None
    """Sequences per reward-model forward on one GPU."""
    max_length: Optional[int] = None
    """Reward-model input tokens at most (prompt + response as the reward model sees them); longer inputs keep their
    first max_length tokens, as verl truncates, with one warning per run. null: no limit."""
    use_dynamic_bsz: Optional[bool] = None
    """null: same as critic.use_dynamic_bsz."""
    forward_max_token_len_per_gpu: Optional[int] = None
    """null: same as critic.forward_max_token_len_per_gpu."""
    reward_manager: str = "naive"
    """Deprecated name of reward_manager.name."""
    reward_loop_source: str = "register"
    """Where the reward loop comes from."""
    reward_loop_module_path: Optional[str] = None
    """Custom reward-loop module."""
    reward_loop_class_name: Optional[str] = None
    """Custom reward-loop class."""
    launch_reward_fn_async: bool = False
    """Score rule rewards in a Ray task while log-probs are computed."""
    sandbox_fusion: SandboxFusion = field(default_factory=SandboxFusion)
    """Code sandbox."""
    use_reward_loop: bool = True
    """verl's per-sample reward loop (strive scores on the controller either way)."""
    num_workers: int = 1
    """Reward workers."""
    rollout: dict = field(default_factory=dict)
    """Generative reward-model engine settings."""
    reward_kwargs: dict = field(default_factory=dict)
    """Extra keyword arguments for the reward manager (dapo: overlong_buffer_cfg, max_resp_len)."""
    profiler: dict = field(default_factory=default_profiler)
    """Profiler settings."""
    overlong_buffer: OverlongBufferConfig = field(default_factory=OverlongBufferConfig)
    """DAPO recipe spelling of reward_kwargs.overlong_buffer_cfg (with max_resp_len = data.max_response_length)."""
    combine: str = "rm"
    """strive: how a model score (reward model or judge) and the rule score make the reward. rm: the model score
    alone, no rule score is computed (verl: with a reward model the rule function is not called); sum: model score
    + rule score; by_data_source: the model scores the rows whose data_source is in reward_model.data_sources, the
    rule function the others."""
    data_sources: list = field(default_factory=list)
    """strive: with combine=by_data_source, the data sources the model scores (non-empty)."""
    judge: JudgeConfig = field(default_factory=JudgeConfig)
    """strive: a generative reward model (LLM judge)."""


@dataclass
class RewardManagerConfig:
    source: str = "register"
    """register (a built-in name) or importlib (module.path + module.name)."""
    name: Optional[str] = None
    """null: same as reward_model.reward_manager (naive)."""
    module: PathName = field(default_factory=lambda: PathName(name="custom_reward_manager"))
    """A user reward-manager class."""
    on_error: str = "raise"
    """strive: when the reward function raises or times out on a sample: raise (stop the run, naming the sample's
    position, row index, data_source and the exception) or zero (score it 0, print one line per batch, and count it
    in the step's reward/errors and reward/timeouts metrics)."""
    timeout: Optional[float] = 300.0
    """strive: seconds one reward call may take before it counts as failed (handled as on_error says); null or 0:
    no limit."""
    max_concurrency: int = 64
    """strive: an `async def` custom reward function has at most this many calls in flight at once (the batch's
    calls run concurrently on one event loop); 0: no bound. A plain function is called one sample at a time."""


@dataclass
class CustomRewardFunction:
    path: Optional[str] = None
    """A .py file with your scoring function; it replaces the built-in scorers."""
    name: str = "compute_score"
    """The function's name in that file."""
    reward_kwargs: dict = field(default_factory=dict)
    """Extra keyword arguments passed to every call (they win over the standard ones)."""
