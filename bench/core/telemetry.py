"""Telemetry during a timed window (NVML, through bench/core/nvml.py): clocks, power, temperature,
the clocks-event reasons OR-ed over the window, the energy the card used over it (NVML's
total-energy counter), other processes on the card, the PCIe link under load.

Every value is text, "" when unknown; without a driver the sampler is silent.
"""
from __future__ import annotations

import threading
import time

from .identity import _other_processes, _text, pcie_link_of
from . import nvml

# Bit -> name of nvmlClocksEventReason* (nvidia-ml-py's pynvml.py). 0x200 and 0x400
# exist there only under the older nvmlClocksThrottleReason* names.
CLOCKS_EVENT_REASONS: dict[int, str] = {
    0x1: "gpu_idle", 0x2: "applications_clocks_setting", 0x4: "sw_power_cap", 0x8: "hw_slowdown",
    0x10: "sync_boost", 0x20: "sw_thermal_slowdown", 0x40: "hw_thermal_slowdown",
    0x80: "hw_power_brake_slowdown", 0x100: "display_clock_setting", 0x200: "board_limit",
    0x400: "reliability",
}
SAMPLE_KEYS = tuple("""sm_clock_mhz_mean sm_clock_mhz_min mem_clock_mhz_mean power_w_mean power_w_max
    temp_c_max clocks_event_reasons clocks_event_reason_names telemetry_samples energy_j energy_window_s""".split())


def pcie_link(index: int) -> dict[str, str]:
    """Current PCIe generation and width; read it under load, idle links train down to Gen1."""
    handle = nvml.device_handle(index, nvml.torch_props(index))[0]
    if handle is None:
        return {"pcie_gen_current": "", "pcie_width_current": ""}
    return pcie_link_of(handle)


def max_sm_clock_mhz(index: int | None) -> int | None:
    """The maximum SM clock NVML reports for CUDA device `index` (sizes the timers' spin kernel)."""
    handle = nvml.handle(index)
    if handle is None:
        return None
    return nvml.call("nvmlDeviceGetMaxClockInfo", handle, nvml.module().NVML_CLOCK_SM)


def idle_state(index: int) -> tuple[float | None, float | None]:
    """(GPU utilization %, temperature C) now, for an idle gate; (None, None) without NVML."""
    nv, handle = nvml.module(), nvml.handle(index)
    if handle is None:
        return None, None
    util = nvml.call("nvmlDeviceGetUtilizationRates", handle)
    temp = nvml.call("nvmlDeviceGetTemperature", handle, nv.NVML_TEMPERATURE_GPU)
    return (float(util.gpu) if util is not None else None), (float(temp) if temp is not None else None)


def reason_names(mask: int) -> list[str]:
    """Names of the clocks-event bits set in `mask`, lowest bit first; unknown bits as "unknown_0x..."."""
    names, bit = [], 1
    while bit <= mask:
        if mask & bit:
            names.append(CLOCKS_EVENT_REASONS.get(bit, f"unknown_{bit:#x}"))
        bit <<= 1
    return names


class Sampler:
    """Samples NVML telemetry in a background thread during a timed window."""

    def __init__(self, index: int | None, interval_s: float = 0.02):
        self.index = index
        self.interval_s = interval_s
        self._handle = None
        self._rows: list[tuple] = []  # (sm MHz, mem MHz, power mW, temp C, event mask), None where unread
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._procs: list[int] = []  # other compute processes seen at the window's edges
        self._energy: list[tuple[float, int]] = []  # (monotonic s, total-energy counter mJ) at the edges

    def __enter__(self) -> "Sampler":
        # A fresh list and event per window: a thread left over from a hung window cannot write into this one.
        self._rows, self._stop, self._procs, self._energy = [], threading.Event(), [], []
        if self.index is not None and nvml.available():
            self._handle = nvml.device_handle(self.index, nvml.torch_props(self.index))[0]
        if self._handle is not None:
            self._count_processes()
            self._read_energy()
            self._sample(self._rows)  # the window's first instant, even if it ends before the first tick
            self._thread = threading.Thread(target=self._run, args=(self._stop, self._rows),
                                            name="cardbench-telemetry", daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc) -> bool:
        if self._thread is not None:
            self._stop.set()
            self._thread.join(timeout=5)  # a hung NVML call must not hang the benchmark: daemon thread
            self._thread = None
            self._sample(self._rows)
            self._read_energy()
            self._count_processes()
        return False

    def _read_energy(self) -> None:
        """The total-energy counter (mJ since the driver loaded; Volta and later) and when it was read."""
        mj = nvml.call("nvmlDeviceGetTotalEnergyConsumption", self._handle)
        if isinstance(mj, int):
            self._energy.append((time.monotonic(), mj))

    def _count_processes(self) -> None:
        """Other processes computing on the card at the window's edges: they disturb this measurement."""
        try:
            n = _other_processes(self._handle)
        except Exception:
            n = None
        if n is not None:
            self._procs.append(n)

    def _run(self, stop: threading.Event, rows: list) -> None:
        while not stop.wait(self.interval_s):
            try:
                self._sample(rows)
            except Exception:  # nothing may escape the thread; a lost sample is only a lost sample
                pass

    def _sample(self, rows: list) -> None:
        nv, h = nvml.module(), self._handle
        if nv is None:
            return
        row = (nvml.call("nvmlDeviceGetClockInfo", h, nv.NVML_CLOCK_SM),
               nvml.call("nvmlDeviceGetClockInfo", h, nv.NVML_CLOCK_MEM),
               # On recent boards NVML averages power over ~1 s: short windows read partly idle power.
               nvml.call("nvmlDeviceGetPowerUsage", h),
               nvml.call("nvmlDeviceGetTemperature", h, nv.NVML_TEMPERATURE_GPU),
               nvml.first(("nvmlDeviceGetCurrentClocksEventReasons",
                       "nvmlDeviceGetCurrentClocksThrottleReasons"), h))
        if any(v is not None for v in row):
            rows.append(row)

    def summary(self) -> dict[str, str]:
        out = dict.fromkeys(SAMPLE_KEYS, "")
        if len(self._energy) == 2 and self._energy[1][0] > self._energy[0][0]:
            (t0, e0), (t1, e1) = self._energy
            out["energy_j"] = _text((e1 - e0) / 1000)
            out["energy_window_s"] = _text(t1 - t0)
        rows = list(self._rows)
        if not rows:
            return out
        sm, mem, power_mw, temp, masks = ([r[i] for r in rows if r[i] is not None] for i in range(5))
        if sm:
            out["sm_clock_mhz_mean"] = _text(sum(sm) / len(sm))
            out["sm_clock_mhz_min"] = _text(min(sm))
        if mem:
            out["mem_clock_mhz_mean"] = _text(sum(mem) / len(mem))
        if power_mw:
            out["power_w_mean"] = _text(sum(power_mw) / len(power_mw) / 1000)
            out["power_w_max"] = _text(max(power_mw) / 1000)
        if temp:
            out["temp_c_max"] = _text(max(temp))
        if masks:
            mask = 0
            for m in masks:
                mask |= m
            out["clocks_event_reasons"] = f"{mask:#x}"
            # gpu_idle is expected at the window's edges (before the first launch): not a finding.
            out["clocks_event_reason_names"] = "|".join(n for n in reason_names(mask) if n != "gpu_idle")
        out["telemetry_samples"] = _text(len(rows))
        if self._procs:  # only when counted: an empty value must not hide the run-start count
            out["compute_processes"] = _text(max(self._procs))
        return out
