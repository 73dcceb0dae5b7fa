"""Where the rollout engines run: colocated with the trainer (verl's hybrid engine) or on slots of their own.

Colocated (`actor_rollout_ref.hybrid_engine=True`, the default): `trainer.nnodes` × `trainer.n_gpus_per_node`
worker processes each hold actor, rollout engine and reference, and take turns; generation and training never
overlap. Split (`hybrid_engine=False`, verl's one-step-off-policy recipe): the trainer keeps those slots (actor,
reference, critic) and the engines get `rollout.nnodes` × `rollout.n_gpus_per_node` processes of their own; weights
cross by a broadcast (strive/controller/transfer.py), and the next batch is generated while the trainer trains,
up to `trainer.max_staleness` policy versions behind. With `trainer.device=cpu` a slot is one worker process.
Checked before Ray starts, errors naming the keys; `strive config` prints the result.
"""

from __future__ import annotations

from strive.config.loader import ConfigError
from strive.config.schema import StriveConfig


def is_split(cfg: StriveConfig) -> bool:
    """Whether the rollout engines have processes of their own (actor_rollout_ref.hybrid_engine=False)."""
    return not cfg.actor_rollout_ref.hybrid_engine


def rollout_world(cfg: StriveConfig) -> int:
    """Rollout processes with split placement: rollout.nnodes × rollout.n_gpus_per_node."""
    return cfg.rollout.nnodes * cfg.rollout.n_gpus_per_node


def max_staleness(cfg: StriveConfig) -> int:
    """trainer.max_staleness, its null resolved: 1 with split placement (one-step-off), 0 colocated."""
    if cfg.trainer.max_staleness is not None:
        return int(cfg.trainer.max_staleness)
    return 1 if is_split(cfg) else 0


def transfer_timeout_s(cfg: StriveConfig) -> float:
    """trainer.weight_transfer_timeout_s, its null resolved (600 s on cuda, 300 s on cpu)."""
    t = cfg.trainer.weight_transfer_timeout_s
    return float(t) if t else (600.0 if cfg.trainer.device == "cuda" else 300.0)


def check_placement(cfg: StriveConfig) -> list[str]:
    """Errors for placements that cannot run, naming the keys; notes describing the one that will."""
    staleness = max_staleness(cfg)
    if staleness < 0:
        raise ConfigError(f"trainer.max_staleness={staleness} must be ≥ 0 (0: synchronous)")
    if not is_split(cfg):
        if staleness > 0:
            raise ConfigError(f"trainer.max_staleness={staleness} needs the rollout engines on slots of their own: "
                              "set actor_rollout_ref.hybrid_engine=False and rollout.n_gpus_per_node / rollout.nnodes "
                              "(colocated engines share the trainer's processes, so generation cannot overlap training)")
        return []
    pool = cfg.rollout
    if pool.nnodes < 1 or pool.n_gpus_per_node < 1:
        raise ConfigError(f"actor_rollout_ref.hybrid_engine=False: rollout.nnodes × rollout.n_gpus_per_node = "
                          f"{pool.nnodes} × {pool.n_gpus_per_node} rollout slots; both must be ≥ 1")
    rollout, algo = cfg.actor_rollout_ref.rollout, cfg.algorithm
    unsupported = [(rollout.multi_turn.enable, "actor_rollout_ref.rollout.multi_turn.enable=True"),
                   (algo.filter_groups.enable, "algorithm.filter_groups.enable=True"),
                   (algo.adv_estimator == "remax", "algorithm.adv_estimator=remax"),
                   (cfg.reward_model.enable, "reward_model.enable=True"),
                   (cfg.reward_model.judge.enable, "reward_model.judge.enable=True")]
    for on, key in unsupported:
        if on:
            raise ConfigError(f"{key} is not supported with split placement (actor_rollout_ref.hybrid_engine=False) "
                              "yet; use the colocated layout (hybrid_engine=True)")
    slot = "worker process(es)" if cfg.trainer.device == "cpu" else "GPU(s)"
    tr = cfg.trainer
    return [f"split placement: trainer on trainer.nnodes {tr.nnodes} × trainer.n_gpus_per_node {tr.n_gpus_per_node} "
            f"{slot}, rollout engines on rollout.nnodes {pool.nnodes} × rollout.n_gpus_per_node "
            f"{pool.n_gpus_per_node} {slot}; trainer.max_staleness={staleness} "
            f"({'synchronous' if staleness == 0 else 'one-step-off' if staleness == 1 else f'up to {staleness} versions behind'}), "
            f"weight transfer timeout {transfer_timeout_s(cfg):g} s"]
