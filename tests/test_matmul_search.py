"""The full profile's shape search with a synthetic throughput and a fake clock: it finds the
optimum, stays on multiples of 256 and inside its bounds, and stops when the budget is spent."""
import pytest

from bench.families import matmul_search as ms


class Clock:
    """Each evaluation costs one second of fake time."""

    def __init__(self):
        self.t = 0.0

    def __call__(self):
        return self.t


def synthetic(peak=(5120, 6400, 11008)):
    """A smooth single-peaked throughput over shapes, highest at `peak`."""
    def tflops(s):
        return 800.0 - sum(((a - b) / 1024) ** 2 for a, b in zip(s, peak))
    return tflops


def timed(fn, clock, log):
    def evaluate(s):
        clock.t += 1.0
        log.append(s)
        return fn(s)
    return evaluate


def test_wave_efficiency():
    assert ms.wave_efficiency(8192, 8192, 132) == pytest.approx(2048 / (16 * 132))  # 15.5 waves
    assert ms.wave_efficiency(128 * 12, 256 * 11, 132) == 1.0  # 132 tiles: one full wave
    assert ms.wave_efficiency(128, 256, 132) == pytest.approx(1 / 132)


def test_coarse_shapes_are_wave_friendly_multiples_of_256_largest_first():
    seeds = ms.coarse_shapes((2048, 4096, 8192, 16384), (4096, 8192, 16384), 132, 2048, 32768)
    assert all(d % 256 == 0 for s in seeds for d in s)
    assert all(ms.wave_efficiency(m, n, 132) >= ms.MIN_WAVE_EFFICIENCY for m, n, _ in seeds)
    sizes = [m * n * k for m, n, k in seeds]
    assert sizes == sorted(sizes, reverse=True)
    # shapes with a whole number of waves of 128x256 tiles are among them (5632x3072: 44 x 12 =
    # 528 tiles = 4 waves of 132), for 2, 4, 8 and 16 waves
    tiles = {(m // 128) * (n // 256) for m, n, _ in seeds if m % 128 == 0 and n % 256 == 0}
    assert {2 * 132, 4 * 132, 8 * 132, 16 * 132} <= tiles and (5632, 3072, 8192) in seeds
    # an SM count that round sizes fit badly (170 on an RTX 5090): 2048x2048 is 128 tiles, 75% of
    # one wave, and is left out; a whole-waves shape takes its place
    rtx = ms.coarse_shapes((2048, 4096, 8192, 16384), (8192,), 170, 2048, 32768)
    assert (2048, 2048, 8192) not in rtx and (8192, 4096, 8192) in rtx
    assert all(ms.wave_efficiency(m, n, 170) >= ms.MIN_WAVE_EFFICIENCY for m, n, _ in rtx)
    assert any((m // 128) * (n // 256) % 170 == 0 for m, n, _ in rtx)
    # the CPU has no waves to fill: the grid as is
    assert len(ms.coarse_shapes((256, 512), (256,), None, 256, 1024)) == 4


def test_search_climbs_from_the_coarse_best_to_the_optimum():
    clock, log = Clock(), []
    seeds = ms.coarse_shapes((2048, 4096, 8192), (4096, 8192, 16384), None, 2048, 32768)
    best, tried = ms.search(timed(synthetic(), clock, log), seeds, 200.0, 2048, 32768, clock=clock)
    assert best == (5120, 6400, 11008)
    assert tried[best] == max(tried.values())
    assert log[:len(seeds)] == seeds  # coarse first, in order
    assert all(d % 256 == 0 and 2048 <= d <= 32768 for s in tried for d in s)
    assert len(log) == len(set(log))  # never the same shape twice


def test_search_stops_when_the_budget_is_spent():
    clock, log = Clock(), []
    seeds = ms.coarse_shapes((2048, 4096, 8192), (4096, 8192, 16384), None, 2048, 32768)
    best, tried = ms.search(timed(synthetic(), clock, log), seeds, 12.0, 2048, 32768, clock=clock)
    assert 12 <= len(log) <= 13  # the evaluation that crosses the budget finishes, no more start
    assert sum(1 for s in log if s in seeds) == 6  # half the budget on the coarse stage
    assert best == max(tried, key=tried.get)


def test_shapes_that_do_not_fit_or_fail_are_not_winners():
    clock = Clock()

    def evaluate(s):
        clock.t += 1.0
        if s[0] >= 8192:
            raise RuntimeError("CUDA out of memory")
        return synthetic((8192, 8192, 8192))(s)

    best, tried = ms.search(evaluate, [(8192, 8192, 8192), (4096, 4096, 4096)], 50.0, 2048, 32768,
                            fits=lambda s: s[1] <= 8192, clock=clock)
    assert best[0] < 8192 and best[1] <= 8192
    assert tried[(8192, 8192, 8192)] == 0.0
    with pytest.raises(RuntimeError, match="no shape of the search ran"):
        ms.search(lambda s: 1 / 0, [(2048, 2048, 2048)], 5.0, 2048, 32768, clock=Clock())
