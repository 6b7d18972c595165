"""The matmul family as pytest-benchmark tests: `pytest bench/` (one test per case).

Throughput is timed on the device by cardbench's own timing core (L2 flushed and the
output re-randomized between samples) and stored in `extra_info`; a case this card or
software cannot run is skipped with the reason the capability check gave.
"""

from .frontend import measure_case


def test_matmul(benchmark, target, matmul_case, run_state, session_rows):
    measure_case(benchmark, matmul_case, target, run_state, session_rows)
