"""What many tests need: a run state around some targets, and the harness around one case."""
from __future__ import annotations

from bench.core import harness, specs
from bench.core.options import RunOptions

_DB = None


def shipped_db():
    global _DB
    if _DB is None:
        _DB = specs.load()
    return _DB


def make_run(targets, profile: str = "quick", visible_gpus: int | None = None, **options) -> harness.RunState:
    """A RunState as `cardbench run` makes it (no device I/O): for family tests that call the harness."""
    gpus = sum(1 for t in targets if t.is_cuda) if visible_gpus is None else visible_gpus
    return harness.RunState(list(targets), shipped_db(), profile, RunOptions(profile=profile, **options), gpus)


def measure(family, target, case, run=None) -> dict:
    """One case through the harness, as `cardbench run` measures it."""
    return harness.run_case(family, target, case, run or make_run([target]))
