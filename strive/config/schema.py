"""The root of strive's config tree: one typed dataclass whose key paths are verl's.

`StriveConfig()` holds verl's defaults; `strive.config.load_config` builds one from YAML and `key=value`
overrides. Keys added with a leading `+` that the schema does not know are kept in `extras` (dotted path →
value); those under `ray_kwargs.ray_init.` are passed to `ray.init`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from strive.config.actor_rollout_ref import ActorRolloutRefConfig
from strive.config.sections import (
    AlgorithmConfig,
    AsyncTrainingConfig,
    CriticConfig,
    CustomRewardFunction,
    DataConfig,
    RayInitConfig,
    RayKwargs,
    RewardManagerConfig,
    RewardModelConfig,
    RolloutPoolConfig,
    TrainerConfig,
)


@dataclass
class StriveConfig:
    data: DataConfig = field(default_factory=DataConfig)
    """Training and validation data."""
    actor_rollout_ref: ActorRolloutRefConfig = field(default_factory=ActorRolloutRefConfig)
    """Policy model, its training, its reference copy and its rollout engine."""
    critic: CriticConfig = field(default_factory=CriticConfig)
    """The value model (PPO with GAE)."""
    reward_model: RewardModelConfig = field(default_factory=RewardModelConfig)
    """Learned reward model and legacy reward-manager settings."""
    reward_manager: RewardManagerConfig = field(default_factory=RewardManagerConfig)
    """Which reward manager turns responses into token rewards."""
    custom_reward_function: CustomRewardFunction = field(default_factory=CustomRewardFunction)
    """Your own scoring function, by file path."""
    algorithm: AlgorithmConfig = field(default_factory=AlgorithmConfig)
    """Advantage estimator and KL settings."""
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    """Loop, logging, checkpoints and resources."""
    rollout: RolloutPoolConfig = field(default_factory=RolloutPoolConfig)
    """The rollout pool's slots with split placement (actor_rollout_ref.hybrid_engine=False)."""
    async_training: AsyncTrainingConfig = field(default_factory=AsyncTrainingConfig)
    """Partial rollout with split placement (verl's fully async recipe's section)."""
    ray_kwargs: RayKwargs = field(default_factory=RayKwargs)
    """Ray settings (verl ≥ 0.6 spelling)."""
    ray_init: RayInitConfig = field(default_factory=RayInitConfig)
    """Ray settings, verl ≤ 0.5 spelling; merged into ray_kwargs.ray_init."""
    global_profiler: dict = field(default_factory=lambda: {"tool": None, "steps": None, "save_path": "outputs/profile"})
    """Whole-run profiling (accepted)."""
    transfer_queue: dict = field(default_factory=lambda: {"enable": False})
    """Experimental data plane (accepted)."""
    extras: dict[str, Any] = field(default_factory=dict)
    """Keys added with + that the schema does not know (dotted path → value)."""
