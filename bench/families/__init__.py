"""The benchmark families, each a module on one contract (bench/core/harness.py):

NAME; cases(target, run) -> [Case]; waive(target, case, state) -> (status, reason) or None;
measure(target, case, state) -> Measurement, Timed or Status; optionally State(run) (what the
family keeps across cases), prepare(targets, state) (warnings before the first case),
smaller(case) and size_text(case) (out-of-memory retries), summary_lines(rows).
No family imports another. FAMILIES are what `cardbench run` measures; the burn family
(bench/families/burn.py, on the same contract) is run by `cardbench burn` alone: it holds
every device under load for minutes.
"""
from . import collective, llm, matmul, memory, transfer

FAMILIES = {f.NAME: f for f in (memory, matmul, transfer, collective, llm)}
