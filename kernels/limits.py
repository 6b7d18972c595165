"""What a kernel configuration may use on a target, and the tuning space pruned to what fits.

Device facts only: no timing, no I/O. Triton raises OutOfResources at the first launch of a
kernel whose shared memory exceeds the device's opt-in maximum per block, after paying its
compile; a kernel that needs more registers than a thread may hold compiles and runs, but
spills to local memory. Both are known before compiling from the configuration and the
target, so the tuners drop such configurations first and say why.

Limits come from the device at run time (torch's `shared_memory_per_block_optin`, where this
torch has it), else from the table below, keyed by compute capability, for targets built
offline. Source of the table: CUDA C++ Programming Guide, "Technical Specifications per
Compute Capability", https://docs.nvidia.com/cuda/cuda-c-programming-guide/#features-and-technical-specifications
(maximum shared memory per thread block; 64K 32-bit registers per thread block; 255
registers per thread).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterable, TypeVar

REGS_PER_BLOCK = 65536
REGS_PER_THREAD = 255

# Maximum shared memory per thread block (opt-in), bytes: 163 KB, 99 KB, 227 KB.
SHARED_PER_BLOCK = {
    (8, 0): 163 * 1024,  # A100
    (8, 6): 99 * 1024,  # RTX 30, A10, A40
    (8, 9): 99 * 1024,  # RTX 40, L4, L40
    (9, 0): 227 * 1024,  # H100, H200
    (10, 0): 227 * 1024,  # B200, GB200
    (12, 0): 99 * 1024,  # RTX 50, RTX PRO 6000 Blackwell
}
TABLE_SOURCE = "CUDA C++ Programming Guide, Technical Specifications per Compute Capability"

C = TypeVar("C")


@dataclass(frozen=True)
class Limits:
    capability: tuple[int, int]
    shared_per_block: int | None  # bytes; None: unknown (nothing is pruned for shared memory)
    source: str  # where shared_per_block came from
    regs_per_thread: int = REGS_PER_THREAD
    regs_per_block: int = REGS_PER_BLOCK

    def regs_for(self, threads: int) -> int:
        """Registers each of `threads` threads may hold before the compiler must spill."""
        return min(self.regs_per_thread, self.regs_per_block // threads)


@dataclass(frozen=True)
class Need:
    """What one configuration needs: shared memory as the compiler allocates it, and a floor for
    registers per thread: the values that are live at once in the code Triton generates."""

    shared_bytes: int
    regs_per_thread: int
    threads: int


def offline(capability: tuple[int, int]) -> Limits:
    """Limits of a compute capability from the table (for targets compiled without the card)."""
    shared = SHARED_PER_BLOCK.get(tuple(capability))
    return Limits(tuple(capability), shared, TABLE_SOURCE if shared else "unknown compute capability")


def from_properties(props) -> Limits:
    """Limits of a device from torch.cuda.get_device_properties; the table where torch lacks the field."""
    cc = (int(props.major), int(props.minor))
    shared = getattr(props, "shared_memory_per_block_optin", None)  # absent in older torch and on ROCm
    if not shared:
        return offline(cc)
    return Limits(cc, int(shared), "torch.cuda.get_device_properties: shared_memory_per_block_optin")


def for_device(device, capability: tuple[int, int] | None = None) -> Limits:
    """The device's own limits when CUDA can be asked, else the table for `capability`."""
    try:
        import torch

        if torch.cuda.is_available():
            return from_properties(torch.cuda.get_device_properties(device))
    except (RuntimeError, AssertionError, ValueError):  # no such device: fall back to the table
        pass
    if capability is None:
        raise ValueError(f"no CUDA device {device} to ask, and no compute capability given")
    return offline(capability)


def parse_capability(text: str) -> tuple[int, int] | None:
    """'9.0' -> (9, 0); None for anything else."""
    major, _, minor = str(text).partition(".")
    return (int(major), int(minor)) if major.isdigit() and minor.isdigit() else None


def why_not(need: Need, limits: Limits) -> str | None:
    """Why a configuration cannot run well on `limits`, or None when it fits."""
    if limits.shared_per_block is not None and need.shared_bytes > limits.shared_per_block:
        return (f"needs {need.shared_bytes} B of shared memory, more than the {limits.shared_per_block} B per "
                f"block of compute capability {limits.capability[0]}.{limits.capability[1]}")
    regs = limits.regs_for(need.threads)
    if need.regs_per_thread > regs:
        return (f"holds {need.regs_per_thread} live values per thread, more than the {regs} registers that "
                f"each of {need.threads} threads may have: it would spill to local memory")
    return None


def prune(configs: Iterable[C], limits: Limits, need: Callable[[C], Need]) -> tuple[list[C], dict[str, str]]:
    """(configurations that fit, {label: reason} for each one dropped), in the given order."""
    kept, dropped = [], {}
    for config in configs:
        reason = why_not(need(config), limits)
        if reason is None:
            kept.append(config)
        else:
            dropped[config.label()] = reason
    return kept, dropped
