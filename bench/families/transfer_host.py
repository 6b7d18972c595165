"""Host<->device copies of the transfer family: pinned and pageable, one way and both ways at once.

A pinned copy is cudaMemcpyAsync from page-locked memory: both directions overlap on
the two copy engines, timed by bench/core/timing.py's two-stream timer. A pageable copy
blocks the thread that issues it until its data is staged (h2d) or has arrived (d2h),
so both ways at once need two host threads (timing_multi.time_pair_threads).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch

from ..core import nvml, timing, timing_multi, topology
from ..core.devices import Target
from ..core.harness import Status, Timed, error_message
from ..core.units import human_bytes
from ..core.window import Window, observe
from .transfer import MIB, Copy, State, budget_for, placement


# ---------------------------------------------------------------- buffers and checks (shared with peer copies)

def random_bytes(n: int, device, pin: bool = False) -> torch.Tensor:
    """n random bytes (n a multiple of 8), written once so every page is resident."""
    words = torch.empty(max(1, n // 8), dtype=torch.int64, device=device, pin_memory=pin)
    words.random_()
    return words.view(torch.uint8)[:n]


def hold_buffers(state: State, key: tuple, make: Callable):
    """The family's one buffer set, allocated once per (device, kind, size) and freed when the plan moves on."""
    held = state.buffers
    if held is not None and held.key == key:
        return held
    state.buffers = None
    del held
    torch.cuda.empty_cache()
    state.buffers = make()
    return state.buffers


def sync(devices) -> None:
    for d in devices:
        if torch.device(d).type == "cuda":
            torch.cuda.synchronize(d)


def compare(pairs: list[tuple[torch.Tensor, torch.Tensor, str]]) -> str | None:
    """None when every destination holds its source's bytes exactly, else what differs."""
    problems = []
    for got, want, what in pairs:
        if got.device != want.device:
            got = got.to(want.device)
        if not torch.equal(got, want):
            bad = int((got != want).sum())
            problems.append(f"{what}: {bad} of {want.numel()} bytes differ from the source")
    return "; ".join(problems) or None


def verify(poison: list[torch.Tensor], issue: Callable[[], object], pairs, devices) -> str | None:
    """Zero the destinations, copy once, compare bit-exact (a copy that does nothing cannot pass)."""
    for t in poison:
        t.zero_()
    sync(devices)  # the zeroing ran on the default stream; the copies run on streams of their own
    issue()
    sync(devices)
    return compare(pairs)


def on_stream(stream, fn: Callable, other_side=None) -> Callable[[], None]:
    """Issue `fn` with `stream` current; a peer copy's other device gets `other_side` as its current stream
    (torch orders a copy between devices after the destination's current stream)."""
    def issue():
        if other_side is None:
            with torch.cuda.stream(stream):
                fn()
        else:
            with torch.cuda.stream(other_side), torch.cuda.stream(stream):
                fn()
    return issue


def slot_gen(index: int | None):
    """Max PCIe generation of card and slot together (NVML's MaxPcieLinkGeneration), to name a Gen4 slot."""
    h = nvml.handle(index)
    return nvml.call("nvmlDeviceGetMaxPcieLinkGeneration", h) if h is not None else None


def link_notes(identity: dict, link: tuple, replays: int | None, gen_max_system=None) -> tuple[dict, list[str]]:
    """Row columns and notes for a copy that crossed this card's PCIe link (read during the copy)."""
    gen, width, readings = link
    cols = {"pcie_gen_current": "" if gen is None else str(gen), "pcie_width_current": "" if width is None else str(width)}
    notes = []
    below = topology.pcie_below_max(gen, width, identity.get("pcie_gen_max"), identity.get("pcie_width_max"),
                                    gen_max_system)
    if below:
        notes.append(below + " (read during this transfer)")
    if replays:
        notes.append(f"PCIe replays during this transfer: {replays}")
    return cols, notes


def window_columns(telemetry: dict, link_cols: dict) -> dict:
    """The window's telemetry, and only a link reading taken while this copy loaded it (never the idle one)."""
    return {**telemetry, "pcie_gen_current": "", "pcie_width_current": "", **link_cols}


# ---------------------------------------------------------------- host buffers

@dataclass
class HostBuffers:
    key: tuple
    nbytes: int  # what the allocation gave (less than planned when the pinned allocation failed)
    reduced: str  # why it is less
    host_src: torch.Tensor  # H2D source, random
    host_dst: torch.Tensor  # D2H destination
    dev_src: torch.Tensor  # D2H source, random
    dev_dst: torch.Tensor  # H2D destination
    dev_ref: torch.Tensor  # host_src's bytes on the device, so H2D is checked without another transfer


def buffers(target: Target, copy: Copy, state: State) -> HostBuffers:
    n, dev, pin = max(copy.buffer_bytes, copy.nbytes), target.device, copy.memory == "pinned"

    def make():
        size, why = n, ""
        while True:  # a real allocation decides: page-locked memory can fail long before MemTotal
            try:
                host_src = random_bytes(size, "cpu", pin)
                host_dst = torch.zeros(size, dtype=torch.uint8, pin_memory=pin)
                break
            except RuntimeError as e:
                if size // 2 < MIB:
                    raise
                why = why or f"the {copy.memory} host allocation of 2 x {human_bytes(size)} failed: {error_message(e)}"
                size //= 2
        return HostBuffers((str(dev), copy.memory, n), size, why, host_src, host_dst, random_bytes(size, dev),
                           torch.zeros(size, dtype=torch.uint8, device=dev), host_src.to(dev))
    return hold_buffers(state, (str(dev), copy.memory, n), make)


def _copies(target: Target, copy: Copy, state: State):
    b = buffers(target, copy, state)
    n = copy.nbytes
    h2d_dst, h2d_src, d2h_dst, d2h_src = b.dev_dst[:n], b.host_src[:n], b.host_dst[:n], b.dev_src[:n]
    return b, (lambda: h2d_dst.copy_(h2d_src, non_blocking=True)), (lambda: d2h_dst.copy_(d2h_src, non_blocking=True))


def _params(target: Target, copy: Copy, direction: str, link: tuple, window: Window, how: str, state: State) -> dict:
    gen, width, readings = link
    p = {"direction": direction, "memory": copy.memory, "bytes": copy.nbytes,
         "bidirectional": copy.benchmark.endswith(("_bidir", "_total")), "timing": how,
         "copy": "Tensor.copy_(non_blocking=True): cudaMemcpyAsync on a dedicated stream",
         "link_under_load": topology.link_text(gen, width), "link_readings": readings,
         "link_max": topology.link_text(target.identity.get("pcie_gen_max"), target.identity.get("pcie_width_max")),
         "pcie_replays_during": window.replays.get(target.index)}
    p.update(placement(target, state).params())
    return p


def _numa_note(target: Target, state: State) -> list[str]:
    if placement(target, state).warning:
        return [f"NUMA: this process may run outside {target.device}'s NUMA node (see the warning at the start)"]
    return []


# ---------------------------------------------------------------- one way

def one_way(target: Target, copy: Copy, state: State) -> Timed | Status:
    b, h2d, d2h = _copies(target, copy, state)
    n, dev = copy.nbytes, target.device
    stream = torch.cuda.Stream(dev)
    if copy.benchmark == "h2d":
        fn, poison, pairs = h2d, [b.dev_dst[:n]], [(b.dev_dst[:n], b.dev_ref[:n], "h2d")]
    else:
        fn, poison, pairs = d2h, [b.host_dst[:n]], [(b.host_dst[:n], b.dev_src[:n], "d2h")]
    problem = verify(poison, on_stream(stream, fn), pairs, [dev])
    if problem:
        return Status("wrong", problem)

    def timed():
        with torch.cuda.stream(stream):
            return timing.time_fn(fn, dev, budget_for(copy, state.profile), clock_hz=target.sm_clock_hz)
    result, window = observe([target.index], timed)
    problem = compare(pairs)  # the last timed copy's bytes
    if problem:
        return Status("wrong", "after timing: " + problem)
    link = window.link[target.index]
    cols, notes = link_notes(target.identity, link, window.replays[target.index], slot_gen(target.index))
    how = ("one stream, CUDA events, spin-kernel hold" if copy.memory == "pinned" else
           "one stream, CUDA events; each pageable copy blocks the host until staged (h2d) or arrived (d2h)")
    params = _params(target, copy, copy.benchmark, link, window, how, state)
    return Timed(result, params, window_columns(window.telemetry[target.index], cols), notes + _numa_note(target, state))


# ---------------------------------------------------------------- both ways at once

def both_ways(target: Target, copy: Copy, state: State) -> Timed | Status:
    """Both directions at once, measured once for the three rows (h2d_bidir, d2h_bidir, bidir_total)."""
    key = ("bidir", target.index, copy.memory, copy.nbytes)
    if key not in state.shared:
        try:
            state.shared[key] = _measure_both_ways(target, copy, state)
        except Exception as e:  # the three rows share the error
            state.shared[key] = Status("error", error_message(e))
    found = state.shared[key]
    if isinstance(found, Status):  # wrong or error: the same for the three rows
        return Status(found.status, found.message)
    pair, window, how = found["pair"], found["window"], found["how"]
    link = window.link[target.index]
    cols, notes = link_notes(target.identity, link, window.replays[target.index], slot_gen(target.index))
    overlap = float(np.median([min(a, b) / max(a, b) for a, b in zip(pair.a_s, pair.b_s)]))
    if copy.benchmark == "bidir_total":
        # Both copies start together; the pair is done when the slower one is.
        samples, direction = [max(a, b) for a, b in zip(pair.a_s, pair.b_s)], "both"
    else:
        samples = pair.a_s if copy.benchmark == "h2d_bidir" else pair.b_s
        direction = copy.benchmark.removesuffix("_bidir")
    notes += pair.notes
    if overlap < 0.9:
        notes.append(f"the two directions overlapped for {overlap:.0%} of the slower one's time")
    params = _params(target, copy, direction, link, window, how, state)
    params["overlap"] = overlap
    result = timing.Timing(samples, found["timer"], pair.calls_per_sample)
    return Timed(result, params, window_columns(window.telemetry[target.index], cols), notes + _numa_note(target, state))


def _measure_both_ways(target: Target, copy: Copy, state: State):
    b, h2d, d2h = _copies(target, copy, state)
    n, dev = copy.nbytes, target.device
    s_h2d, s_d2h = torch.cuda.Stream(dev), torch.cuda.Stream(dev)
    issue_h2d, issue_d2h = on_stream(s_h2d, h2d), on_stream(s_d2h, d2h)
    pairs = [(b.dev_dst[:n], b.dev_ref[:n], "h2d"), (b.host_dst[:n], b.dev_src[:n], "d2h")]
    problem = verify([b.dev_dst[:n], b.host_dst[:n]], lambda: (issue_h2d(), issue_d2h()), pairs, [dev])
    if problem:
        return Status("wrong", problem)
    budget = budget_for(copy, state.profile)
    if copy.memory == "pinned":
        how, timer = "two streams, a two-way event barrier per sample, spin-kernel hold", timing.CUDA_TIMER
        run = lambda: timing_multi.time_pair(issue_h2d, s_h2d, issue_d2h, s_d2h, budget, clock_hz=target.sm_clock_hz)  # noqa: E731
    else:
        how, timer = "two streams issued from two host threads, a barrier per sample", "cuda_events"
        run = lambda: timing_multi.time_pair_threads(issue_h2d, s_h2d, issue_d2h, s_d2h, budget)  # noqa: E731
    pair, window = observe([target.index], run)
    problem = compare(pairs)
    if problem:
        return Status("wrong", "after timing: " + problem)
    return {"pair": pair, "timer": timer, "window": window, "how": how}
