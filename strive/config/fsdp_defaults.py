"""FSDP settings whose defaults depend on the run: resharding on one worker, and the storage dtype of the roles
that only run forward. Called by strive.config.resolve; a key the user set is kept as given, and every change is
noted at start-up."""

from __future__ import annotations

from strive.config.schema import StriveConfig
from strive.models.loading import DTYPES


def single_rank_defaults(cfg: StriveConfig, explicit: set[str], notes: list[str]) -> None:
    """On one rank FSDP2 shards nothing, so resharding after forward frees only the bf16 copy of the weights and
    costs a gather and a reshard per layer and micro-batch (bench/update_profile.py: 13% of an update at
    micro-batches of 4 on an H200). Unless set, it is off there."""
    if cfg.trainer.n_gpus_per_node * cfg.trainer.nnodes != 1:
        return
    for key, fsdp in (("actor_rollout_ref.actor.fsdp_config", cfg.actor_rollout_ref.actor.fsdp_config),
                      ("actor_rollout_ref.ref.fsdp_config", cfg.actor_rollout_ref.ref.fsdp_config),
                      ("critic.model.fsdp_config", cfg.critic.model.fsdp_config)):
        if f"{key}.reshard_after_forward" not in explicit and fsdp.reshard_after_forward:
            fsdp.reshard_after_forward = False
    notes.append("one worker: fsdp_config.reshard_after_forward defaults to False (nothing is sharded; set it to "
                 "True to free the gathered bf16 weights between forward and backward)")


def forward_only_storage(cfg: StriveConfig, explicit: set[str], notes: list[str]) -> None:
    """The reference and the reward model have no optimizer, and every forward casts their weights to the compute
    dtype. Unless `model_dtype` is set, they are stored in that dtype when it is 16-bit: the same numbers (the cast
    happens once, at load) in half the memory of fp32 weights."""
    from strive.config.resolve import needs_reference, uses_lora  # resolve imports this module

    roles = [("actor_rollout_ref.ref.fsdp_config", cfg.actor_rollout_ref.ref.fsdp_config,
              needs_reference(cfg) and not uses_lora(cfg)),
             ("reward_model.model.fsdp_config", cfg.reward_model.model.fsdp_config, bool(cfg.reward_model.enable))]
    changed = []
    for key, fsdp, used in roles:
        compute = DTYPES.get(fsdp.dtype)
        if used and f"{key}.model_dtype" not in explicit and compute in ("bfloat16", "float16") \
                and DTYPES.get(fsdp.model_dtype) == "float32":
            fsdp.model_dtype = compute
            changed.append(f"{key}.model_dtype={compute}")
    if changed:
        notes.append(f"forward-only roles keep their weights in the compute dtype ({', '.join(changed)}): no "
                     "optimizer reads fp32 copies, and their forward would cast to it anyway; set model_dtype=fp32 "
                     "to keep fp32")
