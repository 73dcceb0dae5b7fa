"""The other top-level sections: data, critic, algorithm, trainer, Ray (reward ones: strive.config.reward_sections).

Key names and defaults are verl's (reference/verl_compat_spec.md §1.1, §1.7-1.11). "null: same as X" marks
verl's interpolations, filled in by `strive.config.resolve`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional, Union

from strive.config.common import (
    CheckpointConfig,
    FsdpConfig,
    OptimConfig,
    PathName,
    default_profiler,
)
from strive.config.actor_rollout_ref import TiledMlp
from strive.config.reward_sections import (  # noqa: F401  (re-exported: the reward sections live there)
    RewardModelModel,
    SandboxFusion,
    OverlongBufferConfig,
    JudgeConfig,
    RewardModelConfig,
    RewardManagerConfig,
    CustomRewardFunction,
)


@dataclass
class SamplerConfig:
    class_path: Optional[str] = None
    """File or module of a curriculum sampler class."""
    class_name: Optional[str] = None
    """Its class name."""


@dataclass
class DataConfig:
    tokenizer: Optional[str] = None
    """Tokenizer path; null means the actor model's tokenizer."""
    use_shm: bool = False
    """Stage data files through /dev/shm."""
    train_files: Union[str, list[str]] = "~/data/rlhf/gsm8k/train.parquet"
    """Training parquet/json file(s)."""
    val_files: Union[str, list[str]] = "~/data/rlhf/gsm8k/test.parquet"
    """Validation parquet/json file(s)."""
    train_max_samples: int = -1
    """Use only this many training rows (-1: all)."""
    val_max_samples: int = -1
    """Use only this many validation rows (-1: all)."""
    prompt_key: str = "prompt"
    """Column holding the chat messages."""
    reward_fn_key: str = "data_source"
    """Column whose value picks the scoring function."""
    max_prompt_length: int = 512
    """Prompt budget in tokens; prompts are left-padded to it."""
    max_response_length: int = 512
    """Maximum number of generated tokens."""
    train_batch_size: int = 1024
    """Prompts per training step (each is sampled rollout.n times)."""
    val_batch_size: Optional[int] = None
    """Deprecated; null validates the whole set as one batch."""
    tool_config_path: Optional[str] = None
    """Tool schemas used when templating."""
    return_raw_input_ids: bool = False
    """Also return ids without the chat template."""
    return_raw_chat: bool = True
    """Return the untemplated messages as raw_prompt."""
    return_full_prompt: bool = False
    """Also return the templated prompt string."""
    shuffle: bool = True
    """Shuffle the training data each epoch."""
    seed: Optional[int] = None
    """Seed of that shuffle (null: 1, as in verl)."""
    dataloader_num_workers: int = 8
    """DataLoader worker processes (strive tokenises up front and ignores this)."""
    image_patch_size: int = 14
    """Vision models only."""
    validation_shuffle: bool = False
    """Shuffle the validation data."""
    filter_overlong_prompts: bool = False
    """Drop rows whose templated prompt is longer than max_prompt_length, once at load time (before Ray starts),
    printing how many of how many rows each file lost."""
    filter_overlong_prompts_workers: int = 1
    """Processes for that filter."""
    truncation: str = "error"
    """Over-long prompts: error, left (keep the end), right (keep the start) or middle. Every row is measured when
    the data is loaded, so error stops the run before Ray starts, naming the file, row and token length."""
    image_key: str = "images"
    """Image column (vision models)."""
    video_key: str = "videos"
    """Video column (vision models)."""
    trust_remote_code: bool = False
    """Passed to the tokenizer."""
    custom_cls: PathName = field(default_factory=PathName)
    """A user dataset class: path (a .py file or module) + name; it must subclass strive's RLDataset
    (strive/data/custom.py)."""
    return_multi_modal_inputs: bool = True
    """Vision models only."""
    sampler: SamplerConfig = field(default_factory=SamplerConfig)
    """Curriculum sampler."""
    datagen: PathName = field(default_factory=PathName)
    """Dynamic data generator."""
    apply_chat_template_kwargs: dict = field(default_factory=dict)
    """Extra keyword arguments for apply_chat_template."""
    gen_batch_size: Optional[int] = None
    """Prompts generated per round under algorithm.filter_groups; null means train_batch_size (it must equal
    train_batch_size otherwise)."""


@dataclass
class CriticModelConfig:
    path: str = "~/models/deepseek-llm-7b-chat"
    """Model the critic starts from (a value head replaces its LM head); may differ from the actor's."""
    tokenizer_path: Optional[str] = None
    """null: same as actor_rollout_ref.model.path."""
    override_config: dict = field(default_factory=dict)
    """Keys written over the critic's HF config."""
    external_lib: Optional[str] = None
    """null: same as actor_rollout_ref.model.external_lib."""
    trust_remote_code: Optional[bool] = None
    """null: same as actor_rollout_ref.model.trust_remote_code."""
    use_shm: bool = False
    """Stage weights through /dev/shm."""
    enable_gradient_checkpointing: bool = True
    """Recompute activations in backward."""
    enable_activation_offload: bool = False
    """On CUDA, keep the critic forward's saved activations in pinned CPU memory (its layers then run eager)."""
    use_remove_padding: bool = False
    """Packed, padding-free forward."""
    packed_attention: str = "auto"
    """strive: the packed forward's attention kernel, as actor_rollout_ref.model.packed_attention."""
    lora_rank: int = 0
    """LoRA rank; 0 trains all weights."""
    lora_alpha: int = 16
    """LoRA scaling numerator."""
    target_modules: Union[str, list[str]] = "all-linear"
    """Modules LoRA adapts."""
    tiled_mlp: TiledMlp = field(default_factory=TiledMlp)
    """Memory-saving tiled MLP."""
    fsdp_config: FsdpConfig = field(default_factory=FsdpConfig)
    """FSDP2 settings of the critic."""


@dataclass
class CriticConfig:
    strategy: str = "fsdp"
    """Training strategy (FSDP2)."""
    enable: Optional[bool] = None
    """null: a critic exists exactly when algorithm.adv_estimator is gae."""
    rollout_n: Optional[int] = None
    """null: same as rollout.n."""
    optim: OptimConfig = field(default_factory=lambda: OptimConfig(lr=1e-5))
    """Critic optimizer (lr 1e-5 by default)."""
    model: CriticModelConfig = field(default_factory=CriticModelConfig)
    """The value model."""
    ppo_mini_batch_size: Optional[int] = None
    """null: same as actor.ppo_mini_batch_size (prompts per optimizer step)."""
    ppo_micro_batch_size: Optional[int] = None
    """Deprecated: micro-batch over all GPUs. Use ppo_micro_batch_size_per_gpu."""
    ppo_micro_batch_size_per_gpu: Optional[int] = None
    """Sequences per forward/backward on one GPU."""
    use_dynamic_bsz: Optional[bool] = None
    """null: same as actor.use_dynamic_bsz."""
    ppo_max_token_len_per_gpu: int = 32768
    """Token budget per micro-batch when dynamic."""
    forward_max_token_len_per_gpu: Optional[int] = None
    """null: same as ppo_max_token_len_per_gpu."""
    forward_micro_batch_size: Optional[int] = None
    """Deprecated: value-computation micro-batch over all GPUs."""
    forward_micro_batch_size_per_gpu: Optional[int] = None
    """null: same as ppo_micro_batch_size_per_gpu (sequences per value forward on one GPU)."""
    ppo_epochs: Optional[int] = None
    """null: same as actor.ppo_epochs."""
    shuffle: Optional[bool] = None
    """null: same as actor.shuffle."""
    data_loader_seed: int = 42
    """Seed of the between-epoch shuffle."""
    cliprange_value: float = 0.5
    """Half-width of value clipping around the old values."""
    loss_agg_mode: Optional[str] = None
    """null: same as actor.loss_agg_mode."""
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    """What critic checkpoints hold."""
    profiler: dict = field(default_factory=default_profiler)
    """Per-role profiler settings."""
    ulysses_sequence_parallel_size: int = 1
    """Sequence-parallel degree (1 only)."""
    grad_clip: float = 1.0
    """Clip the critic's gradient norm to this value."""


@dataclass
class KLControl:
    type: str = "fixed"
    """fixed or adaptive."""
    kl_coef: float = 0.001
    """β (the initial β when adaptive)."""
    horizon: int = 10000
    """Adaptive controller horizon (> 0)."""
    target_kl: float = 0.1
    """Adaptive controller target KL."""


@dataclass
class PfPpo:
    reweight_method: str = "pow"
    """pow, max_min or max_random."""
    weight_pow: float = 2.0
    """Exponent for pow."""


@dataclass
class FilterGroups:
    enable: bool = False
    """Dynamic sampling (DAPO): train only on prompts whose n responses got different rewards, generating
    data.gen_batch_size prompts at a time until data.train_batch_size such prompts are collected."""
    metric: Optional[str] = "acc"
    """(null is accepted, as verl's files write it, but must be set when enabled.) Per-response value compared
    within a group: acc or score (the reward function's dict entry of that name,
    else its summed score), seq_reward or seq_final_reward (the summed token rewards)."""
    max_num_gen_batches: int = 0
    """Give up with an error after this many generation rounds in one step (0: no limit)."""


@dataclass
class RolloutCorrection:
    """verl's rollout correction between the engine's log-probs (π_rollout) and the trainer's (π_old); docs/async.md
    says how to choose. The math: strive/algos/rollout_correction.py; metrics: rollout_corr/*."""

    rollout_is: Optional[str] = None
    """Truncated importance weights on the policy loss: null (off), token (w_t = min(π_old/π_rollout, threshold) per
    token; biased, low variance) or sequence (one weight Π_t ρ_t per sequence; unbiased, high variance)."""
    rollout_is_threshold: float = 2.0
    """Upper truncation of the importance weights (> 0; typical 1.5-5 for token, 2-10 for sequence)."""
    rollout_rs: Optional[str] = None
    """Rejection: comma-separated options whose out-of-bounds tokens or sequences leave the response mask (and so
    every loss and its denominator): token_k1/k2/k3, seq_sum_k1/k2/k3, seq_mean_k1/k2/k3, seq_max_k2/k3, where
    k1 = log(π_rollout/π_old), k2 = ½(log ρ)², k3 = ρ − 1 − log ρ. verl's older token / sequence / geometric mean
    token_k1 / seq_sum_k1 / seq_mean_k1."""
    rollout_rs_threshold: Optional[str] = None
    """Bounds of rollout_rs, one shared or one per option (comma-separated): k1 options take lower_upper (e.g.
    0.5_2.0) or an upper bound u (lower 1/u) on the ratio; k2/k3 options one upper bound. Required with rollout_rs."""
    bypass_mode: bool = False
    """Skip the old log-prob pass: the engine's log-probs are the old log-probs, and the correction is computed in
    the actor's loss against the current policy π_θ."""
    loss_type: str = "ppo_clip"
    """Policy loss in bypass mode: ppo_clip (PPO with ratio π_θ/π_rollout; IS weights not applied, the ratio is the
    correction) or reinforce (−A·w·log π_θ with the truncated IS weights w, no clipping)."""
    rollout_is_batch_normalize: bool = False
    """Divide the IS weights by their mean (over the step's batch; over each micro-batch in bypass mode)."""


@dataclass
class AlgorithmConfig:
    gamma: float = 1.0
    """Discount factor."""
    lam: float = 1.0
    """GAE λ."""
    adv_estimator: str = "gae"
    """gae (PPO with a critic), grpo, rloo, reinforce_plus_plus, reinforce_plus_plus_baseline, remax."""
    norm_adv_by_std_in_grpo: bool = True
    """Divide GRPO advantages by the group std (False gives Dr.GRPO)."""
    use_kl_in_reward: bool = False
    """Subtract β·KL(old ‖ ref) from token rewards; needs the reference model."""
    kl_penalty: str = "kl"
    """KL estimator of the in-reward penalty."""
    kl_ctrl: KLControl = field(default_factory=KLControl)
    """How β is set."""
    use_pf_ppo: bool = False
    """Preference-feedback PPO resampling (not implemented)."""
    pf_ppo: PfPpo = field(default_factory=PfPpo)
    """PF-PPO settings."""
    filter_groups: FilterGroups = field(default_factory=FilterGroups)
    """Dynamic sampling: drop groups whose rewards are all equal (they carry no GRPO gradient)."""
    rollout_correction: RolloutCorrection = field(default_factory=RolloutCorrection)
    """Off-policy corrections between rollout and trainer."""


@dataclass
class TrainerConfig:
    balance_batch: bool = True
    """Reorder samples so each data-parallel rank gets a similar number of tokens."""
    total_epochs: int = 30
    """Passes over the training data."""
    total_training_steps: Optional[int] = None
    """Stop after this many steps (overrides total_epochs)."""
    project_name: str = "verl_examples"
    """Tracking project; also part of the default checkpoint directory."""
    experiment_name: str = "gsm8k"
    """Tracking run name; also part of the default checkpoint directory."""
    logger: Union[str, list[str]] = field(default_factory=lambda: ["console", "wandb"])
    """Loggers: console, file, tensorboard, wandb, mlflow (those not installed are skipped with a warning)."""
    console_verbose: Optional[bool] = None
    """strive: after its progress line, the console prints every metric in verl's format
    (`step:N - key:value - ...`). null: on when console is the only logger."""
    log_val_generations: int = 0
    """At each validation, log this many (input, output, score) samples, the same prompts every time, to the
    loggers: a table in wandb, text in TensorBoard/MLflow/ClearML, val_generations.jsonl for file, printed by
    console."""
    rollout_data_dir: Optional[str] = None
    """Dump each step's rollouts to {step}.jsonl here."""
    validation_data_dir: Optional[str] = None
    """Dump validation generations here."""
    nnodes: int = 1
    """Nodes in the resource pool."""
    n_gpus_per_node: int = 8
    """GPUs per node (with trainer.device=cpu: worker processes per node)."""
    save_freq: int = -1
    """Checkpoint every N steps and at the last step (-1: never)."""
    esi_redundant_time: int = 0
    """Force a save this long before an elastic instance expires."""
    resume_mode: str = "auto"
    """auto (latest checkpoint if any), disable, or resume_path."""
    resume_from_path: Optional[str] = None
    """A global_step_N directory, for resume_mode=resume_path."""
    val_before_train: bool = True
    """Validate once before the first step."""
    val_only: bool = False
    """Validate and exit."""
    test_freq: int = -1
    """Validate every N steps and at the last step (-1: never)."""
    critic_warmup: int = 0
    """Update only the critic for this many steps."""
    default_hdfs_dir: Optional[str] = None
    """Remote checkpoint mirror (not supported: must stay null)."""
    del_local_ckpt_after_load: bool = False
    """Delete the local checkpoint after resuming from it."""
    default_local_dir: Optional[str] = None
    """Checkpoint root; null: checkpoints/{project_name}/{experiment_name}."""
    max_actor_ckpt_to_keep: Optional[int] = None
    """Keep only the newest N actor checkpoints."""
    max_critic_ckpt_to_keep: Optional[int] = None
    """Keep only the newest N critic checkpoints."""
    remove_previous_ckpt_in_save: bool = False
    """Deprecated: same as keeping 1 checkpoint."""
    ray_wait_register_center_timeout: int = 300
    """Seconds to wait for workers to register."""
    device: str = "cuda"
    """cuda or cpu (cpu runs the same topology with gloo, one process per slot)."""
    use_legacy_worker_impl: str = "auto"
    """Accepted for compatibility."""
    plot_curves: bool = True
    """Write a PNG of the main curves at the end of the run (strive)."""
    colocate_critic: bool = True
    """Run the critic in the actor's worker processes (True) or in a group of its own on other slots (strive)."""
    phase_timeout_s: Optional[float] = 3600.0
    """Longest wait, in seconds, for one worker phase of a step on every rank (generate, log-probs, an update, the
    weight sync, validation's generate, a checkpoint save or load); past it the run stops with an error naming the
    group, the ranks, the phase and the wait, and the workers are killed, instead of hanging. Start-up (worker
    processes, rendezvous, building the models) is not bounded by it (strive; null or 0: wait forever)."""
    host_memory_limit_gb: Optional[float] = None
    """Most host memory (resident set, GiB) one worker process may hold during a phase; over it the run stops
    with an error naming the rank, the phase and both numbers (strive; null: no budget, Ray's node-wide memory
    monitor is the only limit). Set it below what would make Ray's monitor kill the worker."""
    max_staleness: Optional[int] = None
    """strive: how many policy versions older than the policy being updated a training batch may be (docs/async.md).
    0: every batch is generated by the current weights (today's synchronous loop); 1: one-step-off-policy (the
    next batch is generated while this one trains); k: up to k batches ahead. Above 0 it needs split placement
    (actor_rollout_ref.hybrid_engine=False). null: 1 with split placement (verl's one-step-off recipe), else 0."""
    weight_transfer_timeout_s: Optional[float] = None
    """strive: with split placement, the longest one trainer → rollout weight broadcast may take once every rank
    has joined it; past it, or when a peer dies, the run stops with an error naming the transfer ranks.
    null: 600 on cuda, 300 on cpu."""
    forward_min_tokens: int = 16384
    """strive: with trainer.device=cuda, a forward-only pass (old log-probs, reference, values, reward model) set to
    fixed micro-batches smaller than this many tokens (micro-batch × prompt + response length) runs in token budgets
    of this size instead: it keeps no activations, and at verl's micro-batches of 4 it is bound by kernel launches
    (bench/README.md). Noted at start-up. 0: keep the micro-batches as given."""
    max_restarts: int = 0
    """strive: when a worker process dies (WorkerDied), tear Ray down and start again from the newest checkpoint
    this run completed (or as configured, when it has none yet), up to this many times; each restart is printed
    with its cause. 0: a dead worker ends the run."""


@dataclass
class RolloutPoolConfig:
    """The rollout engines' own slots when actor_rollout_ref.hybrid_engine=False (verl's one-step-off and fully
    async recipes spell them `rollout.nnodes` and `rollout.n_gpus_per_node`, beside `trainer.*` for the trainer)."""

    nnodes: int = 1
    """Nodes of the rollout pool (used only with actor_rollout_ref.hybrid_engine=False)."""
    n_gpus_per_node: int = 1
    """Rollout slots per node: GPUs, or with trainer.device=cpu worker processes (used only with
    actor_rollout_ref.hybrid_engine=False)."""
    share_trainer_gpus: bool = False
    """strive: with split placement on GPUs, put each rollout process on a trainer process's GPU (Ray counts each
    as half a GPU) instead of a GPU of its own, e.g. one-step-off-policy on a single card. One GPU per node for
    each pool; the weights then cross through host memory (gloo), since NCCL cannot put two ranks on one GPU."""


@dataclass
class AsyncTrainingConfig:
    """Partial rollout with split placement (verl's fully async recipe spells the switch
    `async_training.partial_rollout`; the staleness bound is strive's trainer.max_staleness, docs/async.md)."""

    partial_rollout: bool = False
    """A weight push interrupts the generations in flight on the rollout pool instead of waiting for them; they go
    on under the new weights as partial_rollout_mode says, each token recording the version that sampled it. Needs
    actor_rollout_ref.hybrid_engine=False and trainer.max_staleness ≥ 1."""
    partial_rollout_mode: str = "continue"
    """strive: `continue` (an interrupted response goes on from its last token; its earlier tokens keep the log-probs
    they were sampled with) or `resubmit` (it is dropped and sampled again from its prompt)."""
    partial_rollout_chunk: int = 64
    """strive: how often a generation asks whether a push is waiting, in new tokens. The hf engines (plain and fast)
    ask inside their decode loop and stop in place; vLLM and SGLang are called in pieces of this many tokens, each
    recomputing the prefix so far (their prefix cache makes that cheap)."""


@dataclass
class RayInitConfig:
    num_cpus: Optional[int] = None
    """CPUs of a locally started Ray cluster (null: all). Other keys given with + go straight to ray.init."""
    timeline_json_file: Optional[str] = None
    """Old location of ray_kwargs.timeline_json_file."""


@dataclass
class RayKwargs:
    ray_init: RayInitConfig = field(default_factory=RayInitConfig)
    """Arguments of ray.init."""
    timeline_json_file: Optional[str] = None
    """Write a Ray timeline here after the run."""
