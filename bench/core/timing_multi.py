"""The timers of work on more than one stream or process: two copies at once (both directions of a
link) and one rank of a multi-rank collective.

They follow the method of bench/core/timing.py (work queued behind a checked spin-kernel
hold, warm-up by count, batches sized by the launch queue) and are proven on the virtual
CUDA device in tests/test_timing_virtual.py.
"""
from __future__ import annotations

import math
import threading
import time
from dataclasses import dataclass, field
from typing import Callable

import torch

from . import timing


# ---------------------------------------------------------------- two streams at once

@dataclass
class PairTiming:
    a_s: list[float]  # seconds per call of the copy on stream a, one per sample
    b_s: list[float]
    calls_per_sample: int
    notes: list[str] = field(default_factory=list)


# Commands of one sample of time_pair: the two-way barrier (2 records, 2 waits), 4 timing
# events, and per call two copies of up to three commands (torch adds an event barrier
# to a copy between devices).
PAIR_SAMPLE_COMMANDS, PAIR_CALL_COMMANDS = 8, 6


def time_pair(issue_a, stream_a, issue_b, stream_b, budget: timing.Budget,
              clock_hz: float = timing.FALLBACK_SM_CLOCK_HZ) -> PairTiming:
    """Seconds per call of two copies run at once, one per stream, CUDA events on each.

    A two-way event barrier starts both copies of a sample together; a spin kernel on
    stream a, which stream b waits for, holds both while the samples are queued.
    """
    def block(count: int, calls: int, hold_s: float) -> tuple[list[tuple[float, float]], bool, float]:
        events = [tuple(torch.cuda.Event(enable_timing=True) for _ in range(4)) for _ in range(count)]
        go = torch.cuda.Event()
        with torch.cuda.stream(stream_a):
            held = timing.hold_stream(hold_s, clock_hz)
        go.record(stream_a)
        stream_b.wait_event(go)
        t0 = time.perf_counter()
        for start_a, end_a, start_b, end_b in events:
            ready_a, ready_b = torch.cuda.Event(), torch.cuda.Event()
            ready_a.record(stream_a)
            stream_b.wait_event(ready_a)
            ready_b.record(stream_b)
            stream_a.wait_event(ready_b)
            start_a.record(stream_a)
            start_b.record(stream_b)
            for _ in range(calls):
                issue_a()
                issue_b()
            end_a.record(stream_a)
            end_b.record(stream_b)
        host_s = time.perf_counter() - t0
        in_time = timing._held(go, held)
        stream_a.synchronize()
        stream_b.synchronize()
        times = [(sa.elapsed_time(ea) / 1e3 / calls, sb.elapsed_time(eb) / 1e3 / calls)
                 for sa, ea, sb, eb in events]
        return times, in_time, host_s / count

    block(1, 1, timing.HOLD_EXTRA_S)  # first use: lazy peer access, the allocator
    probe, _, host_sample_s = block(3, 1, 3 * 100e-6 + timing.HOLD_EXTRA_S)
    per_call = max(max(max(t) for t in probe), 1e-9)
    calls = max(1, min(timing.MAX_CALLS_PER_SAMPLE, math.ceil(timing.MIN_SAMPLE_S / per_call)))
    timing._warm_up(lambda: (issue_a(), issue_b()), per_call, budget.warmup_s,
             lambda: (stream_a.synchronize(), stream_b.synchronize()))
    n = budget.samples(per_call * calls)
    commands = PAIR_SAMPLE_COMMANDS + PAIR_CALL_COMMANDS * calls
    chunk = max(1, min(timing.SAMPLES_PER_HOLD, timing.QUEUE_SAFE // commands, int(timing.MAX_QUEUED_S / (per_call * calls))))
    host_sample_s *= calls
    margin, retries, samples, notes = timing.HOLD_MARGIN, 0, [], []
    while len(samples) < n:
        k = min(chunk, n - len(samples))
        got, held, host_s = block(k, calls, margin * k * host_sample_s + timing.HOLD_EXTRA_S)
        host_sample_s = max(host_sample_s, host_s)
        if not held and timing.CAN_HOLD and retries < timing.HOLD_RETRIES:
            retries, chunk, margin = retries + 1, max(1, chunk // 2), margin * 2
            continue
        if not held and timing.CAN_HOLD and timing.LAUNCH_BOUND not in notes:
            notes.append(timing.LAUNCH_BOUND)
        samples += got
    return PairTiming([a for a, _ in samples], [b for _, b in samples], calls, notes)


def time_pair_threads(issue_a, stream_a, issue_b, stream_b, budget: timing.Budget) -> PairTiming:
    """Two copies at once from two host threads (pageable copies block the thread that issues them).

    A pageable cudaMemcpyAsync returns only once its data is staged (H2D) or has
    arrived (D2H), so one thread cannot have both directions in flight. Each thread
    times its own copy with events on its own stream; a host barrier starts each
    sample of both together.
    """
    errors: list[BaseException] = []
    results: list[list[float]] = [[], []]

    def run(k: int, issue, stream, count: int, barrier: threading.Barrier) -> None:
        try:
            with torch.cuda.device(stream.device), torch.cuda.stream(stream):
                for _ in range(count):
                    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                    barrier.wait()
                    start.record(stream)
                    issue()
                    end.record(stream)
                    stream.synchronize()
                    results[k].append(start.elapsed_time(end) / 1e3)
        except BaseException as e:  # re-raised in the caller; free the other thread
            errors.append(e)
            barrier.abort()

    def rounds(count: int) -> None:
        results[0], results[1] = [], []
        barrier = threading.Barrier(2)
        threads = [threading.Thread(target=run, args=(k, issue, stream, count, barrier), name=f"cardbench-copy-{k}")
                   for k, (issue, stream) in enumerate(((issue_a, stream_a), (issue_b, stream_b)))]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        if errors:
            raise errors[0]

    rounds(2)  # first use and a first estimate
    per_sample = max(max(results[0]), max(results[1]))
    warm = max(1, int(budget.warmup_s / per_sample))
    rounds(warm)
    rounds(int(min(budget.max_samples, max(budget.min_samples, budget.measure_s / per_sample))))
    return PairTiming(list(results[0]), list(results[1]), 1)


# ---------------------------------------------------------------- one rank of a collective

# Operations of one collective's timed batch, as nccl-tests and all_reduce_bench time them.
WARMUP_OPS, MIN_OPS, MAX_OPS = 5, 20, 100
OP_ENQUEUE_S = 40e-6  # host time to enqueue one NCCL operation and its event, for the hold


def time_ops(op: Callable[[], object], cuda: bool, measure_s: float, slowest: Callable[[list[float]], list[float]],
             barrier: Callable[[], None], window, clock_hz: float = timing.FALLBACK_SM_CLOCK_HZ,
             pause: Callable[[], None] | None = None) -> timing.Timing:
    """Per-operation seconds of one rank's collective, the same count on every rank.

    `slowest(values)` returns each value's maximum over the ranks (an all-reduce with
    MAX), `barrier()` lines the ranks up, `window` is a context manager around the
    timed operations (the telemetry sampler). Warm-up by count; the slowest rank's
    warm-up sizes the batch, so every rank runs the same number of operations; each
    sample is the slowest rank's time of that operation, and `own_samples_s` keeps this
    rank's own. `pause()` runs before each timed operation, outside its sample (fault
    injection: a rank that reaches every operation late).
    """
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    barrier()
    sync()
    t0 = time.perf_counter()
    for _ in range(WARMUP_OPS):
        op()
    sync()
    per_op = slowest([(time.perf_counter() - t0) / WARMUP_OPS])[0]
    ops = int(min(MAX_OPS, max(MIN_OPS, math.ceil(measure_s / max(per_op, 1e-7)))))
    barrier()
    sync()
    notes: list[str] = []
    with window:
        if cuda:
            events = [torch.cuda.Event(enable_timing=True) for _ in range(ops + 1)]
            released = torch.cuda.Event()
            # The stream waits while the host queues every operation: launch cost stays out.
            held = timing.hold_stream(timing.HOLD_MARGIN * (ops + 1) * OP_ENQUEUE_S + timing.HOLD_EXTRA_S, clock_hz)
            released.record()
            op()  # absorbs the ranks' different release times after the hold; not timed
            events[0].record()
            for i in range(ops):
                if pause is not None:
                    pause()
                op()
                events[i + 1].record()
            if not timing._held(released, held) and timing.CAN_HOLD:
                notes.append(timing.LAUNCH_BOUND)  # no retry: every rank must run the same operations
            torch.cuda.synchronize()
            samples = [events[i].elapsed_time(events[i + 1]) / 1e3 for i in range(ops)]
            method = timing.CUDA_TIMER
        else:
            samples = []
            for _ in range(ops):
                if pause is not None:
                    pause()
                t0 = time.perf_counter()
                op()
                samples.append(time.perf_counter() - t0)
            method = "perf_counter"
    return timing.Timing(slowest(samples), method, 1, notes, own_samples_s=samples)
