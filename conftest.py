"""pytest hooks for cardbench.

`pytest` (the README's test command) runs tests/; tests that need a GPU carry the `gpu`
marker and are skipped cleanly without one. `pytest bench/` runs the benchmarks as
pytest-benchmark tests, one test per case, through the plugin bench/pytest_plugin.py
(options --cardbench-device, --cardbench-profile, --cardbench-specs, --policy, --cardbench-from).
"""
from __future__ import annotations

import pytest

pytest_plugins = ["bench.pytest_plugin"]


def _cuda_available() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return torch.cuda.is_available()


def pytest_collection_modifyitems(config, items):
    if _cuda_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU (none visible)")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)
