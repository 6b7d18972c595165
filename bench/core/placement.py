"""Where a GPU sits on the host: PCI addresses, NUMA nodes, CPU lists, and where this process may run.

Read from sysfs and NVML (through bench/core/nvml.py); nothing here raises for a file or
call the machine lacks. A copy between host memory and a GPU is fastest from the GPU's
own NUMA node (the host memory it reads is local to those CPUs).
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from . import nvml

SYSFS = Path("/sys")  # tests point this at a fake tree


def _int(value) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


# ---------------------------------------------------------------- PCI addresses, CPU lists

_BUS = re.compile(r"^(?:([0-9a-fA-F]+):)?([0-9a-fA-F]{1,2}):([0-9a-fA-F]{1,2})\.([0-7])$")


def bus_key(bus_id: str) -> tuple[int, int, int, int] | str:
    """A PCI address comparable across spellings: NVML's "00000000:19:00.0", sysfs's "0000:19:00.0"."""
    m = _BUS.match((bus_id or "").strip())
    if not m:
        return (bus_id or "").strip().upper()
    return (int(m.group(1) or "0", 16), int(m.group(2), 16), int(m.group(3), 16), int(m.group(4)))


def sysfs_bus_id(bus_id: str) -> str:
    """The directory name under /sys/bus/pci/devices for an NVML bus id."""
    key = bus_key(bus_id)
    if isinstance(key, str):
        return key.lower()
    return f"{key[0]:04x}:{key[1]:02x}:{key[2]:02x}.{key[3]}"


def parse_cpulist(text: str) -> frozenset[int]:
    """The kernel's CPU list ("0-3,8,10-11") as a set of CPU numbers; empty for "" or junk."""
    cpus: set[int] = set()
    for part in (text or "").strip().split(","):
        part = part.strip()
        if not part:
            continue
        lo, _, hi = part.partition("-")
        try:
            cpus.update(range(int(lo), int(hi or lo) + 1))
        except ValueError:
            return frozenset()
    return frozenset(cpus)


def format_cpulist(cpus) -> str:
    """A set of CPU numbers as the kernel writes it: {0,1,2,3,8} -> "0-3,8"."""
    out, run = [], []
    for c in sorted(cpus):
        if run and c == run[-1] + 1:
            run.append(c)
            continue
        if run:
            out.append(f"{run[0]}-{run[-1]}" if len(run) > 1 else str(run[0]))
        run = [c]
    if run:
        out.append(f"{run[0]}-{run[-1]}" if len(run) > 1 else str(run[0]))
    return ",".join(out)


def _mask_cpus(words) -> frozenset[int]:
    """CPUs set in NVML's affinity bitmask (an array of 64-bit words, CPU 0 in bit 0 of word 0)."""
    cpus = set()
    for w, word in enumerate(words or []):
        word = int(word)
        for bit in range(64):
            if word >> bit & 1:
                cpus.add(w * 64 + bit)
    return frozenset(cpus)


def _read(path: Path) -> str | None:
    try:
        return path.read_text().strip()
    except OSError:
        return None


# ---------------------------------------------------------------- host NUMA and the process

def host_numa_nodes(root: Path | None = None) -> dict[int, frozenset[int]]:
    """NUMA node -> its CPUs, from sysfs; {} when the kernel shows no nodes."""
    base = (root or SYSFS) / "devices" / "system" / "node"
    nodes = {}
    for d in sorted(base.glob("node[0-9]*")):
        cpus = _read(d / "cpulist")
        if cpus is not None:
            nodes[int(d.name[4:])] = parse_cpulist(cpus)
    return nodes


def node_memory_bytes(node: int, root: Path | None = None) -> int | None:
    text = _read((root or SYSFS) / "devices" / "system" / "node" / f"node{node}" / "meminfo")
    for line in (text or "").splitlines():
        if "MemTotal:" in line:
            try:
                return int(line.split()[-2]) * 1024  # "Node 0 MemTotal:  263856592 kB"
            except (ValueError, IndexError):
                return None
    return None


def process_cpus() -> frozenset[int]:
    """The CPUs this process may run on (taskset / numactl / cgroup cpusets)."""
    try:
        return frozenset(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not Linux
        return frozenset(range(os.cpu_count() or 1))


def gpu_numa_node(nv, handle, bus_id: str, root: Path | None = None) -> int | None:
    """The NUMA node the GPU hangs off: NVML (recent drivers), else sysfs; None when the host has no NUMA."""
    node = _int(nvml.call("nvmlDeviceGetNumaNodeId", handle, nv=nv)) if handle is not None else None
    if node is None and bus_id:
        text = _read((root or SYSFS) / "bus" / "pci" / "devices" / sysfs_bus_id(bus_id) / "numa_node")
        node = int(text) if text and text.lstrip("-").isdigit() else None
    return node if node is not None and node >= 0 else None  # -1: no NUMA information


def gpu_local_cpus(nv, handle, bus_id: str, root: Path | None = None) -> frozenset[int]:
    """The CPUs close to the GPU (NVML's ideal CPU affinity, else sysfs local_cpulist)."""
    if handle is not None:
        # NVML fills as many 64-bit words as the machine has CPUs; ask for room for 4096.
        words = max(64, ((os.cpu_count() or 1) + 63) // 64)
        cpus = _mask_cpus(nvml.call("nvmlDeviceGetCpuAffinity", handle, words, nv=nv))
        if cpus:
            return cpus
    text = _read((root or SYSFS) / "bus" / "pci" / "devices" / sysfs_bus_id(bus_id) / "local_cpulist") if bus_id else None
    return parse_cpulist(text or "")


@dataclass
class Placement:
    """Where the GPU sits and where this process may run; `warning` when they differ."""

    gpu_numa_node: int | None
    gpu_local_cpus: frozenset[int]
    process_cpus: frozenset[int]
    process_numa_nodes: list[int]
    warning: str = ""

    def params(self) -> dict:
        return {"gpu_numa_node": self.gpu_numa_node, "gpu_local_cpus": format_cpulist(self.gpu_local_cpus),
                "process_cpus": format_cpulist(self.process_cpus), "process_numa_nodes": self.process_numa_nodes,
                "numa_local": not self.warning}


def placement(gpu_node: int | None, gpu_cpus: frozenset[int], proc_cpus: frozenset[int],
              nodes: dict[int, frozenset[int]], device: str = "the GPU") -> Placement:
    """Compare the GPU's NUMA node with the process's CPU affinity.

    Host buffers land on the node of the CPU that first touches them, so a process
    free to run on another socket reaches them across the socket link, a slower and shared
    path than the GPU's own node. Different when
    the process may run on a CPU outside the GPU's node (or, without NUMA information,
    outside the GPU's local CPUs). One NUMA node: never different.
    """
    proc_nodes = sorted(n for n, cpus in nodes.items() if cpus & proc_cpus)
    p = Placement(gpu_node, gpu_cpus, proc_cpus, proc_nodes)
    if len(nodes) <= 1:
        return p
    if gpu_node is not None and gpu_node in nodes:
        outside = proc_nodes != [gpu_node]
        local = nodes[gpu_node]
    elif gpu_cpus:
        outside = not proc_cpus <= gpu_cpus
        local = gpu_cpus
    else:
        return p
    if outside:
        where = f"NUMA node {gpu_node}" if gpu_node is not None else "its local CPUs"
        pin = (f"numactl --cpunodebind={gpu_node} --membind={gpu_node}" if gpu_node is not None
               else f"taskset -c {format_cpulist(local)}")
        p.warning = (f"this process may run on CPUs {format_cpulist(proc_cpus)} (NUMA node(s) "
                     f"{','.join(map(str, proc_nodes)) or '?'}) but {device} is on {where} "
                     f"(CPUs {format_cpulist(local)}): host buffers may sit across the socket link; "
                     f"pin with `{pin} cardbench ...`")
    return p
