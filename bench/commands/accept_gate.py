"""`cardbench accept --profile gate`: every GPU of the node measured at once, for Slurm prologs.

The policy's `[profile.gate]` table (bench/commands/policy.toml) names the cases (run ids,
as `cardbench run --list` prints them) and the checks that judge them. Each GPU gets its
own worker process (bench/core/launch.py, one one-rank job per GPU), which plans and
measures that GPU's cases through the one harness and sends each row back as it is
measured; this process writes them to the run's CSV. All GPUs at once keeps the gate
within a minute on an 8-GPU node and loads the node as a job does (one process per GPU,
every GPU busy, the power supply shared). A GPU whose worker dies or stops making progress
for the profile's `timeout_s` gets `error` rows naming why; the others are not held up.
"""
from __future__ import annotations

import os
import signal
import sys
import threading
from dataclasses import asdict, replace

from ..core import harness, identity, launch
from ..core.options import RunOptions
from ..families import FAMILIES
from . import run as run_command

WORKER = f"{__package__}.accept_gate:worker"  # "module:function" each GPU's worker process runs (tests swap it)
DEFAULT_TIMEOUT_S = 45.0


def options_for(options: RunOptions, gate: dict) -> RunOptions:
    """The run the gate makes: the quick plan, only the cases the policy's [profile.gate] names (and
    only their families are planned, where each case names its family)."""
    cases = tuple(gate.get("cases", ()))
    named = {c.split("/")[0] for c in cases}
    families = tuple(n for n in FAMILIES if n in named) if named <= set(FAMILIES) else ()
    return replace(options, profile="quick", families=families, cases=cases)


def execute(options: RunOptions, timeout_s: float = DEFAULT_TIMEOUT_S):
    """Measure the gate's cases on every device at once; returns (exit code, CSV path or None) as run.execute."""
    def measure(run, items, writer, path, opts, before_family):
        return measure_all(run, items, writer, path, timeout_s)
    return run_command.execute(options, measure=measure)


def measure_all(run, items, writer, path, timeout_s: float):
    by_device: dict[str, list] = {}
    for item in items:
        by_device.setdefault(str(item[0].device), []).append(item)
    rows: list[dict] = []
    lock = threading.Lock()
    problems: list[str] = []
    stopped = threading.Event()  # after Ctrl-C the file is closed: a late row is dropped

    def write(row: dict) -> None:
        with lock:
            if stopped.is_set():
                return
            try:
                writer.write(row)
            except OSError as e:  # disk full: the file stays incomplete, and says so
                problems.append(f"cannot write to {path}: {e.strerror or e}")
                stopped.set()
                return
            rows.append(row)

    print(f"gate: {len(items)} measurement(s) on {len(by_device)} device(s) at once", file=sys.stderr, flush=True)
    threads = [threading.Thread(target=_one_device, args=(run, device_items, write, timeout_s),
                                name=f"cardbench-gate-{device}", daemon=True)
               for device, device_items in by_device.items()]
    previous = signal.signal(signal.SIGTERM, run_command._on_sigterm)
    try:
        for t in threads:
            t.start()
        for t in threads:
            while t.is_alive():
                t.join(0.2)  # a timeout, so Ctrl-C and SIGTERM reach this thread
    except (KeyboardInterrupt, run_command.Interrupted) as e:
        why = str(e) if isinstance(e, run_command.Interrupted) else "SIGINT"
        with lock:
            stopped.set()
            writer.close("error", f"interrupted by {why} after {writer.rows_written} rows")
        print(f"\ncardbench: interrupted by {why}; results so far (marked incomplete): {path}", file=sys.stderr)
        return 128 + (signal.SIGTERM if why == "SIGTERM" else signal.SIGINT), path
    finally:
        signal.signal(signal.SIGTERM, previous)
    if problems:
        print(f"cardbench: {problems[0]}; the file has no closing row (incomplete)", file=sys.stderr)
        return run_command.EXIT_BAD_INPUT, path
    writer.close()
    return run_command.outcome(rows, items, path)


def _one_device(run, items, write, timeout_s: float) -> None:
    """One device's worker process; rows as they come, `error` rows for what it did not measure."""
    target = items[0][0]
    payload = {"options": asdict(replace(run.options, device=str(target.device))), "ids": [c.id for _t, _f, c in items]}
    got: set[str] = set()

    def on_record(record: dict) -> None:
        if record.get("id") in payload["ids"] and record["id"] not in got:
            got.add(record["id"])
            write(record["row"])

    failure = ""
    try:
        launch.run(WORKER, payload, launch.local_job(1), [{"rank": 0, "local_rank": 0, "device": str(target.device)}],
                   timeout_s, result_rank=0, host_store=True, on_record=on_record)
    except launch.WorkerFailure as e:
        failure = str(e).replace("rank 0", f"the {target.device} worker", 1)
    except Exception as e:  # a worker that cannot even start
        failure = harness.error_message(e)
    for _t, family, case in items:
        if case.id not in got:
            row = harness.status_row(case, target, "error",
                                     f"not measured: {failure or 'the worker ended without measuring it'}")
            write(harness.finish(row, target, run))


def worker(ctx, payload: dict) -> None:
    """One device's gate (bench/core/launch.py runs it): plan this device's cases, measure each, send its row."""
    identity.OWN_PIDS.add(os.getppid())  # the supervisor holds a context on this GPU but runs nothing on it
    if ctx.device.startswith("cuda"):
        import torch

        # Every CUDA call of this process goes to its own GPU: a stray context on cuda:0 would count as
        # another process on that GPU in its own worker's health check.
        torch.cuda.set_device(torch.device(ctx.device))
    fields = payload["options"]
    options = RunOptions(**{k: tuple(v) if isinstance(v, list) else v for k, v in fields.items()})
    run = run_command.setup(options)
    wanted = set(payload["ids"])
    for target, family, case in run_command.plan(run, options):
        if case.id in wanted:
            ctx.progress(case.id)
            ctx.emit({"id": case.id, "row": harness.run_case(family, target, case, run)})
