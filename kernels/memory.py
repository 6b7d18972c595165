"""Memory-bandwidth kernels: read, write, copy and triad over contiguous fp32 buffers.

Device code only. Each pattern has a Triton launcher and the torch op it is checked
against (the torch op is also timed as the "framework" number). The design follows
nvbandwidth's copy kernel and BabelStream (https://github.com/NVIDIA/nvbandwidth,
https://github.com/UoB-HPC/BabelStream): 1-D tiles of BLOCK elements, 16-byte vector
accesses, an optional persistent grid-stride loop, and optional cache hints.
"""

from dataclasses import asdict, dataclass

import torch
import triton
import triton.language as tl

from . import limits

# The torch references and the byte accounting live apart so the torch provider runs without Triton.
from .reference import (ARRAYS, BYTES_PER_ELEMENT_MOVED, PATTERNS, torch_copy, torch_read,  # noqa: F401
                               torch_triad, torch_write)



@dataclass(frozen=True)
class Config:
    """One point of the tuning space; block, num_warps, persistent and hints are compile-time."""

    block: int  # elements per program per step
    num_warps: int
    grid_per_sm: int  # 0: one tile per program; k > 0: persistent loop over k * sm_count programs
    hints: bool  # loads evict_first, stores .cs (streaming)

    def label(self) -> str:
        grid = "per-tile" if self.grid_per_sm == 0 else f"{self.grid_per_sm}xSM"
        hints = "on" if self.hints else "off"
        return f"block={self.block} warps={self.num_warps} grid={grid} hints={hints}"

    def as_dict(self) -> dict:
        return asdict(self)


def configs(profile: str) -> list[Config]:
    """Tuning space: "quick" (4 configs, 3 compiles per pattern) or "full" (12 configs, 7 compiles)."""
    # grid_per_sm is a runtime argument, so sweeping it reuses one compiled kernel; only
    # (block, num_warps, persistent, hints) combinations cost a JIT compile (~1 s each).
    # 8192 elements over 8 warps is 32 floats = eight 16-byte loads in flight per thread.
    if profile == "quick":
        return [
            Config(8192, 8, 0, True),
            Config(8192, 8, 4, True),
            Config(8192, 8, 8, True),
            Config(16384, 16, 0, True),
        ]
    if profile == "full":
        one_tile = [Config(b, w, 0, True) for b, w in ((4096, 4), (8192, 8), (16384, 16))]
        # Grid sweep {1,2,4,8} x SM: nvbandwidth's copy kernel launches 1 x SM (kernels.cu).
        persistent = [Config(8192, 8, k, True) for k in (1, 2, 4, 8)]
        # Bigger tiles keep more bytes in flight, which read-only streams need (Little's law).
        # 32768 elements over 16 warps is left out: triad then spills registers (see `need`).
        persistent += [Config(16384, 16, k, True) for k in (1, 2, 4)]
        # Hints are card-dependent, so measure each launch style without them too.
        no_hints = [Config(8192, 8, 0, False), Config(8192, 8, 4, False)]
        return one_tile + persistent + no_hints
    raise ValueError(f"unknown profile {profile!r}; expected 'quick' or 'full'")


# Tiles of values each thread must hold at once, a floor for its registers: Triton issues all
# of a tile's loads before the first use, so a copy holds one tile and triad two (b and c); the
# persistent read keeps its running sum across steps; a one-tile read may sum loads as they
# arrive and a fill stores one splatted value.
_LIVE_TILES = {"read": 0, "write": 0, "copy": 1, "triad": 2}


def need(config: Config, pattern: str) -> limits.Need:
    """Shared memory and a register floor for `pattern` under `config` (kernels/limits.py).

    The read kernel's cross-warp sum takes one fp32 of shared memory per warp; the others none.
    A thread of 8 warps may hold 255 registers, of 16 warps 128: a 32768-element triad holds
    2 x 128 values over 8 warps and spills (2 x 64 over 16 warps fills the 128 exactly, and
    spills with Triton 3.9's ptxas, not 3.6's).
    """
    threads = 32 * config.num_warps
    per_thread = config.block // threads
    tiles = _LIVE_TILES[pattern] + (1 if pattern == "read" and config.grid_per_sm > 0 else 0)
    shared = 4 * config.num_warps if pattern == "read" else 0
    return limits.Need(shared, tiles * per_thread, threads)


def fitting(pattern: str, profile: str, target: limits.Limits) -> tuple[list[Config], dict[str, str]]:
    """The configurations of `profile` that fit `target` for `pattern`, and why each other one does not."""
    return limits.prune(configs(profile), target, lambda c: need(c, pattern))


# ---------------------------------------------------------------------------------------
# Device helpers. The tile start is 64-bit and folded into the base pointer, so buffers
# over 2**31 elements index correctly while the per-element offsets stay 32-bit.
# Vectorised 16-byte access needs each pointer 16-byte aligned and n divisible by 16:
# Triton specialises such arguments and can then prove the mask constant over 4 lanes.
# Otherwise the kernels stay correct but issue 4-byte accesses (seen in sm_90 PTX).


@triton.jit
def _tile(ptr, n, tile, BLOCK: tl.constexpr):
    """Pointers and tail mask for tile number `tile` of a length-n buffer."""
    start = tl.cast(tile, tl.int64) * BLOCK  # tl.cast also takes the plain int the interpreter passes
    offs = tl.max_contiguous(tl.multiple_of(tl.arange(0, BLOCK), BLOCK), BLOCK)
    return ptr + start + offs, offs < n - start


@triton.jit
def _load(ptrs, mask, HINTS: tl.constexpr):
    # Every byte is read once, so ask for evict-first: Triton lowers it to L1::evict_first
    # plus an L2 createpolicy evict_first hint (https://github.com/triton-lang/triton/pull/3470).
    # Not combined with .cg: ptxas rejects "ld.global.cg.L1::evict_first"
    # (https://github.com/triton-lang/triton/pull/10003).
    if HINTS:
        return tl.load(ptrs, mask=mask, other=0.0, eviction_policy="evict_first")
    else:
        return tl.load(ptrs, mask=mask, other=0.0)


@triton.jit
def _store(ptrs, values, mask, HINTS: tl.constexpr):
    # .cs is the streaming store: the data will not be read again soon.
    if HINTS:
        tl.store(ptrs, values, mask=mask, cache_modifier=".cs")
    else:
        tl.store(ptrs, values, mask=mask)


# Every kernel takes PERSISTENT as a constexpr: False compiles a straight-line one-tile
# program (grid = number of tiles); True compiles a grid-stride loop over the tiles.


@triton.jit
def _read_kernel(x, partials, n, BLOCK: tl.constexpr, PERSISTENT: tl.constexpr, HINTS: tl.constexpr):
    # The sum is stored, so the compiler cannot drop a single load.
    pid = tl.program_id(0)
    if PERSISTENT:
        acc = tl.zeros([BLOCK], dtype=tl.float32)
        for tile in range(pid, tl.cdiv(n, BLOCK), tl.num_programs(0)):
            ptrs, mask = _tile(x, n, tile, BLOCK)
            acc += _load(ptrs, mask, HINTS)
    else:
        ptrs, mask = _tile(x, n, pid, BLOCK)
        acc = _load(ptrs, mask, HINTS)
    tl.store(partials + pid, tl.sum(acc, axis=0))


@triton.jit
def _write_kernel(out, value, n, BLOCK: tl.constexpr, PERSISTENT: tl.constexpr, HINTS: tl.constexpr):
    pid = tl.program_id(0)
    values = tl.zeros([BLOCK], dtype=tl.float32) + value
    if PERSISTENT:
        for tile in range(pid, tl.cdiv(n, BLOCK), tl.num_programs(0)):
            ptrs, mask = _tile(out, n, tile, BLOCK)
            _store(ptrs, values, mask, HINTS)
    else:
        ptrs, mask = _tile(out, n, pid, BLOCK)
        _store(ptrs, values, mask, HINTS)


@triton.jit
def _copy_kernel(src, dst, n, BLOCK: tl.constexpr, PERSISTENT: tl.constexpr, HINTS: tl.constexpr):
    pid = tl.program_id(0)
    if PERSISTENT:
        for tile in range(pid, tl.cdiv(n, BLOCK), tl.num_programs(0)):
            src_ptrs, mask = _tile(src, n, tile, BLOCK)
            dst_ptrs, mask = _tile(dst, n, tile, BLOCK)
            _store(dst_ptrs, _load(src_ptrs, mask, HINTS), mask, HINTS)
    else:
        src_ptrs, mask = _tile(src, n, pid, BLOCK)
        dst_ptrs, mask = _tile(dst, n, pid, BLOCK)
        _store(dst_ptrs, _load(src_ptrs, mask, HINTS), mask, HINTS)


@triton.jit
def _triad_tile(a, b, c, scalar, n, tile, BLOCK: tl.constexpr, HINTS: tl.constexpr):
    b_ptrs, mask = _tile(b, n, tile, BLOCK)
    c_ptrs, mask = _tile(c, n, tile, BLOCK)
    a_ptrs, mask = _tile(a, n, tile, BLOCK)
    _store(a_ptrs, _load(b_ptrs, mask, HINTS) + scalar * _load(c_ptrs, mask, HINTS), mask, HINTS)


@triton.jit
def _triad_kernel(a, b, c, scalar, n, BLOCK: tl.constexpr, PERSISTENT: tl.constexpr, HINTS: tl.constexpr):
    pid = tl.program_id(0)
    if PERSISTENT:
        for tile in range(pid, tl.cdiv(n, BLOCK), tl.num_programs(0)):
            _triad_tile(a, b, c, scalar, n, tile, BLOCK, HINTS)
    else:
        _triad_tile(a, b, c, scalar, n, pid, BLOCK, HINTS)


# ---------------------------------------------------------------------------------------
# Launchers


def _grid(n: int, config: Config, sm_count: int) -> int:
    """Programs launched: one per tile, or min(grid_per_sm * sm_count, tiles) when persistent."""
    tiles = triton.cdiv(n, config.block)
    if config.grid_per_sm == 0:
        return tiles
    return min(config.grid_per_sm * sm_count, tiles)


def _check(n: int, *tensors: torch.Tensor) -> None:
    """Raise unless every tensor is contiguous fp32 with n elements."""
    for t in tensors:
        if t.dtype != torch.float32 or not t.is_contiguous() or t.numel() != n:
            raise ValueError(f"expected contiguous float32 of {n} elements, got {t.dtype} {tuple(t.shape)}")


def _launch(kernel, n: int, config: Config, sm_count: int, *args) -> None:
    grid = _grid(n, config, sm_count)
    if grid == 0:  # empty buffer: nothing to move, and a zero grid is not a valid launch
        return
    kernel[(grid,)](
        *args, n, BLOCK=config.block, PERSISTENT=config.grid_per_sm > 0, HINTS=config.hints,
        num_warps=config.num_warps,
    )


def read_partials_len(n: int, config: Config, sm_count: int) -> int:
    """Length of the fp32 `partials` buffer triton_read needs: one slot per program."""
    return _grid(n, config, sm_count)


def triton_read(x: torch.Tensor, partials: torch.Tensor, config: Config, sm_count: int) -> None:
    """Sum x; program i writes its partial sum to partials[i] (the total is partials.sum())."""
    _check(x.numel(), x)
    need = read_partials_len(x.numel(), config, sm_count)
    if partials.dtype != torch.float32 or partials.numel() < need:
        raise ValueError(f"partials must be float32 with at least {need} elements")
    _launch(_read_kernel, x.numel(), config, sm_count, x, partials)


def triton_write(out: torch.Tensor, value: float, config: Config, sm_count: int) -> None:
    """out[:] = value."""
    _check(out.numel(), out)
    _launch(_write_kernel, out.numel(), config, sm_count, out, float(value))


def triton_copy(src: torch.Tensor, dst: torch.Tensor, config: Config, sm_count: int) -> None:
    """dst[:] = src."""
    _check(src.numel(), src, dst)
    _launch(_copy_kernel, src.numel(), config, sm_count, src, dst)


def triton_triad(a: torch.Tensor, b: torch.Tensor, c: torch.Tensor, scalar: float, config: Config,
                 sm_count: int) -> None:
    """a = b + scalar * c (STREAM triad)."""
    _check(a.numel(), a, b, c)
    _launch(_triad_kernel, a.numel(), config, sm_count, a, b, c, float(scalar))


LAUNCH = {"read": triton_read, "write": triton_write, "copy": triton_copy, "triad": triton_triad}
TORCH = {"read": torch_read, "write": torch_write, "copy": torch_copy, "triad": torch_triad}
