"""The statistics `compare` and `history` judge with (bench/core/stats.py), the threshold option's
syntax and the printed-number rule, tested directly at their boundaries."""
import json

import numpy as np
import pytest

from bench.commands.compare import CompareError, parse_thresholds
from bench.core.stats import (DEFAULT_THRESHOLD, LATENCY_BOUND_THRESHOLD, speed_ratio_ci, threshold_for,
                              verdict_for, working_set_bytes)
from bench.core.units import number

MIB = 2**20
THR = 0.02
BELOW, ABOVE = 1 - THR, 1 + THR  # the interval edges verdict_for compares with, computed the same way


# --- verdict_for -------------------------------------------------------------------------------

@pytest.mark.parametrize("ratio, low, high, p, expected", [
    (0.90, 0.85, 0.95, 0.001, "slower"),
    (0.95, 0.90, 0.99, 0.001, "inconclusive"),  # point beyond the threshold, interval crosses it
    (0.95, 0.90, BELOW, 0.001, "inconclusive"),  # upper bound ON the edge: not wholly beyond
    (0.90, 0.85, 0.95, 0.05, "inconclusive"),  # interval beyond but p not below 0.05
    (0.90, 0.85, 0.95, 0.3, "inconclusive"),
    (1.10, 1.05, 1.15, 0.001, "faster"),
    (1.05, 1.01, 1.10, 0.001, "inconclusive"),  # point beyond, interval crosses
    (1.05, ABOVE, 1.10, 0.001, "inconclusive"),  # lower bound on the edge
    (1.10, 1.05, 1.15, 0.05, "inconclusive"),
    (1.00, 0.99, 1.01, 0.5, "same"),
    (1.00, 0.99, 1.01, 0.001, "same"),  # a significant change inside the threshold is still `same`
    (1.00, BELOW, ABOVE, 0.5, "same"),  # both bounds on the edges: inside
    (1.00, 0.97, 1.01, 0.5, "inconclusive"),  # lower bound outside: `same` needs BOTH inside
    (1.00, 0.99, 1.03, 0.5, "inconclusive"),  # upper bound outside
    (1.00, 0.97, 1.03, 0.5, "inconclusive"),
])
def test_verdict_at_the_boundaries(ratio, low, high, p, expected):
    assert verdict_for(ratio, low, high, p, THR) == expected


def test_verdict_ignores_the_point_ratio_and_follows_the_interval():
    assert verdict_for(0.5, 0.99, 1.01, 0.5, THR) == "same"
    assert verdict_for(1.5, 0.85, 0.95, 0.001, THR) == "slower"
    assert verdict_for(0.5, 1.05, 1.15, 0.001, THR) == "faster"


def test_verdict_uses_the_threshold_it_is_given():
    assert verdict_for(0.97, 0.96, 0.975, 0.001, 0.02) == "slower"
    assert verdict_for(0.97, 0.96, 0.975, 0.001, 0.05) == "same"
    assert verdict_for(1.03, 1.025, 1.04, 0.001, 0.02) == "faster"
    assert verdict_for(1.03, 1.025, 1.04, 0.001, 0.05) == "same"


@pytest.mark.parametrize("low, high, p", [(None, 0.95, 0.001), (0.85, None, 0.001), (0.85, 0.95, None),
                                          (None, None, None)])
def test_verdict_without_an_interval_or_p_is_inconclusive(low, high, p):
    assert verdict_for(0.9, low, high, p, THR) == "inconclusive"


# --- speed_ratio_ci on controlled samples -------------------------------------------------------

def samples(center, n=40, seed=1, spread=0.005):
    return list(np.random.default_rng(seed).normal(center, center * spread, n))


def test_a_ten_percent_drop_in_bandwidth_is_detected():
    ratio, low, high, p = speed_ratio_ci(samples(100.0), samples(90.0, seed=2), higher_is_better=True)
    assert ratio == pytest.approx(0.9, abs=0.005)
    assert low < ratio < high and high < 0.92 and low > 0.88 and p < 1e-6
    assert verdict_for(ratio, low, high, p, THR) == "slower"


def test_a_ten_percent_longer_time_is_slower_and_a_shorter_one_faster():
    base = samples(1.0)
    ratio, low, high, p = speed_ratio_ci(base, samples(1.1, seed=2), higher_is_better=False)
    assert ratio == pytest.approx(1 / 1.1, abs=0.005) and verdict_for(ratio, low, high, p, THR) == "slower"
    ratio, low, high, p = speed_ratio_ci(base, samples(0.9, seed=2), higher_is_better=False)
    assert ratio == pytest.approx(1 / 0.9, abs=0.01) and verdict_for(ratio, low, high, p, THR) == "faster"


def test_identical_samples_are_same_with_p_one():
    s = samples(50.0)
    ratio, low, high, p = speed_ratio_ci(s, list(s), higher_is_better=True)
    assert ratio == 1.0 and low <= 1.0 <= high and high - low < 0.01 and p == 1.0
    assert verdict_for(ratio, low, high, p, THR) == "same"


def test_quantized_timer_samples_get_a_finite_interval():
    # A coarse timer returns a few distinct values: the interval must still be a number, not NaN.
    rng = np.random.default_rng(7)
    for base, new in (([1.0] * 30, [1.0] * 30), (list(rng.choice([1.0, 1.001], 40)), list(rng.choice([1.0, 1.001], 40)))):
        ratio, low, high, p = speed_ratio_ci(base, new, higher_is_better=True)
        assert np.isfinite([low, high]).all() and 0.998 <= low <= 1.0 <= high <= 1.002
        assert verdict_for(ratio, low, high, p, THR) == "same"


def test_point_ratio_is_new_median_over_baseline_median_inverted_for_times():
    assert speed_ratio_ci([1.0, 2.0, 3.0], [2.0, 4.0, 7.0], True)[0] == 2.0
    assert speed_ratio_ci([1.0, 2.0, 3.0], [2.0, 4.0, 7.0], False)[0] == 0.5


def test_interval_is_about_95_percent_wide():
    # Medians of two samples of 200 draws: the 95% interval of their ratio is about
    # +-1.96 * sqrt(2) * 1.2533 * sigma / sqrt(n) (asymptotic variance of the median, pi/2 * sigma^2 / n).
    n, sigma = 200, 0.01
    ratio, low, high, _ = speed_ratio_ci(samples(1.0, n, 3, sigma), samples(1.0, n, 4, sigma), True)
    expected_half = 1.96 * np.sqrt(2) * np.sqrt(np.pi / 2) * sigma / np.sqrt(n)
    assert (high - low) / 2 == pytest.approx(expected_half, rel=0.3)


def test_two_samples_a_side_get_an_interval_one_does_not():
    assert None not in speed_ratio_ci([1.0, 1.1], [1.0, 1.1], True)
    assert speed_ratio_ci([1.0], samples(1.0), True) == (pytest.approx(1.0, abs=0.01), None, None, None)
    assert speed_ratio_ci(samples(1.0), [1.0], True)[1:] == (None, None, None)


def test_the_interval_is_reproducible_by_default():
    b, n = samples(1.0, seed=5, spread=0.05), samples(0.97, seed=6, spread=0.05)
    assert speed_ratio_ci(b, n, True) == speed_ratio_ci(b, n, True) == speed_ratio_ci(b, n, True, seed=0)
    assert speed_ratio_ci(b, n, True)[1] != speed_ratio_ci(b, n, True, seed=1)[1]


# --- threshold_for: the one rule ---------------------------------------------------------------

def row(family="memory", unit="GB/s", size=str(256 * MIB), params=""):
    return {"family": family, "unit": unit, "size_bytes": size, "params": params}


def peak(size_of_best):
    return row("collective", size="", params=json.dumps({"peak_size_bytes": size_of_best, "knee_fraction": 0.8}))


def test_built_in_thresholds_and_the_64_mib_edge():
    assert threshold_for(row(size=str(64 * MIB)), {}) == DEFAULT_THRESHOLD == 0.02
    assert threshold_for(row(size=str(64 * MIB - 1)), {}) == LATENCY_BOUND_THRESHOLD == 0.05
    assert threshold_for(row(size=""), {}) == 0.02  # no working set recorded: not latency-bound


@pytest.mark.parametrize("unit", ["s", "ms", "us", "ns"])
def test_time_units_are_latency_bound_at_any_size(unit):
    assert threshold_for(row(unit=unit, size=str(4096 * MIB)), {}) == 0.05


def test_a_peak_row_gets_the_threshold_of_the_size_it_summarizes():
    assert threshold_for(peak(MIB), {}) == threshold_for(row("collective", size=str(MIB)), {}) == 0.05
    assert threshold_for(peak(4096 * MIB), {}) == threshold_for(row("collective", size=str(4096 * MIB)), {}) == 0.02
    assert working_set_bytes(peak(MIB)) == MIB


@pytest.mark.parametrize("params", ["", "not json", "[1, 2]", '{"m": 8192}'])
def test_rows_without_a_size_anywhere_get_the_plateau_threshold(params):
    assert working_set_bytes(row(size="", params=params)) is None
    assert threshold_for(row(size="", params=params), {}) == 0.02


def test_a_family_override_wins_for_every_row_of_that_family():
    o = {"memory": 0.03, "latency": 0.10, "*": 0.07}
    assert threshold_for(row(), o) == 0.03
    assert threshold_for(row(size=str(MIB)), o) == 0.03
    assert threshold_for(row(unit="us"), o) == 0.03
    assert threshold_for(row("collective"), {"collective": 0.03}) == threshold_for(peak(MIB), {"collective": 0.03})
    assert threshold_for(row("matmul"), {"memory": 0.03}) == 0.02  # other families keep theirs


def test_a_bare_threshold_sets_every_row_latency_bound_ones_included():
    assert threshold_for(row(), {"*": 0.03}) == 0.03
    assert threshold_for(row(size=str(MIB)), {"*": 0.03}) == 0.03
    assert threshold_for(peak(MIB), {"*": 0.03}) == 0.03


def test_latency_override_sets_latency_bound_rows_only_and_beats_the_bare_one():
    assert threshold_for(row(size=str(MIB)), {"latency": 0.10}) == 0.10
    assert threshold_for(peak(MIB), {"latency": 0.10}) == 0.10
    assert threshold_for(row(), {"latency": 0.10}) == 0.02
    assert threshold_for(row(size=str(MIB)), {"latency": 0.10, "*": 0.03}) == 0.10
    assert threshold_for(row(), {"latency": 0.10, "*": 0.03}) == 0.03


# --- --threshold syntax ------------------------------------------------------------------------

def test_threshold_values_repeated_or_comma_separated():
    assert parse_thresholds(["3"]) == {"*": 0.03}
    assert parse_thresholds(["memory=3,matmul=4.5", "latency=10%"]) == {
        "memory": 0.03, "matmul": 0.045, "latency": 0.10}
    assert parse_thresholds([" memory = 3 , 2 "]) == {"memory": 0.03, "*": 0.02}
    assert parse_thresholds([]) == {}


@pytest.mark.parametrize("value, says", [
    ("abc", "'abc' is not a number"), ("memory=abc", "'abc' is not a number"), ("memory=3=4", "'3=4' is not a number"),
    ("0", "0% is not a percentage above 0 and below 100"), ("-1", "-1% is not a percentage"),
    ("memory=-5", "-5% is not"), ("100", "100% is not"), ("101", "101% is not"), ("nan", "nan% is not"),
    ("inf", "inf% is not"), ("memory=", "expected PCT, FAMILY=PCT"), ("=3", "expected PCT, FAMILY=PCT"),
    ("", "expected PCT"), ("memory=3,", "(an empty item)"), ("memory=3,matmul=x", "(matmul=x): 'x' is not"),
])
def test_bad_threshold_values_are_named(value, says):
    with pytest.raises(CompareError) as e:
        parse_thresholds([value])
    assert str(e.value).startswith(f"--threshold {value}") and says in str(e.value)


def test_a_threshold_given_twice_is_an_error():
    with pytest.raises(CompareError, match="memory is given twice"):
        parse_thresholds(["memory=3", "memory=4"])
    with pytest.raises(CompareError, match=r"a bare PCT \(every row\) is given twice"):
        parse_thresholds(["3,4"])


def test_the_smallest_and_largest_accepted_percentages():
    assert parse_thresholds(["0.01"]) == {"*": 0.0001}
    assert parse_thresholds(["99.9"]) == {"*": pytest.approx(0.999)}


# --- printed numbers ---------------------------------------------------------------------------

@pytest.mark.parametrize("x, text", [
    (0.0123456, "0.0123"), (4.5678, "4.57"), (9.96, "9.96"), (9.996, "10.0"), (10, "10.0"), (12.345, "12.3"),
    (1234.56, "1,234.6"), (-3.0, "-3"), (-0.04999, "-0.05"), (0.0, "0"), (1e-5, "1e-05"),
])
def test_numbers_print_with_significant_digits(x, text):
    assert number(x) == text


def test_signed_numbers_for_changes():
    assert number(0.0123, signed=True) == "+0.0123"
    assert number(753.24, signed=True) == "+753.2"
    assert number(-12.34, signed=True) == "-12.3"
    assert number(0.0, signed=True) == "+0"
