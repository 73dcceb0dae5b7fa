"""Per-token log-probs, entropy and values of the response, without full-vocabulary logits for the batch.

A causal LM's logits for a batch are B × L × V floats: for Qwen2.5 (V = 151,936) at 8 × 1,024 tokens that is
5 GB in fp32, and autograd keeps them. Here the backbone runs once, only the hidden states that predict
response tokens are kept, and the LM head is applied in chunks of a fixed token budget; with gradients each
chunk is recomputed in backward (activation checkpointing), so peak memory is one chunk of logits.

With a packed-attention backend (`use_remove_padding=True`) the valid tokens of all rows are packed into one row
with restarting position ids, padding is never computed, and attention runs within each sequence
(strive/models/attention.py: never an N × N mask); without one, the padded batch runs with its attention mask.

The wrappers are ordinary modules: FSDP is applied to them from outside (strive/workers/fsdp.py).
Exercised by: pytest tests/unit/test_forward.py
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from typing import Optional

import torch
from torch import nn
from torch.utils.checkpoint import CheckpointPolicy, checkpoint, create_selective_checkpoint_contexts

from strive.algos import entropy_from_logits, logprobs_from_logits
from strive.models.attention import packed_kwargs, use_packed_attention
from strive.models.head import linear_log_probs

HEAD_CHUNK_BYTES = 256 * 2**20  # fp32 logits per head chunk


@dataclass
class TokenIndex:
    """Where a micro-batch's real and response tokens are. Built on the host from the CPU masks (`token_index`)
    so that the device never waits on a data-dependent shape in the forward: each such wait would stall the
    host's kernel launches behind the device's queue once per micro-batch.

    real: (N,) flat indices of the real tokens in (B·L); lengths: (B,) real tokens per row; longest: max of
    lengths; response: (R,) flat indices of the response tokens in (B·T)."""

    real: torch.Tensor
    lengths: torch.Tensor
    longest: int
    response: torch.Tensor


def token_index(attention_mask: torch.Tensor, response_mask: torch.Tensor,
                device: Optional[torch.device] = None) -> TokenIndex:
    """TokenIndex of (B, L) and (B, T) masks; computed where the masks are (the host, for no device wait), the
    tensors then copied to `device` without blocking."""
    lengths = attention_mask.sum(-1)  # (B,)
    index = TokenIndex(attention_mask.reshape(-1).nonzero().squeeze(1), lengths, int(lengths.max()),
                       response_mask.reshape(-1).nonzero().squeeze(1))
    if device is None or device == attention_mask.device:
        return index
    from strive.batch import _move

    return TokenIndex(_move(index.real, device), _move(index.lengths, device), index.longest,
                      _move(index.response, device))


def response_hidden(backbone: nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                    position_ids: torch.Tensor, response_length: int, packed_backend: Optional[str],
                    index: Optional[TokenIndex] = None) -> torch.Tensor:
    """Hidden states at the positions that predict each response token: (B, T, H).

    packed_backend None: the padded batch with its mask; else the real tokens packed into one row, attention per
    sequence with that backend (each row's real tokens are contiguous: left-padded prompt, right-padded response).
    index: the micro-batch's TokenIndex when the caller built it on the host (else built here).
    """
    B, L = input_ids.shape
    T = response_length
    if packed_backend is None:
        out = backbone(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                       use_cache=False).last_hidden_state  # (B, L, H)
        return out[:, L - T - 1: L - 1]
    if index is None:
        flat, lengths, longest = attention_mask.reshape(-1).nonzero().squeeze(1), attention_mask.sum(-1), None
    else:
        flat, lengths, longest = index.real, index.lengths, index.longest  # (N,), (B,), int
    ids = input_ids.reshape(-1)[flat].unsqueeze(0)  # (1, N)
    pos = position_ids.reshape(-1)[flat].unsqueeze(0)  # (1, N)
    packed = backbone(input_ids=ids, position_ids=pos, attention_mask=None, use_cache=False,
                      **packed_kwargs(lengths, packed_backend, longest)).last_hidden_state[0]  # (N, H)
    full = packed.new_zeros(B * L, packed.shape[-1]).index_copy(0, flat, packed)  # (B·L, H)
    return full.view(B, L, -1)[:, L - T - 1: L - 1]


def _head_logprobs(head: nn.Module, hidden: torch.Tensor, labels: torch.Tensor, temperature: float,
                   with_entropy: bool, entropy_grad: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    logits = head(hidden).float()  # (N, V)
    if temperature != 1.0:
        logits = logits / temperature
    logp = logprobs_from_logits(logits, labels)  # (N,)
    if not with_entropy:
        return logp, logp.new_zeros(())
    # an entropy only reported (not in the loss) keeps no graph: its softmax would stay alive until backward
    ent = entropy_from_logits(logits if entropy_grad else logits.detach())
    return logp, ent


def chunked_logprobs(head: nn.Module, hidden: torch.Tensor, labels: torch.Tensor, mask: torch.Tensor,
                     temperature: float = 1.0, with_entropy: bool = False, entropy_grad: bool = True,
                     chunk_bytes: int = HEAD_CHUNK_BYTES, index: Optional[torch.Tensor] = None,
                     compiled: bool = False) -> tuple[torch.Tensor, Optional[torch.Tensor]]:
    """log p(label) and entropy for the masked tokens only, chunk by chunk. Returns (B, T) tensors, 0 off-mask.
    index: (N,) flat indices of the masked tokens when the caller has them (TokenIndex.response).
    A plain linear head (no bias) goes through the fused head (strive/models/head.py; compiled: its elementwise
    work compiled, CUDA); any other head (a LoRA-wrapped one) through autograd, each chunk checkpointed."""
    B, T, H = hidden.shape
    if index is None:
        index = mask.reshape(-1).nonzero().squeeze(1)  # (N,)
    h = hidden.reshape(B * T, H)[index]  # (N, H)
    y = labels.reshape(-1)[index]  # (N,)
    vocab = head.weight.shape[0]
    chunk = max(1, chunk_bytes // (4 * vocab))
    if isinstance(head, nn.Linear) and head.bias is None:
        logp_n, ent_n = linear_log_probs(h, head.weight, y, temperature, chunk, with_entropy, entropy_grad,
                                         compiled and h.is_cuda)  # (N,), (N,)
    else:
        logp_n, ent_n = _autograd_head(head, h, y, temperature, chunk, with_entropy, entropy_grad)
    rows, cols = index // T, index % T  # (N,), (N,)
    zeros = hidden.new_zeros(B, T, dtype=torch.float32)
    logp = zeros.index_put((rows, cols), logp_n)  # (B, T)
    entropy = zeros.index_put((rows, cols), ent_n) if with_entropy else None  # (B, T)
    return logp, entropy


def _autograd_head(head: nn.Module, h: torch.Tensor, y: torch.Tensor, temperature: float, chunk: int,
                   with_entropy: bool, entropy_grad: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """(N,) log-probs and entropies through autograd, each chunk recomputed in backward."""
    logps, ents = [h.new_zeros(0, dtype=torch.float32)], [h.new_zeros(0, dtype=torch.float32)]
    for start in range(0, h.shape[0], chunk):
        args = (head, h[start: start + chunk], y[start: start + chunk], temperature, with_entropy, entropy_grad)
        if torch.is_grad_enabled():
            lp, en = checkpoint(_head_logprobs, *args, use_reentrant=False)
        else:
            lp, en = _head_logprobs(*args)
        logps.append(lp)
        ents.append(en)
    return torch.cat(logps), torch.cat(ents) if with_entropy else ents[0]


class PolicyForward(nn.Module):
    """A causal LM whose forward returns the response tokens' log-probs (and entropy).

    packed_backend: None for the padded forward, else a backend of strive.models.attention (resolved) for the
    padding-free one; micro-batches of at most `padded_up_to` padded tokens still run padded. compile_head: the
    fused head's elementwise work through torch.compile on CUDA (as `use_torch_compile` does for the layers)."""

    def __init__(self, hf_model: nn.Module, packed_backend: Optional[str] = None, padded_up_to: int = 0,
                 compile_head: bool = False):
        super().__init__()
        self.hf = hf_model
        self.packed_backend, self.padded_up_to = packed_backend, padded_up_to
        self.compile_head = compile_head
        if packed_backend is not None:
            use_packed_attention(hf_model)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, position_ids: torch.Tensor,
                response_mask: torch.Tensor, temperature: float = 1.0,
                with_entropy: bool = False, entropy_grad: bool = True,
                index: Optional[TokenIndex] = None) -> tuple[torch.Tensor, Optional[torch.Tensor]]:
        T = response_mask.shape[1]
        hidden = response_hidden(self.hf.base_model, input_ids, attention_mask, position_ids, T,
                                 _packing(self, input_ids), index)
        labels = input_ids[:, -T:]  # (B, T)
        return chunked_logprobs(self.hf.get_output_embeddings(), hidden, labels, response_mask, temperature,
                                with_entropy, entropy_grad, index=None if index is None else index.response,
                                compiled=self.compile_head)


class ValueForward(nn.Module):
    """A token-classification model with one output: V(s_t) for the state before each response token.
    packed_backend as in PolicyForward."""

    def __init__(self, hf_model: nn.Module, packed_backend: Optional[str] = None, padded_up_to: int = 0):
        super().__init__()
        self.hf = hf_model
        self.packed_backend, self.padded_up_to = packed_backend, padded_up_to
        if packed_backend is not None:
            use_packed_attention(hf_model)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, position_ids: torch.Tensor,
                response_mask: torch.Tensor, index: Optional[TokenIndex] = None) -> torch.Tensor:
        T = response_mask.shape[1]
        hidden = response_hidden(self.hf.base_model, input_ids, attention_mask, position_ids, T,
                                 _packing(self, input_ids), index)
        head = getattr(self.hf, "score", None) or self.hf.classifier
        values = head(hidden).squeeze(-1).float()  # (B, T)
        return values * response_mask


class ScoreForward(nn.Module):
    """A sequence-classification model with one output: the score read at each sequence's last real token (verl's
    reward model reads the same position). Right-padded input; no packing."""

    def __init__(self, hf_model: nn.Module):
        super().__init__()
        self.hf = hf_model

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        position_ids = (attention_mask.cumsum(-1) - 1).clamp(min=0)  # (B, L)
        hidden = self.hf.base_model(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                                    use_cache=False).last_hidden_state  # (B, L, H)
        last = attention_mask.sum(-1) - 1  # (B,) right padding: the last real token
        head = getattr(self.hf, "score", None) or self.hf.classifier
        picked = hidden[torch.arange(hidden.shape[0], device=hidden.device), last]  # (B, H)
        return head(picked).squeeze(-1).float()  # (B,)


def _packing(wrapper: nn.Module, input_ids: torch.Tensor) -> Optional[str]:
    """The packed backend for this micro-batch, or None to run it padded (too small to gain from packing)."""
    if wrapper.packed_backend is None or input_ids.numel() <= wrapper.padded_up_to:
        return None
    return wrapper.packed_backend


def enable_activation_checkpointing(hf_model: nn.Module, keep_attention: bool = False) -> None:
    """Recompute each decoder layer in backward: strive wraps each layer's `forward` in a non-reentrant
    torch.utils.checkpoint itself instead of calling transformers' switch, whose place moved between versions (5.17
    wraps `__call__`, so FSDP2's hooks ran again in the recompute and the checkpoint sat outside a compiled layer;
    5.25 wraps `forward`). Inside `forward`, FSDP2's hooks stay outside the checkpoint and a compiled layer traces
    the checkpoint into its graphs: its backward graph recomputes the forward and takes the gradient in one.

    keep_attention: a selective checkpoint that keeps the outputs of the ops torch tags `nondeterministic_seeded`
    (the attention kernels, whatever their dropout), so backward recomputes the layer but not its attention.
    Under compilation a plain checkpoint wraps each recomputed seeded op in RNG-state save/replay operators,
    which Inductor's C++ wrapper cannot lower and which cost host time (bench/checkpoint_rng_probe.py). Costs
    one micro-batch's attention outputs per layer (about 180 MB for the 0.5B shape at 4 × 1,017 tokens)."""
    for layer in decoder_layers(hf_model):
        _checkpoint_forward(layer, keep_attention)


def _keep_seeded(ctx, op, *args, **kwargs) -> CheckpointPolicy:
    seeded = torch.Tag.nondeterministic_seeded in getattr(op, "tags", ())
    return CheckpointPolicy.MUST_SAVE if seeded else CheckpointPolicy.PREFER_RECOMPUTE


def _checkpoint_forward(layer: nn.Module, keep_attention: bool) -> None:
    inner = layer.forward  # the class's forward, bound
    extra = {"context_fn": partial(create_selective_checkpoint_contexts, _keep_seeded)} if keep_attention else {}

    def forward(*args, **kwargs):
        if layer.training and torch.is_grad_enabled():
            return checkpoint(inner, *args, use_reentrant=False, **extra, **kwargs)
        return inner(*args, **kwargs)  # no backward to replay: forward-only passes and generation

    layer.forward = forward


def hf_state_name(name: str) -> str:
    """Parameter name inside the wrapper → name in the HF checkpoint."""
    return name[3:] if name.startswith("hf.") else name


def decoder_layers(hf_model: nn.Module) -> list[nn.Module]:
    """The repeated transformer blocks (the units FSDP shards one by one)."""
    base = hf_model.base_model
    layers = getattr(base, "layers", None) or getattr(base, "h", None)
    if layers is None:
        raise ValueError(f"cannot find the decoder layers of {type(hf_model).__name__}")
    return list(layers)
