"""GPU topology, peer access and link health, from NVML (placement on the host: bench/core/placement.py).

Functions take the NVML module as an argument (nvidia-ml-py's `pynvml`, or a fake
in the tests) and never raise for a call the driver or binding lacks: an
unanswered call is None, "" or an empty list. Labels follow `nvidia-smi topo -m`
(X, NV#, PIX, PXB, PHB, NODE, SYS), which users already read, but come from NVML
calls, never from nvidia-smi's text (whose format nvidia-smi(1) says may change between releases).
"""
from __future__ import annotations

import threading
from dataclasses import dataclass, field
from pathlib import Path
from . import nvml
from .normalize import pcie_bytes_per_s
from .placement import bus_key, gpu_local_cpus, gpu_numa_node, sysfs_bus_id  # noqa: F401 (bus_key for callers)

# nvmlGpuTopologyLevel_t -> (nvidia-smi topo label, what the path crosses)
LEVELS: dict[int, tuple[str, str]] = {
    0: ("PIX", "same board"),
    10: ("PIX", "same PCIe switch"),
    20: ("PXB", "several PCIe switches, no host bridge"),
    30: ("PHB", "a PCIe host bridge (the CPU)"),
    40: ("NODE", "PCIe host bridges within one NUMA node"),
    50: ("SYS", "across NUMA nodes (the CPU sockets' interconnect)"),
}
LEGEND = ("X = self, NV# = # NVLink links, PIX = at most one PCIe switch, PXB = several PCIe switches, "
          "PHB = a PCIe host bridge (CPU), NODE = host bridges within a NUMA node, SYS = across NUMA nodes (sockets)")

# nvmlGpuP2PCapsIndex_t. The binding defines NVML_P2P_CAPS_INDEX_READ as the tuple (0,)
# (a stray comma in pynvml.py), which ctypes rejects: use the numbers.
P2P_READ, P2P_WRITE, P2P_NVLINK = 0, 1, 2
P2P_STATUS = {0: "ok", 1: "chipset not supported", 2: "GPU not supported", 3: "IOH topology not supported",
              4: "disabled by regkey", 5: "not supported", 6: "unknown"}
# nvmlNvLinkDeviceType_t
NVLINK_REMOTE = {0: "gpu", 1: "ibmnpu", 2: "switch", 0xFF: "unknown"}
NVLINK_MAX_LINKS = 36  # NVML_NVLINK_MAX_LINKS in nvidia-ml-py 13 (Blackwell: 18 used)


def _int(value) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


# ---------------------------------------------------------------- one GPU

@dataclass
class NvLink:
    link: int
    active: bool
    remote_bus_id: str = ""
    remote_type: str = ""  # gpu / switch / ibmnpu / unknown, "" when NVML does not say
    version: int | None = None  # nvmlNvlinkVersion_t as NVML answers it, raw


@dataclass
class Gpu:
    nvml_index: int | None
    handle: object = field(repr=False, default=None)
    name: str = ""
    uuid: str = ""
    bus_id: str = ""
    numa_node: int | None = None
    local_cpus: frozenset[int] = frozenset()
    pcie_gen_current: int | None = None
    pcie_width_current: int | None = None
    pcie_gen_max: int | None = None  # what the GPU supports
    pcie_gen_max_system: int | None = None  # min(GPU, slot): "a gen-2 device on a gen-1 bus reports 1"
    pcie_width_max: int | None = None
    pcie_replay_count: int | None = None
    nvlinks: list[NvLink] = field(default_factory=list)

    @property
    def nvlinks_active(self) -> int:
        return sum(1 for link in self.nvlinks if link.active)

    @property
    def nvlinks_down(self) -> int:
        return sum(1 for link in self.nvlinks if not link.active)

    def health(self) -> list[str]:
        """Link findings that do not depend on load (the trained link is read under load, see LinkSampler)."""
        out = []
        msg = nvlink_down_message(self.nvlinks_active, self.nvlinks_down)
        if msg:
            out.append(msg)
        if self.pcie_replay_count:
            out.append(f"PCIe replay counter at {self.pcie_replay_count} (link-level retransmissions)")
        return out


def read_nvlinks(nv, handle) -> list[NvLink]:
    """Every NVLink link NVML reports a state for; links a card lacks raise and are left out."""
    links = []
    for i in range(int(getattr(nv, "NVML_NVLINK_MAX_LINKS", NVLINK_MAX_LINKS))):
        state = nvml.call("nvmlDeviceGetNvLinkState", handle, i, nv=nv)
        if state is None:
            continue
        link = NvLink(i, state == 1)
        if link.active:
            pci = nvml.call("nvmlDeviceGetNvLinkRemotePciInfo", handle, i, nv=nv)
            link.remote_bus_id = str(getattr(pci, "busId", "") or "")
            kind = nvml.call("nvmlDeviceGetNvLinkRemoteDeviceType", handle, i, nv=nv)
            link.remote_type = NVLINK_REMOTE.get(kind, "unknown") if kind is not None else ""
            link.version = _int(nvml.call("nvmlDeviceGetNvLinkVersion", handle, i, nv=nv))
        links.append(link)
    return links


def read_gpu(nv, handle, nvml_index: int | None = None, root: Path | None = None) -> Gpu:
    """Identity, placement and links of one GPU from its NVML handle."""
    pci = nvml.call("nvmlDeviceGetPciInfo", handle, nv=nv)
    bus_id = str(getattr(pci, "busId", "") or "")
    gen_gpu = _int(nvml.call("nvmlDeviceGetGpuMaxPcieLinkGeneration", handle, nv=nv))
    gen_sys = _int(nvml.call("nvmlDeviceGetMaxPcieLinkGeneration", handle, nv=nv))
    return Gpu(
        nvml_index=nvml_index, handle=handle, name=str(nvml.call("nvmlDeviceGetName", handle, nv=nv) or ""),
        uuid=str(nvml.call("nvmlDeviceGetUUID", handle, nv=nv) or ""), bus_id=bus_id,
        numa_node=gpu_numa_node(nv, handle, bus_id, root), local_cpus=gpu_local_cpus(nv, handle, bus_id, root),
        pcie_gen_current=_int(nvml.call("nvmlDeviceGetCurrPcieLinkGeneration", handle, nv=nv)),
        pcie_width_current=_int(nvml.call("nvmlDeviceGetCurrPcieLinkWidth", handle, nv=nv)),
        pcie_gen_max=gen_gpu if gen_gpu is not None else gen_sys, pcie_gen_max_system=gen_sys,
        pcie_width_max=_int(nvml.call("nvmlDeviceGetMaxPcieLinkWidth", handle, nv=nv)),
        pcie_replay_count=_int(nvml.call("nvmlDeviceGetPcieReplayCounter", handle, nv=nv)),
        nvlinks=read_nvlinks(nv, handle),
    )


def all_gpus(nv, root: Path | None = None) -> list[Gpu]:
    """Every GPU the driver sees, in NVML (PCI) order; [] without NVML."""
    count = _int(nvml.call("nvmlDeviceGetCount", nv=nv)) or 0
    out = []
    for i in range(count):
        handle = nvml.call("nvmlDeviceGetHandleByIndex", i, nv=nv)
        if handle is not None:
            out.append(read_gpu(nv, handle, i, root))
    return out


# ---------------------------------------------------------------- pairs

@dataclass
class Pair:
    """The path from GPU a to GPU b (indices into the list the pair was built from)."""

    a: int
    b: int
    level: int | None  # nvmlGpuTopologyLevel_t of the PCIe path
    nvlinks: int = 0  # NVLink links usable between the two (direct, or through NVSwitches)
    via_switch: bool = False
    p2p: dict[str, str] = field(default_factory=dict)  # read / write / nvlink -> "ok" or why not

    @property
    def label(self) -> str:
        if self.a == self.b:
            return "X"
        if self.nvlinks:
            return f"NV{self.nvlinks}"
        return LEVELS.get(self.level, ("?", ""))[0] if self.level is not None else "?"

    @property
    def pcie_label(self) -> str:
        return LEVELS.get(self.level, ("?", ""))[0] if self.level is not None else "?"

    @property
    def description(self) -> str:
        if self.a == self.b:
            return "self"
        if self.nvlinks:
            return f"NVLink, {self.nvlinks} links" + (" through NVSwitch" if self.via_switch else "")
        if self.level is None:
            return "unknown (NVML gives no path)"
        return "PCIe: " + LEVELS.get(self.level, ("?", f"level {self.level}"))[1]

    @property
    def is_nvlink(self) -> bool:
        return self.nvlinks > 0

    def params(self) -> dict:
        return {"path": self.label, "path_description": self.description, "pcie_path": self.pcie_label,
                "nvlinks": self.nvlinks, "p2p_nvml": dict(self.p2p)}


def p2p_status(nv, ha, hb) -> dict[str, str]:
    """NVML's peer capabilities a -> b: read, write, nvlink; "" where NVML does not answer."""
    out = {}
    for name, index in (("read", P2P_READ), ("write", P2P_WRITE), ("nvlink", P2P_NVLINK)):
        code = nvml.call("nvmlDeviceGetP2PStatus", ha, hb, index, nv=nv)
        out[name] = P2P_STATUS.get(code, f"status {code}") if code is not None else ""
    return out


def nvlinks_between(a: Gpu, b: Gpu, nvlink_p2p_ok: bool = False) -> tuple[int, bool]:
    """(links, through a switch) between two GPUs.

    Direct links are those whose far end is b's PCI address (a bridged pair, or a
    DGX-1 style mesh). On NVSwitch systems every link ends at a switch and any two
    GPUs share the smaller of their switch link counts (nvidia-smi's NV18 on HGX
    H100). Drivers that do not name the far end's type: links to something that is
    not a GPU of this list count as switch links when NVML says NVLink P2P works.
    """
    mine = [link for link in a.nvlinks if link.active]
    key_b = bus_key(b.bus_id)
    direct = sum(1 for link in mine if bus_key(link.remote_bus_id) == key_b)
    if direct:
        return direct, False

    def switch_links(g: Gpu, guess: bool) -> int:
        return sum(1 for link in g.nvlinks if link.active and (
            link.remote_type == "switch" or (guess and link.remote_type in ("", "unknown"))))
    sa, sb = switch_links(a, False), switch_links(b, False)
    if sa and sb:
        return min(sa, sb), True
    if nvlink_p2p_ok:
        sa, sb = switch_links(a, True), switch_links(b, True)
        if sa and sb:
            return min(sa, sb), True
    return 0, False


def read_pair(nv, gpus: list[Gpu], a: int, b: int) -> Pair:
    if a == b:
        return Pair(a, b, None)
    ga, gb = gpus[a], gpus[b]
    level = _int(nvml.call("nvmlDeviceGetTopologyCommonAncestor", ga.handle, gb.handle, nv=nv))
    p2p = p2p_status(nv, ga.handle, gb.handle)
    links, via_switch = nvlinks_between(ga, gb, p2p.get("nvlink") == "ok")
    return Pair(a, b, level, links, via_switch, p2p)


def pairs(nv, gpus: list[Gpu]) -> dict[tuple[int, int], Pair]:
    """Every ordered pair (a, b), a != b."""
    return {(a, b): read_pair(nv, gpus, a, b) for a in range(len(gpus)) for b in range(len(gpus)) if a != b}


# ---------------------------------------------------------------- link health

def link_text(gen, width) -> str:
    """ "Gen5 x16"; "?" for a part NVML did not give."""
    if gen in (None, "") and width in (None, ""):
        return ""
    return f"Gen{gen if gen not in (None, '') else '?'} x{width if width not in (None, '') else '?'}"


def pcie_below_max(gen_current, width_current, gen_max, width_max, gen_max_system=None) -> str | None:
    """What is wrong when the trained PCIe link is below what the card supports, else None.

    Read it while a transfer runs: an idle link trains down to Gen1 to save power,
    which is not a fault (LinkSampler). A Gen5 card in a Gen4 slot trains at Gen4:
    flagged too, naming the slot (acceptance: wrong slot or riser).
    """
    try:
        gc, wc, gm, wm = int(gen_current), int(width_current), int(gen_max), int(width_max)
    except (TypeError, ValueError):
        return None
    if gc >= gm and wc >= wm:
        return None
    msg = f"PCIe link trained at Gen{gc} x{wc}, the card supports Gen{gm} x{wm}"
    try:
        gs = int(gen_max_system)
    except (TypeError, ValueError):
        gs = None
    if gs is not None and gs < gm:
        msg += f" (the slot or platform allows Gen{gs})"
    return msg


def nvlink_down_message(active: int, down: int) -> str | None:
    """NVLink links down, when the card has links up at all (a PCIe card without a bridge has none up: not a fault)."""
    if active and down:
        return f"NVLink: {down} of {active + down} links down"
    return None


class LinkSampler:
    """Reads the PCIe link of some GPUs in a thread while a transfer runs.

    Idle links train down to a low generation to save power, so a reading taken
    before or long after the load says little. The result per
    GPU is the best reading (highest gen x width bandwidth) taken during the window
    and right after it, with the number of readings: generation and width come from
    the same reading, never an idle reading's width with a loaded one's generation.
    """

    def __init__(self, nv, handles: list, interval_s: float = 0.01):
        self.nv, self.handles, self.interval_s = nv, list(handles), interval_s
        self._readings: list[list[tuple]] = [[] for _ in self.handles]
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self) -> "LinkSampler":
        self._readings = [[] for _ in self.handles]
        self._stop = threading.Event()
        if self.nv is not None and any(h is not None for h in self.handles):
            self._thread = threading.Thread(target=self._run, args=(self._stop, self._readings),
                                            name="cardbench-pcie-link", daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc) -> bool:
        if self._thread is not None:
            self._stop.set()
            self._thread.join(timeout=5)
            self._thread = None
            self._read(self._readings)
        return False

    def _run(self, stop: threading.Event, readings) -> None:
        while not stop.wait(self.interval_s):
            try:
                self._read(readings)
            except Exception:  # nothing may escape the thread
                pass

    def _read(self, readings) -> None:
        for i, h in enumerate(self.handles):
            if h is None:
                continue
            gen = _int(nvml.call("nvmlDeviceGetCurrPcieLinkGeneration", h, nv=self.nv))
            width = _int(nvml.call("nvmlDeviceGetCurrPcieLinkWidth", h, nv=self.nv))
            if gen is not None or width is not None:
                readings[i].append((gen, width))

    def result(self, i: int = 0) -> tuple[int | None, int | None, int]:
        """(generation, width, readings) of the best reading for the i-th handle."""
        rows = list(self._readings[i]) if i < len(self._readings) else []
        if not rows:
            return None, None, 0
        gen, width = max(rows, key=_link_rank)
        return gen, width, len(rows)


def _link_rank(reading: tuple) -> tuple:
    """Order readings by per-direction bandwidth; a reading missing a part ranks by what it has."""
    gen, width = reading
    try:
        return (pcie_bytes_per_s(gen, width), 0, 0)
    except (TypeError, ValueError):
        return (0.0, gen or 0, width or 0)
