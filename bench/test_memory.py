"""The memory family as pytest-benchmark tests: `pytest bench/` (one test per case).

Throughput is timed on the device by cardbench's own timing core and stored in
`extra_info` (GB/s, median seconds, p10/p90, every sample, the device). The
wall-time statistics pytest-benchmark prints are those of the whole
measurement (warm-up, verification and timing), not of one kernel.
"""
import pytest

from bench import memory
from bench.run import normalized


def test_memory(benchmark, target, memory_case, profile, tuned, session_rows):
    row: dict = {}
    benchmark.group = f"memory/{memory_case.benchmark}/{memory_case.case}"
    benchmark.pedantic(lambda: row.update(memory.run_case(target, memory_case, profile, tuned)),
                       rounds=1, iterations=1)
    row.update(normalized(row, target))
    session_rows.append(row)
    benchmark.extra_info.update({
        k: row.get(k) for k in ("status", "message", "value", "unit", "p10", "p90", "time_s",
                                "n_samples", "calls_per_sample", "timer", "size_bytes", "work", "params",
                                "samples", "spec_entry", "spec_value", "spec_source", "pct_of_spec",
                                "derived_peak", "pct_of_derived", "device_name", "device_uuid",
                                "clocks_event_reasons")
    })
    benchmark.extra_info["device"] = str(target.device)
    if row["status"] in ("skipped", "unsupported"):
        pytest.skip(row["message"])
    assert row["status"] == "ok", f"{memory_case.id}: {row['status']}: {row['message']}"
    assert float(row["value"]) > 0
