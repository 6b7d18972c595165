"""What many tests need: a run state around some targets, the harness around one case, and
the signal state a child process must start with."""
from __future__ import annotations

import signal

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


def moved_bytes(fn) -> int:
    """Bytes `fn`'s torch ops read and write, counted from the ops themselves (not from a formula):
    every tensor argument an op reads, every one it writes in place or as `out=`, every new result."""
    import torch
    from torch.utils._python_dispatch import TorchDispatchMode
    from torch.utils._pytree import tree_flatten

    class Counter(TorchDispatchMode):
        total = 0

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            kwargs = kwargs or {}
            written = set()
            for i, arg in enumerate(func._schema.arguments):
                value = args[i] if i < len(args) else kwargs.get(arg.name)
                if isinstance(value, torch.Tensor):
                    Counter.total += value.numel() * value.element_size()
                    if arg.alias_info is not None and arg.alias_info.is_write:
                        written.add(value.data_ptr())
            out = func(*args, **kwargs)
            for t in tree_flatten(out)[0]:
                if isinstance(t, torch.Tensor) and t.data_ptr() not in written:
                    Counter.total += t.numel() * t.element_size()
            return out

    with Counter():
        fn()
    return Counter.total


def sigint_default() -> None:
    """preexec_fn of a child the test interrupts: SIGINT back to its default. A shell starts
    background jobs (and so a pytest run in one, and its children) with SIGINT ignored, and a
    Python started that way never turns SIGINT into KeyboardInterrupt."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)
