"""One measurement, the same for every family: verify, time with telemetry, make the row.

A family describes a case as a `Measurement` (build the inputs, the work to
time, the check, the work formula); this module turns it into one results row.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import torch

from . import telemetry, timing
from .devices import Target
from .results import format_samples


@dataclass
class Measurement:
    family: str
    benchmark: str
    provider: str
    dtype: str
    case: str
    metric: str  # "bandwidth", "throughput", ...
    unit: str  # "GB/s", "TFLOP/s"
    scale: float  # work units per `unit` unit: 1e9 bytes per GB, 1e12 FLOP per TFLOP
    work: float  # bytes or FLOPs moved/done by one call of `fn`
    work_unit: str  # "B" or "FLOP"
    size_bytes: int  # working set
    fn: Callable[[], object]  # the timed work
    check: Callable[[], str | None]  # None when the output is right, else what is wrong
    params: dict = field(default_factory=dict)
    flush: Callable[[], None] | None = None


def base_row(m: Measurement, target: Target) -> dict[str, object]:
    row: dict[str, object] = dict(target.identity)
    row.update(
        device_index="" if target.index is None else target.index,
        family=m.family, benchmark=m.benchmark, provider=m.provider, dtype=m.dtype,
        case=m.case, metric=m.metric, unit=m.unit, size_bytes=m.size_bytes,
        work=float(m.work), work_unit=m.work_unit,
        params=json.dumps(m.params, sort_keys=True) if m.params else "",
    )
    return row


def status_row(m: Measurement, target: Target, status: str, message: str) -> dict[str, object]:
    """A row without a value: wrong, unsupported, skipped or error."""
    row = base_row(m, target)
    row.update(status=status, message=message)
    return row


def run(m: Measurement, target: Target, budget: timing.Budget) -> dict[str, object]:
    """Verify first, then time; a failed check is `wrong` and has no value."""
    problem = m.check()
    if problem:
        return status_row(m, target, "wrong", problem)
    with telemetry.Sampler(target.index) as sampler:
        result = timing.time_fn(m.fn, target.device, budget, m.flush, target.sm_clock_hz)
    row = base_row(m, target)
    row.update(sampler.summary())
    if target.is_cuda:
        # Read the link right after the load: an idle link trains down to Gen1.
        row.update(telemetry.pcie_link(target.index))
    row.update(throughput_fields(result, m.work, m.scale))
    notes = [spread_note(row), *result.notes]
    others = str(row.get("compute_processes") or "0")
    if others.isdigit() and int(others) > 0:
        notes.append(f"disturbed: {others} other process(es) computing on the card during the measurement")
    row.update(status="ok", message="; ".join(n for n in notes if n))
    return row


def throughput_fields(result: timing.Timing, work: float, scale: float) -> dict[str, object]:
    """value = work / median time; samples, p10 and p90 are in the same unit."""
    values = [work / t / scale for t in result.samples_s]
    return {
        "value": work / result.median_s / scale,
        "samples": format_samples(values),
        "p10": float(np.percentile(values, 10)),
        "p90": float(np.percentile(values, 90)),
        "time_s": result.median_s,
        "n_samples": len(result.samples_s),
        "calls_per_sample": result.calls_per_sample,
        "timer": result.method,
    }


def spread_note(row: dict[str, object]) -> str:
    spread = (float(row["p90"]) - float(row["p10"])) / float(row["value"])
    if spread > timing.NOISY_SPREAD:
        return f"noisy: p10-p90 spread {spread:.0%} of the median"
    return ""


def error_message(exc: BaseException) -> str:
    text = f"{type(exc).__name__}: {exc}".strip()
    return " ".join(text.split())[:500]


def is_out_of_memory(exc: BaseException) -> bool:
    """A device or host allocation failure (retrying smaller may work), not a kernel bug."""
    oom = getattr(torch, "OutOfMemoryError", None) or torch.cuda.OutOfMemoryError
    text = str(exc).lower()
    return isinstance(exc, (oom, MemoryError)) or "out of memory" in text or "can't allocate memory" in text


def cuda_context_usable(target: Target) -> bool:
    """After an error: can this device still run work? (A sticky error poisons the context.)"""
    if not target.is_cuda:
        return True
    try:
        torch.cuda.synchronize(target.device)
        torch.zeros(1, device=target.device).add_(1).item()
    except Exception:
        return False
    return True
