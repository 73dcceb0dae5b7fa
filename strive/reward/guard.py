"""Calling a reward function on every sample so that one exception or one hung call is caught and attributed.

Why it exists: rewards are scored on the controller, sample by sample. Before, one exception in a user's scorer
ended the run with a bare traceback (no sample, no data source), and a scorer that never returned hung the run
forever. The reward manager now gets one `Outcome` per sample and decides, by `reward_manager.on_error`, whether
to stop (naming the sample) or score it 0 and count it.

What it chose:
- a plain function runs in the calling thread, as before (scorers that use `signal.alarm` themselves, such as
  math_verify's timeouts, keep working). In the main thread the timeout is a SIGALRM interval timer whose handler
  raises inside the hung call; a scorer that sets its own alarm replaces ours for the rest of that call (it then
  times itself). Off the main thread (e.g. inside a Ray actor) the calls run in a daemon helper thread and a call
  past its deadline is abandoned there; the remaining samples continue in a fresh helper thread;
- an `async def` scorer: the batch's calls run concurrently on one event loop, at most
  `reward_manager.max_concurrency` at a time (a semaphore; e.g. a remote judge or sandbox that must not get the
  whole batch at once); each coroutine is wrapped in `asyncio.wait_for`, so a hang that awaits is cancelled; one
  that blocks the event loop without awaiting cannot be interrupted;
- `timeout` <= 0 or None: no deadline.

Exercised by `pytest tests/unit/test_reward_guard.py`.
"""

from __future__ import annotations

import asyncio
import queue
import signal
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from strive.reward.custom import run_coroutine


class RewardTimeout(Exception):
    """A reward call ran past `reward_manager.timeout` seconds."""


@dataclass
class Outcome:
    value: Any = None
    error: BaseException | None = None
    """The call's exception, or a RewardTimeout."""


def call_all(fn: Callable[..., Any], calls: list[dict[str, Any]], timeout: float | None,
             max_concurrency: int | None = None) -> list[Outcome]:
    """`fn(**kwargs)` for each entry of `calls`, in order, each within `timeout` seconds (module doc). An async `fn`
    has at most `max_concurrency` calls in flight at once (None or <= 0: all of them)."""
    acall = getattr(fn, "acall", None)
    if acall is None and asyncio.iscoroutinefunction(fn):
        acall = fn
    if acall is not None:
        return run_coroutine(_gather(acall, calls, timeout, max_concurrency))
    if not timeout or timeout <= 0:
        return [_call(fn, kwargs) for kwargs in calls]
    if threading.current_thread() is threading.main_thread() and hasattr(signal, "setitimer"):
        return [_call_with_alarm(fn, kwargs, timeout) for kwargs in calls]
    return _call_in_threads(fn, calls, timeout)


def _call(fn: Callable[..., Any], kwargs: dict[str, Any]) -> Outcome:
    try:
        return Outcome(value=fn(**kwargs))
    except Exception as exc:  # noqa: BLE001 - any scorer failure is reported per sample by the manager
        return Outcome(error=exc)


def _timed_out(timeout: float) -> RewardTimeout:
    return RewardTimeout(f"no result after {timeout:g}s (reward_manager.timeout)")


class _Alarm(BaseException):
    """Raised by our SIGALRM handler; a BaseException so a scorer's `except Exception` does not swallow it."""


def _call_with_alarm(fn: Callable[..., Any], kwargs: dict[str, Any], timeout: float) -> Outcome:
    def on_alarm(signum, frame):  # noqa: ARG001
        raise _Alarm

    previous = signal.signal(signal.SIGALRM, on_alarm)
    try:
        try:
            signal.setitimer(signal.ITIMER_REAL, timeout)
            return _call(fn, kwargs)
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
    except _Alarm:
        return Outcome(error=_timed_out(timeout))
    finally:
        signal.signal(signal.SIGALRM, previous)


def _call_in_threads(fn: Callable[..., Any], calls: list[dict[str, Any]], timeout: float) -> list[Outcome]:
    """Calls in order in a daemon thread; a call past its deadline is abandoned and the rest go to a new thread."""
    results: queue.Queue = queue.Queue()
    outcomes: list[Outcome | None] = [None] * len(calls)

    def work(first: int, generation: int) -> None:
        for i in range(first, len(calls)):
            results.put((generation, i, _call(fn, calls[i])))

    generation, next_i = 0, 0
    threading.Thread(target=work, args=(0, 0), daemon=True, name="strive-reward").start()
    while next_i < len(calls):
        try:
            gen, i, outcome = results.get(timeout=timeout)
        except queue.Empty:
            outcomes[next_i] = Outcome(error=_timed_out(timeout))
            next_i, generation = next_i + 1, generation + 1
            if next_i < len(calls):
                threading.Thread(target=work, args=(next_i, generation), daemon=True, name="strive-reward").start()
            continue
        if gen == generation:
            outcomes[i], next_i = outcome, i + 1
    return [o if o is not None else Outcome(error=_timed_out(timeout)) for o in outcomes]


async def _gather(acall: Callable[..., Any], calls: list[dict[str, Any]], timeout: float | None,
                  max_concurrency: int | None = None) -> list[Outcome]:
    bound = asyncio.Semaphore(max_concurrency) if max_concurrency and max_concurrency > 0 else None

    async def one(kwargs: dict[str, Any]) -> Outcome:
        if bound is None:
            return await call(kwargs)
        async with bound:  # the timeout starts when the call does, not while it waits for a slot
            return await call(kwargs)

    async def call(kwargs: dict[str, Any]) -> Outcome:
        try:
            if timeout and timeout > 0:
                return Outcome(value=await asyncio.wait_for(acall(**kwargs), timeout))
            return Outcome(value=await acall(**kwargs))
        except asyncio.TimeoutError:
            return Outcome(error=_timed_out(timeout or 0))
        except Exception as exc:  # noqa: BLE001
            return Outcome(error=exc)

    return list(await asyncio.gather(*(one(kwargs) for kwargs in calls)))
