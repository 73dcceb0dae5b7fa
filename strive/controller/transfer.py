"""Weights from the trainer to rollout engines in other processes: one broadcast group made only for this.

With split placement (actor_rollout_ref.hybrid_engine=False) the engines live in processes of their own, so the
colocated sync (actor and engine in one process, tensors handed over in memory) cannot reach them. This group has
trainer rank 0 as its rank 0 and rollout rank r as its rank r + 1; it is a `TCPStore` plus a `ProcessGroupGloo`
(cpu) or `ProcessGroupNCCL` (cuda) built directly, not the default group, which each pool keeps for its own
FSDP or engine collectives. Every trainer rank still walks `ActorWorker.full_weight_buckets` (the FSDP gather is
a collective of the trainer pool); only rank 0 broadcasts.

One transfer, for policy version v:

    the sender sets `want/v` (an engine generating with async_training.partial_rollout stops at its next piece),
    receivers set `ready/v/<rank>` in the store when they reach it (an engine may still be generating),
    the sender waits for all of them (no limit beyond trainer.phase_timeout_s: waiting on a generation is normal),
    then, per bucket: header length (int64), header (pickled [(name, shape, dtype)]), the bucket's bytes (uint8),
    and a zero length to end; each broadcast bounded by trainer.weight_transfer_timeout_s.

A failed or timed-out broadcast raises `WeightTransferError` naming both ends' ranks; the controller
(strive/trainer/async_rollout.py) turns a dead peer into the same error. Exercised by
tests/e2e/test_async_cpu.py (including a rollout process killed at a transfer).
"""

from __future__ import annotations

import datetime
import pickle
import socket
import time
from typing import Iterable, Iterator, Optional

import torch

from strive.controller.group import WorkerDied

Bucket = list[tuple[str, torch.Tensor]]


class WeightTransferError(WorkerDied):
    """A trainer → rollout weight broadcast that failed, timed out, or lost a peer (a WorkerDied: with
    trainer.max_restarts the run restarts from its newest checkpoint, as after any dead worker)."""


def listen_socket(host: str, backlog: int) -> socket.socket:
    """A socket bound to a free port on `host`, listening, to hand to a TCPStore as its server socket."""
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
    sock.bind((host, 0))
    sock.listen(max(128, backlog))
    return sock


def describe_ranks(size: int) -> str:
    return f"trainer rank 0 (transfer rank 0) → rollout ranks 0..{size - 2} (transfer ranks 1..{size - 1})"


class TransferGroup:
    """One process's end of the weight broadcast: `send` on trainer rank 0, `receive` on every rollout rank."""

    def __init__(self, master: tuple[str, int], rank: Optional[int], size: int, device: torch.device,
                 timeout_s: float, join_timeout_s: float, listening: Optional[socket.socket] = None):
        """`rank` None: a trainer rank other than 0, which only waits on the store with rank 0 (so that its part of
        the FSDP gather does not start while the engines are still generating) and broadcasts nothing."""
        import torch.distributed as dist

        host, port = master
        self.rank, self.size, self.device = rank, size, device
        self.timeout = datetime.timedelta(seconds=timeout_s)
        self.join_timeout = datetime.timedelta(seconds=join_timeout_s)
        kwargs = {"master_listen_fd": listening.detach()} if listening is not None else {}
        self.store = dist.TCPStore(host, port, None, listening is not None, self.join_timeout,
                                   wait_for_workers=False, **kwargs)
        self.pg = None
        if rank is None:
            return
        if device.type == "cuda":
            self.pg = dist.ProcessGroupNCCL(self.store, rank, size)
        else:
            # the rendezvous may wait on a busy peer; each broadcast then passes its own, shorter timeout
            self.pg = dist.ProcessGroupGloo(self.store, rank, size, self.join_timeout)

    # -- sender (transfer rank 0) -----------------------------------------------------------------------------
    def send(self, buckets: Iterable[Bucket], version: int) -> dict[str, float]:
        """Broadcast every bucket to the rollout ranks once they are ready for `version`; seconds and bytes."""
        self.store.set(f"want/{version}", "1")  # partial rollout: the engines stop generating at their next piece
        keys = [f"ready/{version}/{r}" for r in range(1, self.size)]
        try:
            self.store.wait(keys, self.join_timeout)
        except Exception:
            missing = ", ".join(f"rollout rank {r - 1} (transfer rank {r})" for r, key in enumerate(keys, 1)
                                if not self.store.check([key]))
            raise WeightTransferError(f"weight transfer of version {version}: not every rollout rank joined within "
                                      f"{self.join_timeout.total_seconds():g} s (trainer.phase_timeout_s); missing: "
                                      f"{missing} ({describe_ranks(self.size)})") from None
        start, nbytes = time.perf_counter(), 0
        if self.pg is None:  # trainer rank > 0: its share of each gather, nothing to send
            for _ in buckets:
                pass
            return {"seconds": time.perf_counter() - start, "bytes": 0.0}
        for bucket in buckets:
            meta = [(name, tuple(t.shape), t.dtype) for name, t in bucket]
            flat = torch.cat([t.detach().contiguous().reshape(-1).view(torch.uint8) for _, t in bucket])
            self._header(meta)
            self._bcast(flat.to(self.device), f"version {version}: {len(bucket)} tensors, {flat.numel()} bytes")
            nbytes += flat.numel()
        self._header(None)
        return {"seconds": time.perf_counter() - start, "bytes": float(nbytes)}

    # -- receivers (transfer ranks 1..size-1) -----------------------------------------------------------------
    def requested(self, version: int) -> bool:
        """Whether the trainer has started pushing `version` (and waits for this rank to take it)."""
        return self.store.check([f"want/{version}"])

    def receive(self, version: int) -> Iterator[Bucket]:
        """The buckets of `version`'s broadcast, as (name, tensor) lists, in the sender's order."""
        self.store.set(f"ready/{version}/{self.rank}", "1")
        while True:
            meta = self._header(None)
            if meta is None:
                return
            total = sum(_numel(shape) * _itemsize(dtype) for _, shape, dtype in meta)
            flat = torch.empty(total, dtype=torch.uint8, device=self.device)
            self._bcast(flat, f"version {version}: {len(meta)} tensors, {total} bytes")
            bucket, offset = [], 0
            for name, shape, dtype in meta:
                n = _numel(shape) * _itemsize(dtype)
                bucket.append((name, flat[offset: offset + n].view(dtype).reshape(shape)))
                offset += n
            yield bucket

    # -- wire -------------------------------------------------------------------------------------------------
    def _header(self, meta: Optional[list]) -> Optional[list]:
        """Rank 0 sends `meta` (None: the end); every rank returns what rank 0 sent."""
        payload = pickle.dumps(meta) if self.rank == 0 and meta is not None else b""
        length = torch.tensor([len(payload)], dtype=torch.int64, device=self.device)
        self._bcast(length, "header length")
        if int(length.item()) == 0:
            return None
        buf = (torch.frombuffer(bytearray(payload), dtype=torch.uint8).to(self.device) if self.rank == 0
               else torch.empty(int(length.item()), dtype=torch.uint8, device=self.device))
        self._bcast(buf, "header")
        return pickle.loads(buf.cpu().numpy().tobytes()) if self.rank else meta

    def _bcast(self, tensor: torch.Tensor, what: str) -> None:
        import torch.distributed as dist

        opts = dist.BroadcastOptions()
        opts.rootRank, opts.rootTensor, opts.timeout = 0, 0, self.timeout
        start = time.monotonic()
        try:
            self.pg.broadcast([tensor], opts).wait(self.timeout)
        except Exception as exc:  # gloo/nccl raise RuntimeError (or DistBackendError) on a lost peer or a timeout
            raise WeightTransferError(
                f"weight transfer failed on transfer rank {self.rank} after {time.monotonic() - start:.1f} s "
                f"({what}; {describe_ranks(self.size)}; trainer.weight_transfer_timeout_s="
                f"{self.timeout.total_seconds():g}): {exc}") from None



def _numel(shape: tuple[int, ...]) -> int:
    n = 1
    for d in shape:
        n *= d
    return n


def _itemsize(dtype: torch.dtype) -> int:
    return torch.empty((), dtype=dtype).element_size()
