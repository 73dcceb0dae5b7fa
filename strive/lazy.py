"""Package namespaces that import a submodule only when one of its names is first used (PEP 562).

`strive.algos` and `strive.tracking` re-export names from their submodules, but importing either package must load
no torch or numpy (strive.config validates names against them before anything heavy starts).

    __getattr__, __dir__ = lazy_exports(__name__, {"kl_penalty": "kl", ...})
"""

from __future__ import annotations

import importlib
import sys
from typing import Any, Callable


def lazy_exports(package: str, homes: dict[str, str]) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """The `__getattr__` and `__dir__` of `package`, whose public name N lives in submodule `homes[N]`."""

    def __getattr__(name: str) -> Any:
        if name not in homes:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(f"{package}.{homes[name]}"), name)
        setattr(sys.modules[package], name, value)  # later look-ups skip this function
        return value

    def __dir__() -> list[str]:
        return sorted(set(vars(sys.modules[package])) | set(homes))

    return __getattr__, __dir__
