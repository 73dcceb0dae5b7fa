"""Continuous batching for the fast decode path (generator.py): which completion sits in which KV-cache slot, when
the host looks at the device, and which batch bucket a decode step runs.

Why: completions end at different lengths; a static batch would decode finished rows until the longest ends. Here
completions wait in a queue and are prefilled into free slots, so the batch stays full while work remains.

What it chose:
- Refill: free slots are taken lowest first, their prompts prefilled in right-padded chunks of at most
  fast_prefill_tokens tokens (the first token is sampled in the same call).
- Decode runs rows [0, b) for the smallest bucket b (1, 2, 4, ..., slots) covering every busy slot; when no
  completion waits, busy slots above the bucket of their count are moved down (cache rows and state copied), so the
  tail of a rollout runs small batches.
- Host checks: the device keeps each slot's state, so the host is needed only to refill and to collect. It reads the
  done flags every fast_sync_every steps, or, when no stop token can end a completion (ignore_eos), exactly when the
  next one reaches its length limit (the host knows that step). The trade-off: each check drains the GPU queue (the
  GPU idles while Python collects, refills and launches again), while a slot that stopped early idles on average
  (sync_every - 1) / 2 steps before it is refilled; with 8, by estimate, each costs a few % of a step-bound run.
- What the host knows without asking: each busy slot's next input position and how many tokens it may still make
  (exact until a stop token ends it early), which give the attention span a chunk of steps needs.

    pytest tests/integration/test_fast_engine.py -q -k "refill or compaction or stand_in"
"""

from __future__ import annotations

from collections import deque

import torch

from strive.engines.base import Completion, StopCheck


def batch_buckets(slots: int) -> list[int]:
    out = [1]
    while out[-1] * 2 < slots:
        out.append(out[-1] * 2)
    return sorted(set(out + [slots]))


def span_buckets(max_len: int) -> list[int]:
    out, span = [], 256
    while span < max_len:
        out.append(span)
        span *= 2
    return out + [max_len]


def bucket(buckets: list[int], n: int) -> int:
    return next(b for b in buckets if b >= n)


class SlotScheduler:
    """One generate call's host-side scheduling: which completion sits in which slot, and what the host knows
    of each without asking the device (its next input position, tokens it may still generate)."""

    def __init__(self, gen, rt, rows, limits, keys, kind, results: list, stop: StopCheck):
        """gen: the FastGenerator (prefill, decode, move), rt: its runtime; results[i] is filled for row i;
        `stop` may end the call early (generate_until)."""
        self.gen, self.rt, self.rows, self.limits, self.keys, self.kind = gen, rt, rows, limits, keys, kind
        self.results, self.stop = results, stop
        self.slot_row = [-1] * rt.slots
        self.next_pos = [0] * rt.slots
        self.left = [0] * rt.slots
        self.buckets = batch_buckets(rt.slots)
        self.stops_possible = bool(rt.stop_table.any())
        self.waiting: deque = deque()

    def busy(self) -> list[int]:
        return [s for s, r in enumerate(self.slot_row) if r >= 0]

    def run(self, todo: list[int]) -> None:
        self.waiting.extend(todo)
        while True:
            self.refill()
            busy = self.busy()
            if not busy:
                return
            if not self.waiting:
                busy = self.compact(busy)
            steps = self.stop.steps_left(min(self.left[s] for s in busy))
            if self.stops_possible:
                steps = min(steps, self.gen.opts.sync_every)
            if steps > 0:
                b = bucket(self.buckets, busy[-1] + 1)
                self.gen.decode(self.rt, steps, b, max(self.next_pos[s] for s in busy), self.kind)
            self.collect(busy, steps)
            if self.stop.after(steps):
                self.abort()
                return

    def refill(self) -> None:
        free = [s for s, r in enumerate(self.slot_row) if r < 0][:len(self.waiting)]
        if not free:
            return
        pairs = [(s, self.waiting.popleft()) for s in free]
        chunk: list = []
        for slot, row in pairs:
            width = max([len(self.rows[r]) for _, r in chunk] + [len(self.rows[row])])
            if chunk and width * (len(chunk) + 1) > self.gen.opts.prefill_tokens:
                self.gen.prefill(self.rt, chunk, self.rows, self.limits, self.keys, self.kind)
                chunk = []
            chunk.append((slot, row))
            self.slot_row[slot] = row
            self.next_pos[slot] = len(self.rows[row])
            self.left[slot] = self.limits[row] - 1
        self.gen.prefill(self.rt, chunk, self.rows, self.limits, self.keys, self.kind)

    def collect(self, busy: list[int], steps: int) -> None:
        """After `steps` steps: one device sync for the done flags, then the outputs of the finished slots."""
        for s in busy:
            self.next_pos[s] = min(self.next_pos[s] + steps, self.rt.max_len - 1)
            self.left[s] -= steps
        self.gen.stats["host_checks"] += 1
        done = self.rt.done.tolist()
        self.take([s for s in busy if done[s]], None)

    def take(self, slots: list[int], reason) -> None:
        """The outputs of `slots` into results, freeing the slots; `reason` None: each slot's own stop/length."""
        if not slots:
            return
        index = torch.tensor(slots, device=self.gen.device)
        counts = self.rt.n_gen[index].tolist()
        stopped = self.rt.stopped[index].tolist()
        width = max(counts)
        tokens = self.rt.out_tok[index, :width].tolist()
        logprobs = self.rt.out_lp[index, :width].tolist()
        for j, s in enumerate(slots):
            n = counts[j]
            why = reason or ("stop" if stopped[j] else "length")
            self.results[self.slot_row[s]] = Completion(tokens[j][:n], logprobs[j][:n], why)
            self.slot_row[s] = -1

    def abort(self) -> None:
        """generate_until was told to stop: busy slots hand back what they have, waiting rows come back empty."""
        self.take(self.busy(), "abort")
        while self.waiting:
            self.results[self.waiting.popleft()] = Completion([], [], "abort")

    def compact(self, busy: list[int]) -> list[int]:
        """Move busy slots down when that lets a smaller batch bucket cover them all."""
        count = len(busy)
        if bucket(self.buckets, count) >= bucket(self.buckets, busy[-1] + 1):
            return busy
        src = [s for s in busy if s >= count]
        dst = [s for s in range(count) if self.slot_row[s] < 0]
        span = min(self.rt.max_len, max(self.next_pos[s] for s in src) + 1)
        self.gen.move(self.rt, src, dst, span)
        for a, z in zip(src, dst):
            self.slot_row[z], self.next_pos[z], self.left[z] = self.slot_row[a], self.next_pos[a], self.left[a]
            self.slot_row[a] = -1
        return list(range(count))
