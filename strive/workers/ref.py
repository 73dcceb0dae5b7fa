"""The reference policy: a frozen copy of the initial actor, used only for KL terms.

Created only when `algorithm.use_kl_in_reward` or `actor.use_kl_loss` is on. Forward-only, no optimizer;
`ref.fsdp_config.param_offload` keeps its shards on the CPU between uses. Under LoRA the reference is the actor's
own model with its adapter disabled (AdapterOffReference): no model is loaded for it.
"""

from __future__ import annotations

import torch

from strive.batch import Batch
from strive.config.actor_rollout_ref import ActorRolloutRefConfig
from strive.config.sizes import ForwardSizes
from strive.workers.actor import build_policy_module, policy_log_probs
from strive.workers.fsdp import offload_params, reload_params


class RefWorker:
    def __init__(self, cfg: ActorRolloutRefConfig, forward: ForwardSizes, mesh, device: torch.device):
        self.cfg, self.sizes, self.device = cfg, forward, device
        self.temperature = cfg.rollout.temperature if cfg.rollout.temperature > 0 else 1.0
        # parameters keep requires_grad: the forward runs under no_grad, and frozen bf16 weights take a memory-hungry
        # oneDNN path on CPU (see strive/engines/hf.py)
        self.module, _ = build_policy_module(cfg.model, cfg.ref.fsdp_config, mesh, gradient_checkpointing=False,
                                          remove_padding=bool(cfg.actor.use_remove_padding), device=device,
                                          compile_layers=bool(cfg.ref.use_torch_compile)
                                          and cfg.ref.fsdp_config.use_torch_compile)
        if cfg.ref.fsdp_config.param_offload:
            offload_params(self.module)

    def compute_log_probs(self, batch: Batch) -> dict[str, torch.Tensor]:
        offload = self.cfg.ref.fsdp_config.param_offload
        if offload:
            reload_params(self.module, self.device)
        logp, _ = policy_log_probs(self.module, batch, self.sizes, self.temperature, self.device, with_entropy=False)
        if offload:
            offload_params(self.module)
        return {"ref_log_probs": logp}


class AdapterOffReference:
    """The reference role under LoRA: the actor's model with the adapter disabled (the initial policy, since
    training changes only the adapter)."""

    def __init__(self, actor):
        self.actor = actor

    def compute_log_probs(self, batch: Batch) -> dict[str, torch.Tensor]:
        return self.actor.compute_ref_log_probs(batch)
