"""Timing core: device-side timing on CUDA, perf_counter on the CPU, every sample kept.

A measurement is a list of per-sample seconds. Statistics (median, p10, p90)
are computed from those samples and nothing is rounded.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch

# Spread (p90 - p10) beyond this fraction of the median is flagged next to the
# number, as torch.utils.benchmark does for its IQR (STYLE.md, "Models").
NOISY_SPREAD = 0.10

# How many timed samples are queued behind one spin kernel. CUDA's launch
# queue holds about a thousand entries; each sample is up to four (flush,
# two events, the work), so a chunk this size never blocks the host.
SAMPLES_PER_HOLD = 100

# A sample shorter than this repeats the work several times (at most
# MAX_CALLS_PER_SAMPLE) so the event resolution stays far below the sample.
MIN_SAMPLE_S = 50e-6
MAX_CALLS_PER_SAMPLE = 64


@dataclass
class Timing:
    samples_s: list[float]  # one duration per timed sample, in seconds (per call)
    method: str  # how the samples were taken, stored on every row ("timer" column)
    calls_per_sample: int = 1  # calls of the work inside one timed sample

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


QUICK = Budget(warmup_s=0.03, measure_s=0.15, min_samples=7, max_samples=100)
FULL = Budget(warmup_s=0.1, measure_s=0.5, min_samples=15, max_samples=400)
SWEEP = Budget(warmup_s=0.02, measure_s=0.1, min_samples=10, max_samples=200)
TUNE = Budget(warmup_s=0.01, measure_s=0.04, min_samples=5, max_samples=30)


def time_cpu(fn: Callable[[], object], budget: Budget) -> Timing:
    """Time synchronous host work with perf_counter; warm-up by time, then sample."""
    warm_end = time.perf_counter() + budget.warmup_s
    fn()  # at least one warm-up call, whatever the budget
    while time.perf_counter() < warm_end:
        fn()
    samples: list[float] = []
    end = time.perf_counter() + budget.measure_s
    while len(samples) < budget.max_samples and (
        len(samples) < budget.min_samples or time.perf_counter() < end
    ):
        t0 = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - t0)
    return Timing(samples, "perf_counter")


class L2Flush:
    """Evicts the device's L2 between samples by writing a buffer larger than it.

    Cold-cache measurements (matmul) flush before every sample, as nvbench and
    triton.testing.do_bench do; 256 MiB covers every L2 shipped today
    (METHOD.md section 5), twice the reported L2 covers future ones.
    """

    def __init__(self, device: torch.device, l2_bytes: int = 0):
        nbytes = max(256 * 2**20, 2 * l2_bytes)
        self.buffer = torch.empty(nbytes, dtype=torch.uint8, device=device)

    def __call__(self) -> None:
        self.buffer.zero_()


# torch.cuda._sleep (private, but in every torch this project supports) spins for a
# number of SM clock cycles; checked at run time, never by version.
CAN_HOLD = hasattr(torch.cuda, "_sleep")
CUDA_TIMER = "cuda_events+hold" if CAN_HOLD else "cuda_events"  # the `timer` column of CUDA-timed rows


def hold_stream(seconds: float) -> bool:
    """Queue a spin kernel of at least `seconds` on the current stream; False where torch lacks it.

    Work queued behind it starts only when the host has queued everything, so the
    launch cost stays out of the timed window (nvbandwidth's blocking kernel).
    2 GHz is above every boost clock, so the hold lasts at least `seconds`.
    """
    if CAN_HOLD:
        torch.cuda._sleep(int(seconds * 2.0e9))
    return CAN_HOLD


def time_cuda(
    fn: Callable[[], object],
    budget: Budget,
    flush: Callable[[], None] | None = None,
) -> Timing:
    """Time device work with one CUDA event pair per sample.

    Launch overhead stays out of the window: a spin kernel holds the stream
    while the events and the work are queued behind it, so the GPU runs the
    samples back to back (nvbandwidth's blocking-kernel method). Work shorter
    than MIN_SAMPLE_S runs several times per sample: one event pair has about
    0.5 us resolution (METHOD.md section 5).
    """
    stream = torch.cuda.current_stream()
    fn()  # the first call compiles and autotunes
    torch.cuda.synchronize()
    per_call_s = _device_time(fn, stream, calls=3) / 3
    calls = max(1, min(MAX_CALLS_PER_SAMPLE, math.ceil(MIN_SAMPLE_S / max(per_call_s, 1e-9))))
    warm_end = time.perf_counter() + budget.warmup_s
    while time.perf_counter() < warm_end:
        fn()
    torch.cuda.synchronize()

    n = int(min(budget.max_samples, max(budget.min_samples, budget.measure_s / (per_call_s * calls))))
    samples: list[float] = []
    while len(samples) < n:
        chunk = min(SAMPLES_PER_HOLD, n - len(samples))
        events = [
            (torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True))
            for _ in range(chunk)
        ]
        # Enqueueing costs tens of microseconds per launch on the host.
        hold = hold_stream(chunk * (calls * 30e-6 + 60e-6) + 1e-3)
        for start, end in events:
            if flush is not None:
                flush()
            start.record(stream)
            for _ in range(calls):
                fn()
            end.record(stream)
        torch.cuda.synchronize()
        samples.extend(start.elapsed_time(end) / 1e3 / calls for start, end in events)
    return Timing(samples, CUDA_TIMER, calls)


def _device_time(fn: Callable[[], object], stream, calls: int) -> float:
    """Seconds the device spends on `calls` back-to-back calls (for sizing the samples)."""
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    hold_stream(calls * 30e-6 + 1e-3)
    start.record(stream)
    for _ in range(calls):
        fn()
    end.record(stream)
    torch.cuda.synchronize()
    return start.elapsed_time(end) / 1e3


def time_fn(
    fn: Callable[[], object],
    device: torch.device,
    budget: Budget,
    flush: Callable[[], None] | None = None,
) -> Timing:
    """Time `fn` on its device: CUDA events on a GPU, perf_counter on the CPU."""
    if device.type == "cuda":
        with torch.cuda.device(device):
            return time_cuda(fn, budget, flush)
    return time_cpu(fn, budget)
