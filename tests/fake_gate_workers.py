"""Gate workers for tests, started by bench/core/launch.py in worker processes (so this module
imports nothing from the tests' own helpers)."""
import os
import time
from pathlib import Path

from bench.commands import accept_gate


def exit_after_first_worker(ctx, payload):
    """Measures the first case for real, then exits with code 3."""
    real = ctx.emit

    def emit(record):
        real(record)
        os._exit(3)
    ctx.emit = emit
    accept_gate.worker(ctx, payload)


def rendezvous_worker(ctx, payload):
    """Emits a made-up row per case only once every device's worker has started: a gate that ran
    the devices one after another never gets there (its first worker times out)."""
    folder = Path(os.environ["GATE_TEST_DIR"])
    device = payload["options"]["device"]
    (folder / device.replace(":", "-")).touch()
    deadline = time.monotonic() + 15
    while len(list(folder.iterdir())) < int(os.environ["GATE_TEST_DEVICES"]):
        if time.monotonic() > deadline:
            return  # alone: emits nothing, so the gate writes error rows
        time.sleep(0.05)
    for case_id in payload["ids"]:
        family, benchmark, provider, name = case_id.split("/")
        ctx.emit({"id": case_id, "row": {"device_index": device.partition(":")[2], "family": family,
                                         "benchmark": benchmark, "provider": provider, "case": name,
                                         "status": "ok", "value": 1.0, "p10": 1.0, "p90": 1.0, "unit": "GB/s",
                                         "message": ""}})
