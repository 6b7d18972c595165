"""Timing core: every timer cardbench has, device-side on CUDA, perf_counter on the CPU, every sample kept.

A measurement is a list of per-call seconds. Statistics (median, p10, p90) are
computed from those samples and nothing is rounded. Three device timers:

- `time_cuda` (here): one stream (memory, matmul, one-way copies);
- `time_pair` (bench/core/timing_multi.py): two copies at once on two streams (both
  directions of a link);
- `time_ops` (bench/core/timing_multi.py): one rank of a multi-rank collective, each
  operation between two events.

They share one method: the work is queued behind a spin kernel that holds the
stream, so the device runs the samples back to back and the host's launch cost
stays out of the timed window (nvbench's "blocking kernel",
https://github.com/NVIDIA/nvbench/blob/main/docs/benchmarks.md). The rules that keep
that honest, each proven on the virtual device in tests/test_timing_virtual.py:

- warm-up is by count, sized from the measured per-call time, with a synchronize
  between batches: launches are asynchronous, so a loop "until the warm-up time has
  passed" queues work until CUDA's launch queue (about a thousand commands) is full;
- a batch of samples queues at most QUEUE_SAFE commands and MAX_QUEUED_S of device
  work, so the launch queue never fills behind a hold, and Ctrl-C or SIGTERM is
  answered within one call (or MAX_QUEUED_S) of device time;
- the hold is sized from the host's measured enqueue time and the card's real maximum
  SM clock, and checked: if it ended before the host had queued the batch (an event
  recorded right after it was already reached), the batch is measured again with a
  longer hold and fewer samples, or the row is told it was launch-bound;
- a flushed (cold-cache) measurement flushes before every call, outside the timed
  window, so no timed call ever runs on a warm L2.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import torch

# Spread (p90 - p10) beyond this fraction of the median is flagged next to the number,
# as torch.utils.benchmark flags a wide IQR.
NOISY_SPREAD = 0.10

# A sample shorter than this repeats the work (at most MAX_CALLS_PER_SAMPLE times): one
# event pair resolves about 0.5 us (cudaEventElapsedTime), under 0.5% of this.
MIN_SAMPLE_S = 100e-6
MAX_CALLS_PER_SAMPLE = 128

# CUDA's launch queue holds about a thousand pending commands; once it is full a launch
# blocks the host until one retires. A batch queues at most half of that.
QUEUE_SAFE = 512
SAMPLES_PER_HOLD = 100
# Device work queued ahead of the host at most: Ctrl-C and SIGTERM reach Python only when a
# blocking synchronize returns, so they are answered within this (or one call, if longer).
MAX_QUEUED_S = 0.05
# A hold lasts at least this multiple of the host's measured enqueue time, plus HOLD_EXTRA_S.
HOLD_MARGIN = 2.0
HOLD_EXTRA_S = 1e-3
HOLD_MAX_S = 2.0
HOLD_RETRIES = 3
# Commands an L2 flush (and the output refresh before it) queues, for the queue estimate.
FLUSH_COMMANDS = 2
# The spin kernel counts SM cycles. Without the card's maximum clock, assume a clock above
# every GPU shipped so far, so the hold is never shorter than planned.
FALLBACK_SM_CLOCK_HZ = 4.0e9

# torch.cuda._sleep (private, but in every torch this project supports) spins for a number
# of SM clock cycles; checked at run time, never by version.
CAN_HOLD = hasattr(torch.cuda, "_sleep")
CUDA_TIMER = "cuda_events+hold" if CAN_HOLD else "cuda_events"  # the `timer` column of CUDA-timed rows
LAUNCH_BOUND = ("launch-bound: the host could not queue the samples ahead of the device (the spin-kernel hold "
                "ended first), so launch overhead may be inside the timed window")


@dataclass
class Timing:
    samples_s: list[float]  # one duration per timed sample, in seconds (per call)
    method: str  # how the samples were taken, stored on every row ("timer" column)
    calls_per_sample: int = 1  # calls of the work inside one timed sample
    notes: list[str] = field(default_factory=list)  # what the row must say about how it was timed
    own_samples_s: list[float] = field(default_factory=list)  # time_ops: this rank's own times, before the max

    @property
    def median_s(self) -> float:
        return float(np.median(self.samples_s))

    def percentile_s(self, q: float) -> float:
        return float(np.percentile(self.samples_s, q))


@dataclass(frozen=True)
class Budget:
    """How long to warm up and to measure; counts bound the sample number."""

    warmup_s: float = 0.05
    measure_s: float = 0.3
    min_samples: int = 10
    max_samples: int = 200

    def samples(self, sample_s: float) -> int:
        return int(min(self.max_samples, max(self.min_samples, self.measure_s / max(sample_s, 1e-9))))


QUICK = Budget(warmup_s=0.03, measure_s=0.15, min_samples=7, max_samples=100)
FULL = Budget(warmup_s=0.1, measure_s=0.5, min_samples=15, max_samples=400)
SWEEP = Budget(warmup_s=0.02, measure_s=0.1, min_samples=10, max_samples=200)
TUNE = Budget(warmup_s=0.01, measure_s=0.04, min_samples=5, max_samples=30)


def sm_clock_hz(identity: dict, props=None) -> float:
    """The card's maximum SM clock: NVML's (in the identity), else torch's property, else FALLBACK_SM_CLOCK_HZ."""
    try:
        mhz = float(identity.get("sm_clock_max_mhz") or 0)
    except ValueError:
        mhz = 0.0
    if mhz > 0:
        return mhz * 1e6
    khz = getattr(props, "clock_rate", 0) or 0  # cudaDeviceProp.clockRate, in kHz, where torch has it
    return float(khz) * 1e3 if khz > 0 else FALLBACK_SM_CLOCK_HZ


def hold_stream(seconds: float, clock_hz: float = FALLBACK_SM_CLOCK_HZ) -> bool:
    """Queue a spin kernel of at least `seconds` on the current stream; False where torch lacks it."""
    if CAN_HOLD:
        torch.cuda._sleep(int(min(seconds, HOLD_MAX_S) * clock_hz))
    return CAN_HOLD


def _held(released, held: bool) -> bool:
    """True when the hold was still running once the host had queued everything behind it."""
    return held and not released.query()


# ---------------------------------------------------------------- the host

def time_cpu(fn: Callable[[], object], budget: Budget) -> Timing:
    """Time synchronous host work with perf_counter; warm-up by time, then sample."""
    warm_end = time.perf_counter() + budget.warmup_s
    fn()  # at least one warm-up call, whatever the budget
    while time.perf_counter() < warm_end:
        fn()
    samples: list[float] = []
    end = time.perf_counter() + budget.measure_s
    while len(samples) < budget.max_samples and (len(samples) < budget.min_samples or time.perf_counter() < end):
        t0 = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - t0)
    return Timing(samples, "perf_counter")


class L2Flush:
    """Evicts the device's L2 by writing a buffer larger than it.

    Cold-cache measurements (matmul) flush before every timed call, as nvbench and
    triton.testing.do_bench do: 256 MiB covers every L2 shipped today, twice the
    reported L2 covers future ones.
    """

    def __init__(self, device: torch.device, l2_bytes: int = 0):
        nbytes = max(256 * 2**20, 2 * l2_bytes)
        self.buffer = torch.empty(nbytes, dtype=torch.uint8, device=device)

    def __call__(self) -> None:
        self.buffer.zero_()


# ---------------------------------------------------------------- one stream

@dataclass
class _Probe:
    per_call_s: float  # device seconds of one call
    host_call_s: float  # host seconds to enqueue one call
    host_flush_s: float  # host seconds to enqueue one flush


def _probe(fn, flush, stream, clock_hz: float) -> _Probe:
    """The first call (compile, autotune, allocate), then a few calls timed on the device behind a hold."""
    fn()
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    fn()
    torch.cuda.synchronize()
    first_s = time.perf_counter() - t0  # compiled now: an upper bound of one call's device time
    calls = max(1, min(3, int(MAX_QUEUED_S / max(first_s, 1e-9))))
    hold_s = 30e-6 * calls + HOLD_EXTRA_S
    for _ in range(HOLD_RETRIES):
        start, end, released = (torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True),
                                torch.cuda.Event())
        held = hold_stream(hold_s, clock_hz)
        released.record(stream)
        t0 = time.perf_counter()
        start.record(stream)
        for _ in range(calls):
            fn()
        end.record(stream)
        host_call_s = (time.perf_counter() - t0) / calls
        in_time = _held(released, held)
        host_flush_s = 0.0
        if flush is not None:
            t0 = time.perf_counter()
            flush()
            host_flush_s = time.perf_counter() - t0
        torch.cuda.synchronize()
        if in_time or not held:
            break
        hold_s = HOLD_MARGIN * 2 * host_call_s * calls + HOLD_EXTRA_S
    return _Probe(start.elapsed_time(end) / 1e3 / calls, host_call_s, host_flush_s)


def _warm_up(fn, per_call_s: float, warmup_s: float, sync: Callable[[], None] | None = None) -> None:
    """About `warmup_s` of device time, by count, synchronizing every MAX_QUEUED_S (or every call)."""
    sync = sync or torch.cuda.synchronize
    count = max(1, math.ceil(warmup_s / max(per_call_s, 1e-9)))
    batch = max(1, int(max(MAX_QUEUED_S, per_call_s) / max(per_call_s, 1e-9)))
    host_end = time.perf_counter() + 2 * warmup_s  # launch-bound work: the host's time is bounded too
    done = 0
    while done < count and time.perf_counter() <= host_end:
        for _ in range(min(batch, count - done)):
            fn()
            done += 1
            if time.perf_counter() > host_end:
                break
        sync()


def _batch(fn, flush, stream, samples: int, calls: int, hold_s: float, clock_hz: float) -> tuple[list[float], bool]:
    """Queue `samples` samples behind one hold; returns seconds per call of each, and whether the hold held."""
    pairs = [[(torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True))
              for _ in range(calls if flush is not None else 1)] for _ in range(samples)]
    released = torch.cuda.Event()
    held = hold_stream(hold_s, clock_hz)
    released.record(stream)
    for sample in pairs:
        if flush is None:
            start, end = sample[0]
            start.record(stream)
            for _ in range(calls):
                fn()
            end.record(stream)
            continue
        for start, end in sample:  # a flush before every call, outside its event pair
            flush()
            start.record(stream)
            fn()
            end.record(stream)
    in_time = _held(released, held)
    torch.cuda.synchronize()
    return [sum(s.elapsed_time(e) for s, e in sample) / 1e3 / calls for sample in pairs], in_time


def time_cuda(fn: Callable[[], object], budget: Budget, flush: Callable[[], None] | None = None,
              clock_hz: float = FALLBACK_SM_CLOCK_HZ) -> Timing:
    """Time device work on the current stream: CUDA events per sample, queued behind a spin-kernel hold.

    Work shorter than MIN_SAMPLE_S runs several times per sample. With `flush` (cold
    L2) every call is preceded by a flush outside its event pair, and a sample is the
    mean of its calls' event pairs.
    """
    stream = torch.cuda.current_stream()
    probe = _probe(fn, flush, stream, clock_hz)
    per_call = max(probe.per_call_s, 1e-9)
    calls = max(1, min(MAX_CALLS_PER_SAMPLE, math.ceil(MIN_SAMPLE_S / per_call)))
    _warm_up(fn, per_call, budget.warmup_s)
    sample_s = per_call * calls
    n = budget.samples(sample_s)
    commands = calls + 2 if flush is None else calls * (3 + FLUSH_COMMANDS)
    host_sample_s = calls * (probe.host_call_s + (probe.host_flush_s if flush is not None else 0.0))
    chunk = max(1, min(SAMPLES_PER_HOLD, QUEUE_SAFE // commands, int(MAX_QUEUED_S / sample_s)))
    margin, samples, notes = HOLD_MARGIN, [], []
    retries = 0
    while len(samples) < n:
        k = min(chunk, n - len(samples))
        got, held = _batch(fn, flush, stream, k, calls, margin * k * host_sample_s + HOLD_EXTRA_S, clock_hz)
        if not held and CAN_HOLD and retries < HOLD_RETRIES:
            retries += 1  # measure this batch again: longer hold, fewer samples behind it
            chunk, margin = max(1, chunk // 2), margin * 2
            continue
        if not held and CAN_HOLD and LAUNCH_BOUND not in notes:
            notes.append(LAUNCH_BOUND)
        samples += got
    return Timing(samples, CUDA_TIMER, calls, notes)


def time_fn(fn: Callable[[], object], device: torch.device, budget: Budget,
            flush: Callable[[], None] | None = None, clock_hz: float = FALLBACK_SM_CLOCK_HZ) -> Timing:
    """Time `fn` on its device: CUDA events on a GPU, perf_counter on the CPU."""
    if device.type == "cuda":
        with torch.cuda.device(device):
            return time_cuda(fn, budget, flush, clock_hz)
    return time_cpu(fn, budget)
