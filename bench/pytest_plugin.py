"""The pytest plugin of `pytest bench/`: options, one parametrized test per case, and the shared run.

Loaded by the repository's conftest.py in a checkout; from an installed wheel, name it:
`pytest -p cardbench.pytest_plugin --pyargs cardbench --cardbench-device cuda:0`.
"""
from __future__ import annotations

import pytest


def pytest_addoption(parser):
    group = parser.getgroup("cardbench")
    group.addoption("--cardbench-device", default="all",
                    help="device for `pytest bench/`: cpu, cuda:N or all (first GPU, else CPU)")
    group.addoption("--cardbench-profile", default="quick", choices=("quick", "full"),
                    help="benchmark profile for `pytest bench/` (default quick)")
    group.addoption("--cardbench-specs", default=None, metavar="FILE",
                    help="TOML spec entries that add to or override the shipped ones")
    group.addoption("--policy", default=None, metavar="FILE",
                    help="acceptance policy for bench/test_accept.py (default: the shipped bench/commands/policy.toml)")
    group.addoption("--cardbench-from", default=None, metavar="RESULTS.csv",
                    help="bench/test_accept.py judges this results file instead of measuring")


def pytest_collection_modifyitems(config, items):
    # Acceptance checks judge the rows the benchmark tests of the same session measured: run them last.
    items.sort(key=lambda item: item.path.name == "test_accept.py" and item.path.parent.name in ("bench", "cardbench"))


def _run_state(config):
    """The run `pytest bench/` measures: its device (the first GPU, else the CPU), spec database and state."""
    cached = getattr(config, "_cardbench_run", None)
    if cached is None:
        from .commands.run import setup
        from .core.options import RunOptions

        options = RunOptions(device=config.getoption("--cardbench-device"),
                             profile=config.getoption("--cardbench-profile"),
                             specs=config.getoption("--cardbench-specs"), argv=("pytest", "bench/"))
        cached = setup(options)
        cached.targets = cached.targets[:1]
        config._cardbench_run = cached
    return cached


def pytest_generate_tests(metafunc):
    """A test asking for `<family>_case` runs once per case of that family (bench/test_<family>.py)."""
    from .families import FAMILIES

    if "accept_check" in metafunc.fixturenames:
        from .commands import accept

        policy = accept.load_policy(metafunc.config.getoption("--policy"))
        names = [c.name for c in policy.checks if c.enabled]
        names += [h for h in accept.HEALTH_CHECKS if policy.applies(h, None)]
        metafunc.parametrize("accept_check", names)
    for name, family in FAMILIES.items():
        if f"{name}_case" in metafunc.fixturenames:
            run = _run_state(metafunc.config)
            cases = family.cases(run.targets[0], run)
            metafunc.parametrize(f"{name}_case", cases, ids=[c.id for c in cases])


@pytest.fixture(scope="session")
def run_state(request):
    """The RunState every benchmark test of the session shares (tuned configurations, probes, buffers)."""
    return _run_state(request.config)


@pytest.fixture(scope="session")
def target(run_state):
    return run_state.targets[0]


@pytest.fixture(scope="session")
def profile(request):
    return request.config.getoption("--cardbench-profile")


@pytest.fixture(scope="session")
def session_rows():
    """Every results row the benchmark tests of this session measured (bench/test_accept.py judges them)."""
    return []


def pytest_benchmark_update_machine_info(config, machine_info):
    """Put the card's identity and the software versions in pytest-benchmark's JSON."""
    from .core import identity

    machine_info["cardbench"] = identity.run_identity()
    target = _run_state(config).targets[0]
    machine_info["cardbench_device"] = {"device": str(target.device), **target.identity}
