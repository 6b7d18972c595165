"""GPU<->GPU peer copies of the transfer family: one way, both ways at once, and the latency of a 16-byte copy.

A row carries what normalization needs to compare it with the link again later
(bench/core/normalize.py): NVML's path and link count between the pair, the compute
capability (NVLink generation), the peer card's PCIe maximum and both links as NVML
read them during the copy.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from ..core import identity, nvml, timing, timing_multi, topology
from ..core.devices import Target
from ..core.harness import Status, Timed, error_message
from ..core.normalize import NVLINK_GENERATION
from ..core.window import Window, observe
from .transfer import Copy, State, budget_for, placement
from .transfer_host import compare, hold_buffers, link_notes, on_stream, random_bytes, slot_gen, verify, window_columns

NO_PEER_ACCESS = "no peer access (torch): the driver stages the copy through host memory"


@dataclass
class PeerBuffers:
    key: tuple
    src: dict[int, torch.Tensor] = field(default_factory=dict)  # device -> random source
    dst: dict[int, torch.Tensor] = field(default_factory=dict)


def _buffers(copy: Copy, state: State) -> PeerBuffers:
    a, b, n = min(copy.device, copy.peer), max(copy.device, copy.peer), max(copy.buffer_bytes, copy.nbytes)

    def make():
        bufs = PeerBuffers(("p2p", a, b, n))
        for d in (a, b):
            bufs.src[d] = random_bytes(max(n, 8), torch.device("cuda", d))
            bufs.dst[d] = torch.zeros(max(n, 8), dtype=torch.uint8, device=torch.device("cuda", d))
        return bufs
    return hold_buffers(state, ("p2p", a, b, n), make)


def _pair_info(copy: Copy, state: State) -> tuple[topology.Pair, dict]:
    """NVML's path and peer capabilities, and torch's peer access, for src -> dst (read once per pair)."""
    key = (copy.device, copy.peer)
    if copy.peer not in state.identities:
        state.identities[copy.peer] = identity.device_identity(copy.peer)
    if key not in state.pairs:
        nv = nvml.module()
        gpus = [topology.read_gpu(nv, nvml.handle(d)) if nvml.handle(d) is not None else topology.Gpu(None)
                for d in key]
        both = all(g.handle is not None for g in gpus)
        pair = topology.read_pair(nv, gpus, 0, 1) if both else topology.Pair(0, 1, None)
        down = [topology.nvlink_down_message(g.nvlinks_active, g.nvlinks_down) for g in gpus]
        extra = {"peer_access_torch": bool(torch.cuda.can_device_access_peer(copy.device, copy.peer)),
                 "nvlinks_down": {f"cuda:{d}": g.nvlinks_down for d, g in zip(key, gpus)},
                 "nvlink_note": "; ".join(f"cuda:{d}: {m}" for d, m in zip(key, down) if m)}
        state.pairs[key] = (pair, extra)
    return state.pairs[key]


def _params(target: Target, copy: Copy, pair: topology.Pair, extra: dict, window: Window, how: str,
            state: State) -> dict:
    cc = target.identity.get("compute_capability", "")
    peer = state.identities.get(copy.peer, {})
    p = {"src": f"cuda:{copy.device}", "dst": f"cuda:{copy.peer}", "bytes": copy.nbytes,
         "bidirectional": copy.benchmark == "p2p_bidir", "timing": how,
         "copy": "Tensor.copy_(non_blocking=True) between devices: cudaMemcpyAsync on the source's stream",
         **pair.params(), **extra, "compute_capability": cc, "nvlink_generation": NVLINK_GENERATION.get(cc),
         "peer": {k: peer.get(k, "") for k in ("device_name", "pcie_gen_max", "pcie_width_max")},
         **placement(target, state).params()}
    p["link_under_load"] = {f"cuda:{d}": topology.link_text(*window.link[d][:2]) for d in window.link}
    p["links_under_load"] = {f"cuda:{d}": list(window.link[d][:2]) for d in window.link}
    p["pcie_replays_during"] = {f"cuda:{d}": r for d, r in window.replays.items()}
    return p


def _notes(target: Target, copy: Copy, pair: topology.Pair, extra: dict, window: Window,
           state: State) -> tuple[dict, list[str]]:
    notes = [] if extra["peer_access_torch"] else [NO_PEER_ACCESS]
    if extra["nvlink_note"]:
        notes.append(extra["nvlink_note"])
    cols: dict = {}
    if not pair.is_nvlink:  # the copy crossed PCIe: the links were under load
        cols, mine = link_notes(target.identity, window.link[copy.device], window.replays[copy.device],
                                slot_gen(copy.device))
        notes += mine
        _, theirs = link_notes(state.identities[copy.peer], window.link[copy.peer], window.replays[copy.peer],
                               slot_gen(copy.peer))
        notes += [f"cuda:{copy.peer}: {t}" for t in theirs]
    return cols, notes


def one_way(target: Target, copy: Copy, state: State) -> Timed | Status:
    pair, extra = _pair_info(copy, state)
    bufs = _buffers(copy, state)
    i, j, n = copy.device, copy.peer, copy.nbytes
    src, dst = bufs.src[i][:n], bufs.dst[j][:n]
    s_i, barrier_j = torch.cuda.Stream(torch.device("cuda", i)), torch.cuda.Stream(torch.device("cuda", j))

    def fn():
        dst.copy_(src, non_blocking=True)
    problem = verify([dst], on_stream(s_i, fn, barrier_j), [(dst, src, f"cuda:{i}->cuda:{j}")], [i, j])
    if problem:
        return Status("wrong", problem)

    def timed():
        with torch.cuda.stream(barrier_j), torch.cuda.stream(s_i):
            return timing.time_fn(fn, target.device, budget_for(copy, state.profile), clock_hz=target.sm_clock_hz)
    result, window = observe([i, j], timed)
    problem = compare([(dst, src, f"cuda:{i}->cuda:{j}")])
    if problem:
        return Status("wrong", "after timing: " + problem)
    params = _params(target, copy, pair, extra, window, "one stream on the source, CUDA events, spin-kernel hold", state)
    if copy.benchmark == "p2p_latency":
        params["latency"] = ("device time per copy of back-to-back 16-byte copies "
                             "(torch adds a cross-device event barrier to each)")
        notes = [] if extra["peer_access_torch"] else [NO_PEER_ACCESS]
        return Timed(result, params, window_columns(window.telemetry[i], {}), notes)
    cols, notes = _notes(target, copy, pair, extra, window, state)
    return Timed(result, params, window_columns(window.telemetry[i], cols), notes)


def both_ways(target: Target, copy: Copy, state: State) -> Timed | Status:
    """i->j while j->i runs, measured once per unordered pair and size for both ordered rows."""
    i, j, n = copy.device, copy.peer, copy.nbytes
    key = ("p2p_bidir", min(i, j), max(i, j), n)
    if key not in state.shared:
        try:
            state.shared[key] = _measure_both_ways(target, copy, state)
        except Exception as e:
            state.shared[key] = Status("error", error_message(e))
    found = state.shared[key]
    if isinstance(found, Status):
        return Status(found.status, found.message)
    pair, extra = _pair_info(copy, state)
    window = found["window"]
    how = "two streams (one per source), a two-way event barrier per sample, spin-kernel hold"
    params = _params(target, copy, pair, extra, window, how, state)
    params["overlap"] = found["overlap"]
    cols, notes = _notes(target, copy, pair, extra, window, state)
    notes += found["notes"]
    if found["overlap"] < 0.9:
        notes.append(f"the two directions overlapped for {found['overlap']:.0%} of the slower one's time")
    result = timing.Timing(found["times"][(i, j)], timing.CUDA_TIMER, found["calls"])
    return Timed(result, params, window_columns(window.telemetry[i], cols), notes)


def _measure_both_ways(target: Target, copy: Copy, state: State):
    bufs = _buffers(copy, state)
    i, j, n = copy.device, copy.peer, copy.nbytes
    dev_i, dev_j = torch.device("cuda", i), torch.device("cuda", j)
    s_i, s_j = torch.cuda.Stream(dev_i), torch.cuda.Stream(dev_j)
    barrier_i, barrier_j = torch.cuda.Stream(dev_i), torch.cuda.Stream(dev_j)
    src_i, dst_j, src_j, dst_i = bufs.src[i][:n], bufs.dst[j][:n], bufs.src[j][:n], bufs.dst[i][:n]
    issue_ij = on_stream(s_i, lambda: dst_j.copy_(src_i, non_blocking=True), barrier_j)
    issue_ji = on_stream(s_j, lambda: dst_i.copy_(src_j, non_blocking=True), barrier_i)
    pairs = [(dst_j, src_i, f"cuda:{i}->cuda:{j}"), (dst_i, src_j, f"cuda:{j}->cuda:{i}")]
    problem = verify([dst_j, dst_i], lambda: (issue_ij(), issue_ji()), pairs, [i, j])
    if problem:
        return Status("wrong", problem)
    budget = budget_for(copy, state.profile)
    timed, window = observe([i, j], lambda: timing_multi.time_pair(issue_ij, s_i, issue_ji, s_j, budget,
                                                             clock_hz=target.sm_clock_hz))
    problem = compare(pairs)
    if problem:
        return Status("wrong", "after timing: " + problem)
    overlap = float(np.median([min(a, b) / max(a, b) for a, b in zip(timed.a_s, timed.b_s)]))
    return {"times": {(i, j): timed.a_s, (j, i): timed.b_s}, "calls": timed.calls_per_sample, "window": window,
            "overlap": overlap, "notes": timed.notes}
