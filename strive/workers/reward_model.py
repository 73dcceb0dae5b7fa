"""The reward model: a sequence-classification model with one output that scores each (prompt, response), one FSDP2
shard per rank, forward-only (no optimizer).

Its inputs come from the controller already in the reward model's own tokens (strive/reward/rm_inputs.py: the
policy's ids as they are when both tokenizers agree, else the chat re-rendered with the reward model's template),
so this role only pads, cuts micro-batches and runs the forward. The score is read at the last real token, as verl
reads it. `reward_model.model.fsdp_config.param_offload` keeps the shards on the CPU between uses.

    pytest tests/integration/test_reward_model.py
"""

from __future__ import annotations

import torch
import torch.distributed as dist

from strive.config.sections import RewardModelConfig
from strive.config.sizes import ForwardSizes
from strive.models.forward import ScoreForward, decoder_layers
from strive.models.loading import load_reward_model
from strive.workers.fsdp import apply_fsdp, forward_only, offload_params, reload_params


class RewardModelWorker:
    def __init__(self, cfg: RewardModelConfig, forward: ForwardSizes, mesh, device: torch.device):
        self.cfg, self.sizes, self.device = cfg, forward, device
        self.pad_id = 0  # any id: padding is masked and the score is read at the last real token
        model = cfg.model
        hf = load_reward_model(model.path, dtype=model.fsdp_config.model_dtype, override_config=model.override_config,
                               trust_remote_code=bool(model.trust_remote_code))
        hf.config.use_cache = False
        self.module = apply_fsdp(ScoreForward(hf), decoder_layers(hf), mesh, model.fsdp_config,
                                 compile_layers=model.fsdp_config.use_torch_compile)
        self.module.eval()
        if model.fsdp_config.param_offload:
            offload_params(self.module)

    def score(self, inputs: list[list[int]]) -> torch.Tensor:
        """(b,) float32 scores of this rank's inputs (token ids in the reward model's vocabulary), in order."""
        offload = self.cfg.model.fsdp_config.param_offload
        if offload:
            reload_params(self.module, self.device)
        parts = []
        chunks = micro_batches(inputs, self.sizes)
        with forward_only(self.module):
            for k in range(self._forwards(len(chunks))):
                if k < len(chunks):
                    ids, mask = right_pad(chunks[k], self.pad_id)  # (b, L) each
                    parts.append(self.module(ids.to(self.device), mask.to(self.device)))
                else:  # FSDP2 forwards are collective: a rank with fewer micro-batches keeps step with one token
                    one = torch.ones(1, 1, dtype=torch.long, device=self.device)  # (1, 1)
                    self.module(one * self.pad_id, one)
        if offload:
            offload_params(self.module)
        return torch.cat(parts).cpu() if parts else torch.zeros(0)

    def _forwards(self, mine: int) -> int:
        """The most micro-batches any rank has (uneven shares, token budgets), agreed before the first forward: every
        rank runs that many forwards, so every all-gather has all ranks."""
        if not dist.is_initialized() or dist.get_world_size() == 1:
            return mine
        count = torch.tensor([mine], device=self.device)
        dist.all_reduce(count, op=dist.ReduceOp.MAX)
        return int(count.item())


def micro_batches(inputs: list[list[int]], sizes: ForwardSizes) -> list[list[list[int]]]:
    """Consecutive micro-batches: `micro_batch_per_rank` inputs each, or (use_dynamic_bsz) as many as fit the token
    budget (a longer input goes alone)."""
    if sizes.micro_batch_per_rank is not None:
        step = sizes.micro_batch_per_rank
        return [inputs[i: i + step] for i in range(0, len(inputs), step)]
    out: list[list[list[int]]] = []
    total = 0
    for ids in inputs:
        if out and total + len(ids) <= (sizes.max_token_len or 1):
            out[-1].append(ids)
            total += len(ids)
        else:
            out.append([ids])
            total = len(ids)
    return out


def right_pad(rows: list[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(b, L) ids right-padded with pad_id and (b, L) attention mask."""
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)  # (b, L)
    mask = torch.zeros(len(rows), width, dtype=torch.long)  # (b, L)
    for i, r in enumerate(rows):
        ids[i, : len(r)] = torch.tensor(r, dtype=torch.long)
        mask[i, : len(r)] = 1
    return ids, mask
