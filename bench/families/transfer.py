"""Transfer family: host<->device copies (pinned and pageable, one way and both ways at once) and GPU<->GPU peer copies.

Every copy is torch's `Tensor.copy_(src, non_blocking=True)`, which is
`cudaMemcpyAsync` on the copy engines, issued on a stream of its own and timed on
the device with CUDA events (bench/core/timing.py). Bytes are counted once (the
bytes that cross the link), in decimal GB/s per direction; bench/core/normalize.py
compares them with the link (the one the card supports, and the one NVML reports as
trained while the copy runs), as nvbandwidth does (https://github.com/NVIDIA/nvbandwidth).

benchmark: h2d, d2h (one way); h2d_bidir, d2h_bidir (each direction while the
other runs), bidir_total (both summed); p2p, p2p_bidir (one direction while the
reverse runs), p2p_latency (a 16-byte copy, lower is better).

This module plans the cases and holds what the family keeps across them; the copies
themselves are in transfer_host.py and transfer_p2p.py, the printed tables in
transfer_summary.py.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

import torch

from ..core import nvml, timing
from ..core import placement as numa
from ..core.devices import Target
from ..core.harness import Case, Status
from ..core.units import human_bytes

NAME = "transfer"
PROVIDER = "torch"
MIB, GIB = 2**20, 2**30
FULL_SIZES = tuple(2**k for k in range(20, 31))  # 1 MiB .. 1 GiB, every power of two
# The plateau: PCIe copies reach it well below 256 MiB; nvbandwidth copies 512 MiB by default.
QUICK_SIZES = (256 * MIB, GIB)
P2P_QUICK_SIZES = (256 * MIB,)  # p2pBandwidthLatencyTest copies 160 MB, nvbandwidth 512 MiB
LATENCY_BYTES = 16  # one int4: the copy CUDA's p2pBandwidthLatencyTest times for latency
HOST_KINDS = ("pinned", "pageable")
HOST_BENCHMARKS = ("h2d", "d2h", "h2d_bidir", "d2h_bidir", "bidir_total")
P2P_BENCHMARKS = ("p2p", "p2p_bidir")
ALL_BENCHMARKS = HOST_BENCHMARKS + P2P_BENCHMARKS + ("p2p_latency",)
CPU_REASON = "CPU mode: host<->device and peer-to-peer copies need a CUDA GPU"
BUFFER_SHARE = 8  # the buffers of one copy size take at most 1/8 of the device's free and the host's total memory


@dataclass(frozen=True)
class Copy:
    """What one transfer case copies (the harness Case's `spec`)."""

    benchmark: str  # one of ALL_BENCHMARKS
    memory: str  # pinned / pageable (host side); device (peer copies)
    nbytes: int  # bytes of one copy
    device: int | None  # the target's CUDA index (None in CPU mode)
    peer: int | None = None  # the other GPU of a peer copy; None for host copies or when there is none
    buffer_bytes: int = 0  # the largest copy of this kind in the plan: buffers are allocated once at this size
    planned: int = 0  # the size the plan asked for, when memory made this copy smaller (0: not reduced)
    reduced: str = ""  # why it was reduced, or why a size was not planned at all

    @property
    def is_p2p(self) -> bool:
        return self.benchmark.startswith("p2p")

    @property
    def name(self) -> str:
        size = human_bytes(self.planned or self.nbytes)  # the plan's name, so runs stay comparable
        if not self.is_p2p:
            return f"{self.memory}-{size}"
        if self.peer is None:
            return "no-peer"
        return f"cuda:{self.device}->cuda:{self.peer}-{size}"

    def reduced_note(self) -> str:
        if not self.planned:
            return ""
        return f"measured at {human_bytes(self.nbytes)}, not {human_bytes(self.planned)}: {self.reduced}"


def make_case(copy: Copy) -> Case:
    latency, total = copy.benchmark == "p2p_latency", copy.benchmark == "bidir_total"
    nbytes = copy.nbytes * (2 if total else 1)
    return Case(family=NAME, benchmark=copy.benchmark, provider=PROVIDER, dtype="uint8", name=copy.name,
                metric="latency" if latency else "bandwidth", unit="us" if latency else "GB/s",
                scale=1e-6 if latency else 1e9, work=float(nbytes), work_unit="B", size_bytes=nbytes, spec=copy)


@dataclass
class State:
    """What the family keeps across cases: where each GPU sits, the one buffer set in use, what NVML
    says of each pair, and the both-ways measurements three (host) or two (peer) rows share."""

    run: object = None
    placement: dict[int, numa.Placement] = field(default_factory=dict)
    buffers: object = None
    pairs: dict[tuple, tuple] = field(default_factory=dict)
    identities: dict[int, dict] = field(default_factory=dict)
    shared: dict[tuple, object] = field(default_factory=dict)

    @property
    def profile(self) -> str:
        return getattr(self.run, "profile", "quick")


# ---------------------------------------------------------------- the plan (no I/O: from what the targets hold)

def size_cap(target: Target) -> tuple[int, str]:
    """Largest copy the buffers allow, and what limits it.

    The host side is sized from MemTotal, not MemAvailable: on VMs whose memory grows as it
    is used MemAvailable starts far too low. A real pinned allocation decides at run time
    (transfer_host.buffers), and a copy made smaller there says so on its row.
    """
    if not target.is_cuda:
        return GIB, ""
    device_room = target.free_bytes() // BUFFER_SHARE
    host_total = target.host_memory_bytes
    host_room = host_total // BUFFER_SHARE if host_total else device_room
    cap = 2 ** int(math.log2(max(min(device_room, host_room), MIB)))
    if host_room <= device_room:
        return cap, f"host memory (MemTotal {host_total / GIB:.1f} GiB) allows {human_bytes(cap)} per copy"
    return cap, f"free device memory allows {human_bytes(cap)} per copy"


def plan_sizes(profile: str, cap: int, p2p: bool = False) -> tuple[list[int], list[int]]:
    """(sizes measured, sizes above the cap): those are rows skipped with the reason, never dropped."""
    sizes = FULL_SIZES if profile == "full" else (P2P_QUICK_SIZES if p2p else QUICK_SIZES)
    fit = [n for n in sizes if n <= cap] or [min(cap, sizes[0])]
    return fit, [n for n in sizes if n > cap and n not in fit]


def copies(target: Target, profile: str, gpus: int) -> list[Copy]:
    cap, why = size_cap(target)
    sizes, too_big = plan_sizes(profile, cap)
    out = [Copy(b, kind, n, target.index, None, max(sizes)) for kind in HOST_KINDS for n in sizes for b in HOST_BENCHMARKS]
    out += [Copy(b, kind, n, target.index, None, 0, reduced=why)
            for kind in HOST_KINDS for n in too_big for b in HOST_BENCHMARKS]
    peers = [i for i in range(gpus) if i != target.index] if target.is_cuda else []
    p2p_sizes, p2p_too_big = plan_sizes(profile, cap, p2p=True)
    for peer in peers:
        out += [Copy(b, "device", n, target.index, peer, max(p2p_sizes)) for n in p2p_sizes for b in P2P_BENCHMARKS]
        out += [Copy(b, "device", n, target.index, peer, 0, reduced=why) for n in p2p_too_big for b in P2P_BENCHMARKS]
        out.append(Copy("p2p_latency", "device", LATENCY_BYTES, target.index, peer, LATENCY_BYTES))
    if not peers:  # one row each, skipped with the reason
        out += [Copy(b, "device", p2p_sizes[-1], target.index) for b in P2P_BENCHMARKS]
        out.append(Copy("p2p_latency", "device", LATENCY_BYTES, target.index))
    return out


def cases(target: Target, run) -> list[Case]:
    return [make_case(c) for c in copies(target, run.profile, run.visible_gpus if target.is_cuda else 0)]


def budget_for(copy: Copy, profile: str) -> timing.Budget:
    if copy.nbytes in QUICK_SIZES or copy.benchmark == "p2p_latency" or copy.nbytes in P2P_QUICK_SIZES:
        return timing.QUICK if profile == "quick" else timing.FULL
    return timing.SWEEP


def prepare(targets: list[Target], state: State) -> list[str]:
    """Before the first case: where each GPU sits against where this process may run (warnings to print)."""
    warnings = []
    for t in targets:
        if t.is_cuda:
            p = placement(t, state)
            if p.warning:
                warnings.append(f"{t.device}: {p.warning}")
    return warnings


def placement(target: Target, state: State) -> numa.Placement:
    """Where the GPU sits against where this process may run (read once per device)."""
    if target.index not in state.placement:
        nv, h, bus = nvml.module(), nvml.handle(target.index), target.identity.get("pci_bus_id", "")
        state.placement[target.index] = numa.placement(
            numa.gpu_numa_node(nv, h, bus), numa.gpu_local_cpus(nv, h, bus), numa.process_cpus(),
            numa.host_numa_nodes(), str(target.device))
    return state.placement[target.index]


# ---------------------------------------------------------------- the family's contract

def waive(target: Target, case: Case, state: State) -> tuple[str, str] | None:
    copy: Copy = case.spec
    if not target.is_cuda:
        return "skipped", CPU_REASON
    if copy.is_p2p and copy.peer is None:
        return "skipped", f"one GPU visible ({target.device}): peer-to-peer copies need two"
    if copy.buffer_bytes == 0 and copy.reduced:
        return "skipped", (f"{human_bytes(copy.nbytes)} copies not measured: {copy.reduced} "
                           f"(buffers take {BUFFER_SHARE}x a copy)")
    return None


def measure(target: Target, case: Case, state: State):
    """The copies of one case, timed by the family (two streams, several devices): a Timed or a Status."""
    from . import transfer_host, transfer_p2p

    copy: Copy = case.spec
    try:
        if not copy.is_p2p:
            bufs = transfer_host.buffers(target, copy, state)
            if bufs.nbytes < copy.nbytes:  # the pinned allocation failed at the planned size
                copy = replace(copy, nbytes=bufs.nbytes, planned=copy.nbytes, reduced=bufs.reduced)
        measured = make_case(copy)
        if copy.benchmark in ("h2d", "d2h"):
            result = transfer_host.one_way(target, copy, state)
        elif copy.benchmark in ("h2d_bidir", "d2h_bidir", "bidir_total"):
            result = transfer_host.both_ways(target, copy, state)
        elif copy.benchmark == "p2p_bidir":
            result = transfer_p2p.both_ways(target, copy, state)
        else:
            result = transfer_p2p.one_way(target, copy, state)
        result.case = measured
        if copy.planned and not isinstance(result, Status):
            result.notes.insert(0, copy.reduced_note())
        return result
    except Exception:
        state.buffers = None  # out of memory or a broken copy: the next case starts afresh
        raise
    finally:
        if _last_of_kind(copy):
            state.buffers = None
            torch.cuda.empty_cache()


def _last_of_kind(copy: Copy) -> bool:
    """The last row that uses this buffer set: free it (pinned host memory is scarce on some hosts)."""
    if copy.is_p2p:
        return copy.benchmark == "p2p_latency"
    return copy.memory == "pageable" and copy.nbytes == copy.buffer_bytes and copy.benchmark == "bidir_total"


def summary_lines(rows: list[dict]) -> list[str]:
    from .transfer_summary import summary_lines as lines

    return lines(rows)
