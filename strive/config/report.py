"""Printing a resolved config: YAML, the derived-size table, and per-key documentation.

The docs are the attribute docstrings written under each dataclass field; they are read from the source with
`ast`, so there is one place to write them.
"""

from __future__ import annotations

import ast
import dataclasses
import inspect
import typing
from functools import lru_cache
from typing import Any

import yaml

from strive.config.reward_model import describe as describe_rewards
from strive.config.reward_model import model_scored
from strive.config.schema import StriveConfig
from strive.config.sizes import Sizes, TrainSizes


def to_dict(cfg: StriveConfig) -> dict[str, Any]:
    data = dataclasses.asdict(cfg)
    extras = data.pop("extras")
    data.pop("ray_init")  # merged into ray_kwargs.ray_init by resolve()
    for key, value in extras.items():
        node = data
        *parents, leaf = key.split(".")
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = value
    return data


def to_yaml(cfg: StriveConfig) -> str:
    return yaml.safe_dump(to_dict(cfg), sort_keys=False, default_flow_style=None, width=120)


def _train_row(name: str, t: TrainSizes) -> list[str]:
    if t.micro_batch_per_rank is None:
        micro, accum = f"≤{t.max_token_len} tokens", "by tokens"
    else:
        micro, accum = str(t.micro_batch_per_rank), str(t.grad_accum_steps)
    return [name, str(t.mini_batches_per_step), str(t.mini_batch_per_rank), micro, accum,
            str(t.optimizer_steps_per_step)]


def sizes_table(sizes: Sizes, cfg: StriveConfig) -> str:
    """A plain-text table of the derived sizes, then the notes."""
    tr = cfg.trainer
    lines = [
        f"derived sizes: {sizes.world_size} worker(s) = trainer.n_gpus_per_node {tr.n_gpus_per_node} × "
        f"trainer.nnodes {tr.nnodes}; data-parallel size {sizes.dp_size}",
        f"  samples per step: {sizes.samples_per_step} = data.train_batch_size {cfg.data.train_batch_size} × "
        f"rollout.n {cfg.actor_rollout_ref.rollout.n} ({sizes.samples_per_rank} per rank)",
    ]
    fg = cfg.algorithm.filter_groups
    if fg.enable:
        limit = f"at most {fg.max_num_gen_batches} rounds" if fg.max_num_gen_batches else "no limit on rounds"
        lines.append(f"  dynamic sampling: rounds of data.gen_batch_size {cfg.data.gen_batch_size} prompts × "
                     f"rollout.n until {cfg.data.train_batch_size} prompts have differing {fg.metric} ({limit})")
    header = ["role", "mini-batches/step", "seqs/mini-batch/rank", "micro-batch/rank", "grad-accum steps",
              "optimizer steps/step"]
    rows = [_train_row("actor", sizes.actor)]
    if sizes.critic:
        rows.append(_train_row("critic", sizes.critic))
    widths = [max(len(r[i]) for r in [header] + rows) for i in range(len(header))]
    for r in [header] + rows:
        lines.append("  " + "  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(r, widths))))
    lines.extend(correction_lines(cfg))
    if sizes.bypass_old_log_probs:
        lines.append("  old log-probs: the actor's own update forward (one optimizer step per batch, no KL in the "
                     "reward), no separate pass")
    no_old_pass = sizes.bypass_old_log_probs or cfg.algorithm.rollout_correction.bypass_mode
    for name, fwd in (("old log-prob", sizes.old_log_prob), ("ref log-prob", sizes.ref), ("values", sizes.values),
                      ("reward model", sizes.reward_model)):
        if fwd is not None and not (name == "old log-prob" and no_old_pass):
            what = f"{fwd.micro_batch_per_rank} sequences" if fwd.max_token_len is None else f"≤{fwd.max_token_len} tokens"
            lines.append(f"  {name} micro-batch per rank: {what}")
    if model_scored(cfg):
        lines.append("  " + describe_rewards(cfg))
    return "\n".join(lines)


def correction_lines(cfg: StriveConfig) -> list[str]:
    """What algorithm.rollout_correction will do, in a line or two (none when it is off)."""
    rc = cfg.algorithm.rollout_correction
    if not (rc.bypass_mode or rc.rollout_is or rc.rollout_rs):
        return []
    parts = []
    if rc.rollout_is:
        parts.append(f"{rc.rollout_is}-level IS weights truncated at {rc.rollout_is_threshold}"
                     + (", batch-normalised" if rc.rollout_is_batch_normalize else ""))
    if rc.rollout_rs:
        parts.append(f"rejection {rc.rollout_rs} at {rc.rollout_rs_threshold}")
    what = "; ".join(parts) or "no IS weights, no rejection"
    if rc.bypass_mode:
        return [f"  rollout correction: bypass mode, no old log-prob pass (π_old = the engine's log-probs), "
                f"{rc.loss_type} loss; {what}, against the current policy in each micro-batch"]
    return [f"  rollout correction: {what}, between the old log-probs and the engine's, before the advantages"]


def notes_text(notes: list[str]) -> str:
    return "\n".join(f"note: {n}" for n in notes)


@lru_cache(maxsize=None)
def _field_docs(cls: type) -> dict[str, str]:
    """Attribute docstrings of a dataclass: the string literal right after each annotated field."""
    tree = ast.parse(inspect.getsource(cls))
    body = tree.body[0].body  # type: ignore[attr-defined]
    docs = {}
    for prev, node in zip(body, body[1:]):
        if (isinstance(prev, ast.AnnAssign) and isinstance(prev.target, ast.Name) and isinstance(node, ast.Expr)
                and isinstance(node.value, ast.Constant) and isinstance(node.value.value, str)):
            docs[prev.target.id] = " ".join(node.value.value.split())
    return docs


def explain(key: str) -> str:
    """Type, default and docstring of one dotted key."""
    node: Any = StriveConfig
    default: Any = StriveConfig()
    doc, tp = "", None
    for name in key.split("."):
        if not dataclasses.is_dataclass(node):
            raise KeyError(key)
        hints = typing.get_type_hints(node)
        if name not in hints:
            raise KeyError(key)
        doc = _field_docs(node).get(name, "")
        tp = hints[name]
        default = getattr(default, name)
        node = tp
    shown = yaml.safe_dump(dataclasses.asdict(default) if dataclasses.is_dataclass(default) else default,
                           default_flow_style=True).strip().removesuffix("...").strip()
    type_name = tp.__name__ if isinstance(tp, type) else str(tp).replace("typing.", "")
    from strive.config.support import rule_for  # here: support imports the loader, which report need not

    rule = rule_for(key)
    support = f"\n  strive: {rule.effect} when set ({rule.why})" if rule else ""
    return f"{key} ({type_name}, default {shown})\n  {doc}{support}"


def undocumented_fields(cls: type = StriveConfig, prefix: str = "") -> list[str]:
    """Dotted keys that lack a docstring (a test keeps this empty)."""
    missing = []
    docs = _field_docs(cls)
    for f in dataclasses.fields(cls):
        if f.name not in docs:
            missing.append(prefix + f.name)
        tp = typing.get_type_hints(cls)[f.name]
        if dataclasses.is_dataclass(tp):
            missing.extend(undocumented_fields(tp, f"{prefix}{f.name}."))
    return missing
