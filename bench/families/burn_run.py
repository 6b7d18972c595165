"""Every device of a burn under load at once: one worker process per device, their records collected
as they are made, a stop that reaches every worker, and the comparison of the first results of
devices of one model.

Each device is its own one-rank job of bench/core/launch.py, started from its own thread, so a
device that dies or hangs ends only its own rows: the others keep burning (one device's
failure must not hide another's). Workers are bench/families/burn_worker.py.
"""
from __future__ import annotations

import shutil
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

from ..core import identity, launch
from ..core.devices import Target
from ..core.harness import error_message

WORKER = f"{__package__}.burn_worker:worker"  # "module:function" each worker runs (tests swap it)
STARTUP_S = 300.0  # a worker that makes no progress for this long is taken as hung (launch's timeout)
WAIT_POLL_S = 0.2  # a waiting case wakes this often, so Ctrl-C and SIGTERM reach it


def key(target: Target) -> str:
    return str(target.device)


def model(target: Target) -> tuple[str, str, str]:
    """Devices that must compute the same bits: same name, SM count and compute capability."""
    ident = target.identity
    return ident.get("device_name", ""), ident.get("sm_count", ""), ident.get("compute_capability", "")


class Burn:
    """One burn of every target at once; its records per device, in the order they were made."""

    def __init__(self, targets: list[Target], duration_s: float, injected: dict[str, str],
                 timeout_s: float = STARTUP_S):
        self.targets, self.duration_s, self.timeout_s = list(targets), duration_s, timeout_s
        self.injected = injected  # faults for the first device only (CARDBENCH_INJECT_FAULT)
        self.records: dict[str, list[dict]] = {key(t): [] for t in targets}
        self._by_kind: dict[tuple[str, str], list[dict]] = {}  # (device, kind) -> its records, in order
        self._now: dict[str, tuple[str, float | None]] = dict.fromkeys(self.records, ("start", None))
        self.failure: dict[str, str] = dict.fromkeys(self.records, "")
        self.ended: dict[str, bool] = dict.fromkeys(self.records, False)
        self.before: dict[str, dict] = {}  # each GPU's ECC and remap state when the burn started
        self.stopped = ""
        self.changed = threading.Condition()
        self.started = time.monotonic()
        self._dir = Path(tempfile.mkdtemp(prefix="cardbench-burn-"))
        self.stop_path = self._dir / "stop"
        self._threads: list[threading.Thread] = []

    def start(self) -> None:
        for n, t in enumerate(self.targets):
            if t.is_cuda:
                self.before[key(t)] = identity.device_identity(t.index)
            payload = {"duration_s": self.duration_s, "stop_path": str(self.stop_path),
                       "faults": self.injected if n == 0 else {}}
            thread = threading.Thread(target=self._run, args=(t, payload), name=f"cardbench-burn-{key(t)}",
                                      daemon=True)
            self._threads.append(thread)
            thread.start()
        self.started = time.monotonic()
        print(f"burn: {len(self.targets)} device(s) under load at once for {self.duration_s:g} s "
              f"({', '.join(self.records)})", file=sys.stderr, flush=True)

    def _run(self, target: Target, payload: dict) -> None:
        k = key(target)
        try:
            launch.run(WORKER, payload, launch.local_job(1), [{"rank": 0, "local_rank": 0, "device": k}],
                       self.timeout_s, result_rank=0, host_store=True, on_record=lambda rec: self.add(k, rec))
        except launch.WorkerFailure as e:  # launch names the rank (0: each device is its own job) and host
            self.failure[k] = f"{k}'s worker: {e}"
        except Exception as e:  # a worker that cannot even start
            self.failure[k] = f"{k}'s worker: {error_message(e)}"
        finally:
            with self.changed:
                self.ended[k] = True
                self.changed.notify_all()

    def add(self, k: str, record: dict) -> None:
        with self.changed:
            self.records[k].append(record)
            self._by_kind.setdefault((k, record.get("kind", "")), []).append(record)
            if record.get("kind") == "phase":
                self._now[k] = (record["phase"], None)
            elif record.get("kind") == "second":
                self._now[k] = (self._now[k][0], record["flop_per_s"])
            self.changed.notify_all()
        if record.get("kind") == "phase":
            print(f"burn: {k} {record['phase']} at {time.monotonic() - self.started:.1f} s", file=sys.stderr,
                  flush=True)

    def find(self, k: str, kind: str, dtype: str | None = None) -> list[dict]:
        with self.changed:
            return [r for r in self._by_kind.get((k, kind), []) if dtype is None or r.get("dtype") == dtype]

    def wait(self, k: str, kind: str, dtype: str | None = None) -> dict | None:
        """The first record of this kind (and dtype) from device k, once made; None when its worker ended without it."""
        with self.changed:
            while True:
                found = self.find(k, kind, dtype)
                if found or self.ended[k]:
                    return found[0] if found else None
                self.changed.wait(WAIT_POLL_S)

    def latest(self, k: str) -> tuple[str, float | None]:
        """(phase, FLOP/s of the last whole second of soak, when the phase is a soak) of device k now."""
        with self.changed:
            return self._now[k]

    def stop(self, reason: str) -> None:
        """Every worker ends its phase at its next batch or pass, reports it, and exits."""
        self.stopped = self.stopped or reason
        try:
            self.stop_path.write_text(reason)
        except OSError:
            pass

    def wait_ended(self, k: str, timeout_s: float) -> bool:
        """Wait (bounded) until device k's worker has exited."""
        deadline = time.monotonic() + timeout_s
        with self.changed:
            while not self.ended[k] and time.monotonic() < deadline:
                self.changed.wait(WAIT_POLL_S)
            return self.ended[k]

    def join(self, timeout_s: float) -> bool:
        deadline = time.monotonic() + timeout_s
        for t in self._threads:
            t.join(max(0.0, deadline - time.monotonic()))
        return not any(t.is_alive() for t in self._threads)

    def abandon(self, reason: str) -> None:
        """Stop waiting for the workers still running: their phases end as errors naming `reason`."""
        with self.changed:
            for k, ended in self.ended.items():
                if not ended:
                    self.failure[k], self.ended[k] = reason, True
            self.changed.notify_all()

    def close(self) -> None:
        shutil.rmtree(self._dir, ignore_errors=True)

    def why_missing(self, k: str) -> str:
        return self.failure[k] or (f"the burn was stopped ({self.stopped})" if self.stopped else
                                   "the worker ended without it")


def cross_check(burn: Burn, target: Target, dtype: str) -> tuple[str, dict]:
    """Compare device `target`'s first `dtype` result with the other devices' of its model.

    Returns (what is wrong or "", params). With three or more devices the majority is the
    reference; a tie names both sides (it cannot tell which is wrong, and both rows fail).
    """
    mine = burn.wait(key(target), "reference", dtype)
    peers = [t for t in burn.targets if t is not target and model(t) == model(target)]
    if mine is None:
        return "", {"cross_check": "no first result from this device"}
    if not peers:
        return "", {"cross_check": "not applicable: no other device of this model in the burn"}
    prints = {key(target): mine["fingerprint"]}
    missing = []
    for t in peers:
        rec = burn.wait(key(t), "reference", dtype)
        if rec is None:
            missing.append(key(t))
        else:
            prints[key(t)] = rec["fingerprint"]
    votes = Counter(_frozen(fp) for fp in prints.values())
    mine_fp = _frozen(prints[key(target)])
    agree = sorted(k for k, fp in prints.items() if _frozen(fp) == mine_fp and k != key(target))
    params = {"cross_check": f"identical to {len(agree)} other device(s) of this model"
              + (f"; no result from {', '.join(missing)}" if missing else ""), "cross_agree": agree}
    top, top_votes = votes.most_common(1)[0]
    if len(votes) == 1 or (mine_fp == top and top_votes > len(prints) / 2):
        return "", params
    others = {k: fp for k, fp in prints.items() if _frozen(fp) != mine_fp}
    rows = len(prints[key(target)])
    if top_votes > len(prints) / 2:  # a majority that this device is not part of
        wrong_rows = _rows_differ(prints[key(target)], list(top))
        ref = sorted(k for k, fp in prints.items() if _frozen(fp) == top)
        text = (f"silent data corruption: the first {dtype} result differs from that of {', '.join(ref)} "
                f"(same model, same inputs) in {wrong_rows} of {rows} output rows")
    else:
        ref = sorted(others)
        text = (f"silent data corruption: the first {dtype} result differs from that of {', '.join(ref)} "
                f"(same model, same inputs; no majority, so it cannot tell which is wrong)")
    params.update(cross_check=text, cross_differ=sorted(others))
    return text, params


def _frozen(fp: list) -> tuple:
    return tuple(tuple(row) for row in fp)


def _rows_differ(a: list, b: list) -> int:
    return sum(tuple(x) != tuple(y) for x, y in zip(a, b)) + abs(len(a) - len(b))
