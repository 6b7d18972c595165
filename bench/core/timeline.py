"""The burn timeline: every GPU's clocks, power, energy, temperatures, fan, clocks-event reasons and
achieved throughput about every 100 ms, in a CSV beside the results file (results/SCHEMA.md).

Read through NVML (bench/core/nvml.py) by one thread in the supervising process for every
GPU, so a device whose worker hangs is still watched. Rows reach the disk as they are read
(flushed at once, fsync'd every second); the last row (`kind=end`) says whether the burn
finished; a file without it comes from a run that was killed. In CPU mode there is no NVML:
the file holds its header and the closing row.
"""
from __future__ import annotations

import csv
import io
import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from . import nvml
from .results import ResultsFileError, _cell, utc_now
from .specs import finite_float
from .telemetry import reason_names

SCHEMA_VERSION = 1
SUPPORTED_SCHEMAS = (1,)
COLUMNS = ["schema_version", "run_id", "kind", "time_s", "timestamp_utc", "device_index", "device_uuid", "phase",
           "sm_clock_mhz", "mem_clock_mhz", "power_w", "energy_j", "temp_gpu_c", "temp_mem_c", "fan_pct",
           "clocks_event_reasons", "clocks_event_reason_names", "throughput_tflops", "message"]
NUMERIC = {"time_s", "sm_clock_mhz", "mem_clock_mhz", "power_w", "energy_j", "temp_gpu_c", "temp_mem_c",
           "fan_pct", "throughput_tflops"}
KINDS = ("sample", "end")
INTERVAL_S = 0.1
SYNC_S = 1.0
# nvmlDeviceGetFieldValues' value union member per nvmlValueType_t (nvml.h).
_VALUE_MEMBER = {0: "dVal", 1: "uiVal", 2: "ulVal", 3: "ullVal", 4: "sllVal", 5: "siVal", 6: "usVal"}


class TimelineWriter:
    """Appends timeline rows as they are read; never rewrites the file."""

    def __init__(self, path: Path, run_id: str):
        self.path, self.run_id = Path(path), run_id
        self.rows_written = 0
        self._lock = threading.Lock()
        self._synced = time.monotonic()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file = open(self.path, "x", newline="", encoding="utf-8")
        self._writer = csv.DictWriter(self._file, fieldnames=COLUMNS, extrasaction="raise")
        self._writer.writeheader()
        self._sync()

    def write(self, row: dict) -> None:
        with self._lock:
            if self._file.closed:
                return
            full = {c: "" for c in COLUMNS}
            full.update(row, schema_version=SCHEMA_VERSION, run_id=self.run_id)
            full["timestamp_utc"] = full["timestamp_utc"] or utc_now()
            self._writer.writerow({c: _cell(c, full[c]) for c in COLUMNS})
            self._file.flush()
            self.rows_written += 1
            if time.monotonic() - self._synced >= SYNC_S:
                self._sync()

    def close(self, complete: bool, message: str) -> None:
        """The closing row: `complete` or why the burn ended early."""
        self.write({"kind": "end", "message": message, "phase": "complete" if complete else "incomplete"})
        with self._lock:
            if not self._file.closed:
                self._sync()
                self._file.close()

    def _sync(self) -> None:
        self._file.flush()
        os.fsync(self._file.fileno())
        self._synced = time.monotonic()


@dataclass
class Timeline:
    path: str
    rows: list[dict[str, str]]  # the samples (the closing row removed)
    complete: bool
    end_message: str
    run_id: str = ""


def read_timeline(path: str | os.PathLike) -> Timeline:
    """Read and validate a timeline; a damaged or foreign file raises ResultsFileError naming file, line, column."""
    path = Path(path)
    try:
        text = path.read_bytes().decode("utf-8")
    except OSError as e:
        raise ResultsFileError(path, None, None, f"cannot read: {e.strerror or e}") from None
    except UnicodeDecodeError as e:
        raise ResultsFileError(path, None, None, f"not UTF-8 text (byte {e.start}); not a timeline") from None
    if text and not text.endswith("\n"):  # a torn last row (the run died writing it): dropped
        text = text[: text.rfind("\n") + 1]
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        header = next(reader)
    except (StopIteration, csv.Error):
        raise ResultsFileError(path, 1, None, "empty or malformed; not a cardbench timeline") from None
    if header != COLUMNS:
        missing = [c for c in COLUMNS if c not in header]
        raise ResultsFileError(path, 1, missing[0] if missing else None,
                               "not a cardbench timeline (schema 1 columns expected)")
    rows, end = [], None
    for fields in reader:
        line = reader.line_num
        if not fields:
            continue
        if end is not None:
            raise ResultsFileError(path, line, None, "rows after the closing row")
        if len(fields) != len(COLUMNS):
            raise ResultsFileError(path, line, None, f"{len(fields)} fields, the header has {len(COLUMNS)}")
        row = dict(zip(COLUMNS, fields))
        if row["schema_version"] not in {str(v) for v in SUPPORTED_SCHEMAS}:
            raise ResultsFileError(path, line, "schema_version", f"unknown timeline schema '{row['schema_version']}'")
        if row["kind"] not in KINDS:
            raise ResultsFileError(path, line, "kind", f"'{row['kind']}' is not one of {', '.join(KINDS)}")
        for c in NUMERIC:
            if row[c] and finite_float(row[c]) is None:
                raise ResultsFileError(path, line, c, f"'{row[c][:40]}' is not a number")
        if row["kind"] == "end":
            end = row
        else:
            rows.append(row)
    run_id = (rows[0] if rows else end or {}).get("run_id", "")
    return Timeline(str(path), rows, end is not None and end["phase"] == "complete", end["message"] if end else "",
                    run_id)


def memory_temperature(handle) -> int | None:
    """HBM temperature, C (NVML field NVML_FI_DEV_MEMORY_TEMP); None where the board has no sensor."""
    nv = nvml.module()
    fid = getattr(nv, "NVML_FI_DEV_MEMORY_TEMP", None) if nv is not None else None
    values = nvml.call("nvmlDeviceGetFieldValues", handle, [fid]) if fid is not None else None
    if not values or getattr(values[0], "nvmlReturn", 1) != 0:
        return None
    member = _VALUE_MEMBER.get(getattr(values[0], "valueType", -1))
    value = getattr(values[0].value, member, None) if member else None
    return int(value) if isinstance(value, (int, float)) else None


def thresholds(handle) -> dict[str, int | None]:
    """The card's own temperature limits, C: where it slows down, the GPU's and the memory's maximum."""
    nv = nvml.module()
    names = {"slowdown": "NVML_TEMPERATURE_THRESHOLD_SLOWDOWN", "gpu_max": "NVML_TEMPERATURE_THRESHOLD_GPU_MAX",
             "mem_max": "NVML_TEMPERATURE_THRESHOLD_MEM_MAX", "shutdown": "NVML_TEMPERATURE_THRESHOLD_SHUTDOWN"}
    return {k: nvml.call("nvmlDeviceGetTemperatureThreshold", handle, getattr(nv, c)) if nv is not None and
            hasattr(nv, c) else None for k, c in names.items()}


def read_device(handle) -> dict:
    """One reading of one GPU, in the timeline's columns (energy as the raw counter, mJ)."""
    nv = nvml.module()
    mask = nvml.first(("nvmlDeviceGetCurrentClocksEventReasons", "nvmlDeviceGetCurrentClocksThrottleReasons"),
                      handle)
    power = nvml.call("nvmlDeviceGetPowerUsage", handle)
    return {"sm_clock_mhz": nvml.call("nvmlDeviceGetClockInfo", handle, nv.NVML_CLOCK_SM),
            "mem_clock_mhz": nvml.call("nvmlDeviceGetClockInfo", handle, nv.NVML_CLOCK_MEM),
            "power_w": power / 1000 if power is not None else None,
            "energy_mj": nvml.call("nvmlDeviceGetTotalEnergyConsumption", handle),
            "temp_gpu_c": nvml.call("nvmlDeviceGetTemperature", handle, nv.NVML_TEMPERATURE_GPU),
            "temp_mem_c": memory_temperature(handle),
            "fan_pct": nvml.call("nvmlDeviceGetFanSpeed", handle),
            "clocks_event_reasons": f"{mask:#x}" if isinstance(mask, int) else "",
            "clocks_event_reason_names": "|".join(n for n in reason_names(mask) if n != "gpu_idle")
            if isinstance(mask, int) else ""}


@dataclass
class Device:
    key: str  # "cuda:0"
    index: int
    uuid: str
    handle: object = None
    energy0: int | None = None  # the counter at the first reading: energy_j counts from there
    limits: dict = field(default_factory=dict)


class Sampler:
    """Writes a row per GPU every INTERVAL_S; keeps each GPU's hottest readings per phase."""

    def __init__(self, writer: TimelineWriter | None, devices: list[Device],
                 state: Callable[[str], tuple[str, float | None]], interval_s: float = INTERVAL_S):
        self.writer, self.state, self.interval_s = writer, state, interval_s
        self.devices = [d for d in devices if nvml.available()]
        for d in self.devices:
            d.handle = nvml.handle(d.index)
            d.limits = thresholds(d.handle) if d.handle is not None else {}
        self.devices = [d for d in self.devices if d.handle is not None]
        self.hottest: dict[tuple[str, str], dict[str, float]] = {}  # (device, phase) -> max temps
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._t0 = time.monotonic()

    def start(self) -> None:
        self._t0 = time.monotonic()
        if self.devices:
            self._thread = threading.Thread(target=self._run, name="cardbench-timeline", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def _run(self) -> None:
        while not self._stop.is_set():
            for d in self.devices:
                try:
                    self.sample(d)
                except Exception:  # a lost reading is a lost reading; the thread goes on
                    pass
            self._stop.wait(self.interval_s)

    def sample(self, d: Device) -> dict:
        reading = read_device(d.handle)
        phase, flops = self.state(d.key)
        energy = reading.pop("energy_mj")
        if isinstance(energy, int) and d.energy0 is None:
            d.energy0 = energy
        row = {**reading, "kind": "sample", "time_s": time.monotonic() - self._t0, "device_index": d.index,
               "device_uuid": d.uuid, "phase": phase,
               "energy_j": (energy - d.energy0) / 1000 if isinstance(energy, int) and d.energy0 is not None else None,
               "throughput_tflops": flops / 1e12 if flops is not None else None}
        hot = self.hottest.setdefault((d.key, phase), {})
        for column in ("temp_gpu_c", "temp_mem_c"):
            if isinstance(row[column], (int, float)):
                hot[column] = max(hot.get(column, row[column]), row[column])
        if self.writer is not None:
            self.writer.write(row)
        return row
