"""Shape search for the matmul family's full profile: the MAMF answer in seconds, not days.

mamf-finder (ml-engineering) times every shape of a range; here a time budget bounds a
coarse-to-fine search. Coarse: round sizes and shapes whose output tiles fill whole waves of
SMs (a last, partly empty wave wastes up to one wave's time), every dimension a multiple of
256. Fine: hill climbing from the best shape, one dimension at a time, steps halving down to 256.
The search knows nothing about GPUs: `evaluate` times a shape and returns its throughput.
"""
from __future__ import annotations

import math
import time
from typing import Callable

Shape = tuple[int, int, int]

STEP = 256  # every searched dimension is a multiple of this (tile-friendly on every GEMM library)
TILE = (128, 256)  # the output tile wave counts are computed with (cuBLAS/CUTLASS Hopper default)
MIN_WAVE_EFFICIENCY = 0.85


def wave_efficiency(m: int, n: int, sm_count: int, tile: tuple[int, int] = TILE) -> float:
    """Tiles / (waves * SMs): 1.0 when the last wave of output tiles fills every SM."""
    tiles = math.ceil(m / tile[0]) * math.ceil(n / tile[1])
    return tiles / (math.ceil(tiles / sm_count) * sm_count)


def coarse_shapes(dims, ks, sm_count: int | None, lo: int, hi: int) -> list[Shape]:
    """The coarse stage: a grid of round sizes plus shapes whose tile count is a whole number of waves.

    With sm_count None (the CPU) there are no waves to fill and the grid is kept as is.
    """
    mn = {(m, n) for m in dims for n in dims if m <= 2 * n and n <= 2 * m}
    if sm_count:
        mn = {p for p in mn if wave_efficiency(*p, sm_count) >= MIN_WAVE_EFFICIENCY}
        for waves in (1, 2, 4, 8, 16):
            tiles = waves * sm_count
            # The most square M x N (multiples of STEP) with exactly `tiles` output tiles.
            pairs = [(tm * TILE[0], (tiles // tm) * TILE[1]) for tm in range(1, tiles + 1)
                     if tiles % tm == 0 and (tm * TILE[0]) % STEP == 0]
            pairs = [p for p in pairs if lo <= min(p) and max(p) <= hi]
            if pairs:
                mn.add(min(pairs, key=lambda p: abs(math.log(p[0] / p[1]))))
    # Largest problems first: they are the likeliest winners if the budget runs out.
    return sorted(((m, n, k) for m, n in mn for k in ks), key=lambda s: (-s[0] * s[1] * s[2], s))


def neighbours(shape: Shape, step: int, lo: int, hi: int) -> list[Shape]:
    out = []
    for axis in range(3):
        for sign in (1, -1):
            s = list(shape)
            s[axis] += sign * step
            if lo <= s[axis] <= hi:
                out.append(tuple(s))
    return out


def search(evaluate: Callable[[Shape], float], seeds: list[Shape], budget_s: float, lo: int, hi: int,
           fits: Callable[[Shape], bool] = lambda s: True, first_step: int = 1024,
           clock: Callable[[], float] = time.monotonic) -> tuple[Shape, dict[Shape, float]]:
    """Best shape within `budget_s`: seeds for half the budget, then hill climbing from the best
    with steps first_step, first_step/2, ... down to STEP. Returns (best, {shape: throughput})."""
    start = clock()
    tried: dict[Shape, float] = {}

    def visit(s: Shape) -> None:
        if s in tried or not fits(s):
            return
        try:
            tried[s] = evaluate(s)
        except Exception:  # out of memory, say: that shape is simply not a candidate
            tried[s] = 0.0

    for s in seeds:
        if tried and clock() - start >= budget_s / 2:
            break
        visit(s)
    if not any(v > 0 for v in tried.values()):
        raise RuntimeError(f"no shape of the search ran (tried {len(tried)})")
    best, step = max(tried, key=tried.get), max(first_step, STEP)
    while step >= STEP and clock() - start < budget_s:
        for s in neighbours(best, step, lo, hi):
            if clock() - start >= budget_s:
                break
            visit(s)
        top = max(tried, key=tried.get)
        if top == best:
            step //= 2
        best = top
    return best, tried
