"""`actor_rollout_ref.*`: the policy model, how it is trained, its reference copy and its rollout engine.

Key names and defaults are verl's (ppo_trainer.yaml at 0.8.0.dev, see reference/verl_compat_spec.md §1.3-1.6).
A default of `None` documented as "null: same as X" is one of verl's interpolations; `strive.config.resolve`
fills it in, so the printed config shows the value actually used.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional, Union

from strive.config.common import (
    CheckpointConfig,
    FsdpConfig,
    OptimConfig,
    RouterReplay,
    default_profiler,
)


@dataclass
class TiledMlp:
    enabled: bool = False
    """Run the MLP in shards over the sequence to save activation memory."""
    num_shards: int = 4
    """Number of sequence shards for the tiled MLP."""


@dataclass
class FusedKernelOptions:
    impl_backend: str = "torch"
    """Backend of the fused log-prob/entropy head (torch or triton)."""


@dataclass
class ModelConfig:
    path: str = "~/models/deepseek-llm-7b-chat"
    """Local model directory, a name `strive models` knows (e.g. smollm2-135m-instruct), or a hub id."""
    hf_config_path: Optional[str] = None
    """Take the HF config from here instead of `path`."""
    tokenizer_path: Optional[str] = None
    """Take the tokenizer from here instead of `path`."""
    use_shm: bool = False
    """Stage the weights through /dev/shm before loading."""
    trust_remote_code: bool = False
    """Allow model/tokenizer code shipped with the checkpoint to run."""
    custom_chat_template: Optional[str] = None
    """A Jinja chat template that replaces the tokenizer's own."""
    external_lib: Optional[str] = None
    """A module imported before loading, to register custom architectures."""
    override_config: dict = field(default_factory=dict)
    """Keys written over the HF config before the model is built (e.g. attention_dropout)."""
    enable_gradient_checkpointing: bool = True
    """Recompute activations in backward (actor and reference)."""
    enable_activation_offload: bool = False
    """On CUDA, keep the tensors the training forward saves for backward in pinned CPU memory (save_on_cpu):
    less GPU memory, more host-device traffic; the layers then run eager (no use_torch_compile). One H200, 0.5B
    shape, 8 × 512 tokens, no checkpointing: the update's peak fell from 7.5 to 3.7 GiB. Actor (and critic.model's
    own key for the critic)."""
    use_remove_padding: bool = True
    """Packed, padding-free forward: sequences are concatenated and padding tokens never computed."""
    packed_attention: str = "auto"
    """strive: the attention kernel of the packed forward (actor and reference): auto, varlen (torch's flash
    varlen, CUDA), flash_attn (flash-attn's varlen, CUDA, if installed) or sdpa_loop (SDPA per sequence, any
    device). auto: flash_attn if installed, else varlen on CUDA in bf16/fp16, else sdpa_loop. Never an N × N mask."""
    lora_rank: int = 0
    """LoRA rank; 0 trains all weights."""
    lora_alpha: int = 16
    """LoRA scaling numerator."""
    target_modules: Union[str, list[str]] = "all-linear"
    """Modules LoRA adapts."""
    exclude_modules: Optional[Union[str, list[str]]] = None
    """Modules LoRA leaves alone."""
    lora_adapter_path: Optional[str] = None
    """Start from this trained adapter."""
    use_liger: bool = False
    """Use Liger kernels (accepted; not used by strive)."""
    use_fused_kernels: bool = False
    """Fused log-prob/entropy head (accepted; strive's fused head, strive/models/head.py, always runs)."""
    fused_kernel_options: FusedKernelOptions = field(default_factory=FusedKernelOptions)
    """Options of the fused head."""
    tiled_mlp: TiledMlp = field(default_factory=TiledMlp)
    """Memory-saving tiled MLP."""
    mtp: dict = field(default_factory=lambda: {"enable": False})
    """Multi-token-prediction settings (accepted; not used)."""


@dataclass
class PolicyLossConfig:
    loss_mode: str = "vanilla"
    """Policy loss: vanilla (PPO clip with dual clip) is implemented."""
    clip_cov_ratio: float = 0.0002
    """clip-cov: fraction of tokens clipped."""
    clip_cov_lb: float = 1.0
    """clip-cov: lower covariance bound."""
    clip_cov_ub: float = 5.0
    """clip-cov: upper covariance bound."""
    kl_cov_ratio: float = 0.0002
    """kl-cov: fraction of tokens given the KL penalty."""
    ppo_kl_coef: float = 0.1
    """kl-cov: KL coefficient."""


@dataclass
class ActorConfig:
    strategy: str = "fsdp"
    """Training strategy: fsdp / fsdp2 (both FSDP2 here)."""
    rollout_n: Optional[int] = None
    """null: same as actor_rollout_ref.rollout.n."""
    ppo_mini_batch_size: int = 256
    """Prompts per optimizer step, over all GPUs (each prompt brings rollout.n sequences)."""
    ppo_micro_batch_size: Optional[int] = None
    """Deprecated: micro-batch in sequences over all GPUs. Use ppo_micro_batch_size_per_gpu."""
    ppo_micro_batch_size_per_gpu: Optional[int] = None
    """Sequences per forward/backward on one GPU; only bounds memory (gradient accumulation covers the rest)."""
    use_dynamic_bsz: bool = False
    """Form micro-batches by token count (ppo_max_token_len_per_gpu) instead of a fixed number of sequences."""
    ppo_max_token_len_per_gpu: int = 16384
    """Token budget of one micro-batch per GPU when use_dynamic_bsz."""
    clip_ratio: float = 0.2
    """PPO clip ε; used for clip_ratio_low/high when those are not set."""
    clip_ratio_low: Optional[float] = 0.2
    """Lower clip ε (ratio ≥ 1 − ε)."""
    clip_ratio_high: Optional[float] = 0.2
    """Upper clip ε (ratio ≤ 1 + ε); raise it for DAPO's clip-higher."""
    clip_ratio_c: float = 3.0
    """Dual-clip constant c (> 1): bounds the loss of negative-advantage tokens at c·|A|."""
    tau_pos: float = 1.0
    """SAPO loss only."""
    tau_neg: float = 1.05
    """SAPO loss only."""
    freeze_vision_tower: bool = False
    """Do not train a vision tower."""
    policy_loss: PolicyLossConfig = field(default_factory=PolicyLossConfig)
    """Policy-loss variant and its parameters."""
    loss_agg_mode: str = "token-mean"
    """token-mean, seq-mean-token-sum, seq-mean-token-mean or seq-mean-token-sum-norm."""
    loss_scale_factor: Optional[float] = None
    """Divisor for seq-mean-token-sum-norm; null means the response length."""
    entropy_coeff: float = 0.0
    """Weight of the entropy bonus."""
    calculate_entropy: bool = False
    """Compute entropy during the update even when entropy_coeff is 0."""
    use_kl_loss: bool = False
    """Add β·KL(π‖π_ref) to the actor loss (GRPO style); needs the reference model."""
    kl_loss_coef: float = 0.001
    """β of the KL loss."""
    kl_loss_type: str = "low_var_kl"
    """KL estimator: kl/k1, abs, mse/k2, low_var_kl/k3; a trailing + gives the k2 gradient."""
    use_prefix_grouper: bool = False
    """Shared-prefix forward for group samples (accepted; not used)."""
    use_torch_compile: bool = True
    """torch.compile the actor's decoder layers on CUDA (no effect on the CPU); fsdp_config.use_torch_compile=False
    also turns it off."""
    ppo_epochs: int = 1
    """Passes over each rollout batch."""
    shuffle: bool = False
    """Shuffle the rollout batch between epochs."""
    data_loader_seed: int = 42
    """Seed of that shuffle."""
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    """What actor checkpoints hold."""
    optim: OptimConfig = field(default_factory=OptimConfig)
    """Actor optimizer."""
    grad_clip: float = 1.0
    """Clip the gradient norm to this value once per mini-batch."""
    ulysses_sequence_parallel_size: int = 1
    """Deprecated alias of fsdp_config.ulysses_sequence_parallel_size."""
    entropy_from_logits_with_chunking: bool = False
    """Accepted; strive always chunks."""
    entropy_checkpointing: bool = False
    """Recompute entropy in backward."""
    use_remove_padding: Optional[bool] = None
    """null: same as actor_rollout_ref.model.use_remove_padding."""
    use_fused_kernels: Optional[bool] = None
    """null: same as actor_rollout_ref.model.use_fused_kernels."""
    calculate_sum_pi_squared: bool = False
    """Only for the optimal-token-baseline estimators."""
    sum_pi_squared_checkpointing: bool = False
    """Only for the optimal-token-baseline estimators."""
    router_replay: RouterReplay = field(default_factory=RouterReplay)
    """MoE routing replay."""
    profiler: dict = field(default_factory=default_profiler)
    """Per-role profiler settings."""
    qat: dict = field(default_factory=lambda: {"enable": False})
    """Quantisation-aware training (accepted; not used)."""
    fsdp_config: FsdpConfig = field(default_factory=FsdpConfig)
    """FSDP2 settings of the actor."""


@dataclass
class RefConfig:
    strategy: Optional[str] = None
    """null: same as actor.strategy."""
    rollout_n: Optional[int] = None
    """null: same as rollout.n."""
    use_torch_compile: Optional[bool] = None
    """torch.compile the reference model's decoder layers on CUDA; null: same as actor.use_torch_compile."""
    log_prob_micro_batch_size: Optional[int] = None
    """Deprecated: reference log-prob micro-batch over all GPUs. Use log_prob_micro_batch_size_per_gpu."""
    log_prob_micro_batch_size_per_gpu: Optional[int] = None
    """Sequences per reference forward on one GPU."""
    log_prob_use_dynamic_bsz: Optional[bool] = None
    """null: same as actor.use_dynamic_bsz."""
    log_prob_max_token_len_per_gpu: Optional[int] = None
    """null: same as actor.ppo_max_token_len_per_gpu."""
    ulysses_sequence_parallel_size: Optional[int] = None
    """null: same as actor.ulysses_sequence_parallel_size."""
    entropy_from_logits_with_chunking: bool = False
    """Accepted; strive always chunks."""
    entropy_checkpointing: bool = False
    """Accepted; the reference never runs backward."""
    router_replay: RouterReplay = field(default_factory=RouterReplay)
    """MoE routing replay."""
    profiler: dict = field(default_factory=default_profiler)
    """Per-role profiler settings."""
    fsdp_config: FsdpConfig = field(default_factory=lambda: FsdpConfig(forward_only=True))
    """FSDP2 settings of the reference model (param_offload is honoured)."""


@dataclass
class SamplingConfig:
    top_k: int = -1
    """Top-k for validation (-1: off)."""
    top_p: float = 1.0
    """Top-p for validation."""
    temperature: float = 0.0
    """Validation temperature (0 with do_sample=False: greedy)."""
    n: int = 1
    """Responses per validation prompt."""
    do_sample: bool = False
    """Sample during validation; requires temperature > 0."""


@dataclass
class MultiTurnConfig:
    enable: bool = False
    """Multi-turn tool rollouts through the agent loops (docs/multiturn.md)."""
    max_assistant_turns: Optional[int] = None
    """Limit on assistant turns."""
    tool_config_path: Optional[str] = None
    """Tool schema file."""
    max_user_turns: Optional[int] = None
    """Limit on user turns."""
    max_parallel_calls: int = 1
    """Tool calls per turn."""
    max_tool_response_length: int = 256
    """Tool output budget in tokens."""
    tool_response_truncate_side: str = "middle"
    """Where tool outputs are cut."""
    interaction_config_path: Optional[str] = None
    """Interaction (simulated user) config."""
    use_inference_chat_template: bool = False
    """Template turns like the inference engine does."""
    tokenization_sanity_check_mode: str = "strict"
    """How strictly incremental tokenisation is checked."""
    format: str = "hermes"
    """Tool-call format: hermes (`<tool_call>` tags, verl's), or strive's hermes_or_json, which also takes a JSON
    call {"name": <a declared tool>, "arguments": {...}} written without the tags (small models do)."""
    num_repeat_rollouts: Optional[int] = None
    """Repeat count for multi-turn rollouts."""
    router: str = "static"
    """strive's own: how a step's episodes reach the rollout ranks. static: split evenly up front;
    least_loaded: in chunks, the next chunk to the first free rank (strive/controller/router.py)."""


@dataclass
class RolloutConfig:
    name: str = "hf"
    """Rollout engine: hf (transformers, always available), vllm or sglang."""
    mode: str = "async"
    """async (server-style) or sync (older verl); strive drives both the same way."""
    temperature: float = 1.0
    """Sampling temperature for training rollouts."""
    top_k: int = -1
    """Top-k for training rollouts (-1 or 0: off)."""
    top_p: float = 1.0
    """Top-p for training rollouts."""
    prompt_length: Optional[int] = None
    """null: same as data.max_prompt_length."""
    response_length: Optional[int] = None
    """null: same as data.max_response_length."""
    dtype: str = "bfloat16"
    """Engine weight/activation dtype."""
    gpu_memory_utilization: float = 0.5
    """Share of GPU memory the engine may take (SGLang: static fraction; vLLM: total-memory fraction)."""
    ignore_eos: bool = False
    """Keep generating past EOS until response_length."""
    enforce_eager: bool = False
    """Disable CUDA graphs in the engine."""
    cudagraph_capture_sizes: Optional[list[int]] = None
    """Batch sizes captured as CUDA graphs."""
    free_cache_engine: bool = True
    """Release the engine's KV cache (and weights where possible) while training."""
    tensor_model_parallel_size: int = 2
    """GPUs per inference engine (tensor parallel); hf ignores it."""
    data_parallel_size: int = 1
    """Engine data-parallel degree inside one engine."""
    expert_parallel_size: int = 1
    """Expert parallel degree (MoE)."""
    pipeline_model_parallel_size: int = 1
    """Pipeline parallel degree of the engine."""
    max_num_batched_tokens: int = 8192
    """Engine limit on tokens per scheduler step."""
    max_model_len: Optional[int] = None
    """Engine context length; null means prompt_length + response_length."""
    max_num_seqs: int = 1024
    """Engine limit on concurrent sequences."""
    enable_chunked_prefill: bool = True
    """Chunk long prefills."""
    enable_prefix_caching: bool = True
    """Reuse KV of shared prefixes."""
    logprobs_mode: str = "processed_logprobs"
    """Which log-probs the engine returns."""
    scheduling_policy: str = "fcfs"
    """Engine scheduling policy."""
    load_format: str = "dummy"
    """Initial engine weights: dummy (random; real ones are pushed from the actor) or auto (load from path)."""
    log_prob_micro_batch_size: Optional[int] = None
    """Deprecated: old-log-prob micro-batch over all GPUs. Use log_prob_micro_batch_size_per_gpu."""
    log_prob_micro_batch_size_per_gpu: Optional[int] = None
    """Sequences per forward on one GPU when the actor recomputes old log-probs."""
    log_prob_use_dynamic_bsz: Optional[bool] = None
    """null: same as actor.use_dynamic_bsz."""
    log_prob_max_token_len_per_gpu: Optional[int] = None
    """null: same as actor.ppo_max_token_len_per_gpu."""
    disable_log_stats: bool = True
    """Silence the engine's periodic statistics."""
    do_sample: bool = True
    """Sample (True) or decode greedily (False) during training rollouts."""
    n: int = 1
    """Responses per prompt (> 1 for GRPO, RLOO and the other group estimators)."""
    over_sample_rate: float = 0.0
    """Abort the slowest requests once (1 − rate) of them have finished."""
    multi_stage_wake_up: bool = False
    """SGLang: resume weights, push them, then resume the KV cache (strive always does this)."""
    update_weights_bucket_megabytes: int = 512
    """Size of one weight-sync bucket in MiB."""
    engine_kwargs: dict = field(default_factory=lambda: {"vllm": {}, "sglang": {}, "trtllm": {}, "hf": {}})
    """Extra arguments passed to the engine constructor, per engine name."""
    val_kwargs: SamplingConfig = field(default_factory=SamplingConfig)
    """Sampling used during validation (greedy by default)."""
    multi_turn: MultiTurnConfig = field(default_factory=MultiTurnConfig)
    """Tool / agent rollouts."""
    calculate_log_probs: bool = False
    """Return the engine's own log-probs of the sampled tokens (strive always collects them)."""
    agent: dict = field(default_factory=lambda: {"num_workers": 8, "default_agent_loop": "single_turn_agent"})
    """Agent-loop settings (accepted)."""
    checkpoint_engine: dict = field(default_factory=lambda: {"backend": "naive", "engine_kwargs": {}})
    """Weight-sync backend settings (accepted)."""
    trace: dict = field(default_factory=lambda: {"backend": None, "token2text": False})
    """Rollout tracing (accepted)."""
    skip_rollout: bool = False
    """Debug: reuse dumped rollouts instead of generating (not implemented: True is refused)."""
    skip_dump_dir: str = "/tmp/rollout_dump"
    """Where skip_rollout finds its dumps."""
    skip_tokenizer_init: bool = True
    """Token-in/token-out engine (strive always sends token ids)."""
    enable_rollout_routing_replay: bool = False
    """MoE routing replay."""
    prometheus: dict = field(default_factory=lambda: {"enable": False, "port": 9090})
    """Engine metrics export."""
    quantization: Optional[str] = None
    """Rollout quantisation (fp8 / torchao)."""
    quantization_config_file: Optional[str] = None
    """Quantisation config."""
    mtp: Optional[dict] = None
    """Speculative decoding settings."""
    qat: Optional[dict] = None
    """Quantisation-aware training settings."""
    layered_summon: bool = False
    """Gather FSDP parameters layer by layer when syncing (strive gathers in buckets always)."""
    profiler: dict = field(default_factory=default_profiler)
    """Per-role profiler settings."""


@dataclass
class ActorRolloutRefConfig:
    hybrid_engine: bool = True
    """True: actor, rollout and reference share one worker process per GPU (colocated; synchronous). False: split
    placement, the rollout engines on slots of their own (top-level `rollout.nnodes` × `rollout.n_gpus_per_node`)
    and the trainer on `trainer.nnodes` × `trainer.n_gpus_per_node`, weights broadcast between them, generation
    overlapping training up to trainer.max_staleness (docs/async.md)."""
    nccl_timeout: int = 600
    """Process-group timeout in seconds."""
    model: ModelConfig = field(default_factory=ModelConfig)
    """The policy model."""
    actor: ActorConfig = field(default_factory=ActorConfig)
    """How the policy is trained."""
    ref: RefConfig = field(default_factory=RefConfig)
    """The frozen reference policy (created only when a KL term is on)."""
    rollout: RolloutConfig = field(default_factory=RolloutConfig)
    """The inference engine that samples responses."""
