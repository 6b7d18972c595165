"""Memory-test kernels: write a 32-bit pattern over device memory, read it back and count the
wrong words per block of BLOCK words (kernels/memtest_ref.py defines the patterns and is the
torch reference these kernels are checked against under TRITON_INTERPRET=1).

Device code only. One program per block: its words' indices are 64-bit (regions far over
2**31 words), the pattern is computed from the index, so checking needs no second copy of
the data. A check may write the complement of the expected pattern back, walking the blocks
ascending or descending: the moving-inversions test of memtest86
(https://www.memtest.org/ , "Moving inversions") and cuda_memtest
(https://github.com/ComputationalRadiationPhysics/cuda_memtest, `move_inv`).
"""
import torch
import triton
import triton.language as tl

from .memtest_ref import ADDRESS, BLOCK, CONST, FOLD, MIX1, MIX2, RANDOM, blocks, signed32  # noqa: F401

NUM_WARPS = 8  # 4096 words over 256 threads: four 16-byte accesses per thread


@triton.jit
def _pattern(index, MODE: tl.constexpr, value, seed):
    """The 32-bit pattern of words with these int64 indices (memtest_ref.expected)."""
    value = value.to(tl.uint32, bitcast=True)
    if MODE == 0:  # CONST
        x = tl.zeros(index.shape, dtype=tl.uint32) + value
    else:
        lo = (index & 0xFFFFFFFF).to(tl.uint32)
        hi = (index >> 32).to(tl.uint32)
        x = lo ^ (hi * 0x9E3779B1)
        if MODE == 2:  # RANDOM: lowbias32 of the folded index and the seed
            x = x ^ seed.to(tl.uint32, bitcast=True)
            x = x ^ (x >> 16)
            x = x * 0x7FEB352D
            x = x ^ (x >> 15)
            x = x * 0x846CA68B
            x = x ^ (x >> 16)
        x = x ^ value
    return x


@triton.jit(do_not_specialize=["value", "seed"])
def _fill_kernel(buf, n, base, value, seed, MODE: tl.constexpr, BLOCK: tl.constexpr):
    start = tl.cast(tl.program_id(0), tl.int64) * BLOCK
    offs = tl.arange(0, BLOCK)
    mask = offs < n - start
    x = _pattern(base + start + offs, MODE, value, seed)
    tl.store(buf + start + offs, x.to(tl.int32, bitcast=True), mask=mask)


@triton.jit(do_not_specialize=["value", "seed"])
def _check_kernel(buf, counts, n, base, value, seed, MODE: tl.constexpr, REWRITE: tl.constexpr,
                  DESCENDING: tl.constexpr, BLOCK: tl.constexpr):
    block = tl.program_id(0)
    if DESCENDING:
        block = tl.num_programs(0) - 1 - block
    start = tl.cast(block, tl.int64) * BLOCK
    offs = tl.arange(0, BLOCK)
    mask = offs < n - start
    got = tl.load(buf + start + offs, mask=mask, other=0).to(tl.uint32, bitcast=True)
    want = _pattern(base + start + offs, MODE, value, seed)
    wrong = (got != want) & mask
    tl.store(counts + block, tl.sum(wrong.to(tl.int32), axis=0))
    if REWRITE:
        tl.store(buf + start + offs, (~want).to(tl.int32, bitcast=True), mask=mask)


def _words(buf: torch.Tensor) -> int:
    if buf.dtype != torch.int32 or not buf.is_contiguous():
        raise ValueError(f"expected a contiguous int32 buffer, got {buf.dtype} {tuple(buf.shape)}")
    return buf.numel()


def fill(buf: torch.Tensor, base: int, mode: int, value: int, seed: int) -> None:
    """Write the pattern into `buf`, whose first word has index `base` (memtest_ref.fill)."""
    n = _words(buf)
    if n:
        _fill_kernel[(blocks(n),)](buf, n, base, signed32(value), signed32(seed), MODE=mode, BLOCK=BLOCK,
                                   num_warps=NUM_WARPS)


def check(buf: torch.Tensor, counts: torch.Tensor, base: int, mode: int, value: int, seed: int,
          rewrite: bool = False, descending: bool = False) -> None:
    """counts[b] = wrong words of block b; with `rewrite`, write the complement back (memtest_ref.check)."""
    n = _words(buf)
    if counts.dtype != torch.int32 or counts.numel() < blocks(n):
        raise ValueError(f"counts must be int32 with at least {blocks(n)} elements")
    if n:
        _check_kernel[(blocks(n),)](buf, counts, n, base, signed32(value), signed32(seed), MODE=mode,
                                    REWRITE=rewrite, DESCENDING=descending, BLOCK=BLOCK, num_warps=NUM_WARPS)
