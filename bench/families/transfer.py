"""Transfer family: host<->device copies (pinned and pageable, one way and both ways at once) and GPU<->GPU peer copies.

Every copy is torch's `Tensor.copy_(src, non_blocking=True)`, which is
`cudaMemcpyAsync` on the copy engines (METHOD.md section 3), issued on a stream
of its own and timed on the device with CUDA events. Bytes are counted once (the
bytes that cross the link), in decimal GB/s per direction, and compared with the
link: the one the card supports (spec entry, else NVML's maximum) in `pct_of_spec`,
the one NVML reports as trained while the copy runs in `pct_of_derived`; NVLink
pairs against the spec's per-direction NVLink figure.

benchmark: h2d, d2h (one way); h2d_bidir, d2h_bidir (each direction while the
other runs), bidir_total (both summed); p2p, p2p_bidir (one direction while the
reverse runs), p2p_latency (a 16-byte copy, lower is better).
"""
from __future__ import annotations

import math
import sys
from dataclasses import dataclass, field, replace
from typing import Callable

import numpy as np
import torch

from ..core import measure, specs, telemetry, timing, topology
from ..core.devices import Target, host_memory_total_bytes
from ..core.measure import Measurement
from .memory import human_bytes
from ..core.results import format_samples

FAMILY = "transfer"
PROVIDER = "torch"
MIB, GIB = 2**20, 2**30
FULL_SIZES = tuple(2**k for k in range(20, 31))  # 1 MiB .. 1 GiB, every power of two
QUICK_SIZES = (256 * MIB, GIB)  # the plateau: PCIe copies reach it well below 256 MiB (METHOD.md 3)
P2P_QUICK_SIZES = (256 * MIB,)  # p2pBandwidthLatencyTest copies 160 MB, nvbandwidth 512 MiB
LATENCY_BYTES = 16  # one int4, p2pBandwidthLatencyTest's latency copy (ANCHORS.md)
HOST_KINDS = ("pinned", "pageable")
HOST_BENCHMARKS = ("h2d", "d2h", "h2d_bidir", "d2h_bidir", "bidir_total")
P2P_BENCHMARKS = ("p2p", "p2p_bidir")
ALL_BENCHMARKS = HOST_BENCHMARKS + P2P_BENCHMARKS + ("p2p_latency",)
CPU_REASON = "CPU mode: host<->device and peer-to-peer copies need a CUDA GPU"
# NVLink generation of data-center GPUs by compute capability: the per-link rate of
# each generation is in bench/core/specs.toml ([[nvlink]]). Other boards (GeForce, RTX
# bridges) run their links slower: no derived NVLink peak for them.
NVLINK_GENERATION = {"6.0": 1, "7.0": 2, "8.0": 3, "9.0": 4, "10.0": 5, "10.3": 5}


@dataclass(frozen=True)
class Case:
    benchmark: str  # one of ALL_BENCHMARKS
    memory: str  # pinned / pageable (host side); device (peer copies)
    nbytes: int  # bytes of one copy
    device: int | None  # the target's CUDA index (None in CPU mode)
    peer: int | None = None  # the other GPU of a peer copy; None for host copies or when there is none
    buffer_bytes: int = 0  # the largest copy of this kind in the plan: buffers are allocated once at this size
    planned: int = 0  # the size the plan asked for, when memory made this copy smaller (0: not reduced)
    reduced: str = ""  # why it was reduced

    @property
    def is_p2p(self) -> bool:
        return self.benchmark.startswith("p2p")

    @property
    def case(self) -> str:
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

    @property
    def id(self) -> str:
        return f"{FAMILY}/{self.benchmark}/{PROVIDER}/{self.case}"


# ---------------------------------------------------------------- the plan

def visible_gpus() -> int:
    return torch.cuda.device_count() if torch.cuda.is_available() else 0


BUFFER_SHARE = 8  # the buffers of one copy size take at most 1/8 of the device's free and the host's total memory


def size_cap(target: Target) -> tuple[int, str]:
    """Largest copy the buffers allow, and what limits it.

    The host side is sized from MemTotal, not MemAvailable: on VMs whose memory grows as it
    is used MemAvailable starts far too low. A real pinned allocation decides at run time
    (_host_buffers), and a copy made smaller there says so on its row.
    """
    if not target.is_cuda:
        return GIB, ""
    device_room = target.free_bytes() // BUFFER_SHARE
    host_total = host_memory_total_bytes()
    host_room = host_total // BUFFER_SHARE if host_total else device_room
    room = min(device_room, host_room)
    cap = 2 ** int(math.log2(max(room, MIB)))
    if host_room <= device_room:
        return cap, f"host memory (MemTotal {human_bytes_round(host_total)}) allows {human_bytes(cap)} per copy"
    return cap, f"free device memory allows {human_bytes(cap)} per copy"


def human_bytes_round(n: int) -> str:
    return f"{n / GIB:.1f} GiB"


def plan_sizes(profile: str, cap: int, p2p: bool = False) -> tuple[list[int], list[int]]:
    """(sizes measured, sizes above the cap): those are rows skipped with the reason, never dropped."""
    sizes = FULL_SIZES if profile == "full" else (P2P_QUICK_SIZES if p2p else QUICK_SIZES)
    fit = [n for n in sizes if n <= cap] or [min(cap, sizes[0])]
    return fit, [n for n in sizes if n > cap and n not in fit]


def cases(target: Target, profile: str) -> list[Case]:
    cap, why = size_cap(target)
    sizes, too_big = plan_sizes(profile, cap)
    out = [Case(b, kind, n, target.index, None, max(sizes))
           for kind in HOST_KINDS for n in sizes for b in HOST_BENCHMARKS]
    out += [Case(b, kind, n, target.index, None, 0, reduced=why)
            for kind in HOST_KINDS for n in too_big for b in HOST_BENCHMARKS]
    peers = [i for i in range(visible_gpus()) if i != target.index] if target.is_cuda else []
    p2p_sizes, p2p_too_big = plan_sizes(profile, cap, p2p=True)
    for peer in peers:
        out += [Case(b, "device", n, target.index, peer, max(p2p_sizes)) for n in p2p_sizes for b in P2P_BENCHMARKS]
        out += [Case(b, "device", n, target.index, peer, 0, reduced=why) for n in p2p_too_big for b in P2P_BENCHMARKS]
        out.append(Case("p2p_latency", "device", LATENCY_BYTES, target.index, peer, LATENCY_BYTES))
    if not peers:  # one row each, skipped with the reason
        out += [Case(b, "device", p2p_sizes[-1], target.index) for b in P2P_BENCHMARKS]
        out.append(Case("p2p_latency", "device", LATENCY_BYTES, target.index))
    if target.is_cuda:
        _warn_placement_once(target)
    return out


def skip_reason(target: Target, case: Case) -> str | None:
    if not target.is_cuda:
        return CPU_REASON
    if case.is_p2p and case.peer is None:
        return f"one GPU visible ({target.device}): peer-to-peer copies need two"
    if case.buffer_bytes == 0 and case.reduced:
        return f"{human_bytes(case.nbytes)} copies not measured: {case.reduced} (buffers take {BUFFER_SHARE}x a copy)"
    return None


def describe(case: Case) -> Measurement:
    """The row's identity without allocating anything (skipped / error rows, and the base of ok rows)."""
    latency = case.benchmark == "p2p_latency"
    total = case.benchmark == "bidir_total"
    return Measurement(
        family=FAMILY, benchmark=case.benchmark, provider=PROVIDER, dtype="uint8", case=case.case,
        metric="latency" if latency else "bandwidth", unit="us" if latency else "GB/s",
        scale=1e-6 if latency else 1e9, work=float(case.nbytes * (2 if total else 1)), work_unit="B",
        size_bytes=case.nbytes * (2 if total else 1), fn=lambda: None, check=lambda: None,
    )


def budget_for(case: Case, profile: str) -> timing.Budget:
    if case.nbytes in QUICK_SIZES or case.benchmark == "p2p_latency" or case.nbytes in P2P_QUICK_SIZES:
        return timing.QUICK if profile == "quick" else timing.FULL
    return timing.SWEEP


# ---------------------------------------------------------------- NVML handles, placement, links

def _nv():
    return telemetry.nvml()


def _handle(index: int | None):
    return telemetry.nvml_handle(index)


_PLACEMENT: dict[int, topology.Placement] = {}
_WARNED: set[int] = set()


def placement(target: Target) -> topology.Placement:
    """Where the GPU sits against where this process may run (read once per device)."""
    if target.index not in _PLACEMENT:
        nv, h, bus = _nv(), _handle(target.index), target.identity.get("pci_bus_id", "")
        _PLACEMENT[target.index] = topology.placement(
            topology.gpu_numa_node(nv, h, bus), topology.gpu_local_cpus(nv, h, bus), topology.process_cpus(),
            topology.host_numa_nodes(), str(target.device))
    return _PLACEMENT[target.index]


def _warn_placement_once(target: Target) -> None:
    """One line at the start of the run (cases() is called while the run is planned)."""
    if target.index in _WARNED:
        return
    _WARNED.add(target.index)
    p = placement(target)
    if p.warning:
        print(f"warning: {target.device}: {p.warning}", file=sys.stderr, flush=True)


@dataclass
class LinkClaim:
    figure: str  # spec_figure
    bytes_per_s: float  # per direction
    source: str
    link: str  # "Gen5 x16", "NVLink"


def pcie_claim(entry, gen_max, width_max) -> LinkClaim | None:
    """The PCIe link the card supports: the spec entry's pcie_gen x pcie_lanes, else NVML's maximum."""
    figs = getattr(entry, "figures", {}) or {}
    if "pcie_gen" in figs and "pcie_lanes" in figs:
        gen, lanes = int(figs["pcie_gen"].value), int(figs["pcie_lanes"].value)
        source = "; ".join(dict.fromkeys([figs["pcie_gen"].source, figs["pcie_lanes"].source]))
    else:
        try:
            gen, lanes = int(gen_max), int(width_max)
        except (TypeError, ValueError):
            return None
        source = "NVML: the card's maximum PCIe link (GPU max generation x max width); no spec entry figure"
    try:
        return LinkClaim("pcie_per_direction", specs.pcie_bytes_per_s(gen, lanes), source, f"Gen{gen} x{lanes}")
    except ValueError:
        return None


def pcie_peak(gen, width) -> float | None:
    """Per-direction theoretical of a trained link (NVML's current generation x width)."""
    try:
        return specs.pcie_bytes_per_s(int(gen), int(width))
    except (TypeError, ValueError):
        return None


def nvlink_claim(entry) -> LinkClaim | None:
    per_direction = specs.nvlink_per_direction_bytes_per_s(entry)
    if not per_direction:
        return None
    figs = entry.figures
    fig = figs.get("nvlink_per_direction") or figs.get("nvlink_bidir")
    source = fig.source if fig.key == "nvlink_per_direction" else f"half of nvlink_bidir: {fig.source}"
    return LinkClaim("nvlink_per_direction", per_direction, source, "NVLink")


def nvlink_peak(links: int, compute_capability: str) -> float | None:
    """links x one link's per-direction rate, for the NVLink generation of this compute capability."""
    gen = NVLINK_GENERATION.get(compute_capability or "")
    per_link = specs.nvlink_link_bytes_per_s(gen) if gen else None
    return links * per_link if per_link and links else None


def normalization(value: float | None, claim: LinkClaim | None, derived_bytes_per_s: float | None,
                  directions: int = 1) -> dict[str, object]:
    """spec_* and derived columns in GB/s; `directions` 2 for a both-ways total."""
    out: dict[str, object] = {k: "" for k in specs.NORMALIZE_KEYS if k != "spec_entry"}
    if claim is not None:
        spec = claim.bytes_per_s * directions / 1e9
        figure = claim.figure if directions == 1 else claim.figure.replace("per_direction", "both_directions")
        out.update(spec_figure=figure, spec_value=spec, spec_unit="GB/s", spec_source=claim.source)
        if value is not None:
            out["pct_of_spec"] = 100.0 * value / spec
    if derived_bytes_per_s:
        derived = derived_bytes_per_s * directions / 1e9
        out["derived_peak"] = derived
        if value is not None:
            out["pct_of_derived"] = 100.0 * value / derived
    return out


# ---------------------------------------------------------------- buffers, copies, checks

def _random_bytes(n: int, device, pin: bool = False) -> torch.Tensor:
    """n random bytes (n a multiple of 8), written once so every page is resident."""
    words = torch.empty(max(1, n // 8), dtype=torch.int64, device=device, pin_memory=pin)
    words.random_()
    return words.view(torch.uint8)[:n]


@dataclass
class _HostBuffers:
    key: tuple
    nbytes: int  # what the allocation gave (less than planned when the pinned allocation failed)
    reduced: str  # why it is less
    host_src: torch.Tensor  # H2D source, random
    host_dst: torch.Tensor  # D2H destination
    dev_src: torch.Tensor  # D2H source, random
    dev_dst: torch.Tensor  # H2D destination
    dev_ref: torch.Tensor  # host_src's bytes on the device, so H2D is checked without another transfer


@dataclass
class _PeerBuffers:
    key: tuple
    src: dict[int, torch.Tensor] = field(default_factory=dict)  # device -> random source
    dst: dict[int, torch.Tensor] = field(default_factory=dict)


def _buffers(tuned: dict, key: tuple, make: Callable):
    """The family's buffers, allocated once per (device, kind, size) and freed when the plan moves on."""
    held = tuned.get("transfer.buffers")
    if held is not None and held.key == key:
        return held
    tuned["transfer.buffers"] = None
    del held
    torch.cuda.empty_cache()
    tuned["transfer.buffers"] = make()
    return tuned["transfer.buffers"]


def _host_buffers(target: Target, case: Case, tuned: dict) -> _HostBuffers:
    n, dev, pin = max(case.buffer_bytes, case.nbytes), target.device, case.memory == "pinned"

    def make():
        size, why = n, ""
        while True:  # a real allocation decides: page-locked memory can fail long before MemTotal
            try:
                host_src = _random_bytes(size, "cpu", pin)
                host_dst = torch.zeros(size, dtype=torch.uint8, pin_memory=pin)
                break
            except RuntimeError as e:
                if size // 2 < MIB:
                    raise
                why = why or f"the {case.memory} host allocation of 2 x {human_bytes(size)} failed: {measure.error_message(e)}"
                size //= 2
        return _HostBuffers((str(dev), case.memory, n), size, why, host_src, host_dst, _random_bytes(size, dev),
                            torch.zeros(size, dtype=torch.uint8, device=dev), host_src.to(dev))
    return _buffers(tuned, (str(dev), case.memory, n), make)


def _peer_buffers(case: Case, tuned: dict) -> _PeerBuffers:
    a, b, n = min(case.device, case.peer), max(case.device, case.peer), max(case.buffer_bytes, case.nbytes)

    def make():
        bufs = _PeerBuffers(("p2p", a, b, n))
        for d in (a, b):
            bufs.src[d] = _random_bytes(max(n, 8), torch.device("cuda", d))
            bufs.dst[d] = torch.zeros(max(n, 8), dtype=torch.uint8, device=torch.device("cuda", d))
        return bufs
    return _buffers(tuned, ("p2p", a, b, n), make)


def _sync(devices) -> None:
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
    _sync(devices)  # the zeroing ran on the default stream; the copies run on streams of their own
    issue()
    _sync(devices)
    return compare(pairs)


def _on(stream, fn: Callable, other_side=None) -> Callable[[], None]:
    """Issue `fn` with `stream` current; a peer copy's other device gets `other_side` as its current stream
    (torch barriers a cross-device copy against the destination's current stream, METHOD.md 3)."""
    def issue():
        if other_side is None:
            with torch.cuda.stream(stream):
                fn()
        else:
            with torch.cuda.stream(other_side), torch.cuda.stream(stream):
                fn()
    return issue


# ---------------------------------------------------------------- one timed window, and its row

@dataclass
class Window:
    """What was read around a timed window."""

    telemetry: dict[int, dict]  # device -> Sampler summary
    link: dict[int, tuple]  # device -> (gen, width, readings) of the PCIe link during the window
    replays: dict[int, int | None]  # device -> PCIe replays counted during the window


def observe(devices: list[int], fn: Callable[[], object]):
    """Run fn with telemetry, the PCIe link and the replay counter read on `devices` during it."""
    nv = _nv()
    handles = [_handle(d) for d in devices]
    before = [topology.call(nv, "nvmlDeviceGetPcieReplayCounter", h) if h is not None else None for h in handles]
    samplers = [telemetry.Sampler(d) for d in devices]
    with topology.LinkSampler(nv, handles) as links:
        for s in samplers:
            s.__enter__()
        try:
            result = fn()
        finally:
            for s in samplers:
                s.__exit__(None, None, None)
    after = [topology.call(nv, "nvmlDeviceGetPcieReplayCounter", h) if h is not None else None for h in handles]
    window = Window(
        telemetry={d: s.summary() for d, s in zip(devices, samplers)},
        link={d: links.result(i) for i, d in enumerate(devices)},
        replays={d: (a - b) if isinstance(a, int) and isinstance(b, int) else None
                 for d, a, b in zip(devices, after, before)})
    return result, window


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


def bandwidth_fields(samples_s: list[float], calls: int, timer: str, work: float) -> dict:
    return measure.throughput_fields(timing.Timing(samples_s, timer, calls), work, 1e9)


def latency_fields(samples_s: list[float], calls: int, timer: str) -> dict:
    """value = median seconds per copy, in us; samples, p10 and p90 per copy in us (p10 is the fast end)."""
    us = [t * 1e6 for t in samples_s]
    return {"value": float(np.median(us)), "samples": format_samples(us), "p10": float(np.percentile(us, 10)),
            "p90": float(np.percentile(us, 90)), "time_s": float(np.median(samples_s)), "n_samples": len(us),
            "calls_per_sample": calls, "timer": timer}


def finish_row(target: Target, case: Case, params: dict, fields: dict, window_telemetry: dict,
               link_cols: dict, norm: dict, notes: list[str]) -> dict:
    m = describe(case)
    m.params = params
    row = measure.base_row(m, target)
    row.update(window_telemetry)
    # Only a reading taken while this copy loaded the PCIe link, never the identity's idle one.
    row.update({"pcie_gen_current": "", "pcie_width_current": "", **link_cols})
    row.update(fields)
    row.update(norm)
    others = str(row.get("compute_processes") or "0")  # counted at the window's edges (as measure.run)
    if others.isdigit() and int(others) > 0:
        notes = [*notes, f"disturbed: {others} other process(es) computing on the card during the measurement"]
    row.update(status="ok", message="; ".join(n for n in [case.reduced_note(), measure.spread_note(row), *notes] if n))
    return row


# ---------------------------------------------------------------- host <-> device

def _host_copies(target: Target, case: Case, tuned: dict):
    b = _host_buffers(target, case, tuned)
    n = case.nbytes
    h2d_dst, h2d_src, d2h_dst, d2h_src = b.dev_dst[:n], b.host_src[:n], b.host_dst[:n], b.dev_src[:n]
    return b, (lambda: h2d_dst.copy_(h2d_src, non_blocking=True)), (lambda: d2h_dst.copy_(d2h_src, non_blocking=True))


def _slot_gen(index: int | None):
    """Max PCIe generation of card and slot together (NVML's MaxPcieLinkGeneration), to name a Gen4 slot."""
    h = _handle(index)
    return topology.call(_nv(), "nvmlDeviceGetMaxPcieLinkGeneration", h) if h is not None else None


def _host_params(target: Target, case: Case, direction: str, link: tuple, window: Window, how: str) -> dict:
    gen, width, readings = link
    p = {"direction": direction, "memory": case.memory, "bytes": case.nbytes,
         "bidirectional": case.benchmark.endswith(("_bidir", "_total")), "timing": how,
         "copy": "Tensor.copy_(non_blocking=True): cudaMemcpyAsync on a dedicated stream",
         "link_under_load": topology.link_text(gen, width), "link_readings": readings,
         "link_max": topology.link_text(target.identity.get("pcie_gen_max"), target.identity.get("pcie_width_max")),
         "pcie_replays_during": window.replays.get(target.index)}
    p.update(placement(target).params())
    return p


def _host_one_way(target: Target, case: Case, profile: str, tuned: dict) -> dict:
    b, h2d, d2h = _host_copies(target, case, tuned)
    n, dev = case.nbytes, target.device
    stream = torch.cuda.Stream(dev)
    if case.benchmark == "h2d":
        fn, poison, pairs = h2d, [b.dev_dst[:n]], [(b.dev_dst[:n], b.dev_ref[:n], "h2d")]
    else:
        fn, poison, pairs = d2h, [b.host_dst[:n]], [(b.host_dst[:n], b.dev_src[:n], "d2h")]
    problem = verify(poison, _on(stream, fn), pairs, [dev])
    if problem:
        return measure.status_row(describe(case), target, "wrong", problem)

    def timed():
        with torch.cuda.stream(stream):
            return timing.time_fn(fn, dev, budget_for(case, profile), clock_hz=target.sm_clock_hz)
    result, window = observe([target.index], timed)
    problem = compare(pairs)  # the last timed copy's bytes
    if problem:
        return measure.status_row(describe(case), target, "wrong", "after timing: " + problem)
    link = window.link[target.index]
    cols, notes = link_notes(target.identity, link, window.replays[target.index], _slot_gen(target.index))
    notes += result.notes
    fields = bandwidth_fields(result.samples_s, result.calls_per_sample, result.method, n)
    norm = normalization(fields["value"], pcie_claim(target.spec, target.identity.get("pcie_gen_max"),
                                                     target.identity.get("pcie_width_max")), pcie_peak(link[0], link[1]))
    how = ("one stream, CUDA events, spin-kernel hold" if case.memory == "pinned" else
           "one stream, CUDA events; each pageable copy blocks the host until staged (h2d) or arrived (d2h)")
    if placement(target).warning:
        notes.append(f"NUMA: this process may run outside {target.device}'s NUMA node (see the warning at the start)")
    params = _host_params(target, case, case.benchmark, link, window, how)
    return finish_row(target, case, params, fields, window.telemetry[target.index], cols, norm, notes)


def _host_bidir(target: Target, case: Case, profile: str, tuned: dict) -> dict:
    """Both directions at once, measured once for the three rows (h2d_bidir, d2h_bidir, bidir_total)."""
    key = ("transfer.bidir", target.index, case.memory, case.nbytes)
    if key not in tuned:
        try:
            tuned[key] = _measure_host_bidir(target, case, profile, tuned)
        except Exception as e:  # the three rows share the error
            tuned[key] = ("error", measure.error_message(e))
    found = tuned[key]
    if isinstance(found, tuple):  # (status, message): wrong or error, the same for the three rows
        return measure.status_row(describe(case), target, *found)
    pair, timer, window, how = (found[k] for k in ("pair", "timer", "window", "how"))
    t_h2d, t_d2h, calls = pair.a_s, pair.b_s, pair.calls_per_sample
    n = case.nbytes
    link = window.link[target.index]
    cols, notes = link_notes(target.identity, link, window.replays[target.index], _slot_gen(target.index))
    claim = pcie_claim(target.spec, target.identity.get("pcie_gen_max"), target.identity.get("pcie_width_max"))
    peak = pcie_peak(link[0], link[1])
    overlap = float(np.median([min(a, b) / max(a, b) for a, b in zip(t_h2d, t_d2h)]))
    if case.benchmark == "bidir_total":
        # Both copies start together; the pair is done when the slower one is.
        fields = bandwidth_fields([max(a, b) for a, b in zip(t_h2d, t_d2h)], calls, timer, 2 * n)
        norm = normalization(fields["value"], claim, peak, directions=2)
        direction = "both"
    else:
        samples = t_h2d if case.benchmark == "h2d_bidir" else t_d2h
        fields = bandwidth_fields(samples, calls, timer, n)
        norm = normalization(fields["value"], claim, peak)
        direction = case.benchmark.removesuffix("_bidir")
    notes += pair.notes
    if overlap < 0.9:
        notes.append(f"the two directions overlapped for {overlap:.0%} of the slower one's time")
    if placement(target).warning:
        notes.append(f"NUMA: this process may run outside {target.device}'s NUMA node (see the warning at the start)")
    params = _host_params(target, case, direction, link, window, how)
    params["overlap"] = overlap
    return finish_row(target, case, params, fields, window.telemetry[target.index], cols, norm, notes)


def _measure_host_bidir(target: Target, case: Case, profile: str, tuned: dict):
    b, h2d, d2h = _host_copies(target, case, tuned)
    n, dev = case.nbytes, target.device
    s_h2d, s_d2h = torch.cuda.Stream(dev), torch.cuda.Stream(dev)
    issue_h2d, issue_d2h = _on(s_h2d, h2d), _on(s_d2h, d2h)
    pairs = [(b.dev_dst[:n], b.dev_ref[:n], "h2d"), (b.host_dst[:n], b.dev_src[:n], "d2h")]
    problem = verify([b.dev_dst[:n], b.host_dst[:n]], lambda: (issue_h2d(), issue_d2h()), pairs, [dev])
    if problem:
        return ("wrong", problem)
    if case.memory == "pinned":
        clock = target.sm_clock_hz
        timer_fn = lambda *a: timing.time_pair(*a, clock_hz=clock)  # noqa: E731
        how, timer = "two streams, a two-way event barrier per sample, spin-kernel hold", timing.CUDA_TIMER
    else:
        timer_fn = timing.time_pair_threads
        how, timer = "two streams issued from two host threads, a barrier per sample", "cuda_events"
    pair, window = observe(
        [target.index], lambda: timer_fn(issue_h2d, s_h2d, issue_d2h, s_d2h, budget_for(case, profile)))
    problem = compare(pairs)
    if problem:
        return ("wrong", "after timing: " + problem)
    return {"pair": pair, "timer": timer, "window": window, "how": how}


# ---------------------------------------------------------------- peer to peer

def _pair_info(case: Case, tuned: dict) -> tuple[topology.Pair, dict]:
    """NVML's path and peer capabilities, and torch's peer access, for src -> dst (read once per pair)."""
    key = ("transfer.pair", case.device, case.peer)
    if ("transfer.identity", case.peer) not in tuned:
        tuned[("transfer.identity", case.peer)] = telemetry.device_identity(case.peer)
    if key not in tuned:
        nv = _nv()
        gpus = [topology.read_gpu(nv, _handle(d)) if _handle(d) is not None else topology.Gpu(None)
                for d in (case.device, case.peer)]
        pair = topology.read_pair(nv, gpus, 0, 1) if all(g.handle is not None for g in gpus) else topology.Pair(0, 1, None)
        down = [topology.nvlink_down_message(g.nvlinks_active, g.nvlinks_down) for g in gpus]
        extra = {"peer_access_torch": bool(torch.cuda.can_device_access_peer(case.device, case.peer)),
                 "nvlinks_down": {f"cuda:{d}": g.nvlinks_down for d, g in zip((case.device, case.peer), gpus)},
                 "nvlink_note": "; ".join(f"cuda:{d}: {m}" for d, m in zip((case.device, case.peer), down) if m)}
        tuned[key] = (pair, extra)
    return tuned[key]


def _peer_identity(case: Case, tuned: dict) -> dict:
    return tuned[("transfer.identity", case.peer)]


def _p2p_normalization(target: Target, case: Case, value: float | None, pair: topology.Pair,
                       window: Window, peer_identity: dict, directions: int = 1) -> dict:
    if pair.is_nvlink:
        claim = nvlink_claim(target.spec)
        peak = nvlink_peak(pair.nvlinks, target.identity.get("compute_capability", ""))
    else:  # over PCIe: the slower of the two cards' links
        same_card = peer_identity.get("device_name") == target.identity.get("device_name")
        claims = [c for c in (pcie_claim(target.spec, target.identity.get("pcie_gen_max"), target.identity.get("pcie_width_max")),
                              pcie_claim(target.spec if same_card else None, peer_identity.get("pcie_gen_max"),
                                         peer_identity.get("pcie_width_max"))) if c]
        claim = min(claims, key=lambda c: c.bytes_per_s) if claims else None
        peaks = [p for p in (pcie_peak(*window.link[d][:2]) for d in (case.device, case.peer)) if p]
        peak = min(peaks) if len(peaks) == 2 else None
    return normalization(value, claim, peak, directions)


def _p2p_params(target: Target, case: Case, pair: topology.Pair, extra: dict, window: Window | None, how: str) -> dict:
    cc = target.identity.get("compute_capability", "")
    p = {"src": f"cuda:{case.device}", "dst": f"cuda:{case.peer}", "bytes": case.nbytes,
         "bidirectional": case.benchmark == "p2p_bidir", "timing": how,
         "copy": "Tensor.copy_(non_blocking=True) between devices: cudaMemcpyAsync on the source's stream",
         **pair.params(), **extra, "compute_capability": cc, "nvlink_generation": NVLINK_GENERATION.get(cc),
         **placement(target).params()}
    if window is not None:
        p["link_under_load"] = {f"cuda:{d}": topology.link_text(*window.link[d][:2]) for d in window.link}
        p["pcie_replays_during"] = {f"cuda:{d}": r for d, r in window.replays.items()}
    return p


def _p2p_notes(target: Target, case: Case, pair: topology.Pair, extra: dict, window: Window,
               peer_identity: dict) -> tuple[dict, list[str]]:
    notes = []
    if not extra["peer_access_torch"]:
        notes.append("no peer access (torch): the driver stages the copy through host memory")
    if extra["nvlink_note"]:
        notes.append(extra["nvlink_note"])
    cols: dict = {}
    if not pair.is_nvlink:  # the copy crossed PCIe: the links were under load
        cols, mine = link_notes(target.identity, window.link[case.device], window.replays[case.device],
                                _slot_gen(case.device))
        notes += mine
        _, theirs = link_notes(peer_identity, window.link[case.peer], window.replays[case.peer], _slot_gen(case.peer))
        notes += [f"cuda:{case.peer}: {t}" for t in theirs]
    return cols, notes


def _p2p_one_way(target: Target, case: Case, profile: str, tuned: dict) -> dict:
    pair, extra = _pair_info(case, tuned)
    bufs = _peer_buffers(case, tuned)
    i, j, n = case.device, case.peer, case.nbytes
    src, dst = bufs.src[i][:n], bufs.dst[j][:n]
    s_i, barrier_j = torch.cuda.Stream(torch.device("cuda", i)), torch.cuda.Stream(torch.device("cuda", j))

    def fn():
        dst.copy_(src, non_blocking=True)
    problem = verify([dst], _on(s_i, fn, barrier_j), [(dst, src, f"cuda:{i}->cuda:{j}")], [i, j])
    if problem:
        return measure.status_row(describe(case), target, "wrong", problem)

    def timed():
        with torch.cuda.stream(barrier_j), torch.cuda.stream(s_i):
            return timing.time_fn(fn, target.device, budget_for(case, profile),
                                  clock_hz=target.sm_clock_hz)
    result, window = observe([i, j], timed)
    latency = case.benchmark == "p2p_latency"
    problem = compare([(dst, src, f"cuda:{i}->cuda:{j}")])
    if problem:
        return measure.status_row(describe(case), target, "wrong", "after timing: " + problem)
    how = "one stream on the source, CUDA events, spin-kernel hold"
    params = _p2p_params(target, case, pair, extra, window, how)
    if latency:
        fields = latency_fields(result.samples_s, result.calls_per_sample, result.method)
        params["latency"] = "device time per copy of back-to-back 16-byte copies (torch adds a cross-device event barrier to each)"
        notes = [] if extra["peer_access_torch"] else ["no peer access (torch): the driver stages the copy through host memory"]
        notes += result.notes
        return finish_row(target, case, params, fields, window.telemetry[i], {}, normalization(None, None, None), notes)
    fields = bandwidth_fields(result.samples_s, result.calls_per_sample, result.method, n)
    cols, notes = _p2p_notes(target, case, pair, extra, window, _peer_identity(case, tuned))
    notes += result.notes
    norm = _p2p_normalization(target, case, fields["value"], pair, window, _peer_identity(case, tuned))
    return finish_row(target, case, params, fields, window.telemetry[i], cols, norm, notes)


def _p2p_bidir(target: Target, case: Case, profile: str, tuned: dict) -> dict:
    """i->j while j->i runs, measured once per unordered pair and size for both ordered rows."""
    i, j, n = case.device, case.peer, case.nbytes
    key = ("transfer.p2p_bidir", min(i, j), max(i, j), n)
    if key not in tuned:
        try:
            tuned[key] = _measure_p2p_bidir(target, case, profile, tuned)
        except Exception as e:
            tuned[key] = ("error", measure.error_message(e))
    found = tuned[key]
    if isinstance(found, tuple):  # (status, message)
        return measure.status_row(describe(case), target, *found)
    pair, extra = _pair_info(case, tuned)
    window = found["window"]
    fields = bandwidth_fields(found["times"][(i, j)], found["calls"], timing.CUDA_TIMER, n)
    params = _p2p_params(target, case, pair, extra, window,
                         "two streams (one per source), a two-way event barrier per sample, spin-kernel hold")
    params["overlap"] = found["overlap"]
    cols, notes = _p2p_notes(target, case, pair, extra, window, _peer_identity(case, tuned))
    notes += found["notes"]
    if found["overlap"] < 0.9:
        notes.append(f"the two directions overlapped for {found['overlap']:.0%} of the slower one's time")
    norm = _p2p_normalization(target, case, fields["value"], pair, window, _peer_identity(case, tuned))
    return finish_row(target, case, params, fields, window.telemetry[i], cols, norm, notes)


def _measure_p2p_bidir(target: Target, case: Case, profile: str, tuned: dict):
    bufs = _peer_buffers(case, tuned)
    i, j, n = case.device, case.peer, case.nbytes
    dev_i, dev_j = torch.device("cuda", i), torch.device("cuda", j)
    s_i, s_j = torch.cuda.Stream(dev_i), torch.cuda.Stream(dev_j)
    barrier_i, barrier_j = torch.cuda.Stream(dev_i), torch.cuda.Stream(dev_j)
    src_i, dst_j, src_j, dst_i = bufs.src[i][:n], bufs.dst[j][:n], bufs.src[j][:n], bufs.dst[i][:n]
    issue_ij = _on(s_i, lambda: dst_j.copy_(src_i, non_blocking=True), barrier_j)
    issue_ji = _on(s_j, lambda: dst_i.copy_(src_j, non_blocking=True), barrier_i)
    pairs = [(dst_j, src_i, f"cuda:{i}->cuda:{j}"), (dst_i, src_j, f"cuda:{j}->cuda:{i}")]
    problem = verify([dst_j, dst_i], lambda: (issue_ij(), issue_ji()), pairs, [i, j])
    if problem:
        return ("wrong", problem)
    clock = target.sm_clock_hz
    timed, window = observe([i, j], lambda: timing.time_pair(issue_ij, s_i, issue_ji, s_j, budget_for(case, profile),
                                                             clock_hz=clock))
    t_ij, t_ji, calls = timed.a_s, timed.b_s, timed.calls_per_sample
    problem = compare(pairs)
    if problem:
        return ("wrong", "after timing: " + problem)
    overlap = float(np.median([min(a, b) / max(a, b) for a, b in zip(t_ij, t_ji)]))
    return {"times": {(i, j): t_ij, (j, i): t_ji}, "calls": calls, "window": window, "overlap": overlap,
            "notes": timed.notes}


# ---------------------------------------------------------------- the family's entry points

def run_case(target: Target, case: Case, profile: str, tuned: dict) -> dict[str, object]:
    """Measure one case and return its row; never raises for a failing case."""
    reason = skip_reason(target, case)
    if reason:
        return measure.status_row(describe(case), target, "skipped", reason)
    try:
        if not case.is_p2p:
            bufs = _host_buffers(target, case, tuned)
            if bufs.nbytes < case.nbytes:
                case = replace(case, nbytes=bufs.nbytes, planned=case.nbytes, reduced=bufs.reduced)
        if case.benchmark in ("h2d", "d2h"):
            return _host_one_way(target, case, profile, tuned)
        if case.benchmark in ("h2d_bidir", "d2h_bidir", "bidir_total"):
            return _host_bidir(target, case, profile, tuned)
        if case.benchmark == "p2p_bidir":
            return _p2p_bidir(target, case, profile, tuned)
        return _p2p_one_way(target, case, profile, tuned)
    except Exception as e:  # a failing copy is an `error` row; the run goes on
        tuned.pop("transfer.buffers", None)  # out of memory or a broken copy: the next case starts afresh
        return measure.status_row(describe(case), target, "error", measure.error_message(e))
    finally:
        if _last_of_kind(case):
            tuned.pop("transfer.buffers", None)
            torch.cuda.empty_cache()


def _last_of_kind(case: Case) -> bool:
    """The last row that uses this buffer set: free it (pinned host memory is scarce on some hosts)."""
    if case.is_p2p:
        return case.benchmark == "p2p_latency"
    return case.memory == "pageable" and case.nbytes == case.buffer_bytes and case.benchmark == "bidir_total"


# ---------------------------------------------------------------- printed summary

def summary_lines(rows: list[dict]) -> list[str]:
    """Host-transfer table and nvbandwidth-style P2P matrices from a run's transfer rows; [] when none is ok."""
    from tabulate import tabulate

    ok = [r for r in rows if r.get("family") == FAMILY and r.get("status") == "ok"]
    if not ok:
        return []
    lines: list[str] = []
    host = [r for r in ok if not str(r["benchmark"]).startswith("p2p")]
    if host:
        table = []
        for (device, memory) in dict.fromkeys((_where(r), r["case"].split("-")[0]) for r in host):
            mine = [r for r in host if _where(r) == device and r["case"].startswith(memory + "-")]
            size = max(int(float(r["size_bytes"])) // (2 if r["benchmark"] == "bidir_total" else 1) for r in mine)
            at = {r["benchmark"]: r for r in mine if r["case"] == f"{memory}-{human_bytes(size)}"}
            cells = [f"{float(at[b]['value']):,.1f}" if b in at else "" for b in HOST_BENCHMARKS]
            link = next((f"Gen{r['pcie_gen_current']} x{r['pcie_width_current']}" for r in at.values()
                         if r.get("pcie_gen_current") not in (None, "")), "")
            pct = " / ".join(f"{float(at[b]['pct_of_derived']):.0f}%" for b in ("h2d", "d2h")
                             if b in at and at[b].get("pct_of_derived") not in (None, ""))
            table.append([device, memory, human_bytes(size), *cells, link, pct])
        lines += ["", "host<->device copies, GB/s per direction (bidir_total: both summed); largest size measured",
                  tabulate(table, headers=["device", "memory", "size", *HOST_BENCHMARKS, "link under load",
                                           "h2d / d2h % of link"], disable_numparse=True)]
    p2p = [r for r in ok if str(r["benchmark"]).startswith("p2p")]
    devices = sorted({_where(r) for r in p2p} | {f"cuda:{_peer(r)}" for r in p2p}, key=lambda d: int(d[5:]))
    titles = {"p2p": "one way, GB/s", "p2p_bidir": "both ways at once, GB/s per direction (the reverse copy runs meanwhile)",
              "p2p_latency": f"latency of a {LATENCY_BYTES}-byte copy, us"}
    for bench, title in titles.items():
        mine = [r for r in p2p if r["benchmark"] == bench]
        if not mine:
            continue
        size = max(int(float(r["size_bytes"])) for r in mine)
        cell = {(_where(r), f"cuda:{_peer(r)}"): float(r["value"]) for r in mine if int(float(r["size_bytes"])) == size}
        fmt = "{:,.2f}" if bench == "p2p_latency" else "{:,.1f}"
        table = [[a] + ["-" if a == b else (fmt.format(cell[(a, b)]) if (a, b) in cell else "") for b in devices]
                 for a in devices]
        where = "" if bench == "p2p_latency" else f", {human_bytes(size)}"
        lines += ["", f"p2p {title}{where}: row = source, column = destination",
                  tabulate(table, headers=["", *devices], disable_numparse=True)]
    paths = {}
    for r in p2p:
        p = _params(r)
        paths[(_where(r), f"cuda:{_peer(r)}")] = f"{p.get('path', '?')} {'yes' if p.get('peer_access_torch') else 'no'}"
    if paths:
        table = [[a] + ["X" if a == b else paths.get((a, b), "") for b in devices] for a in devices]
        lines += ["", "p2p path (NVML, as nvidia-smi topo -m) and peer access (torch)",
                  tabulate(table, headers=["", *devices], disable_numparse=True), "legend: " + topology.LEGEND]
    return lines


def _where(r: dict) -> str:
    return f"cuda:{r['device_index']}" if r.get("device_index") not in (None, "") else "cpu"


def _params(r: dict) -> dict:
    import json

    try:
        return json.loads(r.get("params") or "{}")
    except ValueError:
        return {}


def _peer(r: dict) -> str:
    dst = _params(r).get("dst", "")
    if dst:
        return dst.split(":")[-1]
    return r["case"].split("->cuda:")[-1].split("-")[0]  # "cuda:0->cuda:1-256MiB"
