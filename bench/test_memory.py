"""The memory family as pytest-benchmark tests: `pytest bench/` (one test per case).

Throughput is timed on the device by cardbench's own timing core and stored in
`extra_info` (GB/s, median seconds, p10/p90, every sample, the device); the
statistics pytest-benchmark prints are those device-timed samples (bench/frontend.py).
"""

from .frontend import measure_case


def test_memory(benchmark, target, memory_case, run_state, session_rows):
    measure_case(benchmark, memory_case, target, run_state, session_rows)
