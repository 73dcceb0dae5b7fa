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

from dataclasses import dataclass
from typing import Optional

from strive.config.loader import ConfigError
from strive.config.schema import StriveConfig


MODES = ("continue", "resubmit")
"""async_training.partial_rollout_mode's values (strive/workers/partial.py)."""


@dataclass(frozen=True)
class PartialSettings:
    """What a rollout process needs of async_training.* to generate interruptibly (strive/workers/partial.py)."""

    mode: str
    """"continue" or "resubmit" (async_training.partial_rollout_mode)."""
    chunk: int
    """Decode steps between two asks whether a push waits; for engines called in pieces, new tokens per call
    (async_training.partial_rollout_chunk)."""


def is_split(cfg: StriveConfig) -> bool:
    """Whether the rollout engines have processes of their own (actor_rollout_ref.hybrid_engine=False)."""
    return not cfg.actor_rollout_ref.hybrid_engine


def rollout_world(cfg: StriveConfig) -> int:
    """Rollout processes with split placement: rollout.nnodes × rollout.n_gpus_per_node."""
    return cfg.rollout.nnodes * cfg.rollout.n_gpus_per_node


def shares_gpus(cfg: StriveConfig) -> bool:
    """Whether each rollout process sits on a trainer process's GPU (rollout.share_trainer_gpus, on cuda)."""
    return is_split(cfg) and cfg.rollout.share_trainer_gpus and cfg.trainer.device == "cuda"


def check_sharing(cfg: StriveConfig) -> list[str]:
    """rollout.share_trainer_gpus: errors naming the keys; the start-up note."""
    if not cfg.rollout.share_trainer_gpus:
        return []
    if not is_split(cfg):
        raise ConfigError("rollout.share_trainer_gpus=True places the rollout pool of split placement: set "
                          "actor_rollout_ref.hybrid_engine=False (colocated engines already share the trainer's GPUs)")
    if cfg.trainer.device != "cuda":
        return ["rollout.share_trainer_gpus has no effect with trainer.device=cpu (every slot is a worker process)"]
    tr, pool = cfg.trainer, cfg.rollout
    if not (tr.n_gpus_per_node == pool.n_gpus_per_node == 1 and tr.nnodes == pool.nnodes):
        raise ConfigError(f"rollout.share_trainer_gpus=True needs one GPU per node for each pool on the same nodes: "
                          f"trainer.n_gpus_per_node={tr.n_gpus_per_node}, rollout.n_gpus_per_node={pool.n_gpus_per_node},"
                          f" trainer.nnodes={tr.nnodes}, rollout.nnodes={pool.nnodes} (all per-node counts 1, nnodes "
                          "equal)")
    if not tr.colocate_critic:
        raise ConfigError("rollout.share_trainer_gpus=True with trainer.colocate_critic=False: the critic's own "
                          "pool would need a third process per GPU; keep the critic with the actor")
    return ["rollout.share_trainer_gpus: each rollout process shares its GPU with a trainer process (half a GPU "
            "each in Ray); weights cross through host memory (gloo)"]


def max_staleness(cfg: StriveConfig) -> int:
    """trainer.max_staleness, its null resolved: 1 with split placement (one-step-off), 0 colocated."""
    if cfg.trainer.max_staleness is not None:
        return int(cfg.trainer.max_staleness)
    return 1 if is_split(cfg) else 0


def transfer_timeout_s(cfg: StriveConfig) -> float:
    """trainer.weight_transfer_timeout_s, its null resolved (600 s on cuda, 300 s on cpu)."""
    t = cfg.trainer.weight_transfer_timeout_s
    return float(t) if t else (600.0 if cfg.trainer.device == "cuda" else 300.0)


def partial_settings(cfg: StriveConfig) -> Optional[PartialSettings]:
    """async_training.partial_rollout's settings, or None when it is off."""
    at = cfg.async_training
    return PartialSettings(at.partial_rollout_mode, int(at.partial_rollout_chunk)) if at.partial_rollout else None


def check_partial(cfg: StriveConfig, staleness: int) -> list[str]:
    """async_training.*: errors naming the key; the start-up note when partial rollout is on."""
    at = cfg.async_training
    if at.partial_rollout_mode not in MODES:
        raise ConfigError(f"async_training.partial_rollout_mode={at.partial_rollout_mode!r}: choose one of "
                          f"{', '.join(MODES)}")
    if at.partial_rollout_chunk < 1:
        raise ConfigError(f"async_training.partial_rollout_chunk={at.partial_rollout_chunk} must be ≥ 1 (new tokens "
                          "between two asks whether a push waits)")
    if not at.partial_rollout:
        changed = [f"async_training.{k}" for k in ("partial_rollout_mode", "partial_rollout_chunk")
                   if getattr(at, k) != getattr(type(at)(), k)]
        return [f"{', '.join(changed)}: no effect without async_training.partial_rollout=True"] if changed else []
    if not is_split(cfg) or staleness < 1:
        raise ConfigError("async_training.partial_rollout=True interrupts generations that run while the trainer "
                          "trains: it needs actor_rollout_ref.hybrid_engine=False and trainer.max_staleness ≥ 1 (now "
                          f"hybrid_engine={cfg.actor_rollout_ref.hybrid_engine}, max_staleness={staleness})")
    return [f"partial rollout: a weight push interrupts the generations in flight, which then "
            f"{'go on from their last token' if at.partial_rollout_mode == 'continue' else 'start again'} under the "
            f"new weights (async_training.partial_rollout_mode={at.partial_rollout_mode}); the engines ask every "
            f"{at.partial_rollout_chunk} new tokens whether a push waits (async_training.partial_rollout_chunk; "
            f"the hf engines stop in place, vllm and sglang are called in pieces of that size)"]


def check_placement(cfg: StriveConfig) -> list[str]:
    """Errors for placements that cannot run, naming the keys; notes describing the one that will."""
    staleness = max_staleness(cfg)
    if staleness < 0:
        raise ConfigError(f"trainer.max_staleness={staleness} must be ≥ 0 (0: synchronous)")
    notes = check_partial(cfg, staleness) + check_sharing(cfg)
    if not is_split(cfg):
        if staleness > 0:
            raise ConfigError(f"trainer.max_staleness={staleness} needs the rollout engines on slots of their own: "
                              "set actor_rollout_ref.hybrid_engine=False and rollout.n_gpus_per_node / rollout.nnodes "
                              "(colocated engines share the trainer's processes, so generation cannot overlap training)")
        return notes  # colocated: at most the note that partial-rollout settings have no effect
    pool = cfg.rollout
    if pool.nnodes < 1 or pool.n_gpus_per_node < 1:
        raise ConfigError(f"actor_rollout_ref.hybrid_engine=False: rollout.nnodes × rollout.n_gpus_per_node = "
                          f"{pool.nnodes} × {pool.n_gpus_per_node} rollout slots; both must be ≥ 1")
    rollout, algo = cfg.actor_rollout_ref.rollout, cfg.algorithm
    multi_turn = rollout.multi_turn.enable
    colocated = "use the colocated layout (hybrid_engine=True)"
    unsupported = [(multi_turn and rollout.multi_turn.router != "static",
                    f"actor_rollout_ref.rollout.multi_turn.router={rollout.multi_turn.router}",
                    f"{colocated} or multi_turn.router=static"),
                   (multi_turn and cfg.async_training.partial_rollout,
                    "async_training.partial_rollout=True with actor_rollout_ref.rollout.multi_turn.enable=True",
                    colocated),
                   (algo.filter_groups.enable, "algorithm.filter_groups.enable=True", colocated),
                   (algo.adv_estimator == "remax", "algorithm.adv_estimator=remax", colocated),
                   (cfg.reward_model.enable, "reward_model.enable=True", colocated),
                   (cfg.reward_model.judge.enable, "reward_model.judge.enable=True", colocated)]
    for on, key, instead in unsupported:
        if on:
            raise ConfigError(f"{key} is not supported with split placement (actor_rollout_ref.hybrid_engine=False) "
                              f"yet; {instead}")
    slot = "worker process(es)" if cfg.trainer.device == "cpu" else "GPU(s)"
    tr = cfg.trainer
    return [f"split placement: trainer on trainer.nnodes {tr.nnodes} × trainer.n_gpus_per_node {tr.n_gpus_per_node} "
            f"{slot}, rollout engines on rollout.nnodes {pool.nnodes} × rollout.n_gpus_per_node "
            f"{pool.n_gpus_per_node} {slot}; trainer.max_staleness={staleness} "
            f"({'synchronous' if staleness == 0 else 'one-step-off' if staleness == 1 else f'up to {staleness} versions behind'}), "
            f"weight transfer timeout {transfer_timeout_s(cfg):g} s"] + notes
