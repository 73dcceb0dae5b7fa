"""Build a `StriveConfig` from a YAML file and verl-style `key=value` overrides.

verl uses Hydra; strive reads the same override syntax itself, so users keep their command lines:
`a.b.c=value`, `trainer.logger=['console','tensorboard']`, `null`, `True/False`, numbers, `+a.b=value` for a key
the schema does not know, `++a.b=value` (add or override), `~a.b` (drop a key the YAML file sets). An unknown key
without `+` fails and names the closest existing keys. YAML files are composed by Hydra when hydra-core is
installed (`strive.config.compose`), else read as plain YAML; either way every key lands in the typed tree.
`_target_` keys (verl's dataclass hints) are accepted and ignored anywhere.

Exercise it with `strive config --help` or `pytest tests/unit/test_config_loader.py`.
"""

from __future__ import annotations

import dataclasses
import difflib
import os
import re
import types
import typing
from functools import lru_cache
from typing import Any, Union

import yaml

from strive.config import compose
from strive.config.schema import StriveConfig


class ConfigError(ValueError):
    """A config problem the user can fix; the message names the keys involved."""


_INT = re.compile(r"[-+]?\d+")
_FLOAT = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?|[-+]?(inf|nan)", re.IGNORECASE)


def parse_value(text: str) -> Any:
    """Parse the right-hand side of an override the way Hydra users expect."""
    s = text.strip()
    low = s.lower()
    if s == "":
        return ""
    if low in ("null", "none", "~"):
        return None
    if low in ("true", "false"):
        return low == "true"
    if _INT.fullmatch(s):
        return int(s)
    if _FLOAT.fullmatch(s):
        return float(s)
    if len(s) >= 2 and s[0] == s[-1] and s[0] in "'\"":
        return s[1:-1]
    if s[0] in "[{":
        try:
            value = yaml.safe_load(s)
        except yaml.YAMLError as exc:
            raise ConfigError(f"cannot parse {text!r} as a list or mapping: {exc}") from None
        return _fix_yaml_scalars(value)
    return s


def _fix_yaml_scalars(value: Any) -> Any:
    # PyYAML reads 1e-6 (no dot) as a string; Hydra reads it as a float.
    if isinstance(value, list):
        return [_fix_yaml_scalars(v) for v in value]
    if isinstance(value, dict):
        return {k: _fix_yaml_scalars(v) for k, v in value.items()}
    if isinstance(value, str) and (_FLOAT.fullmatch(value) or _INT.fullmatch(value)):
        return parse_value(value)
    return value


@lru_cache(maxsize=None)
def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def all_key_paths(cls: type = StriveConfig, prefix: str = "") -> list[str]:
    """Every dotted key the schema knows (leaves and sections)."""
    paths = []
    for f in dataclasses.fields(cls):
        if f.name == "extras":
            continue
        path = prefix + f.name
        paths.append(path)
        tp = _hints(cls)[f.name]
        if dataclasses.is_dataclass(tp):
            paths.extend(all_key_paths(tp, path + "."))
    return paths


def _suggest(bad: str) -> str:
    paths = all_key_paths()
    leaf = bad.rsplit(".", 1)[-1]
    close = difflib.get_close_matches(bad, paths, n=3, cutoff=0.6)
    close += [p for p in paths if p.endswith("." + leaf) and p not in close][:3]
    if not close:
        close = difflib.get_close_matches(leaf, [p.rsplit(".", 1)[-1] for p in paths], n=3, cutoff=0.7)
        close = [p for p in paths if p.rsplit(".", 1)[-1] in close][:3]
    hint = f" Did you mean: {', '.join(close[:4])}?" if close else ""
    return f"unknown config key '{bad}'.{hint} (Prefix a new key with + to add it: +{bad}=...)"


def coerce(value: Any, tp: Any, path: str) -> Any:
    """Convert a parsed value to the field's declared type, or fail naming the key."""
    origin = typing.get_origin(tp)
    if tp is Any:
        return value
    if origin in (Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None:
            if type(None) in args:
                return None
            raise ConfigError(f"{path} cannot be null")
        non_none = [a for a in args if a is not type(None)]
        if isinstance(value, (list, tuple)):
            list_types = [a for a in non_none if typing.get_origin(a) is list]
            if list_types:
                return coerce(value, list_types[0], path)
        scalar = [a for a in non_none if typing.get_origin(a) is not list]
        return coerce(value, scalar[0] if scalar else non_none[0], path)
    if value is None:
        raise ConfigError(f"{path} cannot be null (expected {getattr(tp, '__name__', tp)})")
    if origin is list:
        (item_tp,) = typing.get_args(tp) or (Any,)
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{path} expects a list, e.g. {path}=[a,b]; got {value!r}")
        return [coerce(v, item_tp, f"{path}[{i}]") for i, v in enumerate(value)]
    if tp is dict or origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{path} expects a mapping, e.g. {path}={{key: value}}; got {value!r}")
        return dict(value)
    return _coerce_scalar(value, tp, path)


def _coerce_scalar(value: Any, tp: Any, path: str) -> Any:
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, int) and value in (0, 1):
            return bool(value)
        if isinstance(value, str) and value.lower() in ("true", "false"):
            return value.lower() == "true"
    elif tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, str) and _INT.fullmatch(value.strip()):
            return int(value)
    elif tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str) and _FLOAT.fullmatch(value.strip()):
            return float(value)
    elif tp is str:
        if isinstance(value, (str, int, float)) and not isinstance(value, bool):
            return str(value)
    else:
        return value
    raise ConfigError(f"{path} expects {tp.__name__}; got {value!r}")


def set_key(cfg: StriveConfig, key: str, value: Any, allow_new: bool) -> bool:
    """Set a dotted key on the tree. Returns False when the key was stored in cfg.extras."""
    parts = key.split(".")
    if parts[-1] == "_target_":
        return True
    node: Any = cfg
    for i, name in enumerate(parts):
        path = ".".join(parts[: i + 1])
        last = i == len(parts) - 1
        if dataclasses.is_dataclass(node):
            names = {f.name for f in dataclasses.fields(node)} - {"extras"}
            if name not in names:
                if allow_new:
                    cfg.extras[key] = value
                    return False
                raise ConfigError(_suggest(key))
            tp = _hints(type(node))[name]
            if last:
                if dataclasses.is_dataclass(tp):
                    _set_section(cfg, node, name, value, path, allow_new)
                else:
                    setattr(node, name, coerce(value, tp, path))
                return True
            child = getattr(node, name)
            if child is None and _is_dict_type(tp):
                child = {}
                setattr(node, name, child)
            if child is None or not (dataclasses.is_dataclass(child) or isinstance(child, dict)):
                raise ConfigError(f"{path} is a value, not a section; cannot set {key}")
            node = child
        else:  # a free-form dict field: any sub-key is allowed
            if last:
                node[name] = value
                return True
            node = node.setdefault(name, {})
            if not isinstance(node, dict):
                raise ConfigError(f"{path} is a value, not a mapping; cannot set {key}")
    return True


def _is_dict_type(tp: Any) -> bool:
    if tp is dict or typing.get_origin(tp) is dict:
        return True
    return any(_is_dict_type(a) for a in typing.get_args(tp) if typing.get_origin(tp) in (Union, types.UnionType))


def _set_section(cfg: StriveConfig, node: Any, name: str, value: Any, path: str, allow_new: bool) -> None:
    if not isinstance(value, dict):
        raise ConfigError(f"{path} is a section; set its keys (e.g. {path}.<key>=...) or give a mapping")
    for k, v in value.items():
        set_key(cfg, f"{path}.{k}", v, allow_new)


def flatten(mapping: dict, prefix: str = "") -> list[tuple[str, Any]]:
    """Nested YAML mapping → (dotted key, value) pairs, stopping at free-form dict fields."""
    items: list[tuple[str, Any]] = []
    for k, v in mapping.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict) and v and not _is_free_dict(key):
            items.extend(flatten(v, key + "."))
        else:
            items.append((key, v))
    return items


def _is_free_dict(key: str) -> bool:
    node: Any = StriveConfig
    for name in key.split("."):
        if not (isinstance(node, type) and dataclasses.is_dataclass(node)):
            return True
        hints = _hints(node)
        if name not in hints:
            return False
        node = hints[name]
    return _is_dict_type(node)


def config_file(config_path: str | None, config_name: str | None) -> str | None:
    """The file `--config-path DIR --config-name NAME` names (NAME with or without .yaml), or None."""
    if not config_name:
        return None
    name = config_name if config_name.endswith((".yaml", ".yml")) else config_name + ".yaml"
    path = os.path.join(os.path.expanduser(config_path or "."), name)
    if not os.path.isfile(path):
        raise ConfigError(f"config file not found: {path} (from --config-path {config_path} --config-name {config_name})")
    return path


def load_yaml_file(path: str | None) -> dict:
    """The file's settings as one nested mapping: composed by Hydra (defaults lists, package overrides,
    `_self_`; see strive.config.compose), or read as plain YAML when hydra-core is not installed."""
    if path is None:
        return {}
    if compose.hydra_available():
        try:
            data = compose.compose_file(path)
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
    else:
        data = _plain_yaml(path)
    return _fix_yaml_scalars(data)


def _plain_yaml(path: str) -> dict:
    with open(path) as fh:
        data = yaml.safe_load(fh) or {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path} must hold a mapping at the top level")
    for entry in data.pop("defaults", None) or []:
        if entry not in ("_self_", "ppo_trainer"):
            raise ConfigError(f"{path}: Hydra defaults entry {entry!r} needs hydra-core "
                              "(pip install 'hydra-core>=1.3'); without it only `ppo_trainer` and `_self_` are read")
    data.pop("hydra", None)
    return data


def build_config(overrides: list[str] | tuple[str, ...] = (), config_path: str | None = None,
                 config_name: str | None = None) -> tuple[StriveConfig, set[str]]:
    """Defaults ← YAML file (less its `~key` deletions) ← overrides, then the file's interpolations. Returns the
    tree and the set of keys the user set explicitly."""
    cfg = StriveConfig()
    explicit: set[str] = set()
    path = config_file(config_path, config_name)
    data = load_yaml_file(path)
    for item in overrides:
        if item.startswith("~"):
            _delete(data, parse_deletion(item), path)
    pending = []
    for key, value in flatten(data):
        if value == "???":  # OmegaConf's mandatory-value marker (verl: rollout.name): the file sets nothing
            continue
        if compose.has_interpolation(value):
            pending.append((key, value))
        elif _set_from_file(cfg, key, value, path):
            explicit.add(key)
    for item in overrides:
        if item.startswith("~"):
            continue
        key, value, allow_new = parse_override(item)
        if set_key(cfg, key, value, allow_new):
            explicit.add(key)
    pending = [(k, v) for k, v in pending if k not in explicit]
    if pending:
        _set_interpolated(cfg, pending, path, explicit)
    return cfg, explicit


def _set_from_file(cfg: StriveConfig, key: str, value: Any, path: str) -> bool:
    try:
        return set_key(cfg, key, value, allow_new=False)
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from None


def _set_interpolated(cfg: StriveConfig, pending: list[tuple[str, Any]], path: str, explicit: set[str]) -> None:
    if not compose.hydra_available():
        raise ConfigError(f"{path}: {pending[0][0]}={pending[0][1]!r} is an interpolation; resolving it needs "
                          "hydra-core (pip install 'hydra-core>=1.3')")
    from strive.config.report import to_dict

    try:
        resolved = compose.resolve_interpolations(to_dict(cfg), pending, path)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    for key, value in resolved:
        if _set_from_file(cfg, key, _fix_yaml_scalars(value), path):
            explicit.add(key)


def parse_deletion(item: str) -> str:
    """'~a.b' (or Hydra's '~a.b=value') → 'a.b'."""
    key = item[1:].split("=", 1)[0].strip()
    if not re.fullmatch(r"[A-Za-z_][\w\-]*(\.[\w\-]+)*", key):
        raise ConfigError(f"deletion {item!r}: {key!r} is not a dotted key")
    return key


def _delete(data: dict, key: str, path: str | None) -> None:
    """Hydra's `~key`: drop the key from the file's settings, so strive's default holds. A schema key the file
    does not set already holds its default; any other key is an error, as in Hydra."""
    node: Any = data
    *parents, leaf = key.split(".")
    for name in parents:
        node = node.get(name) if isinstance(node, dict) else None
    if isinstance(node, dict) and leaf in node:
        del node[leaf]
    elif key not in all_key_paths():
        where = f"in {path} or " if path else ""
        raise ConfigError(f"~{key}: no such key {where}in the schema, so there is nothing to delete")


def parse_override(item: str) -> tuple[str, Any, bool]:
    """'+a.b=1' → ('a.b', 1, True)."""
    if item.startswith("~"):
        raise ConfigError(f"{item}: a deletion, not an override (build_config applies those)")
    if "=" not in item:
        raise ConfigError(f"override {item!r} is not of the form key=value")
    key, raw = item.split("=", 1)
    allow_new = key.startswith("+")
    key = key.lstrip("+").strip()
    if not key or not re.fullmatch(r"[A-Za-z_][\w\-]*(\.[\w\-]+)*", key):
        raise ConfigError(f"override {item!r}: {key!r} is not a dotted key")
    if key.startswith("hydra."):
        raise ConfigError(f"{key}: Hydra's own settings do not apply to strive; drop this override")
    return key, parse_value(raw), allow_new
