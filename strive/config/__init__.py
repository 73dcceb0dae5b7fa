"""strive's configuration: verl's key tree as typed dataclasses, read from YAML and `key=value` overrides.

    from strive.config import prepare
    run = prepare(["data.train_batch_size=8", "actor_rollout_ref.rollout.n=4"])
    run.config.actor_rollout_ref.rollout.n    # 4
    run.sizes.actor.grad_accum_steps          # derived, checked
    print(run.report())                       # YAML + derived sizes + notes

This package imports no torch and no ray.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from strive.config.loader import ConfigError, build_config, parse_override, parse_value
from strive.config.placement import check_placement
from strive.config.report import explain, notes_text, sizes_table, to_dict, to_yaml
from strive.config.resolve import needs_critic, needs_reference, resolve, uses_lora
from strive.config.schema import StriveConfig
from strive.config.sizes import Sizes, compute_sizes
from strive.config.support import apply_support, support_table


@dataclass
class Prepared:
    """A resolved, checked config with its derived sizes and the notes on what strive inferred."""

    config: StriveConfig
    sizes: Sizes
    notes: list[str] = field(default_factory=list)

    def report(self, with_yaml: bool = True) -> str:
        parts = [to_yaml(self.config)] if with_yaml else []
        parts.append(sizes_table(self.sizes, self.config))
        if self.notes:
            parts.append(notes_text(self.notes))
        return "\n".join(parts)


def prepare(overrides: list[str] | tuple[str, ...] = (), config_path: str | None = None,
            config_name: str | None = None) -> Prepared:
    """Defaults ← YAML ← overrides, then resolve, then check sizes. Raises ConfigError naming the keys."""
    cfg, explicit = build_config(overrides, config_path, config_name)
    notes = resolve(cfg, explicit)
    notes += apply_support(cfg, explicit)
    notes += check_placement(cfg)
    sizes = compute_sizes(cfg)
    return Prepared(cfg, sizes, notes + sizes.notes)


def load_config(overrides: list[str] | tuple[str, ...] = (), config_path: str | None = None,
                config_name: str | None = None) -> StriveConfig:
    return prepare(overrides, config_path, config_name).config


__all__ = [
    "ConfigError", "Prepared", "Sizes", "StriveConfig", "build_config", "compute_sizes", "explain", "load_config",
    "needs_critic", "needs_reference", "parse_override", "parse_value", "prepare", "resolve", "support_table", "to_dict", "to_yaml",
    "uses_lora",
]
