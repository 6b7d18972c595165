"""Fixtures every test of tests/ shares."""
import os

import pytest


@pytest.fixture(scope="session", autouse=True)
def own_lock_dir(tmp_path_factory):
    """The cardbench runs this session starts lock their devices in a folder of the session's own
    (CARDBENCH_LOCK_DIR, read by bench/commands/run_guard.py), not in the machine-wide temp
    folder: two suites on one machine would otherwise see each other's runs and warn."""
    folder = tmp_path_factory.mktemp("locks")
    before = os.environ.get("CARDBENCH_LOCK_DIR")
    os.environ["CARDBENCH_LOCK_DIR"] = str(folder)
    yield folder
    if before is None:
        os.environ.pop("CARDBENCH_LOCK_DIR", None)
    else:
        os.environ["CARDBENCH_LOCK_DIR"] = before
