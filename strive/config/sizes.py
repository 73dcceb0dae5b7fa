"""Batch-size arithmetic: from the keys users type to what each rank actually does.

Units (verl's): `data.train_batch_size` and every `ppo_mini_batch_size` count prompts; each prompt brings
`rollout.n` sequences; `*_micro_batch_size_per_gpu` counts sequences on one rank; the deprecated
`*_micro_batch_size` keys count sequences over all ranks and are divided by the data-parallel size.

Where verl stops with a bare assertion, strive decides when the answer is unambiguous and says what it used:
a micro-batch only bounds memory (gradients accumulate over a mini-batch either way), so one larger than a
rank's share of the mini-batch is shrunk to that share, and one that does not divide it leaves a smaller last
micro-batch whose loss is weighted by its size. Combinations that change the algorithm still fail, naming keys.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Optional

from strive.config.loader import ConfigError
from strive.config.resolve import needs_critic, needs_reference
from strive.config.schema import StriveConfig


@dataclass
class TrainSizes:
    """Sizes of one trained role (actor or critic) on one rank, per training step."""

    mini_batch_sequences: int
    """Sequences in one mini-batch over all ranks (ppo_mini_batch_size × rollout.n)."""
    mini_batch_per_rank: int
    """Sequences of one mini-batch on one rank."""
    mini_batches_per_step: int
    """Optimizer steps per epoch over the rollout batch."""
    optimizer_steps_per_step: int
    """mini_batches_per_step × ppo_epochs."""
    micro_batch_per_rank: Optional[int]
    """Sequences per forward/backward on one rank (None with a token budget)."""
    grad_accum_steps: Optional[int]
    """Micro-batches per mini-batch (None with a token budget)."""
    max_token_len: Optional[int]
    """Token budget per micro-batch when use_dynamic_bsz, else None."""


@dataclass
class ForwardSizes:
    """Micro-batching of a forward-only pass (old log-probs, reference log-probs, values)."""

    micro_batch_per_rank: Optional[int]
    max_token_len: Optional[int]


@dataclass
class Sizes:
    world_size: int
    """Worker processes (GPUs, or CPU slots with trainer.device=cpu)."""
    dp_size: int
    """Data-parallel degree of the trainers."""
    samples_per_step: int
    """Sequences generated and trained on per step (train_batch_size × rollout.n)."""
    samples_per_rank: int
    """Of those, how many each rank trains on (the last rank may get fewer with dynamic batching)."""
    actor: TrainSizes
    old_log_prob: ForwardSizes
    ref: Optional[ForwardSizes] = None
    critic: Optional[TrainSizes] = None
    values: Optional[ForwardSizes] = None
    reward_model: Optional[ForwardSizes] = None
    """Micro-batching of the reward model's forward (reward_model.enable)."""
    bypass_old_log_probs: bool = False
    """The actor takes one optimizer step per batch and nothing reads the old log-probs before it (no KL in the
    reward, no algorithm.rollout_correction): they are the update forward's own log-probs, so no separate old
    log-prob pass runs (the on-policy bypass; the pass still runs in steps where trainer.critic_warmup keeps the
    actor from updating)."""
    notes: list[str] = field(default_factory=list)


def _per_gpu(cfg_key: str, per_gpu: Optional[int], global_key: str, global_val: Optional[int], dp: int,
             notes: list[str]) -> Optional[int]:
    """One of `X_per_gpu` or the deprecated global `X`; both set is an error."""
    if per_gpu is not None and global_val is not None:
        raise ConfigError(f"both {cfg_key}={per_gpu} and the deprecated {global_key}={global_val} are set; "
                          f"keep only {cfg_key}")
    if global_val is None:
        return per_gpu
    per = global_val // dp
    if per == 0:
        notes.append(f"{global_key}={global_val} over data-parallel size {dp} is less than one sequence per rank; "
                     f"using {cfg_key}=1")
        return 1
    notes.append(f"{global_key}={global_val} (deprecated, all ranks) → {cfg_key}={per} over {dp} ranks")
    return per


def _default_micro(key: str, budget: int, seq_len: int, cap: int, notes: list[str]) -> int:
    micro = max(1, min(cap, budget // max(seq_len, 1)))
    notes.append(f"{key} not set; using {micro} (token budget {budget} / {seq_len} tokens per sequence, "
                 f"at most {cap})")
    return micro


def _train_sizes(role: str, *, mini_prompts: int, n: int, dp: int, samples_per_rank: int, epochs: int,
                 micro: Optional[int], dynamic: bool, max_tokens: int, seq_len: int, micro_key: str,
                 notes: list[str]) -> TrainSizes:
    mini_key = f"{role}.ppo_mini_batch_size"
    mini_seqs = mini_prompts * n
    per_rank = mini_seqs // dp
    if per_rank == 0:
        raise ConfigError(f"{mini_key} × rollout.n = {mini_prompts} × {n} = {mini_seqs} sequences is smaller than "
                          f"the data-parallel size {dp}: a rank would get no sequences; raise {mini_key}")
    if mini_seqs % dp:
        notes.append(f"{mini_key} × rollout.n = {mini_seqs} is not divisible by the data-parallel size {dp}; "
                     f"each rank takes {per_rank} sequences per mini-batch")
    mini_batches = math.ceil(samples_per_rank / per_rank)
    if dynamic:
        return TrainSizes(mini_seqs, per_rank, mini_batches, mini_batches * epochs, None, None, max_tokens)
    if micro is None:
        micro = _default_micro(micro_key, max_tokens, seq_len, per_rank, notes)
    if micro <= 0:
        raise ConfigError(f"{micro_key}={micro} must be positive")
    if micro > per_rank:
        notes.append(f"{micro_key}={micro} is larger than the {per_rank} sequences a rank gets per mini-batch "
                     f"({mini_key} × rollout.n / data-parallel size = {mini_prompts} × {n} / {dp}); using {per_rank}. "
                     "A micro-batch only bounds memory: the update is the same")
        micro = per_rank
    elif per_rank % micro:
        notes.append(f"{micro_key}={micro} does not divide the {per_rank} sequences per rank per mini-batch; the "
                     f"last micro-batch has {per_rank % micro}, and each micro-batch's loss is weighted by its size")
    return TrainSizes(mini_seqs, per_rank, mini_batches, mini_batches * epochs, micro,
                      math.ceil(per_rank / micro), None)


def _forward_sizes(key: str, per_gpu: Optional[int], global_key: str, global_val: Optional[int], dp: int,
                   dynamic: bool, max_tokens: int, seq_len: int, cap: int, notes: list[str],
                   min_tokens: int = 0) -> ForwardSizes:
    """min_tokens: trainer.forward_min_tokens where it applies (CUDA), else 0."""
    micro = _per_gpu(key, per_gpu, global_key, global_val, dp, notes)
    if dynamic:
        return ForwardSizes(None, max_tokens)
    if micro is None:
        micro = _default_micro(key, max_tokens, seq_len, cap, notes)
    if seq_len <= min_tokens and micro * seq_len < min_tokens and micro < cap:
        notes.append(f"{key}={micro}: a forward-only pass keeps no activations, so it runs in token budgets of "
                     f"{min_tokens} instead of {micro} × {seq_len} tokens (trainer.forward_min_tokens=0 keeps "
                     "the micro-batches)")
        return ForwardSizes(None, min_tokens)
    return ForwardSizes(micro, None)


def compute_sizes(cfg: StriveConfig) -> Sizes:
    """Check the batch keys against each other and the resources; fail naming the keys and numbers."""
    notes: list[str] = []
    arr = cfg.actor_rollout_ref
    actor, rollout, ref = arr.actor, arr.rollout, arr.ref
    world = cfg.trainer.n_gpus_per_node * cfg.trainer.nnodes
    if world <= 0:
        raise ConfigError(f"trainer.n_gpus_per_node × trainer.nnodes = {cfg.trainer.n_gpus_per_node} × "
                          f"{cfg.trainer.nnodes} must be positive")
    dp, n, tbs = world, rollout.n, cfg.data.train_batch_size
    if n < 1 or tbs < 1:
        raise ConfigError(f"data.train_batch_size={tbs} and actor_rollout_ref.rollout.n={n} must be ≥ 1")
    samples = tbs * n
    if samples % world and not actor.use_dynamic_bsz:
        raise ConfigError(f"data.train_batch_size × rollout.n = {tbs} × {n} is not divisible by "
                          f"trainer.n_gpus_per_node × trainer.nnodes = {world}")
    if tbs < actor.ppo_mini_batch_size:
        raise ConfigError(f"data.train_batch_size={tbs} is smaller than "
                          f"actor_rollout_ref.actor.ppo_mini_batch_size={actor.ppo_mini_batch_size}")
    _check_engine_parallelism(cfg, world, notes)
    seq_len = rollout.prompt_length + rollout.response_length
    per_rank = math.ceil(samples / dp)
    min_tokens = cfg.trainer.forward_min_tokens if cfg.trainer.device == "cuda" else 0
    a = "actor_rollout_ref.actor"
    actor_micro = _per_gpu(f"{a}.ppo_micro_batch_size_per_gpu", actor.ppo_micro_batch_size_per_gpu,
                           f"{a}.ppo_micro_batch_size", actor.ppo_micro_batch_size, dp, notes)
    sizes = Sizes(world, dp, samples, per_rank,
                  actor=_train_sizes(a, mini_prompts=actor.ppo_mini_batch_size, n=n, dp=dp,
                                     samples_per_rank=per_rank, epochs=actor.ppo_epochs, micro=actor_micro,
                                     dynamic=actor.use_dynamic_bsz, max_tokens=actor.ppo_max_token_len_per_gpu,
                                     seq_len=seq_len, micro_key=f"{a}.ppo_micro_batch_size_per_gpu", notes=notes),
                  old_log_prob=_forward_sizes(
                      "actor_rollout_ref.rollout.log_prob_micro_batch_size_per_gpu",
                      rollout.log_prob_micro_batch_size_per_gpu, "actor_rollout_ref.rollout.log_prob_micro_batch_size",
                      rollout.log_prob_micro_batch_size, dp, rollout.log_prob_use_dynamic_bsz,
                      rollout.log_prob_max_token_len_per_gpu, seq_len, per_rank, notes, min_tokens),
                  notes=notes)
    if needs_reference(cfg):
        sizes.ref = _forward_sizes(
            "actor_rollout_ref.ref.log_prob_micro_batch_size_per_gpu", ref.log_prob_micro_batch_size_per_gpu,
            "actor_rollout_ref.ref.log_prob_micro_batch_size", ref.log_prob_micro_batch_size, dp,
            ref.log_prob_use_dynamic_bsz, ref.log_prob_max_token_len_per_gpu, seq_len, per_rank, notes, min_tokens)
    if needs_critic(cfg):
        _critic_sizes(cfg, sizes, seq_len, notes, min_tokens)
    if cfg.reward_model.enable:
        rm = cfg.reward_model
        sizes.reward_model = _forward_sizes(
            "reward_model.micro_batch_size_per_gpu", rm.micro_batch_size_per_gpu, "reward_model.micro_batch_size",
            rm.micro_batch_size, dp, bool(rm.use_dynamic_bsz), rm.forward_max_token_len_per_gpu,
            rm.max_length or seq_len, per_rank, notes, min_tokens)
    # rollout correction reads the old log-probs before the update (outside bypass mode) or has none (bypass mode)
    rc = cfg.algorithm.rollout_correction
    correction = rc.bypass_mode or rc.rollout_is is not None or rc.rollout_rs is not None
    sizes.bypass_old_log_probs = (sizes.actor.optimizer_steps_per_step == 1 and not cfg.algorithm.use_kl_in_reward
                                  and not correction)
    return sizes


def _critic_sizes(cfg: StriveConfig, sizes: Sizes, seq_len: int, notes: list[str], min_tokens: int) -> None:
    critic, dp, n = cfg.critic, sizes.dp_size, cfg.actor_rollout_ref.rollout.n
    if cfg.data.train_batch_size < critic.ppo_mini_batch_size:
        raise ConfigError(f"data.train_batch_size={cfg.data.train_batch_size} is smaller than "
                          f"critic.ppo_mini_batch_size={critic.ppo_mini_batch_size}")
    micro = _per_gpu("critic.ppo_micro_batch_size_per_gpu", critic.ppo_micro_batch_size_per_gpu,
                     "critic.ppo_micro_batch_size", critic.ppo_micro_batch_size, dp, notes)
    sizes.critic = _train_sizes("critic", mini_prompts=critic.ppo_mini_batch_size, n=n, dp=dp,
                                samples_per_rank=sizes.samples_per_rank, epochs=critic.ppo_epochs, micro=micro,
                                dynamic=critic.use_dynamic_bsz, max_tokens=critic.ppo_max_token_len_per_gpu,
                                seq_len=seq_len, micro_key="critic.ppo_micro_batch_size_per_gpu", notes=notes)
    fwd = critic.forward_micro_batch_size_per_gpu
    fwd_global = critic.forward_micro_batch_size
    if fwd is None and fwd_global is None:
        fwd = sizes.critic.micro_batch_per_rank
    sizes.values = _forward_sizes("critic.forward_micro_batch_size_per_gpu", fwd, "critic.forward_micro_batch_size",
                                  fwd_global, dp, critic.use_dynamic_bsz, critic.forward_max_token_len_per_gpu,
                                  seq_len, sizes.samples_per_rank, notes, min_tokens)


def _check_engine_parallelism(cfg: StriveConfig, world: int, notes: list[str]) -> None:
    from strive.engines.base import ENGINES  # torch-free at import, as strive.config must stay

    rollout = cfg.actor_rollout_ref.rollout
    tp = rollout.tensor_model_parallel_size
    entry = ENGINES.get(rollout.name)
    if entry is not None and not entry.tensor_parallel:
        if tp > 1:
            notes.append(f"rollout.tensor_model_parallel_size={tp} is ignored by the {rollout.name} engine: "
                         "each worker generates for its own share of the prompts")
        return
    if tp < 1 or world % tp:
        raise ConfigError(f"actor_rollout_ref.rollout.tensor_model_parallel_size={tp} must divide "
                          f"trainer.n_gpus_per_node × trainer.nnodes = {world}")
