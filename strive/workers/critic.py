"""The critic: a value model (an LM with a one-output head) trained on the returns, one FSDP2 shard per rank.

Its model may differ from the actor's (`critic.model.path`). Created only when the advantage estimator needs
values (GAE) or when `critic.enable=True`.
"""

from __future__ import annotations

import math
import time

import torch

from strive.algos import value_loss
from strive.batch import Batch
from strive.config.sections import CriticConfig
from strive.config.sizes import ForwardSizes, TrainSizes
from strive.models.attention import padded_up_to, resolve_backend
from strive.models.flops import forward_flops, mfu
from strive.models.forward import TokenIndex, ValueForward, decoder_layers
from strive.models.loading import load_value_model, torch_dtype
from strive.workers.fsdp import (accumulation_step, activation_offload, apply_fsdp, checkpoint_layers, forward_only,
                                 offload_role, reload_role)
from strive.workers.microbatch import WeightedSums, on_device, split_micro, split_mini
from strive.workers.optim import build_optimizer, build_scheduler


class CriticWorker:
    def __init__(self, cfg: CriticConfig, train: TrainSizes, forward: ForwardSizes, mesh, device: torch.device,
                 total_steps: int):
        self.cfg, self.train_sizes, self.forward_sizes, self.device = cfg, train, forward, device
        self.local = mesh.size() == 1  # see strive.workers.fsdp.accumulation_step
        model = cfg.model
        hf = load_value_model(model.path, dtype=model.fsdp_config.model_dtype, override_config=model.override_config,
                              trust_remote_code=bool(model.trust_remote_code))
        hf.config.use_cache = False
        compile_layers = model.fsdp_config.use_torch_compile and not model.enable_activation_offload
        if model.enable_gradient_checkpointing:
            checkpoint_layers(hf, model.fsdp_config, compile_layers, device)
        backend = None
        if model.use_remove_padding:
            backend = resolve_backend(model.packed_attention, device, torch_dtype(model.fsdp_config.dtype),
                                      key="critic.model.packed_attention")
        wrapper = ValueForward(hf, backend, padded_up_to(model.packed_attention, device))
        self.module = apply_fsdp(wrapper, decoder_layers(hf), mesh, model.fsdp_config, compile_layers=compile_layers)
        self.optimizer = build_optimizer(self.module.parameters(), cfg.optim)
        self.scheduler = build_scheduler(self.optimizer, cfg.optim, total_steps)
        self._offload()

    def _values(self, mb: Batch, index: TokenIndex) -> torch.Tensor:
        """mb and index already on the device (`on_device`)."""
        return self.module(mb.input_ids, mb.attention_mask, mb.position_ids, mb.response_mask, index=index)

    def compute_values(self, batch: Batch) -> dict[str, torch.Tensor]:
        self._reload()
        with forward_only(self.module):
            parts = [self._values(*on_device(mb, self.device))
                     for mb, _ in split_micro(batch, self.forward_sizes.micro_batch_per_rank,
                                              self.forward_sizes.max_token_len)]
            values = torch.cat(parts).cpu()  # one device read for all micro-batches
        self._offload()
        return {"values": values}

    def update(self, batch: Batch, step: int) -> dict[str, float]:
        cfg = self.cfg
        start = time.perf_counter()
        self._reload()
        self.module.train()
        sums: dict[str, float] = {}
        count = 0
        for epoch in range(cfg.ppo_epochs):
            for mini in split_mini(batch, self.train_sizes.mini_batch_per_rank, cfg.shuffle,
                                   seed=cfg.data_loader_seed + 1000 * step + epoch):
                for k, v in self._mini_step(mini).items():
                    sums[k] = sums.get(k, 0.0) + v
                count += 1
        lr = self.optimizer.param_groups[0]["lr"]
        self.scheduler.step()
        self._offload()
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        out = {f"critic/{k}": v / max(count, 1) for k, v in sums.items()}
        out["critic/lr"] = lr
        flops = 3.0 * cfg.ppo_epochs * forward_flops(self.module.hf.config, batch.attention_mask.sum(-1),
                                                     int(batch.response_mask.sum()), head_out=1)
        out.update({f"perf/{k}/critic": v for k, v in mfu(flops, time.perf_counter() - start, self.device).items()})
        return out

    def _mini_step(self, mini: Batch) -> dict[str, float]:
        cfg = self.cfg
        self.optimizer.zero_grad(set_to_none=True)
        sums = WeightedSums()
        micros = split_micro(mini, self.train_sizes.micro_batch_per_rank, self.train_sizes.max_token_len)
        for i, (mb, weight) in enumerate(micros):
            accumulation_step(self.module, last=i == len(micros) - 1, local=self.local)
            mb, index = on_device(mb, self.device)
            with activation_offload(cfg.model.enable_activation_offload, self.device):
                values = self._values(mb, index)
            loss, m = value_loss(values, mb.values, mb.returns, mb.response_mask, clip=cfg.cliprange_value,
                                 agg=cfg.loss_agg_mode)
            (loss * weight).backward()
            sums.add({"vf_loss": loss, **m}, weight)
        grad_norm = torch.nn.utils.clip_grad_norm_(self.module.parameters(), cfg.grad_clip)
        grad_norm = grad_norm.full_tensor() if hasattr(grad_norm, "full_tensor") else grad_norm
        sums.add({"grad_norm": grad_norm}, 1.0)
        metrics = sums.read()  # the one device read of this mini-batch
        if math.isfinite(metrics["grad_norm"]):
            self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        return metrics

    def _reload(self) -> None:
        reload_role(self.module, self.optimizer, self.cfg.model.fsdp_config, self.device)

    def _offload(self) -> None:
        offload_role(self.module, self.optimizer, self.cfg.model.fsdp_config)
