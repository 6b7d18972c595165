"""The collective family as pytest-benchmark tests: `pytest bench/` (one test per case).

The first case starts the ranks (every visible GPU with NCCL; two gloo processes
on the CPU) and measures the whole sweep; the other cases report from it. busbw
(nccl-tests' definition) and every per-operation sample go to `extra_info`. With
one GPU every case is skipped: collectives need two or more ranks. Under
torchrun, run `cardbench run --families collective` instead: pytest does not
know which rank writes.
"""
import pytest

from bench import collective
from bench.run import normalized


def test_collective(benchmark, target, collective_case, profile, tuned, session_rows):
    row: dict = {}
    benchmark.group = f"collective/{collective_case.benchmark}/{collective_case.dtype}"
    benchmark.pedantic(lambda: row.update(collective.run_case(target, collective_case, profile, tuned)),
                       rounds=1, iterations=1)
    row.update(normalized(row, target))
    session_rows.append(row)
    benchmark.extra_info.update({
        k: row.get(k) for k in ("status", "message", "value", "unit", "p10", "p90", "time_s", "n_samples", "timer",
                                "size_bytes", "work", "params", "samples", "spec_entry", "spec_figure",
                                "spec_value", "spec_source", "pct_of_spec", "device_name", "device_uuid",
                                "clocks_event_reasons")
    })
    benchmark.extra_info["device"] = str(target.device)
    if row["status"] in ("skipped", "unsupported"):
        pytest.skip(row["message"])
    assert row["status"] == "ok", f"{collective_case.id}: {row['status']}: {row['message']}"
    assert float(row["value"]) > 0
