"""Acceptance checks as pytest tests: `pytest bench/ [--policy FILE] --junitxml out.xml`.

One test per check of the policy (and per health check), judged by the same
code as `cardbench accept` over the rows the benchmark tests of this session
measured (they run first). Run alone, it measures the acceptance profile itself,
or judges `--cardbench-from RESULTS.csv`. PASS passes, FAIL and INCONCLUSIVE
fail (a check that could not be measured never passes), N/A is skipped.
"""
import tempfile

import pytest

from .commands import accept
from .core import identity, specs
from .core.options import RunOptions
from .core.results import COLUMNS, read_results


@pytest.fixture(scope="session")
def acceptance(request, target, session_rows):
    config = request.config
    policy = accept.load_policy(config.getoption("--policy"))
    rows = None
    if config.getoption("--cardbench-from"):
        rows = read_results(config.getoption("--cardbench-from")).rows
    elif session_rows:
        run_fields = identity.run_identity()
        rows = [{**dict.fromkeys(COLUMNS, ""), **run_fields, **{k: "" if v is None else str(v) for k, v in r.items()}}
                for r in session_rows]
    else:
        from .commands import run

        out = tempfile.mkdtemp(prefix="cardbench-accept-")
        options = RunOptions(device=str(target.device), profile="quick", out=out,
                             specs=config.getoption("--cardbench-specs"), argv=("pytest", "bench/"))
        _, path = run.execute(options, before_family=accept.idle_gate(policy))
        rows = read_results(path).rows if path else []
    if not rows:
        pytest.fail("INCONCLUSIVE: nothing was measured")
    by_card = accept.judge(rows, policy, specs.load(config.getoption("--cardbench-specs")))
    return {r.check: r for r in by_card[0].results}


def test_accept(acceptance, accept_check):
    result = acceptance[accept_check]
    detail = f"{result.measured or '-'} (bar {result.bar}) {result.reason}".strip()
    if result.verdict == accept.NOT_APPLICABLE:
        pytest.skip(detail)
    if result.verdict != accept.PASS:
        pytest.fail(f"{result.verdict}: {detail}", pytrace=False)
