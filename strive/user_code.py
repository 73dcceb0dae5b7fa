"""Two small mechanisms that several parts of strive share: importing a user's .py file as a module, and setting
environment variables for the duration of a call.

A user's file (custom reward function, custom dataset class, tool class) is imported once per process under a name
derived from its path, so two files with the same stem do not collide and a second import is free.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from types import ModuleType


def import_file(path: str, prefix: str) -> ModuleType:
    """The module of the .py file at `path` (absolute), named `<prefix>_<stem>_<hash of the path>`. It is in
    sys.modules before its code runs (dataclasses and pickling in the file need that) and removed again if the code
    raises. ImportError names `path` when it cannot be loaded as a module."""
    stem = os.path.splitext(os.path.basename(path))[0]
    name = f"{prefix}_{stem}_{hashlib.sha1(path.encode()).hexdigest()[:10]}"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise ImportError(f"{path} cannot be imported as a Python module")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except Exception:
        del sys.modules[name]
        raise
    return module


@contextmanager
def environ(values: dict[str, str]) -> Iterator[None]:
    """os.environ with `values` set inside the block, each variable restored (or removed) after it."""
    saved = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, old in saved.items():
            if old is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = old
