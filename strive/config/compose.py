"""Reading verl-style YAML configs (`--config-path D --config-name N`) with Hydra's compose API.

Why Hydra: verl's own files and its users' files (multi-turn, DAPO) use Hydra's defaults lists — `_self_`,
package overrides such as `actor@actor_rollout_ref.actor: dp_actor`, config groups from `hydra.searchpath` —
and OmegaConf interpolations. hydra-core composes those exactly as verl does; strive then flattens the result to
`key=value` pairs that go through the same typed tree, coercion and errors as command-line overrides.

What it chose:
- A defaults entry `ppo_trainer` (verl's base file) resolves to strive's empty stand-in (`hydra_base/`, searched
  before the user's `hydra.searchpath`): strive's typed defaults are verl's, so only the keys the user's files
  set count as set. A user's own `ppo_trainer.yaml` in the config dir still wins.
- Interpolations are resolved after the command-line overrides, against the whole tree (strive's defaults, the
  YAML, the overrides), as verl resolves them at access time: `gen_batch_size: ${data.train_batch_size}` in a
  file follows `data.train_batch_size=512` on the command line.
- hydra-core is imported here only; `strive.config.loader` falls back to plain YAML when it is missing and
  refuses, naming the file, what needs Hydra.

Exercised by `pytest tests/unit/test_config_compose.py`.
"""

from __future__ import annotations

import os
import warnings
from typing import Any

import yaml

BASE_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "hydra_base")


def hydra_available() -> bool:
    try:
        import hydra  # noqa: F401
        import omegaconf  # noqa: F401
    except ImportError:
        return False
    return True


def compose_file(path: str) -> dict[str, Any]:
    """The composed mapping of the YAML file at `path`, interpolations left unresolved; ValueError names the
    file when Hydra cannot compose it."""
    from hydra import compose, initialize_config_dir
    from hydra.errors import HydraException
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    config_dir, name = os.path.split(os.path.abspath(path))
    name = os.path.splitext(name)[0]
    search = ["file://" + BASE_DIR] + _user_searchpath(path)
    override = "hydra.searchpath=[" + ",".join(f"'{p}'" for p in search) + "]"
    try:
        with initialize_config_dir(config_dir=config_dir, version_base=None, job_name="strive"), \
                warnings.catch_warnings():
            # a searchpath entry such as file://verl/trainer/config is absent outside a verl checkout; strive's
            # stand-in answers for ppo_trainer, and a file that is truly missing still fails below
            warnings.filterwarnings("ignore", message=".*is not available", category=UserWarning)
            composed = compose(config_name=name, overrides=[override])
    except (HydraException, OmegaConfBaseException) as exc:
        raise ValueError(f"{path}: Hydra could not compose it: {exc}") from None
    data = OmegaConf.to_container(composed, resolve=False)
    data.pop("hydra", None)
    return data


def _user_searchpath(path: str) -> list[str]:
    """The file's own `hydra.searchpath` (read before composing, so strive's stand-in can go in front of it)."""
    with open(path) as fh:
        raw = yaml.safe_load(fh) or {}
    entries = ((raw.get("hydra") or {}).get("searchpath") or []) if isinstance(raw, dict) else []
    return [str(e) for e in entries]


def has_interpolation(value: Any) -> bool:
    if isinstance(value, str):
        return "${" in value
    if isinstance(value, dict):
        return any(has_interpolation(v) for v in value.values())
    if isinstance(value, list):
        return any(has_interpolation(v) for v in value)
    return False


def resolve_interpolations(tree: dict[str, Any], pending: list[tuple[str, Any]], source: str
                           ) -> list[tuple[str, Any]]:
    """Each (dotted key, value with `${...}`) resolved in `tree` (the nested config with everything else set)
    with the value placed at its key, so relative (`${..x}`) and absolute interpolations both work."""
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    conf = OmegaConf.create(tree)
    for key, value in pending:
        OmegaConf.update(conf, key, value, merge=False, force_add=True)
    resolved = []
    for key, _ in pending:
        try:
            value = OmegaConf.select(conf, key, throw_on_resolution_failure=True)
            if OmegaConf.is_config(value):
                value = OmegaConf.to_container(value, resolve=True)
        except OmegaConfBaseException as exc:
            raise ValueError(f"{source}: {key}: cannot resolve its interpolation: {exc}") from None
        resolved.append((key, value))
    return resolved
