"""The llm family as pytest-benchmark tests: `pytest bench/` (one test per case).

Attention (TFLOP/s) and decode (GB/s) are timed on the device by cardbench's own timing core
and stored in `extra_info`; a backend or dtype this card or torch cannot run is skipped with
the reason its trial call gave.
"""

from .frontend import measure_case


def test_llm(benchmark, target, llm_case, run_state, session_rows):
    measure_case(benchmark, llm_case, target, run_state, session_rows)
