"""`data.custom_cls.path` / `.name`: a user's dataset class in place of RLDataset.

verl calls its user dataset class with the data files, tokenizer and data config and requires a torch Dataset;
its users subclass verl's RLHFDataset in practice. strive's contract is the same shape with strive's class: the
class must subclass `strive.data.rl_dataset.RLDataset`, it is constructed with exactly RLDataset's arguments, and
its items must be `PromptRow`s (the rollout and the reward read them). Override `_messages` to build prompts from
other columns, or `__getitem__` for full control. The path is a .py file or an importable module name.

Exercised by `pytest tests/unit/test_data_custom.py`.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
from types import ModuleType
from typing import Optional

from strive.data.rl_dataset import RLDataset
from strive.user_code import import_file


def _import(path: str) -> ModuleType:
    if not path.endswith(".py"):
        return importlib.import_module(path)
    path = os.path.abspath(os.path.expanduser(path))
    if not os.path.isfile(path):
        raise FileNotFoundError(f"data.custom_cls.path={path}: no such file")
    return import_file(path, "strive_custom_dataset")


def dataset_class(path: Optional[str], name: Optional[str]) -> type[RLDataset]:
    """RLDataset when path is unset, else the named RLDataset subclass from the file or module."""
    if not path:
        return RLDataset
    if not name:
        raise ValueError(f"data.custom_cls.path={path} is set but data.custom_cls.name is not: name the class")
    cls = getattr(_import(path), name, None)
    if cls is None:
        raise AttributeError(f"data.custom_cls: {path} has no {name!r}")
    if not (isinstance(cls, type) and issubclass(cls, RLDataset)):
        raise TypeError(f"data.custom_cls: {path}:{name} must be a subclass of strive.data.rl_dataset.RLDataset "
                        "(it is built with RLDataset's arguments and must return PromptRow items)")
    return cls
