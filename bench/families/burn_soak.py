"""The compute soak of `cardbench burn`: one GEMM on fixed inputs, repeated for a duration, every
iteration's output compared bit for bit with the first's, the work done in each second of soak.

The loop does not know what it runs: `step(i, slot, j)` queues iteration i (the GEMM, then
the count of its output elements that differ from the first iteration's, into position j of
counts buffer `slot`), and `readback(slot, end, n)` starts copying a batch's n counts to the
host once the device has reached `end`, returning a function that waits for them. Time comes
from a clock whose events are CUDA events on a GPU and perf_counter stamps on the host, so
CPU mode runs the same loop; tests run it on the virtual CUDA device (tests/virtual_cuda.py).

On the device, batches of about BATCH_S are queued IN_FLIGHT deep: while the host waits for
one batch's counts the next is already running, so the GPU never idles between batches (a
soak that idles cools down and proves less). Nothing waits on the GEMM's own stream except the
end of a batch, and the host reads every count, so no mismatch goes unread. Throughput per
second is the work of the iterations that ran in that second of device time (CUDA events from
the soak's start), idle gaps included.
"""
from __future__ import annotations

import math
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Callable

import torch

BATCH_S = 0.1  # device time queued per batch: a stop request is answered within about two of them
MAX_BATCH = 32  # iterations per batch at most (each queues a few kernels: far below CUDA's launch queue)
IN_FLIGHT = 2  # batches queued ahead of the one the host waits for
SLOTS = IN_FLIGHT + 1  # counts buffers: a batch never writes the buffer a pending readback reads
MAX_LISTED = 100  # mismatching iterations listed one by one (all are counted)


class HostEvent:
    """A CUDA-event stand-in for synchronous host work: the time it was recorded."""

    def __init__(self):
        self.t: float | None = None

    def record(self, stream=None) -> None:
        self.t = time.perf_counter()

    def synchronize(self) -> None:
        pass

    def elapsed_time(self, end: "HostEvent") -> float:
        return (end.t - self.t) * 1e3  # milliseconds, as torch.cuda.Event.elapsed_time


@dataclass(frozen=True)
class Clock:
    """Events of the soak's device: CUDA events (device time) or host stamps (CPU mode)."""

    cuda: bool

    def event(self):
        return torch.cuda.Event(enable_timing=True) if self.cuda else HostEvent()

    @property
    def method(self) -> str:
        return "cuda_events" if self.cuda else "perf_counter"


@dataclass
class Soak:
    """What a soak did: work per second, iterations, and every mismatch found."""

    bins: list[float] = field(default_factory=list)  # work done in each whole second of soak
    iterations: int = 0  # iterations compared with the first (the first itself not counted)
    seconds: float = 0.0  # device seconds from the soak's start to its last iteration's end
    mismatches: list[dict] = field(default_factory=list)  # the first MAX_LISTED: iteration, time_s, elements
    mismatch_iterations: int = 0
    mismatch_elements: int = 0
    stopped: str = ""  # why the soak ended before its duration ("" when it ran it out)

    def throughput(self, work: float) -> list[float]:
        """Work per second, one per whole second; a soak shorter than a second gives its mean."""
        if self.bins:
            return list(self.bins)
        return [work * self.iterations / self.seconds] if self.seconds > 0 and self.iterations else []


class _Bins:
    """Spreads each batch's work over the seconds of device time it ran in."""

    def __init__(self, on_second):
        self.work: list[float] = []
        self.done = 0  # seconds handed to on_second
        self.on_second = on_second

    def add(self, t0: float, t1: float, work: float) -> None:
        if t1 <= t0:
            return
        for k in range(int(t0), math.ceil(t1)):
            overlap = min(t1, k + 1) - max(t0, k)
            while len(self.work) <= k:
                self.work.append(0.0)
            self.work[k] += work * overlap / (t1 - t0)
        while self.done < int(t1):  # seconds that no later batch can reach any more
            if self.on_second is not None:
                self.on_second(self.done, self.work[self.done])
            self.done += 1

    def whole(self, end: float) -> list[float]:
        return self.work[:int(end)]


def run(step: Callable[[int, int, int], None], readback: Callable, work: float, duration_s: float, clock: Clock,
        first: int = 1, stop: Callable[[], str] = lambda: "", on_second=None) -> Soak:
    """Run iterations first, first+1, ... for `duration_s` of host time; `work` is one iteration's.

    `stop()` returns why to end early ("" to go on); `on_second(k, work, mismatching)` is called
    as each second of soak completes, with the mismatching iterations found so far. Mismatch
    times are seconds from the soak's start, placed within their batch (within BATCH_S).
    """
    out = Soak()
    bins = _Bins((lambda k, w: on_second(k, w, out.mismatch_iterations)) if on_second is not None else None)
    start = clock.event()
    start.record()
    started = time.perf_counter()
    inflight: deque = deque()
    state = {"prev_end": 0.0, "per_iteration": None}

    def finish(batch) -> None:
        i0, n, end, wait = batch
        counts = wait()
        end.synchronize()
        t1 = start.elapsed_time(end) / 1e3
        t0 = state["prev_end"]
        for j, count in enumerate(counts[:n]):
            if count:
                out.mismatch_iterations += 1
                out.mismatch_elements += int(count)
                if len(out.mismatches) < MAX_LISTED:
                    out.mismatches.append({"iteration": i0 + j, "time_s": t0 + (j + 1) * (t1 - t0) / n,
                                           "elements": int(count)})
        bins.add(t0, t1, work * n)
        state["prev_end"], out.seconds, out.iterations = t1, t1, out.iterations + n
        state["per_iteration"] = (t1 - t0) / n if t1 > t0 else state["per_iteration"]

    i, slot = first, 0
    while True:
        out.stopped = stop()
        if out.stopped or time.perf_counter() - started >= duration_s:
            break
        per = state["per_iteration"]
        n = 1 if per is None else max(1, min(MAX_BATCH, int(BATCH_S / max(per, 1e-9))))
        for j in range(n):
            step(i + j, slot, j)
        end = clock.event()
        end.record()
        inflight.append((i, n, end, readback(slot, end, n)))
        i, slot = i + n, (slot + 1) % SLOTS
        if len(inflight) > IN_FLIGHT - 1:
            finish(inflight.popleft())
    while inflight:
        finish(inflight.popleft())
    out.bins = bins.whole(out.seconds)
    return out
