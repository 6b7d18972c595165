"""One measurement harness for every family: declared -> verified -> timed -> normalized -> stored.

A family (bench/families/) declares its cases (`Case`: the row's identity and the
work of one call), says in one hook why a case cannot run here (`waive`), and
measures a case (`measure`), returning one of:

- `Measurement`: the work to time and the check of its result. The harness
  verifies, then times it on the device with telemetry sampled over the window.
- `Timed`: samples the family timed itself with a timer of bench/core/timing.py
  (two copies at once, one rank among several), with the telemetry of its window.
- `Status`: a row without a value (wrong, unsupported, skipped, error).

The harness turns that into the one kind of row every family writes: waivers,
errors (a crashing case is an `error` row, the run goes on), out-of-memory retries
at a smaller size (said on the row), the value and its spread from the samples,
the notes (noisy, disturbed, launch-bound), and the normalization columns
(bench/core/normalize.py) against the run's spec database.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
import torch

from . import normalize, telemetry, timing
from .devices import Target
from .results import format_samples

TRITON_ON_CPU = "Triton kernels are not timed on the CPU (the tests check them under TRITON_INTERPRET=1)"


@dataclass(frozen=True)
class Case:
    """One measurement a family can make: the row's identity and the work of one call."""

    family: str
    benchmark: str
    provider: str
    dtype: str
    name: str  # the `case` column: "plateau", "8192x8192x8192", "pinned-1GiB", ...
    metric: str  # "bandwidth", "throughput", "busbw", "latency"
    unit: str  # "GB/s", "TFLOP/s", "us"
    scale: float  # work per unit (1e9 bytes per GB); latency: seconds per unit (1e-6 per us)
    work: float  # bytes or operations one call moves or does; 0 where only the measurement knows
    work_unit: str  # "B", "FLOP", "OP"
    size_bytes: int | str  # the working set; "" where only the measurement knows
    spec: Any = None  # the family's own description of what to measure
    id_dtype: bool = False  # the dtype is part of the id (collectives: bf16 and fp32 rows of one size)
    params: dict | None = field(default=None, hash=False, compare=False)  # on the row when nothing measured says more

    @property
    def id(self) -> str:
        parts = [self.family, self.benchmark, self.provider, *([self.dtype or "-"] if self.id_dtype else []), self.name]
        return "/".join(parts)


@dataclass
class Measurement:
    """Work for the harness to verify and time, on the target's device."""

    fn: Callable[[], object]  # the timed work: one call
    check: Callable[[], str | None]  # None when the output is right, else what is wrong
    budget: timing.Budget
    params: dict = field(default_factory=dict)
    flush: Callable[[], None] | None = None  # before every timed call (cold L2)
    case: Case | None = None  # what was measured, where it differs from the planned case (a searched shape)
    notes: list[str] = field(default_factory=list)
    after: Callable[[float], list[str]] | None = None  # notes that need the measured value
    # Sees this measurement, and may return an earlier, faster one of the same thing for the row
    # instead (matmul: a fixed shape that beat the shape search's best).
    review: Callable[[Timed], Timed | None] | None = None


@dataclass
class Timed:
    """Samples a family timed itself (bench/core/timing.py's two-stream or per-rank timer)."""

    timing: timing.Timing
    params: dict = field(default_factory=dict)
    telemetry: dict = field(default_factory=dict)  # the window's Sampler summary (and link columns)
    notes: list[str] = field(default_factory=list)
    case: Case | None = None


@dataclass
class Status:
    """A row without a value: wrong, unsupported, skipped or error."""

    status: str
    message: str
    params: dict = field(default_factory=dict)
    case: Case | None = None


@dataclass
class RunState:
    """What one run knows beyond its options: the targets, the spec database, each family's own state.

    A family keeps what it learns across cases (tuned Triton configurations, probes,
    buffers, a collective sweep) in its `State` class, made here once per run.
    """

    targets: list[Target]
    db: Any  # bench.core.specs.SpecDB
    profile: str = "quick"
    options: Any = None  # bench.core.options.RunOptions
    visible_gpus: int = 0  # GPUs this process sees (peer copies reach all of them, measured or not)
    locks: list = field(default_factory=list)  # the devices' run locks, held while the run lasts
    family_states: dict[str, Any] = field(default_factory=dict)

    def state(self, family) -> Any:
        name = family.NAME
        if name not in self.family_states:
            make = getattr(family, "State", None)
            self.family_states[name] = make(self) if make is not None else None
        return self.family_states[name]


# ---------------------------------------------------------------- rows

def base_row(case: Case, target: Target, params: dict | None = None) -> dict[str, object]:
    row: dict[str, object] = dict(target.identity)
    row.update(
        device_index="" if target.index is None else target.index,
        family=case.family, benchmark=case.benchmark, provider=case.provider, dtype=case.dtype,
        case=case.name, metric=case.metric, unit=case.unit, size_bytes=case.size_bytes,
        work=float(case.work), work_unit=case.work_unit,
        params=json.dumps(params, sort_keys=True, default=str) if params else "",
    )
    return row


def status_row(case: Case, target: Target, status: str, message: str, params: dict | None = None) -> dict:
    row = base_row(case, target, params if params is not None else case.params)
    row.update(status=status, message=message)
    return row


def value_fields(result: timing.Timing, case: Case) -> dict[str, object]:
    """value from the median sample; samples, p10 and p90 in the row's unit.

    Throughput: value = work / time / scale. Latency: value = time / scale (lower is better,
    so p10 is the fast end).
    """
    if case.metric == "latency":
        values = [t / case.scale for t in result.samples_s]
        value = result.median_s / case.scale
    else:
        values = [case.work / t / case.scale for t in result.samples_s]
        value = case.work / result.median_s / case.scale
    return {
        "value": value, "samples": format_samples(values),
        "p10": float(np.percentile(values, 10)), "p90": float(np.percentile(values, 90)),
        "time_s": result.median_s, "n_samples": len(result.samples_s),
        "calls_per_sample": result.calls_per_sample, "timer": result.method,
    }


def efficiency(row: dict[str, object]) -> dict[str, float]:
    """Energy per call and value per watt, from NVML's total-energy counter over the timed window.

    The window's mean power is energy_j / energy_window_s (the counter, not the 1 s power
    average: https://docs.nvidia.com/deploy/nvml-api/group__nvmlDeviceQueries.html,
    nvmlDeviceGetTotalEnergyConsumption); J per call = that power x the median time of one
    call; value per watt = value / that power (TFLOP/s per W, GB/s per W). Latency rows get no
    per-watt value (lower is better there). Empty without an energy reading.
    """
    try:
        watts = float(row["energy_j"]) / float(row["energy_window_s"])
        value, time_s = float(row["value"]), float(row["time_s"])
    except (KeyError, TypeError, ValueError, ZeroDivisionError):
        return {}
    if not watts > 0:
        return {}
    out = {"joules_per_call": watts * time_s}
    if row.get("metric") != "latency":
        out["value_per_watt"] = value / watts
    return out


def spread_note(row: dict[str, object]) -> str:
    spread = (float(row["p90"]) - float(row["p10"])) / float(row["value"])
    if spread > timing.NOISY_SPREAD:
        return f"noisy: p10-p90 spread {spread:.0%} of the median"
    return ""


def disturbed_note(row: dict[str, object]) -> str:
    others = str(row.get("compute_processes") or "0")  # counted at the window's edges
    if others.isdigit() and int(others) > 0:
        return f"disturbed: {others} other process(es) computing on the card during the measurement"
    return ""


def busy_host(target: Target) -> str:
    """CPU mode: a load average above the machine's CPUs, i.e. other work time-slices the
    benchmark's threads (samples then read low and coarse, in steps of the scheduler's slice)."""
    if target.is_cuda or not hasattr(os, "getloadavg"):
        return ""
    load, cpus = os.getloadavg()[0], os.cpu_count() or 1
    return f"busy host: load {load:.1f} on {cpus} CPUs" if load > cpus else ""


def other_runs_note(target: Target) -> str:
    """Other cardbench runs measuring this device now, as this run's device lock sees them."""
    others = target.lock.others() if target.lock is not None else []
    return f"disturbed: another cardbench run (pid {', '.join(others)})" if others else ""


def measured_row(case: Case, target: Target, result: timing.Timing, params: dict, window: dict,
                 notes: list[str]) -> dict[str, object]:
    """The row of a timed case: identity, the window's telemetry, the value and the notes."""
    if not target.is_cuda:  # the family's own count wins (each collective rank's)
        params = {"host_threads": torch.get_num_threads(), **params}
    row = base_row(case, target, params)
    row.update(window)
    row.update(value_fields(result, case))
    row.update(efficiency(row))
    notes = [*notes, spread_note(row), disturbed_note(row), other_runs_note(target), busy_host(target),
             *result.notes]
    row.update(status="ok", message="; ".join(dict.fromkeys(n for n in notes if n)))
    return row


# ---------------------------------------------------------------- one case, end to end

def waiver(target: Target, case: Case) -> tuple[str, str] | None:
    """What no family runs anywhere: Triton kernels are never timed on the CPU."""
    if case.provider == "triton" and not target.is_cuda:
        return "skipped", TRITON_ON_CPU
    return None


def run_case(family, target: Target, case: Case, run: RunState) -> dict[str, object]:
    """Measure one case and return its normalized row; never raises for a failing case.

    Out of memory: the family's `smaller(case)` (when it has one) is measured instead, down
    to its smallest size, and the row says so (in the family's `size_text(case)` words).
    """
    state = run.state(family)
    waived = waiver(target, case) or family.waive(target, case, state)
    if waived:
        return finish(status_row(case, target, *waived), target, run)
    attempt = case
    while True:
        try:
            row = _row(family.measure(target, attempt, state), target, attempt)
            if attempt is not case:
                size = getattr(family, "size_text", lambda c: c.name)
                note = f"out of memory at {size(case)}: measured at {size(attempt)}"
                row["message"] = "; ".join(n for n in (note, row.get("message", "")) if n)
            return finish(row, target, run)
        except Exception as e:  # a crashing kernel is an `error` row; the run goes on
            smaller = getattr(family, "smaller", None)
            nxt = smaller(attempt) if smaller is not None and is_out_of_memory(e) else None
            if nxt is not None:
                attempt = nxt
                continue
            return finish(status_row(attempt, target, "error", error_message(e)), target, run)
        finally:
            if target.is_cuda:
                torch.cuda.empty_cache()


def finish(row: dict, target: Target, run: RunState) -> dict:
    row.update(normalize.columns(row, target.spec, run.db))
    return row


def _row(result, target: Target, case: Case) -> dict[str, object]:
    if isinstance(result, Status):
        return status_row(result.case or case, target, result.status, result.message, result.params)
    if isinstance(result, Timed):
        return measured_row(result.case or case, target, result.timing, result.params, result.telemetry,
                            result.notes)
    return timed_row(result, target, result.case or case)


def timed_row(m: Measurement, target: Target, case: Case) -> dict[str, object]:
    """Verify first, then time with telemetry over the window; a failed check is `wrong` and has no value."""
    problem = m.check()
    if problem:
        return status_row(case, target, "wrong", problem, m.params)
    with telemetry.Sampler(target.index) as sampler:
        result = timing.time_fn(m.fn, target.device, m.budget, m.flush, target.sm_clock_hz)
    window = sampler.summary()
    if target.is_cuda:
        # Read the link right after the load: an idle link trains down to Gen1.
        window.update(telemetry.pcie_link(target.index))
    row = measured_row(case, target, result, m.params, window, m.notes)
    instead = m.review(Timed(result, m.params, window, m.notes, case)) if m.review is not None else None
    if instead is not None:
        row = measured_row(instead.case or case, target, instead.timing, instead.params, instead.telemetry,
                           instead.notes)
    if m.after is not None:
        extra = [n for n in m.after(float(row["value"])) if n]
        row["message"] = "; ".join(n for n in (row["message"], *extra) if n)
    return row


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
