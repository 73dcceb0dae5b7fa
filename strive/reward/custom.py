"""Load a user's reward function from a .py file (`custom_reward_function.path` / `.name`).

Why it exists: the extension point for rewards is a plain function named by path (STYLE §6),
exactly as verl's `custom_reward_function` works, so existing reward files keep working.

Contract (pinned by tests/unit/test_reward_custom.py): the function is called with keyword
arguments `data_source, solution_str, ground_truth, extra_info`, plus
`custom_reward_function.reward_kwargs`, which win over same-named call arguments. It returns
a float/bool, or a dict with a `score` key. It may be `async def`; the wrapper then stays a
plain callable that runs the coroutine, and exposes `.acall` so the reward manager can
gather a whole batch of coroutines concurrently.

What it chose: the module is registered in `sys.modules` under a name derived from the file
path, so dataclasses and pickling inside the user file work. Workers in other processes
should load the function from the same path rather than receive it pickled.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
import inspect
import os
from collections.abc import Callable, Coroutine
from types import ModuleType
from typing import Any

from strive.user_code import import_file


def run_coroutine(coro: Coroutine) -> Any:
    """Run a coroutine to completion from sync code, even if this thread already has a
    running event loop (e.g. inside an async Ray actor): then a helper thread runs it."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(asyncio.run, coro).result()


def _callables_in(module: ModuleType) -> list[str]:
    return sorted(
        name for name, value in vars(module).items()
        if callable(value) and not name.startswith("_") and getattr(value, "__module__", None) == module.__name__
    )


def load_reward_function(
    path: str, name: str = "compute_score", reward_kwargs: dict[str, Any] | None = None
) -> Callable[..., Any]:
    """The function `name` from the file `path`, wrapped so `reward_kwargs` join every call.

    Raises FileNotFoundError naming the path, AttributeError naming the function and the
    file (and listing the callables the file does define), TypeError if it is not callable.
    """
    full_path = os.path.abspath(os.path.expanduser(str(path)))
    if not os.path.isfile(full_path):
        raise FileNotFoundError(f"custom_reward_function.path: reward function file not found: {full_path}")
    module = import_file(full_path, "strive_custom_reward")
    if not hasattr(module, name):
        found = ", ".join(_callables_in(module)) or "none"
        raise AttributeError(
            f"custom_reward_function.name={name!r} is not defined in {full_path} (callables found: {found})"
        )
    fn = getattr(module, name)
    if not callable(fn):
        raise TypeError(f"custom_reward_function.name={name!r} in {full_path} is a {type(fn).__name__}, not a function")
    return wrap_reward_function(fn, reward_kwargs)


def wrap_reward_function(fn: Callable[..., Any], reward_kwargs: dict[str, Any] | None = None) -> Callable[..., Any]:
    """Merge `reward_kwargs` into each call (they take precedence); make async functions sync
    callables with an `.acall` coroutine function attached."""
    fixed = dict(reward_kwargs or {})

    if inspect.iscoroutinefunction(fn):

        async def acall(*args: Any, **kwargs: Any) -> Any:
            return await fn(*args, **{**kwargs, **fixed})

        @functools.wraps(fn)
        def call_async(*args: Any, **kwargs: Any) -> Any:
            return run_coroutine(acall(*args, **kwargs))

        call_async.acall = acall  # type: ignore[attr-defined]
        return call_async

    @functools.wraps(fn)
    def call(*args: Any, **kwargs: Any) -> Any:
        return fn(*args, **{**kwargs, **fixed})

    return call
