"""The transfer family as pytest-benchmark tests: `pytest bench/` (one test per case).

Each case's bandwidth (or latency) is timed on the device by cardbench's own
timing and stored in `extra_info`; cases that cannot run here (CPU mode, peer
copies with one GPU) are skipped with the reason.
"""
import pytest

from bench import transfer
from bench.run import normalized


def test_transfer(benchmark, target, transfer_case, profile, tuned, session_rows):
    row: dict = {}
    benchmark.group = f"transfer/{transfer_case.benchmark}/{transfer_case.case}"
    benchmark.pedantic(lambda: row.update(transfer.run_case(target, transfer_case, profile, tuned)),
                       rounds=1, iterations=1)
    row.update(normalized(row, target))
    session_rows.append(row)
    benchmark.extra_info.update({
        k: row.get(k) for k in ("status", "message", "value", "unit", "p10", "p90", "time_s",
                                "n_samples", "calls_per_sample", "timer", "size_bytes", "work", "params",
                                "samples", "spec_entry", "spec_figure", "spec_value", "spec_source", "pct_of_spec",
                                "derived_peak", "pct_of_derived", "pcie_gen_current", "pcie_width_current",
                                "device_name", "device_uuid", "clocks_event_reasons")
    })
    benchmark.extra_info["device"] = str(target.device)
    if row["status"] in ("skipped", "unsupported"):
        pytest.skip(row["message"])
    assert row["status"] == "ok", f"{transfer_case.id}: {row['status']}: {row['message']}"
    assert float(row["value"]) > 0
