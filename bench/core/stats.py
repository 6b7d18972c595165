"""Statistics of a change between two runs' raw samples: the ratio of medians, its confidence interval, a verdict.

The ratio of medians gets a 95% bootstrap interval (scipy.stats.bootstrap) and a
Mann-Whitney rank test; a change is `slower` or `faster` only when the whole interval
lies beyond the threshold and the rank test agrees, so noise reads as `inconclusive`.
`cardbench compare` and `cardbench history` both judge with these.
"""
from __future__ import annotations

import numpy as np

# Plateau-size bandwidth and matmul rows are sub-percent noisy, latency-bound ones are
# not (METHOD.md section 6: nvbench 0.05-0.5% at 2^28 elements, 1-15% at 2^16-2^20).
DEFAULT_THRESHOLD = 0.02
LATENCY_BOUND_THRESHOLD = 0.05
LATENCY_BOUND_BYTES = 64 * 2**20
LOWER_IS_BETTER_UNITS = {"s", "ms", "us", "ns"}
SIGNIFICANCE = 0.05  # rank-test p-value a faster/slower verdict also needs
def threshold_for(row: dict[str, str], overrides: dict[str, float]) -> float:
    family = row["family"]
    if family in overrides:
        return overrides[family]
    latency = row["unit"] in LOWER_IS_BETTER_UNITS or (
        row["size_bytes"] and float(row["size_bytes"]) < LATENCY_BOUND_BYTES)
    if latency:
        return overrides.get("latency", LATENCY_BOUND_THRESHOLD)
    return overrides.get("*", DEFAULT_THRESHOLD)


def speed_ratio_ci(base: list[float], new: list[float], higher_is_better: bool, seed: int = 0):
    """Ratio of medians (new over baseline, > 1 = better) with a 95% bootstrap interval."""
    from scipy import stats

    def ratio(b, n, axis=-1):
        r = np.median(n, axis=axis) / np.median(b, axis=axis)
        return r if higher_is_better else 1 / r

    point = float(ratio(np.asarray(base), np.asarray(new)))
    if len(base) < 2 or len(new) < 2:
        return point, None, None, None
    res = stats.bootstrap((base, new), ratio, n_resamples=4000, confidence_level=0.95, method="percentile",
                          vectorized=True, random_state=np.random.default_rng(seed))
    p = float(stats.mannwhitneyu(base, new, alternative="two-sided").pvalue)
    return point, float(res.confidence_interval.low), float(res.confidence_interval.high), p


def verdict_for(ratio: float, low: float | None, high: float | None, p: float | None, thr: float) -> str:
    if low is None or high is None or p is None:
        return "inconclusive"
    if high < 1 - thr and p < SIGNIFICANCE:
        return "slower"
    if low > 1 + thr and p < SIGNIFICANCE:
        return "faster"
    if low >= 1 - thr and high <= 1 + thr:
        return "same"
    return "inconclusive"
