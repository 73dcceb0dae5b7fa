"""DAPO's soft overlong punishment: responses that run into the last `buffer_len` tokens before the length limit
lose reward linearly, down to −penalty_factor at the limit (DAPO paper §3.4; verl's `dapo` reward manager).

Why its own module: the formula is the whole feature, so it is a pure function with a float64 test
(`pytest tests/unit/test_reward_overlong.py`); `strive.reward.manager` adds its result to each score and reports it
as the reward extra entries `overlong_reward` and `overlong`.

    expected = max_resp_len − buffer_len
    penalty  = min(−(L − expected) / buffer_len · penalty_factor, 0)        L = the response's valid length

Reading `reward_model.reward_kwargs` (verl passes them to the manager's constructor) lives here too, so a wrong
kwarg fails naming its key, when the config is checked, instead of surfacing as a TypeError mid-run.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Optional

if TYPE_CHECKING:  # the config checks import this module, and strive.config imports no torch
    import torch


@dataclass(frozen=True)
class OverlongBuffer:
    """verl's `overlong_buffer_cfg` plus the manager's `max_resp_len`."""

    max_resp_len: int
    """The response length the penalty is measured against (normally data.max_response_length)."""
    len: int
    """Width of the buffer before max_resp_len in which the penalty grows from 0 to −penalty_factor."""
    penalty_factor: float
    """The penalty at exactly max_resp_len tokens."""
    log: bool = False
    """Also report each response's penalty (`overlong_reward`) and whether it was penalised (`overlong`)."""


def overlong_penalty(lengths: "torch.Tensor", buf: OverlongBuffer) -> "torch.Tensor":
    """(B,) float32 penalty ≤ 0 for valid response lengths (B,)."""
    expected = buf.max_resp_len - buf.len
    exceed = lengths.double() - expected  # (B,)
    return (-exceed / buf.len * buf.penalty_factor).clamp(max=0.0).float()  # (B,)


_KNOWN = {"overlong_buffer_cfg", "max_resp_len"}
_BUFFER_KEYS = {"enable", "len", "penalty_factor", "log"}


def overlong_from_kwargs(reward_kwargs: dict[str, Any], where: str = "reward_model.reward_kwargs"
                         ) -> Optional[OverlongBuffer]:
    """The `dapo` manager's settings from its reward kwargs, or None when the buffer is absent or disabled."""
    unknown = sorted(set(reward_kwargs) - _KNOWN)
    if unknown:
        raise ValueError(f"{where}.{unknown[0]}: the dapo reward manager takes only "
                         f"{', '.join(sorted(_KNOWN))}")
    cfg = reward_kwargs.get("overlong_buffer_cfg")
    if cfg is None:
        return None
    if not isinstance(cfg, dict):
        raise ValueError(f"{where}.overlong_buffer_cfg must be a mapping (enable, len, penalty_factor, log)")
    bad = sorted(set(cfg) - _BUFFER_KEYS)
    if bad:
        raise ValueError(f"{where}.overlong_buffer_cfg.{bad[0]} is not one of {', '.join(sorted(_BUFFER_KEYS))}")
    max_resp_len = reward_kwargs.get("max_resp_len")
    if max_resp_len is None:  # verl asserts this as soon as overlong_buffer_cfg is given
        raise ValueError(f"{where}.max_resp_len must be set when {where}.overlong_buffer_cfg is "
                         f"(e.g. +{where}.max_resp_len=<data.max_response_length>)")
    if not cfg.get("enable", False):
        return None
    buffer_len = cfg.get("len")
    if not isinstance(buffer_len, int) or isinstance(buffer_len, bool) or buffer_len <= 0:
        raise ValueError(f"{where}.overlong_buffer_cfg.len must be a positive integer; got {buffer_len!r}")
    if buffer_len > max_resp_len:
        warnings.warn(f"{where}.overlong_buffer_cfg.len={buffer_len} exceeds max_resp_len={max_resp_len}: "
                      "every response length is penalised", stacklevel=2)
    factor = cfg.get("penalty_factor")
    if not isinstance(factor, (int, float)) or isinstance(factor, bool):  # verl fails on a missing one too
        raise ValueError(f"{where}.overlong_buffer_cfg.penalty_factor must be a number; got {factor!r}")
    return OverlongBuffer(max_resp_len=int(max_resp_len), len=buffer_len, penalty_factor=float(factor),
                          log=bool(cfg.get("log", False)))
