"""Burn workers for GPUs that are not there: started by bench/core/launch.py in a worker process, they
make the records bench/families/burn_worker.py makes, from a model of a node of three H100s."""
import os
import time

ROWS = 64
TFLOPS = {"cuda:0": 700.0, "cuda:1": 690.0, "cuda:2": 560.0}  # cuda:2 falls behind (80% of the best)


def _fingerprint(device: str, dtype: str) -> list[list[int]]:
    fp = [[i, 7 * i + 1] for i in range(ROWS)]
    if device == "cuda:2" and dtype == "bf16":  # three rows of its first bf16 result differ
        for row in (5, 9, 40):
            fp[row] = [fp[row][0] + 1, fp[row][1] + 3]
    return fp


def node_worker(ctx, payload):
    """Every device: a soak per dtype (six seconds, flat), then a clean memory test."""
    device, flop = ctx.device, 2.0 * 8192**3
    ctx.emit({"kind": "phase", "phase": "setup"})
    for dtype in ("bf16", "fp8"):
        ctx.emit({"kind": "phase", "phase": f"soak {dtype}"})
        ctx.emit({"kind": "reference", "dtype": dtype, "fingerprint": _fingerprint(device, dtype)})
        scale = 1.0 if dtype == "bf16" else 1.9
        bins = [TFLOPS[device] * scale * 1e12] * 6
        for k, b in enumerate(bins):
            ctx.progress(f"soak {dtype} second {k + 1}")
            ctx.emit({"kind": "second", "dtype": dtype, "second": k, "flop_per_s": b})
            time.sleep(0.02)
        ctx.emit({"kind": "soak", "dtype": dtype, "status": "ok", "flop": flop, "bins": bins,
                  "iterations": int(sum(bins) / flop), "seconds": 6.0, "planned_s": 6.0, "mismatches": [],
                  "mismatch_iterations": 0, "mismatch_elements": 0, "elements": 8192 * 8192, "stopped": "",
                  "timer": "cuda_events", "injected": False,
                  "telemetry": {"temp_c_max": "71", "clocks_event_reasons": "0x4",
                                "clocks_event_reason_names": "sw_power_cap", "energy_j": "4200.0",
                                "energy_window_s": "6.0"},
                  "params": {"m": 8192, "n": 8192, "k": 8192, "api": "torch.mm"}})
    ctx.emit({"kind": "phase", "phase": "memtest"})
    free = 80 * 2**30
    ctx.emit({"kind": "memtest", "status": "ok", "free_bytes": free, "bytes_tested": int(free * 0.97),
              "coverage": 0.97, "chunks": 78, "allocation": "", "self_check": "", "injected": False,
              "passes": [[int(free * 0.97), 0.03]] * 146, "patterns": {}, "errors": 0, "ranges": [],
              "stopped": "", "timer": "cuda_events", "telemetry": {"temp_c_max": "66"}})
    ctx.emit({"kind": "phase", "phase": "done"})


def dying_worker(ctx, payload):
    """cuda:1 dies in its bf16 soak; the others burn on."""
    if ctx.device == "cuda:1":
        real = ctx.emit

        def emit(record):
            real(record)
            if record.get("kind") == "reference":
                os._exit(3)
        ctx.emit = emit
    node_worker(ctx, payload)


def corrupting_then_dying_worker(ctx, payload):
    """cuda:0 finds two mismatching iterations in its first seconds of bf16, then dies."""
    if ctx.device != "cuda:0":
        return node_worker(ctx, payload)
    ctx.emit({"kind": "phase", "phase": "soak bf16"})
    for k in range(3):
        ctx.emit({"kind": "second", "dtype": "bf16", "second": k, "flop_per_s": 7e14, "mismatching": min(k, 2)})
    os._exit(9)
