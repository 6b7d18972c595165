"""Statistics of a change between two runs' raw samples: the ratio of medians, its confidence interval, a verdict.

The ratio of medians gets a 95% bootstrap interval (scipy.stats.bootstrap) and a
Mann-Whitney rank test; a change is `slower` or `faster` only when the whole interval
lies beyond the threshold and the rank test agrees, so noise reads as `inconclusive`.
`cardbench compare` and `cardbench history` both judge with these.
"""
from __future__ import annotations

import json

import numpy as np

# Plateau-size bandwidth and matmul rows are sub-percent noisy, latency-bound ones are not:
# nvbench measures 0.05-0.5% relative noise for streaming kernels at 2^28 elements and 1-15%
# at 2^16-2^20 (https://github.com/NVIDIA/cccl/pull/7019, https://github.com/NVIDIA/cccl/pull/9481).
DEFAULT_THRESHOLD = 0.02
LATENCY_BOUND_THRESHOLD = 0.05
LATENCY_BOUND_BYTES = 64 * 2**20
LOWER_IS_BETTER_UNITS = {"s", "ms", "us", "ns"}
# Rank-test p-value a faster/slower verdict also needs (Go benchstat's default alpha,
# https://pkg.go.dev/golang.org/x/perf/cmd/benchstat).
SIGNIFICANCE = 0.05
# Threshold override keys besides family names: `--threshold PCT` and `--threshold latency=PCT`.
ALL_ROWS, LATENCY_BOUND = "*", "latency"


def working_set_bytes(row: dict[str, str]) -> float | None:
    """The row's working set. A summary row (a collective's `peak`) has no size of its own: it
    carries the samples of its best size, which its params record as peak_size_bytes."""
    if row["size_bytes"]:
        return float(row["size_bytes"])
    try:
        params = json.loads(row["params"])
    except ValueError:  # empty, or damaged (params is free text to the results reader): no size
        return None
    size = params.get("peak_size_bytes") if isinstance(params, dict) else None
    return None if size is None else float(size)


def latency_bound(row: dict[str, str]) -> bool:
    """A time unit, or a working set under 64 MiB: launch latency is a large share of each sample."""
    size = working_set_bytes(row)
    return row["unit"] in LOWER_IS_BETTER_UNITS or (size is not None and size < LATENCY_BOUND_BYTES)


def threshold_for(row: dict[str, str], overrides: dict[str, float]) -> float:
    """The change that counts for this row, as a fraction. The one rule, most specific first:
    1. FAMILY=PCT: every row of that family (latency-bound, summary or not);
    2. latency=PCT: latency-bound rows (see latency_bound);
    3. a bare PCT: every row, latency-bound ones included;
    4. built in: 5% for latency-bound rows, 2% for the others.
    A summary row is judged as the size whose samples it carries (working_set_bytes)."""
    if row["family"] in overrides:
        return overrides[row["family"]]
    if latency_bound(row):
        return overrides.get(LATENCY_BOUND, overrides.get(ALL_ROWS, LATENCY_BOUND_THRESHOLD))
    return overrides.get(ALL_ROWS, DEFAULT_THRESHOLD)


def speed_ratio_ci(base: list[float], new: list[float], higher_is_better: bool, seed: int = 0):
    """Ratio of medians (new over baseline, > 1 = better) with a 95% bootstrap interval and the
    Mann-Whitney p-value: (ratio, low, high, p); low, high and p are None under 2 samples a side."""
    from scipy import stats

    def ratio(b, n, axis=-1):
        r = np.median(n, axis=axis) / np.median(b, axis=axis)
        return r if higher_is_better else 1 / r

    point = float(ratio(np.asarray(base), np.asarray(new)))
    if len(base) < 2 or len(new) < 2:
        return point, None, None, None
    # Percentile interval: scipy's default, BCa, gives NaN when the jackknife values are all equal
    # (DegenerateDataWarning, https://docs.scipy.org/doc/scipy/reference/generated/scipy.stats.bootstrap.html),
    # as they are for timer samples quantized to a few values. `ratio` takes `axis`: scipy vectorizes it.
    res = stats.bootstrap((base, new), ratio, n_resamples=4000, confidence_level=0.95, method="percentile",
                          random_state=np.random.default_rng(seed))
    p = float(stats.mannwhitneyu(base, new, alternative="two-sided").pvalue)
    return point, float(res.confidence_interval.low), float(res.confidence_interval.high), p


def verdict_for(ratio: float, low: float | None, high: float | None, p: float | None, thr: float) -> str:
    """same / faster / slower / inconclusive for a speed ratio with interval [low, high] and rank-test p.

    The point `ratio` is deliberately not used: a change counts only when the WHOLE interval lies
    beyond 1 +- thr (strictly) and p < SIGNIFICANCE; `same` needs both bounds within 1 +- thr."""
    if low is None or high is None or p is None:
        return "inconclusive"
    if high < 1 - thr and p < SIGNIFICANCE:
        return "slower"
    if low > 1 + thr and p < SIGNIFICANCE:
        return "faster"
    if low >= 1 - thr and high <= 1 + thr:
        return "same"
    return "inconclusive"
