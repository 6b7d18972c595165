"""Which devices a run measures, and what each one is."""
from __future__ import annotations

import os
from dataclasses import dataclass, field

import torch

from . import identity, nvml, timing


class DeviceError(ValueError):
    """A --device the machine does not have."""


@dataclass
class Target:
    """One device a run measures: the torch device plus its identity fields."""

    device: torch.device
    index: int | None  # CUDA index; None in CPU mode
    identity: dict[str, str] = field(default_factory=dict)
    spec: object = None  # the bench.core.specs.Entry this card matched, or None (unknown card, CPU)
    host_memory_bytes: int = 0  # the host's MemTotal when the run started (0: unknown)
    lock: object = None  # this run's lock on the device (bench/commands/run_guard.py): it sees other runs

    @property
    def is_cuda(self) -> bool:
        return self.device.type == "cuda"

    @property
    def name(self) -> str:
        return self.identity.get("device_name") or str(self.device)

    @property
    def sm_count(self) -> int:
        return int(self.identity.get("sm_count") or 1)

    @property
    def l2_bytes(self) -> int:
        return int(self.identity.get("l2_cache_bytes") or 0)

    @property
    def sm_clock_hz(self) -> float:
        """The card's maximum SM clock, which sizes the timers' spin kernel (NVML, else torch's property)."""
        return timing.sm_clock_hz(self.identity, nvml.torch_props(self.index) if self.is_cuda else None)

    def free_bytes(self) -> int:
        """Memory a benchmark may allocate now on this device."""
        if self.is_cuda:
            free, _total = torch.cuda.mem_get_info(self.device)
            return int(free)
        return host_available_bytes()


def host_available_bytes() -> int:
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 4 * 2**30  # unknown: assume a small machine


def host_threads() -> int:
    """Threads torch computes with in CPU mode: OMP_NUM_THREADS when set (the usual knob), else
    every CPU this process may run on (its affinity mask, which taskset and cpusets narrow)."""
    text = os.environ.get("OMP_NUM_THREADS", "")
    if text.isdigit() and int(text) > 0:
        return int(text)
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not Linux
        return os.cpu_count() or 1


def rank_threads(ranks: int) -> int:
    """Threads of each of `ranks` local processes sharing the host (the CPU collectives)."""
    return max(1, host_threads() // ranks)


def select(spec: str | None) -> list[Target]:
    """Targets for --device: None/"all" = every visible GPU (or the CPU), "cpu", "cuda:N"."""
    cuda = torch.cuda.is_available()
    count = torch.cuda.device_count() if cuda else 0
    if spec in (None, "", "all"):
        if count == 0:
            return [cpu_target()]
        return [cuda_target(i) for i in range(count)]
    if spec == "cpu":
        return [cpu_target()]
    if spec.startswith("cuda"):
        index_text = spec.partition(":")[2] or "0"
        if not index_text.isdigit():
            raise DeviceError(f"--device {spec}: expected cuda:N with N a GPU index")
        index = int(index_text)
        if index >= count:
            have = f"{count} visible GPU(s): cuda:0..cuda:{count - 1}" if count else "no visible GPU"
            raise DeviceError(f"--device {spec}: this machine has {have}")
        return [cuda_target(index)]
    raise DeviceError(f"--device {spec}: expected cpu, cuda:N or all")


def cpu_target() -> Target:
    return Target(torch.device("cpu"), None, identity.cpu_identity(), host_memory_bytes=_host_total())


def cuda_target(index: int) -> Target:
    return Target(torch.device("cuda", index), index, identity.device_identity(index), host_memory_bytes=_host_total())


def _host_total() -> int:
    return identity.host_memory_total_bytes() or 0
