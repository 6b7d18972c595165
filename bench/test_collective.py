"""The collective family as pytest-benchmark tests: `pytest bench/` (one test per case).

The first case starts the ranks (every visible GPU with NCCL; two gloo processes
on the CPU) and measures the whole sweep; the other cases report from it. busbw
(nccl-tests' definition) and every per-operation sample go to `extra_info`. With
one GPU every case is skipped: collectives need two or more ranks. Under
torchrun, run `cardbench run --families collective` instead: pytest does not
know which rank writes.
"""

from .frontend import measure_case


def test_collective(benchmark, target, collective_case, run_state, session_rows):
    measure_case(benchmark, collective_case, target, run_state, session_rows)
