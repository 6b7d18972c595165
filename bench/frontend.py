"""The body every pytest-benchmark test of a family shares (bench/test_<family>.py).

Each case is measured by cardbench's own harness (timed on the device); then its
samples are replayed to pytest-benchmark through a clock that advances by one sample
per round, so the plugin's table and JSON statistics are the device-timed seconds per
call, not the wall time of the whole measurement (warm-up, verification, tuning).
"""
import pytest

from .core import harness
from .core.results import parse_samples
from .families import FAMILIES

# What each test puts in pytest-benchmark's extra_info: the device-timed result and its provenance.
EXTRA_INFO = ("status", "message", "value", "unit", "p10", "p90", "time_s", "n_samples", "calls_per_sample",
              "timer", "size_bytes", "work", "params", "samples", "spec_entry", "spec_figure", "spec_value",
              "spec_source", "pct_of_spec", "derived_peak", "pct_of_derived", "pcie_gen_current",
              "pcie_width_current", "device_name", "device_uuid", "clocks_event_reasons")
REPLAYED = "pytest-benchmark's statistics are cardbench's device-timed samples (seconds per call), replayed"


class Replay:
    """A clock that moves only when `step` is called, by the next sample's seconds."""

    def __init__(self, times_s: list[float]):
        self.times_s, self.now, self.i = times_s, 0.0, 0

    def clock(self) -> float:
        return self.now

    def step(self) -> None:
        self.now += self.times_s[self.i]
        self.i += 1


def sample_seconds(row: dict) -> list[float]:
    """Seconds per call of each sample, from the row's samples in its unit."""
    values = parse_samples(str(row.get("samples") or ""))
    scale = {"GB/s": 1e9, "TB/s": 1e12, "TFLOP/s": 1e12, "GFLOP/s": 1e9, "TOPS": 1e12, "GOPS": 1e9, "us": 1e-6}
    unit = scale[row["unit"]]
    if row["metric"] == "latency":
        return [v * unit for v in values]
    return [float(row["work"]) / (v * unit) for v in values]


def group_of(case: harness.Case) -> str:
    return "/".join([case.family, case.benchmark, case.dtype if case.id_dtype else case.name])


def measure_case(benchmark, case: harness.Case, target, run, session_rows) -> dict:
    """Measure one case as a pytest-benchmark test; skip what cannot run here, fail what went wrong."""
    row = harness.run_case(FAMILIES[case.family], target, case, run)
    session_rows.append(row)  # bench/test_accept.py judges these after the benchmarks
    benchmark.group = group_of(case)
    benchmark.extra_info.update({k: row.get(k) for k in EXTRA_INFO})
    benchmark.extra_info["device"] = str(target.device)
    if row["status"] in ("skipped", "unsupported"):
        pytest.skip(row["message"])
    assert row["status"] == "ok", f"{case.id}: {row['status']}: {row['message']}"
    assert float(row["value"]) > 0
    times = sample_seconds(row)
    replay = Replay(times)
    if hasattr(benchmark, "_timer"):  # pytest-benchmark's timer (a private attribute since 3.x): the replay clock
        benchmark._timer = replay.clock
        benchmark.pedantic(replay.step, rounds=len(times), iterations=1)
        benchmark.extra_info["statistics"] = REPLAYED
    else:
        benchmark.extra_info["statistics"] = "wall time of the whole measurement; device-timed figures in extra_info"
        benchmark.pedantic(lambda: None, rounds=1, iterations=1)
    return row
