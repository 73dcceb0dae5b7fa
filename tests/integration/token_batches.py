"""One small token batch for the integration tests that drive FSDP2 workers: row 0 is left-padded (two pad
tokens before its prompt), row 1's response ends after 3 tokens (right padding, masked), the other rows are full;
with the fields the actor's and the critic's losses read."""

import torch

from strive.batch import Batch


def token_batch(vocab: int = 259, B: int = 4, P: int = 6, T: int = 5, seed: int = 0) -> Batch:
    g = torch.Generator().manual_seed(seed)
    prompts = torch.randint(0, vocab - 3, (B, P), generator=g)
    responses = torch.randint(0, vocab - 3, (B, T), generator=g)
    attn = torch.ones(B, P + T, dtype=torch.long)
    attn[0, :2] = 0
    resp_mask = torch.ones(B, T)
    resp_mask[1, 3:] = 0
    attn[1, P + 3:] = 0
    return Batch(prompts, responses, attn, (attn.cumsum(-1) - 1).clamp(min=0), resp_mask,
                 advantages=torch.randn(B, T, generator=g) * resp_mask,
                 old_log_probs=torch.randn(B, T, generator=g) - 5, values=torch.randn(B, T, generator=g),
                 returns=torch.randn(B, T, generator=g))
