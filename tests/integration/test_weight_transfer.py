"""The trainer → rollout broadcast group (strive/controller/transfer.py) between real processes on gloo: buckets of
mixed dtypes arrive intact, a trainer rank other than 0 only waits, and a receiver that never joins the broadcast
ends the sender's wait with an error naming the ranks."""

from __future__ import annotations

import multiprocessing as mp
import time

import pytest
import torch


def _weights() -> list[list[tuple[str, torch.Tensor]]]:
    g = torch.Generator().manual_seed(0)
    return [[("a.weight", torch.randn(3, 4, generator=g)), ("b.bias", torch.randn(5, generator=g).bfloat16())],
            [("c.weight", torch.arange(6, dtype=torch.int64).reshape(2, 3))]]


def _run(role: str, port: int, q, join_timeout: float, hang: bool = False, done=None) -> None:
    from strive.controller.transfer import TransferGroup, listen_socket

    try:
        listening = listen_socket("127.0.0.1", 4) if role == "sender" else None
        if listening is not None:
            q.put(("port", listening.getsockname()[1]))
        else:
            while port == 0:
                time.sleep(0.05)
        rank = {"sender": 0, "other": None, "receiver": 1}[role]
        group = TransferGroup(("127.0.0.1", port), rank, 2, torch.device("cpu"), 5.0, join_timeout,
                              listening=listening)
        if role == "receiver":
            if hang:
                time.sleep(30)
            got = [[(n, t.clone()) for n, t in b] for b in group.receive(version=1)]
            q.put(("receiver", [[(n, t.tolist(), str(t.dtype)) for n, t in b] for b in got]))
        else:
            q.put((role, group.send(iter(_weights()), version=1)))
        if done is not None:
            # the store lives in the sender, as it lives in trainer rank 0 for the whole run: a slow-starting peer
            # must still find it after the broadcast is over
            done.wait(180)
    except Exception as exc:
        q.put((role, f"error: {exc}"))


def _start(join_timeout: float, hang: bool = False):
    ctx = mp.get_context("spawn")
    q, done = ctx.Queue(), ctx.Event()
    sender = ctx.Process(target=_run, args=("sender", 0, q, join_timeout, False, done))
    sender.start()
    kind, port = q.get(timeout=60)
    assert kind == "port"
    others = [ctx.Process(target=_run, args=(role, port, q, join_timeout, hang)) for role in ("other", "receiver")]
    for p in others:
        p.start()
    return q, done, [sender, *others]


def test_buckets_arrive_intact():
    q, done, procs = _start(join_timeout=60)
    results = dict(q.get(timeout=120) for _ in range(3))
    done.set()
    for p in procs:
        p.join(timeout=30)
    expected = [[(n, t.tolist(), str(t.dtype)) for n, t in b] for b in _weights()]
    assert results["receiver"] == expected
    assert results["sender"]["bytes"] == sum(t.numel() * t.element_size() for b in _weights() for _, t in b)
    assert results["other"]["bytes"] == 0.0


@pytest.mark.parametrize("hang", [True])
def test_receiver_that_never_joins_is_an_error_naming_ranks(hang):
    start = time.monotonic()
    q, _, procs = _start(join_timeout=15, hang=hang)
    results = dict(q.get(timeout=60) for _ in range(2))  # sender and the waiting trainer rank
    for p in procs:
        p.kill()
    assert time.monotonic() - start < 60
    assert "missing: rollout rank 0 (transfer rank 1)" in results["sender"], results
    assert "rollout ranks 0..0 (transfer ranks 1..1)" in results["sender"]
