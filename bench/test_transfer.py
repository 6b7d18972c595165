"""The transfer family as pytest-benchmark tests: `pytest bench/` (one test per case).

Each case's bandwidth (or latency) is timed on the device by cardbench's own
timing and stored in `extra_info`; cases that cannot run here (CPU mode, peer
copies with one GPU) are skipped with the reason.
"""

from .frontend import measure_case


def test_transfer(benchmark, target, transfer_case, run_state, session_rows):
    measure_case(benchmark, transfer_case, target, run_state, session_rows)
