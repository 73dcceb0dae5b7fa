"""The actor: the policy under training, one FSDP2 shard per rank.

It recomputes log-probs (and entropy) of rollouts under the current weights, updates the policy with the PPO
loss (plus the optional entropy bonus and KL-to-reference loss), and hands out full weights bucket by bucket
for the rollout engine. Log-probs use the rollout temperature, as the sampling distribution did.
"""

from __future__ import annotations

import math
import time
from typing import Any, Iterator, Optional

import torch

from strive.algos import aggregate_loss, kl_penalty, policy_loss
from strive.algos.rollout_correction import Correction, bypass_policy_loss
from strive.batch import Batch
from strive.config.actor_rollout_ref import ActorRolloutRefConfig, ModelConfig
from strive.config.common import FsdpConfig
from strive.config.sizes import ForwardSizes, TrainSizes
from strive.models.attention import padded_up_to, resolve_backend
from strive.models.flops import forward_flops, mfu
from strive.models.forward import PolicyForward, TokenIndex, decoder_layers, hf_state_name
from strive.models.loading import load_causal_lm, resolve_model_path, torch_dtype
from strive.workers.fsdp import (accumulation_step, activation_offload, apply_fsdp, checkpoint_layers, forward_only,
                                 offload_role, reload_role)
from strive.workers.microbatch import WeightedSums, mini_orders, on_device, split_micro
from strive.workers.optim import build_optimizer, build_scheduler


def build_policy_module(model: ModelConfig, fsdp: FsdpConfig, mesh, gradient_checkpointing: bool,
                        remove_padding: bool, device: torch.device, compile_layers: bool = False,
                        lora: bool = False) -> tuple[PolicyForward, Any]:
    """Load the HF causal LM named by `model.path`, packed or padded as asked, and shard it with FSDP2 (its
    layers compiled on CUDA when `compile_layers`). lora: wrap it with PEFT first (strive/models/lora.py); the
    PeftModel comes back beside the module (else None)."""
    hf = load_causal_lm(model.path, dtype=fsdp.model_dtype, override_config=model.override_config,
                        trust_remote_code=model.trust_remote_code)
    hf.config.use_cache = False
    if gradient_checkpointing:
        checkpoint_layers(hf, fsdp, compile_layers, device)
    peft_model = None
    if lora:
        from strive.models.lora import apply_lora

        peft_model = apply_lora(hf, model, resolve_model_path(model.path))
    backend = None
    if remove_padding:
        backend = resolve_backend(model.packed_attention, device, torch_dtype(fsdp.dtype),
                                  key="actor_rollout_ref.model.packed_attention")
    wrapper = PolicyForward(hf, backend, padded_up_to(model.packed_attention, device),
                            compile_head=compile_layers and device.type == "cuda")
    return apply_fsdp(wrapper, decoder_layers(hf), mesh, fsdp, compile_layers), peft_model


def policy_log_probs(module: PolicyForward, batch: Batch, sizes: ForwardSizes, temperature: float,
                     device: torch.device, with_entropy: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Forward-only log-probs (B, T) and entropy (B, T; zeros unless asked) in micro-batches."""
    logps, ents = [], []
    with forward_only(module):
        for mb, _ in split_micro(batch, sizes.micro_batch_per_rank, sizes.max_token_len):
            mb, index = on_device(mb, device)
            logp, ent = module(mb.input_ids, mb.attention_mask, mb.position_ids, mb.response_mask,
                               temperature=temperature, with_entropy=with_entropy, index=index)
            logps.append(logp)
            ents.append(ent if ent is not None else torch.zeros_like(logp))
    return torch.cat(logps).cpu(), torch.cat(ents).cpu()  # one device read for all micro-batches


class ActorWorker:
    def __init__(self, cfg: ActorRolloutRefConfig, train: TrainSizes, forward: ForwardSizes, mesh,
                 device: torch.device, total_steps: int, rollout_correction=None):
        self.cfg, self.train_sizes, self.forward_sizes = cfg, train, forward
        # algorithm.rollout_correction.bypass_mode: the batch's old log-probs are the engine's, and the loss computes
        # the correction against the current policy (strive.algos.rollout_correction.bypass_policy_loss)
        self.bypass: Optional[Correction] = None
        if rollout_correction is not None and rollout_correction.bypass_mode:
            self.bypass = Correction.from_settings(rollout_correction)
        self.device = device
        self.local = mesh.size() == 1  # one rank: FSDP2 accumulates without per-micro-batch reduce (accumulation_step)
        self.temperature = cfg.rollout.temperature if cfg.rollout.temperature > 0 else 1.0
        actor = cfg.actor
        compile_layers = (actor.use_torch_compile and actor.fsdp_config.use_torch_compile
                          and not cfg.model.enable_activation_offload)
        self.module, self.peft = build_policy_module(
            cfg.model, actor.fsdp_config, mesh, cfg.model.enable_gradient_checkpointing, bool(actor.use_remove_padding),
            device, compile_layers, lora=cfg.model.lora_rank > 0 or bool(cfg.model.lora_adapter_path))
        # under LoRA only the adapter requires grad, and only it is in the optimizer
        self.optimizer = build_optimizer([p for p in self.module.parameters() if p.requires_grad], actor.optim)
        self.scheduler = build_scheduler(self.optimizer, actor.optim, total_steps)
        self._offload_if_configured()

    def compute_log_probs(self, batch: Batch, with_entropy: bool = True) -> dict[str, torch.Tensor]:
        """Old log-probs (and entropy) of the batch under the current weights."""
        self._reload()
        logp, entropy = policy_log_probs(self.module, batch, self.forward_sizes, self.temperature, self.device,
                                         with_entropy)
        self._offload_if_configured()
        return {"old_log_probs": logp, "entropy": entropy}

    def compute_ref_log_probs(self, batch: Batch) -> dict[str, torch.Tensor]:
        """LoRA: the reference policy's log-probs, i.e. this model's with the adapter disabled
        (strive/models/lora.py: adapter_disabled), so no second copy of the base weights exists."""
        from strive.models.lora import adapter_disabled

        self._reload()
        with adapter_disabled(self.module):
            logp, _ = policy_log_probs(self.module, batch, self.forward_sizes, self.temperature, self.device, False)
        self._offload_if_configured()
        return {"ref_log_probs": logp}

    def _forward(self, mb: Batch, index: TokenIndex, with_entropy: bool,
                 entropy_grad: bool = True) -> tuple[torch.Tensor, Optional[torch.Tensor]]:
        """mb and index already on the device (`on_device`)."""
        return self.module(mb.input_ids, mb.attention_mask, mb.position_ids, mb.response_mask,
                           temperature=self.temperature, with_entropy=with_entropy, entropy_grad=entropy_grad,
                           index=index)

    # -- update -----------------------------------------------------------------------------------------------
    def update(self, batch: Batch, step: int, record: bool = False) -> tuple[dict[str, float], dict[str, torch.Tensor]]:
        """PPO epochs over mini-batches; one optimizer step per mini-batch; the scheduler steps once.

        record: the batch has no old log-probs because this update is the only optimizer step on it (the on-policy
        bypass): the old log-probs are the update forward's own, detached, and come back with the entropy,
        (B, T) each in the batch's row order. Returns (metrics, recorded tensors)."""
        actor = self.cfg.actor
        start = time.perf_counter()
        self._reload()
        self.module.train()
        minis_per_epoch = math.ceil(len(batch) / self.train_sizes.mini_batch_per_rank)
        on_policy = minis_per_epoch == 1 and actor.ppo_epochs == 1
        if record and not on_policy:
            raise RuntimeError("the actor can record the old log-probs only when it takes one optimizer step per batch")
        sums: dict[str, float] = {}
        count, seen = 0, []
        for epoch in range(actor.ppo_epochs):
            orders = mini_orders(len(batch), self.train_sizes.mini_batch_per_rank, actor.shuffle,
                                 seed=actor.data_loader_seed + 1000 * step + epoch)
            for rows in orders:
                metrics = self._mini_step(batch.select(rows), on_policy, seen if record else None)
                for k, v in metrics.items():
                    sums[k] = sums.get(k, 0.0) + v
                count += 1
        lr = self.optimizer.param_groups[0]["lr"]
        self.scheduler.step()
        self._offload_if_configured()
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        out = {(k if "/" in k else f"actor/{k}"): v / max(count, 1) for k, v in sums.items()}  # rollout_corr/*
        out["actor/lr"] = lr
        flops = 3.0 * actor.ppo_epochs * forward_flops(self.module.hf.config, batch.attention_mask.sum(-1),
                                                       int(batch.response_mask.sum()))  # forward + backward
        out.update({f"perf/{k}/actor": v for k, v in mfu(flops, time.perf_counter() - start, self.device).items()})
        if not record:
            return out, {}
        order = orders[0]  # the one mini-batch's row order: put what was seen back in the batch's order
        logp, entropy = (torch.empty_like(x).index_copy_(0, order, x) for x in
                         (torch.cat(xs).cpu() for xs in zip(*seen)))
        return out, {"old_log_probs": logp, "entropy": entropy}

    def _mini_step(self, mini: Batch, on_policy: bool, seen: Optional[list]) -> dict[str, float]:
        """One optimizer step over a mini-batch; `seen` (with the on-policy bypass) collects each micro-batch's
        log-probs and entropy, detached, on the CPU."""
        actor = self.cfg.actor
        self.optimizer.zero_grad(set_to_none=True)
        need_entropy = actor.entropy_coeff != 0 or actor.calculate_entropy
        sums = WeightedSums()
        micros = split_micro(mini, self.train_sizes.micro_batch_per_rank, self.train_sizes.max_token_len)
        for i, (mb, weight) in enumerate(micros):
            accumulation_step(self.module, last=i == len(micros) - 1, local=self.local)
            mb, index = on_device(mb, self.device)
            with activation_offload(self.cfg.model.enable_activation_offload, self.device):
                logp, entropy = self._forward(mb, index, need_entropy or seen is not None, entropy_grad=need_entropy)
            if seen is not None:
                seen.append((logp.detach(), entropy.detach()))
            mask = mb.response_mask
            clips = dict(clip_low=actor.clip_ratio_low, clip_high=actor.clip_ratio_high, clip_c=actor.clip_ratio_c,
                         agg=actor.loss_agg_mode)
            if self.bypass is not None:  # never the detached current log-probs: the ratio is against the engine's
                pg, pg_metrics = bypass_policy_loss(logp, mb.old_log_probs, mb.advantages, mask, self.bypass, **clips)
            else:
                old = logp.detach() if on_policy else mb.old_log_probs
                pg, pg_metrics = policy_loss(logp, old, mb.advantages, mask, weights=mb.rollout_is_weights, **clips)
            loss = pg
            parts = {"pg_loss": pg, **pg_metrics}
            if need_entropy:
                ent = aggregate_loss(entropy, mask, actor.loss_agg_mode, actor.loss_scale_factor)
                loss = loss - actor.entropy_coeff * ent
                parts["entropy"] = ent
            if actor.use_kl_loss:
                kl = aggregate_loss(kl_penalty(logp, mb.ref_log_probs, actor.kl_loss_type), mask,
                                    actor.loss_agg_mode, actor.loss_scale_factor)
                loss = loss + actor.kl_loss_coef * kl
                parts["kl_loss"] = kl
                parts["kl_coef"] = actor.kl_loss_coef
            (loss * weight).backward()
            sums.add(parts, weight)
        grad_norm = torch.nn.utils.clip_grad_norm_(self.module.parameters(), actor.grad_clip)
        grad_norm = grad_norm.full_tensor() if hasattr(grad_norm, "full_tensor") else grad_norm
        sums.add({"grad_norm": grad_norm}, 1.0)
        metrics = sums.read()  # the one device read of this mini-batch
        if math.isfinite(metrics["grad_norm"]):
            self.optimizer.step()
        else:
            print(f"[actor] gradient norm is {metrics['grad_norm']}; skipping this optimizer step")
        self.optimizer.zero_grad(set_to_none=True)
        return metrics

    # -- weights ----------------------------------------------------------------------------------------------
    def full_weight_buckets(self, bucket_bytes: int) -> Iterator[list[tuple[str, torch.Tensor]]]:
        """Full (unsharded) parameters in HF names, grouped into buckets of about `bucket_bytes`.

        A collective: every rank must iterate it to the end, in the same order.
        """
        self._reload()
        bucket: list[tuple[str, torch.Tensor]] = []
        size = 0
        for name, full in self._full_parameters():
            bucket.append((name, full))
            size += full.numel() * full.element_size()
            if size >= bucket_bytes:
                yield bucket
                bucket, size = [], 0
        if bucket:
            yield bucket
        self._offload_if_configured()

    def _full_parameters(self) -> Iterator[tuple[str, torch.Tensor]]:
        """(HF name, full tensor) per weight; under LoRA each adapted weight merged (W + scaling·B·A), the
        trained model left unmerged."""
        if self.peft is not None:
            from strive.models.lora import merged_parameters

            yield from merged_parameters(self.module)
            return
        for name, param in self.module.named_parameters():
            full = param.full_tensor() if hasattr(param, "full_tensor") else param.data
            yield hf_state_name(name), full.detach()

    # -- offload ----------------------------------------------------------------------------------------------
    def _reload(self) -> None:
        reload_role(self.module, self.optimizer, self.cfg.actor.fsdp_config, self.device)

    def _offload_if_configured(self) -> None:
        offload_role(self.module, self.optimizer, self.cfg.actor.fsdp_config)
