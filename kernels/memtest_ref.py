"""Memory-test patterns in torch: the host memory test of `cardbench burn` in CPU mode, and the
reference the Triton memory-test kernels (kernels/memtest.py) are checked against.

A buffer holds 32-bit words. Each word's pattern is a function of its word index in the
tested region (the index, not the pointer: the same region gives the same values on every
device), a 32-bit value and a seed:

- CONST: the value itself (walking ones and zeros, moving inversions of 0 / ~0);
- ADDRESS: the word's index folded to 32 bits, xor the value (address-in-address: a word
  written through a wrong address line shows as another word's index);
- RANDOM: a 32-bit hash of the index and the seed, xor the value (a seeded random pattern
  that needs no stored copy to check).

A check counts the wrong words of each block of BLOCK words (one count per Triton program),
and may write the inverse of the expected pattern back (moving inversions: read, check,
write the complement, in ascending or descending block order). No Triton import here: the
CPU path runs without it.
"""
import torch

BLOCK = 4096  # words per block: one count per block, so errors are placed within 16 KiB
CONST, ADDRESS, RANDOM = 0, 1, 2
MASK32 = 0xFFFFFFFF
FOLD = 0x9E3779B1  # golden-ratio multiplier: folds the high half of a 64-bit index into 32 bits
# lowbias32 (https://github.com/skeeto/hash-prospector, "lowbias32"): a 32-bit integer hash
# whose every output bit depends on every input bit.
MIX1, MIX2 = 0x7FEB352D, 0x846CA68B


def signed32(value: int) -> int:
    """The int32 whose bits are the 32-bit `value` (what the kernels and int32 tensors hold)."""
    value &= MASK32
    return value - (1 << 32) if value >= 1 << 31 else value


def _mul32(x: torch.Tensor, k: int) -> torch.Tensor:
    """(x * k) mod 2**32 for x < 2**32, without overflowing int64: k is split in 16-bit halves."""
    lo = x * (k & 0xFFFF)
    hi = ((x * (k >> 16)) & 0xFFFF) << 16
    return (lo + hi) & MASK32


def expected(index: torch.Tensor, mode: int, value: int, seed: int) -> torch.Tensor:
    """The 32-bit pattern (as int64 in [0, 2**32)) of words with these int64 indices."""
    value &= MASK32
    if mode == CONST:
        return torch.full_like(index, value)
    x = (index & MASK32) ^ _mul32(index >> 32, FOLD)
    if mode == RANDOM:
        x = x ^ (seed & MASK32)
        x = x ^ (x >> 16)
        x = _mul32(x, MIX1)
        x = x ^ (x >> 15)
        x = _mul32(x, MIX2)
        x = x ^ (x >> 16)
    elif mode != ADDRESS:
        raise ValueError(f"unknown pattern mode {mode}")
    return x ^ value


def _as_int32(pattern: torch.Tensor) -> torch.Tensor:
    return torch.where(pattern >= 1 << 31, pattern - (1 << 32), pattern).to(torch.int32)


def blocks(n: int) -> int:
    return -(-n // BLOCK)


def fill(buf: torch.Tensor, base: int, mode: int, value: int, seed: int) -> None:
    """Write the pattern into an int32 buffer whose first word has index `base`."""
    if mode == CONST:
        buf.fill_(signed32(value))
        return
    index = torch.arange(base, base + buf.numel(), dtype=torch.int64, device=buf.device)
    buf.copy_(_as_int32(expected(index, mode, value, seed)))


def check(buf: torch.Tensor, counts: torch.Tensor, base: int, mode: int, value: int, seed: int,
          rewrite: bool = False, descending: bool = False) -> None:
    """counts[b] = wrong words in block b; with `rewrite`, then write the expected pattern's complement.

    `descending` is the block order of a moving-inversions pass; torch works on the whole
    buffer at once, so on the host it changes nothing (the Triton kernel walks the blocks
    from the last).
    """
    n = buf.numel()
    if mode == CONST:  # a scalar: no expected buffer to build
        want = signed32(value)
        wrong = buf != want
    else:
        index = torch.arange(base, base + n, dtype=torch.int64, device=buf.device)
        want = _as_int32(expected(index, mode, value, seed))
        wrong = buf != want
    pad = blocks(n) * BLOCK - n
    if pad:
        wrong = torch.cat([wrong, wrong.new_zeros(pad)])
    counts[:blocks(n)] = torch.count_nonzero(wrong.view(-1, BLOCK), dim=1)
    if rewrite:
        if mode == CONST:
            buf.fill_(~want)
        else:
            buf.copy_(torch.bitwise_not(want))
