"""The memory test of `cardbench burn`: pattern tests over the free device memory, every word checked,
errors counted with their address ranges.

The region is plain device memory (torch.empty: cudaMalloc through torch's allocator, never
managed memory, which the driver could move to the host) in chunks of CHUNK_BYTES, as much of
the free memory as can be had less a reserve for the kernels' own needs; under MIN_COVERAGE of
it the test is not a test of the memory, and says so (DCGM's memtest passed after a failed
allocation: https://github.com/NVIDIA/DCGM/issues/284). Each pattern is written over every
chunk before any chunk is read back, so a word keeps its value while the rest is written:

- walking ones and zeros: each of the 32 bits alone set (cleared) in every word, stuck and
  coupled bits;
- random: a seeded 32-bit hash of each word's index, then its complement;
- address: each word holds its own index, then the complement (address-line faults);
- moving inversions (memtest86): a pattern, then block by block ascending: check, write its
  complement; descending: check, write the pattern back; a last check. Once with 0 / ~0,
  once with the random pattern.

The pattern functions and the device kernels are kernels/memtest_ref.py (torch: the host test)
and kernels/memtest.py (Triton: the GPU test).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

from ..kernels.memtest_ref import ADDRESS, BLOCK, CONST, RANDOM, blocks

PATTERNS = ("walking-ones", "walking-zeros", "random", "address", "moving-inversions")
MIN_COVERAGE = 0.90
CHUNK_BYTES = 2**30
# Left free for the kernels, the counts and torch's small allocations while the test runs.
RESERVE_MIN_BYTES, RESERVE_SHARE = 512 * 2**20, 0.02
HOST_BYTES, HOST_CHUNK_BYTES = 2**20, 2**18  # CPU mode: a small host test, not the host's memory
PROBE_BYTES = {"cuda": 256 * 2**20, "cpu": 2**16}
PLANTED_WORD, PLANTED_BIT = 12345, 3  # CARDBENCH_INJECT_FAULT=memtest: one wrong word in the first chunk
MAX_RANGES = 16


@dataclass(frozen=True)
class Step:
    pattern: str
    kind: str  # "fill" or "check"
    mode: int  # CONST, ADDRESS or RANDOM (kernels/memtest_ref.py)
    value: int
    rewrite: bool = False  # check, then write the complement of the expected pattern
    descending: bool = False


def steps(seed: int) -> list[Step]:
    """Every pass of the test, in order."""
    out: list[Step] = []
    for pattern, invert in (("walking-ones", 0), ("walking-zeros", 0xFFFFFFFF)):
        for bit in range(32):
            value = (1 << bit) ^ invert
            out += [Step(pattern, "fill", CONST, value), Step(pattern, "check", CONST, value)]
    for pattern, mode in (("random", RANDOM), ("address", ADDRESS)):
        for value in (0, 0xFFFFFFFF):
            out += [Step(pattern, "fill", mode, value), Step(pattern, "check", mode, value)]
    for mode in (CONST, RANDOM):
        out += [Step("moving-inversions", "fill", mode, 0),
                Step("moving-inversions", "check", mode, 0, rewrite=True),
                Step("moving-inversions", "check", mode, 0xFFFFFFFF, rewrite=True, descending=True),
                Step("moving-inversions", "check", mode, 0)]
    return out


def step_bytes(step: Step, words: int) -> int:
    """Bytes a pass moves: a fill writes every word, a check reads it, a rewriting check does both."""
    return 4 * words * (2 if step.rewrite else 1)


@dataclass
class Region:
    """The memory under test: chunks of int32 words, each with its first word's index."""

    chunks: list = field(default_factory=list)
    bases: list[int] = field(default_factory=list)
    counts: list = field(default_factory=list)  # one int32 count per block of each chunk
    free_bytes: int = 0  # free when the test began
    wanted_bytes: int = 0
    failure: str = ""  # why the region is smaller than wanted

    @property
    def bytes(self) -> int:
        return 4 * sum(c.numel() for c in self.chunks)

    @property
    def coverage(self) -> float:
        return self.bytes / self.free_bytes if self.free_bytes else 0.0


def allocate(device: torch.device, free_bytes: int, wanted_bytes: int, chunk_bytes: int) -> Region:
    """As many chunks as fit, up to `wanted_bytes`; an allocation that fails ends the region there."""
    region = Region(free_bytes=free_bytes, wanted_bytes=wanted_bytes)
    step = BLOCK * 4
    while region.bytes < wanted_bytes:
        size = min(chunk_bytes, wanted_bytes - region.bytes) // step * step
        if size <= 0:
            break
        try:
            region.counts.append(torch.empty(blocks(size // 4), dtype=torch.int32, device=device))
            region.chunks.append(torch.empty(size // 4, dtype=torch.int32, device=device))
        except (RuntimeError, MemoryError) as e:  # torch's OutOfMemoryError is a RuntimeError
            region.counts = region.counts[:len(region.chunks)]
            region.failure = f"allocation of {size / 2**20:,.0f} MiB failed after {region.bytes / 2**30:,.2f} GiB: " \
                             + " ".join(str(e).split())[:200]
            break
        region.bases.append(sum(c.numel() for c in region.chunks[:-1]))
    return region


def wanted(free_bytes: int) -> int:
    """The free memory less the reserve."""
    return max(0, free_bytes - max(RESERVE_MIN_BYTES, int(RESERVE_SHARE * free_bytes)))


@dataclass
class Result:
    passes: list[tuple[int, float]] = field(default_factory=list)  # (bytes, seconds) of every pass
    patterns: dict[str, dict] = field(default_factory=dict)  # name -> errors, seconds, bytes
    ranges: list[dict] = field(default_factory=list)  # the first MAX_RANGES error ranges
    errors: int = 0
    stopped: str = ""

    @property
    def seconds(self) -> float:
        return sum(s for _, s in self.passes)

    @property
    def bytes_moved(self) -> int:
        return sum(b for b, _ in self.passes)


def run(region: Region, ops, seed: int, clock, progress=lambda label: None, stop=lambda: "",
        plant: bool = False) -> Result:
    """Every step over every chunk; `ops` is kernels.memtest (GPU) or kernels.memtest_ref (host)."""
    out = Result(patterns={p: {"errors": 0, "seconds": 0.0, "bytes": 0} for p in PATTERNS})
    words = sum(c.numel() for c in region.chunks)
    plan = steps(seed)
    for index, step in enumerate(plan):
        out.stopped = stop()
        if out.stopped:
            break
        progress(f"memtest {step.pattern} {step.kind} ({index + 1}/{len(plan)})")
        start, end = clock.event(), clock.event()
        start.record()
        for chunk, base, counts in zip(region.chunks, region.bases, region.counts):
            if step.kind == "fill":
                ops.fill(chunk, base, step.mode, step.value, seed)
            else:
                ops.check(chunk, counts, base, step.mode, step.value, seed, step.rewrite, step.descending)
        end.record()
        end.synchronize()
        seconds = start.elapsed_time(end) / 1e3
        moved = step_bytes(step, words)
        out.passes.append((moved, seconds))
        summary = out.patterns[step.pattern]
        summary["seconds"] += seconds
        summary["bytes"] += moved
        if plant and index == 0 and region.chunks:
            region.chunks[0][PLANTED_WORD % region.chunks[0].numel()].bitwise_xor_(1 << PLANTED_BIT)
        if step.kind == "check":
            found = _errors(region, step)
            summary["errors"] += sum(r["words"] for r in found)
            out.errors += sum(r["words"] for r in found)
            out.ranges += found[:MAX_RANGES - len(out.ranges)]
    return out


def _errors(region: Region, step: Step) -> list[dict]:
    """The error ranges of the check just made: runs of blocks with wrong words, per chunk."""
    totals = torch.stack([c[:blocks(ch.numel())].sum() for c, ch in zip(region.counts, region.chunks)]).tolist() \
        if region.chunks else []
    found = []
    for k, total in enumerate(totals):
        if not total:
            continue
        counts = region.counts[k][:blocks(region.chunks[k].numel())]
        bad = torch.nonzero(counts).flatten()
        runs: list[list[int]] = []  # [first block, last block, wrong words] of adjacent blocks
        for block, words in zip(bad.tolist(), counts[bad].tolist()):
            if runs and runs[-1][1] == block - 1:
                runs[-1][1], runs[-1][2] = block, runs[-1][2] + words
            else:
                runs.append([block, block, words])
        found += [_range(region, k, first, last, words, step) for first, last, words in runs]
    return found


def _range(region: Region, k: int, first: int, last: int, words: int, step: Step) -> dict:
    chunk = region.chunks[k]
    lo = first * BLOCK * 4
    hi = min((last + 1) * BLOCK, chunk.numel()) * 4
    return {"pattern": step.pattern, "words": int(words), "chunk": k,
            "address": f"{chunk.data_ptr() + lo:#x}-{chunk.data_ptr() + hi - 1:#x}",
            "offset": f"{region.bases[k] * 4 + lo:#x}-{region.bases[k] * 4 + hi - 1:#x}"}


def describe(ranges: list[dict], total: int) -> str:
    """One line: the errors, where (device addresses) and in which pattern."""
    shown = "; ".join(f"{r['words']} in {r['address']} ({r['pattern']})" for r in ranges[:4])
    more = f"; {len(ranges) - 4} more range(s)" if len(ranges) > 4 else ""
    return f"{total} wrong word(s): {shown}{more}"


def estimate_s(probe_seconds: float, probe_bytes: int, region_bytes: int) -> float:
    """Seconds the whole test will take, from a probe of every step over a small buffer."""
    return probe_seconds * region_bytes / max(probe_bytes, 1) if probe_bytes else math.inf
