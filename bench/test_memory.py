"""The memory family as pytest-benchmark tests: `pytest bench/` (one test per case).

Throughput is timed on the device by cardbench's own timing core and stored in
`extra_info` (GB/s, median seconds, p10/p90, every sample, the device). The
wall-time statistics pytest-benchmark prints are those of the whole
measurement (warm-up, verification and timing), not of one kernel.
"""

from .frontend import measure_case


def test_memory(benchmark, target, memory_case, profile, tuned, session_rows):
    measure_case(benchmark, "memory", memory_case, f"{memory_case.benchmark}/{memory_case.case}",
                 target, profile, tuned, session_rows)
