"""The matmul family as pytest-benchmark tests: `pytest bench/` (one test per case).

Throughput is timed on the device by cardbench's own timing core (L2 flushed and the
output re-randomized between samples) and stored in `extra_info`; a case this card or
software cannot run is skipped with the reason the capability check gave.
"""
import pytest

from bench import matmul
from bench.run import normalized


def test_matmul(benchmark, target, matmul_case, profile, tuned, session_rows):
    row: dict = {}
    benchmark.group = f"matmul/{matmul_case.recipe}/{matmul_case.case}"
    benchmark.pedantic(lambda: row.update(matmul.run_case(target, matmul_case, profile, tuned)),
                       rounds=1, iterations=1)
    row.update(normalized(row, target))
    session_rows.append(row)
    benchmark.extra_info.update({
        k: row.get(k) for k in ("status", "message", "value", "unit", "p10", "p90", "time_s",
                                "n_samples", "calls_per_sample", "timer", "size_bytes", "work", "params",
                                "samples", "spec_entry", "spec_figure", "spec_value", "spec_source", "pct_of_spec",
                                "device_name", "device_uuid", "clocks_event_reasons")
    })
    benchmark.extra_info["device"] = str(target.device)
    if row["status"] in ("skipped", "unsupported"):
        pytest.skip(row["message"])
    assert row["status"] == "ok", f"{matmul_case.id}: {row['status']}: {row['message']}"
    assert float(row["value"]) > 0
