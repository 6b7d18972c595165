"""What keeps a run safe: a watchdog for a hung case, and a per-device lock that warns of a second run."""
from __future__ import annotations

import os
import re
import sys
import tempfile
import threading
from pathlib import Path

from ..core.devices import Target
from ..core.results import ResultsWriter

# A case that has not finished after this long is taken as hung (a stuck kernel):
# the file is closed as incomplete naming the case, and the process exits.
CASE_TIMEOUT_S = 1800.0
EXIT_HUNG = 124


class Watchdog:
    """Ends the run when one case hangs: a stuck CUDA kernel cannot be interrupted from Python."""

    def __init__(self, writer: ResultsWriter, what: str, timeout_s: float):
        self.writer, self.what, self.timeout_s = writer, what, timeout_s
        self.timer = threading.Timer(timeout_s, self._fire)
        self.timer.daemon = True

    def __enter__(self):
        self.timer.start()
        return self

    def __exit__(self, *exc):
        self.timer.cancel()
        return False

    def _fire(self) -> None:
        message = f"hung: {self.what} did not finish within {self.timeout_s:g} s"
        try:
            self.writer.close("error", message)
        finally:
            print(f"\ncardbench: {message}; results so far (marked incomplete): {self.writer.path}",
                  file=sys.stderr, flush=True)
            os._exit(EXIT_HUNG)


# Runs on one device that see each other: each holds one of these lock files for its whole life.
LOCK_SLOTS = 8


class DeviceLock:
    """This run's hold on a device: one slot file locked (flock) while the run lasts, so every run
    on the device can ask which others are measuring it now. The kernel drops a dead run's lock."""

    def __init__(self, paths: list[Path], slot: int, file):
        self.paths, self.slot, self.file = paths, slot, file

    def others(self) -> list[str]:
        """The pids of the other cardbench runs holding a slot of this device now."""
        import fcntl

        found = []
        for i, path in enumerate(self.paths):
            if i == self.slot:
                continue
            try:
                with open(path) as f:  # a slot no run ever took has no file: nothing to create
                    try:
                        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    except BlockingIOError:
                        found.append(f.read().strip() or "unknown")
            except OSError:
                continue
        return found

    def close(self) -> None:
        self.file.close()


def device_lock(target: Target, lock_dir: str | None = None) -> DeviceLock | None:
    """Take a lock slot of this device; when other cardbench runs hold one, warn: the runs disturb each other."""
    try:
        import fcntl
    except ImportError:  # not on this platform: no warning, the result files still never collide
        return None
    key = target.identity.get("device_uuid") or f"{target.device.type}-{target.identity.get('device_name', '')}"
    # CARDBENCH_LOCK_DIR: where the locks live (tests give each suite its own)
    folder = lock_dir or os.environ.get("CARDBENCH_LOCK_DIR") or tempfile.gettempdir()
    stem = f"cardbench-{re.sub(r'[^A-Za-z0-9_.-]+', '_', key)}"
    paths = [Path(folder) / f"{stem}.lock"] + [Path(folder) / f"{stem}.{i}.lock" for i in range(1, LOCK_SLOTS)]
    lock = None
    for slot, path in enumerate(paths):
        try:
            f = open(path, "a+")
        except OSError:
            return None
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.close()
            continue
        f.truncate(0)
        f.write(str(os.getpid()))
        f.flush()
        lock = DeviceLock(paths, slot, f)
        break
    others = lock.others() if lock is not None else ["unknown"]
    if others:
        print(f"warning: another cardbench run (pid {', '.join(others)}) is measuring {target.device} now: "
              "both runs' measurements disturb each other", file=sys.stderr)
    return lock
