"""The body every pytest-benchmark test of a family shares (bench/test_<family>.py)."""
import pytest

from .commands.run import FAMILIES, normalized

# What each test puts in pytest-benchmark's extra_info: the device-timed result and its provenance.
EXTRA_INFO = ("status", "message", "value", "unit", "p10", "p90", "time_s", "n_samples", "calls_per_sample",
              "timer", "size_bytes", "work", "params", "samples", "spec_entry", "spec_figure", "spec_value",
              "spec_source", "pct_of_spec", "derived_peak", "pct_of_derived", "pcie_gen_current",
              "pcie_width_current", "device_name", "device_uuid", "clocks_event_reasons")


def measure_case(benchmark, family: str, case, group: str, target, profile, tuned, session_rows) -> dict:
    """Measure one case as a pytest-benchmark test; skip what cannot run here, fail what went wrong.

    pytest-benchmark's own statistics time the whole measurement (warm-up,
    verification and timing); the throughput timed on the device is in extra_info.
    """
    row: dict = {}
    benchmark.group = f"{family}/{group}"
    benchmark.pedantic(lambda: row.update(FAMILIES[family].run_case(target, case, profile, tuned)),
                       rounds=1, iterations=1)
    row.update(normalized(row, target))
    session_rows.append(row)  # bench/test_accept.py judges these after the benchmarks
    benchmark.extra_info.update({k: row.get(k) for k in EXTRA_INFO})
    benchmark.extra_info["device"] = str(target.device)
    if row["status"] in ("skipped", "unsupported"):
        pytest.skip(row["message"])
    assert row["status"] == "ok", f"{case.id}: {row['status']}: {row['message']}"
    assert float(row["value"]) > 0
    return row
