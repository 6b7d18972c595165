"""Card identity, health and in-window telemetry through NVML (nvidia-ml-py).

Every value is text, "" when unknown. Without a driver or NVML every function
returns its keys with empty values: it never raises, prints or warns, so CPU
mode and consumer boards (serial, ECC, MIG: NotSupported) run the same code.
NVML and never `nvidia-smi`: its text "is not guaranteed to be backwards
compatible" (nvidia-smi(1)); see research/STYLE-AND-ECOSYSTEM.md B.1.
"""

from __future__ import annotations

import importlib.metadata
import os
import platform
import subprocess
import threading
from pathlib import Path

# Bit -> name of nvmlClocksEventReason* (pynvml.py ~l.2190-2228). 0x200 and 0x400
# exist there only under the older nvmlClocksThrottleReason* names.
CLOCKS_EVENT_REASONS: dict[int, str] = {
    0x1: "gpu_idle", 0x2: "applications_clocks_setting", 0x4: "sw_power_cap", 0x8: "hw_slowdown",
    0x10: "sync_boost", 0x20: "sw_thermal_slowdown", 0x40: "hw_thermal_slowdown",
    0x80: "hw_power_brake_slowdown", 0x100: "display_clock_setting", 0x200: "board_limit",
    0x400: "reliability",
}

# Every function returns all of its keys, in this order, so a CSV header can be built from them.
RUN_KEYS = tuple("""host cpu_model cpu_cores os python_version driver_version cuda_driver_version
    cuda_runtime_version torch_version triton_version nccl_version cardbench_version
    cardbench_commit""".split())
DEVICE_KEYS = tuple("""device_name device_uuid device_serial board_part_number vbios_version
    pci_bus_id pci_device_id compute_capability sm_count l2_cache_bytes memory_total_bytes
    mem_bus_width_bits mem_clock_max_mhz mem_peak_bytes_per_s sm_clock_max_mhz power_limit_w
    persistence_mode mig_mode ecc_mode ecc_errors_uncorrected ecc_errors_corrected
    ecc_errors_uncorrected_aggregate remapped_rows_correctable remapped_rows_uncorrectable
    remapped_rows_pending remapped_rows_failure pcie_gen_current pcie_gen_max pcie_width_current
    pcie_width_max pcie_replay_count compute_processes""".split())
SAMPLE_KEYS = tuple("""sm_clock_mhz_mean sm_clock_mhz_min mem_clock_mhz_mean power_w_mean power_w_max
    temp_c_max clocks_event_reasons clocks_event_reason_names telemetry_samples""".split())

_nvml = None        # the pynvml module in use; tests put a fake module here (and reset _nvml_state)
_nvml_state = None  # None: nvmlInit not tried yet, True: initialised, False: unavailable
_init_lock = threading.Lock()


def _nvml_module():
    """The initialised NVML binding or None; nvmlInit runs once per process, on first use."""
    global _nvml, _nvml_state
    with _init_lock:
        if _nvml_state is None:
            _nvml_state = False
            try:
                if _nvml is None:
                    import pynvml
                    _nvml = pynvml
                _nvml.nvmlInit()
                _nvml_state = True
            except Exception:  # no library, no driver, driver/library mismatch: all mean "no NVML"
                pass
        return _nvml if _nvml_state else None


def nvml_available() -> bool:
    return _nvml_module() is not None


def _get(name: str, *args):
    """One NVML call; None when NVML is absent, the binding lacks it, or it raises (NotSupported...)."""
    fn = getattr(_nvml_module(), name, None)
    if fn is None:
        return None
    try:
        return fn(*args)
    except Exception:  # one unsupported field must not cost the others
        return None


def _first(names: tuple[str, ...], *args):
    """The first of several equivalent NVML calls (new name, then deprecated one) that answers."""
    for name in names:
        value = _get(name, *args)
        if value is not None:
            return value
    return None


def _text(value) -> str:
    """Stored text of one value: "" when unknown; floats in full (repr round-trips, never rounded)."""
    if value is None:
        return ""
    if isinstance(value, bytes):
        return value.decode(errors="replace")
    if isinstance(value, float):
        return repr(value)
    return str(value)


def _on_off(state) -> str:
    """NVML enable state (or a [current, pending] pair) as "on"/"off"."""
    if isinstance(state, (list, tuple)):
        state = state[0]
    # 1 is both NVML_FEATURE_ENABLED and NVML_DEVICE_MIG_ENABLE
    return "" if state is None else ("on" if state == 1 else "off")


def _yes_no(flag) -> str:
    return "" if flag is None else ("yes" if flag else "no")


# ---------------------------------------------------------------- host / run identity

def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key.strip() == "model name":
                    return value.strip()
    except OSError:
        pass
    return platform.processor()  # aarch64 /proc/cpuinfo has no "model name"


def _dist_version(*names: str) -> str:
    for name in names:
        try:
            return importlib.metadata.version(name)
        except Exception:
            pass
    return ""


def _cuda_version_text(code) -> str:
    """CUDA's integer version (1000*major + 10*minor, e.g. 12040) as "12.4"."""
    if not isinstance(code, int) or code <= 0:
        return ""
    return f"{code // 1000}.{code % 1000 // 10}"


def _torch_versions() -> tuple[str, str, str]:
    """(torch, CUDA runtime torch was built with, NCCL); "" for each that is missing."""
    try:
        import torch
    except Exception:
        return "", "", ""
    nccl = ""
    try:  # CPU-only torch lacks torch._C._nccl_version: AttributeError
        import torch.cuda.nccl
        v = torch.cuda.nccl.version()
        # (major, minor, patch) or (major, minor, patch, suffix) in torch 2.x
        nccl = ".".join(map(str, v[:3])) + "".join(map(str, v[3:])) if isinstance(v, tuple) else _text(v)
    except Exception:
        pass
    return _text(torch.__version__), torch.version.cuda or "", nccl


def _git_commit(root: Path) -> str:
    """HEAD of the checkout whose top is `root`, "-dirty" when tracked files have changes (untracked results do not count)."""
    def git(*args: str) -> str | None:
        r = subprocess.run(["git", "--no-optional-locks", "-C", str(root), *args], capture_output=True,
                           text=True, timeout=5, stdin=subprocess.DEVNULL, check=False)
        return r.stdout.strip() if r.returncode == 0 else None
    try:
        top = git("rev-parse", "--show-toplevel")
        # An installed copy (site-packages inside a venv inside some checkout) must not
        # report that enclosing checkout's commit: the package has to sit at the top.
        if top is None or Path(top).resolve() != root.resolve():
            return ""
        head = git("rev-parse", "HEAD")  # fails in a repository without commits
        if not head:
            return ""
        status = git("status", "--porcelain", "--untracked-files=no")
        return head + ("-dirty" if status else "")
    except (OSError, subprocess.SubprocessError):  # git missing, timeout
        return ""


def run_identity() -> dict[str, str]:
    """Host, driver and software versions: the same on every row of a run."""
    torch_version, cuda_runtime, nccl = _torch_versions()
    return {
        "host": platform.node(),
        "cpu_model": _cpu_model(),
        "cpu_cores": _text(os.cpu_count()),
        "os": platform.platform(),
        "python_version": platform.python_version(),
        "driver_version": _text(_get("nvmlSystemGetDriverVersion")),
        "cuda_driver_version": _cuda_version_text(_get("nvmlSystemGetCudaDriverVersion")),
        "cuda_runtime_version": cuda_runtime,
        "torch_version": torch_version,
        "triton_version": _dist_version("triton", "pytorch-triton", "pytorch-triton-rocm"),
        "nccl_version": nccl,
        "cardbench_version": _dist_version("cardbench"),
        "cardbench_commit": _git_commit(Path(__file__).resolve().parents[2]),
    }


# ---------------------------------------------------------------- device identity

def torch_props(index: int):
    """torch's properties of CUDA device `index`, or None (CPU-only torch, no GPU, bad index)."""
    try:
        import torch
        if not torch.cuda.is_available():
            return None
        return torch.cuda.get_device_properties(index)
    except Exception:
        return None


def _torch_bus_id(props) -> str:
    """NVML-style bus id ("00000000:19:00.0") from torch's pci_* properties (absent in old torch)."""
    try:  # torch's pci_device_id is the PCI slot number, not NVML's vendor/device id
        return f"{props.pci_domain_id:08X}:{props.pci_bus_id:02X}:{props.pci_device_id:02X}.0"
    except Exception:
        return ""


def _device_handle(index: int, props=None) -> tuple[object | None, str]:
    """NVML handle of CUDA device `index`, and how it was found.

    How: "uuid", "pci_bus_id", "cuda_visible_devices", "index", or "" without a handle. CUDA
    indices follow CUDA_VISIBLE_DEVICES and CUDA_DEVICE_ORDER (fastest first by default)
    while NVML indexes every GPU in PCI order, so the PCI bus id that torch reports is
    the only mapping that is always right; the others are fallbacks.
    """
    uuid = str(getattr(props, "uuid", "") or "") if props is not None else ""
    if uuid:  # torch >= 2.2: the card's UUID, exact whatever the ordering ("GPU-" prefix in NVML)
        handle = _get("nvmlDeviceGetHandleByUUID", uuid if uuid.startswith(("GPU-", "MIG-")) else f"GPU-{uuid}")
        if handle is not None:
            return handle, "uuid"
    bus_id = _torch_bus_id(props) if props is not None else ""
    if bus_id:
        handle = _get("nvmlDeviceGetHandleByPciBusId", bus_id)
        if handle is not None:
            return handle, "pci_bus_id"
    visible = [v.strip() for v in os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",") if v.strip()]
    if index < len(visible):
        entry = visible[index]
        # An integer entry is a CUDA index, equal to NVML's only under CUDA_DEVICE_ORDER=PCI_BUS_ID
        # or on identical cards; a full UUID is exact.
        handle = (_get("nvmlDeviceGetHandleByIndex", int(entry)) if entry.isdigit()
                  else _get("nvmlDeviceGetHandleByUUID", entry))
        if handle is not None:
            return handle, "cuda_visible_devices"
    handle = _get("nvmlDeviceGetHandleByIndex", index)
    return handle, ("index" if handle is not None else "")


def device_identity(index: int | None, handle=None) -> dict[str, str]:
    """Identity, configuration and health of CUDA device `index` (torch numbering); "" where unknown.

    `handle`: an NVML handle to read instead of the one mapped from `index` (`cardbench env`
    lists every card the driver sees, also those CUDA does not; index None: no torch fields).
    """
    out = dict.fromkeys(DEVICE_KEYS, "")
    props = torch_props(index) if index is not None else None
    if props is not None:  # NVML has no SM count or L2 size; the rest are fallbacks for NVML below
        out["device_name"] = _text(getattr(props, "name", None))
        out["pci_bus_id"] = _torch_bus_id(props)
        out["compute_capability"] = f"{props.major}.{props.minor}"
        out["sm_count"] = _text(getattr(props, "multi_processor_count", None))
        out["l2_cache_bytes"] = _text(getattr(props, "L2_cache_size", None))  # torch >= 2.5
        out["memory_total_bytes"] = _text(getattr(props, "total_memory", None))
    if handle is None and index is not None:
        handle, _how = _device_handle(index, props)
    if handle is None:
        return out
    nv = _nvml_module()

    def put(key: str, value) -> None:
        if value is not None and value != "":
            out[key] = value if isinstance(value, str) else _text(value)

    put("device_name", _get("nvmlDeviceGetName", handle))
    put("device_uuid", _get("nvmlDeviceGetUUID", handle))
    put("device_serial", _get("nvmlDeviceGetSerial", handle))
    put("board_part_number", _get("nvmlDeviceGetBoardPartNumber", handle))
    put("vbios_version", _get("nvmlDeviceGetVbiosVersion", handle))
    pci = _get("nvmlDeviceGetPciInfo", handle)
    if pci is not None:
        put("pci_bus_id", _text(getattr(pci, "busId", None)))
        device_id = getattr(pci, "pciDeviceId", None)  # device id << 16 | vendor id (0x10DE)
        put("pci_device_id", f"0x{device_id:08X}" if isinstance(device_id, int) else None)
    cc = _get("nvmlDeviceGetCudaComputeCapability", handle)
    put("compute_capability", f"{cc[0]}.{cc[1]}" if cc else None)
    put("memory_total_bytes", getattr(_get("nvmlDeviceGetMemoryInfo", handle), "total", None))

    bus_width = _get("nvmlDeviceGetMemoryBusWidth", handle)
    mem_mhz = _get("nvmlDeviceGetMaxClockInfo", handle, nv.NVML_CLOCK_MEM)
    put("mem_bus_width_bits", bus_width)
    put("mem_clock_max_mhz", mem_mhz)
    if bus_width and mem_mhz:
        # Peak = max memory clock x bus width x 2 (double data rate), METHOD.md 1.3; integer
        # arithmetic keeps it exact. The *max* clock, not the current (idle) one.
        put("mem_peak_bytes_per_s", mem_mhz * 1_000_000 * bus_width * 2 // 8)
    put("sm_clock_max_mhz", _get("nvmlDeviceGetMaxClockInfo", handle, nv.NVML_CLOCK_SM))
    limit_mw = _get("nvmlDeviceGetEnforcedPowerLimit", handle)
    put("power_limit_w", limit_mw / 1000 if limit_mw is not None else None)

    put("persistence_mode", _on_off(_get("nvmlDeviceGetPersistenceMode", handle)))
    put("mig_mode", _on_off(_get("nvmlDeviceGetMigMode", handle)))
    put("ecc_mode", _on_off(_get("nvmlDeviceGetEccMode", handle)))
    unc, corr = nv.NVML_MEMORY_ERROR_TYPE_UNCORRECTED, nv.NVML_MEMORY_ERROR_TYPE_CORRECTED
    put("ecc_errors_uncorrected", _get("nvmlDeviceGetTotalEccErrors", handle, unc, nv.NVML_VOLATILE_ECC))
    put("ecc_errors_corrected", _get("nvmlDeviceGetTotalEccErrors", handle, corr, nv.NVML_VOLATILE_ECC))
    put("ecc_errors_uncorrected_aggregate",
        _get("nvmlDeviceGetTotalEccErrors", handle, unc, nv.NVML_AGGREGATE_ECC))
    rows = _get("nvmlDeviceGetRemappedRows", handle)  # (correctable, uncorrectable, pending, failure)
    if rows is not None:
        put("remapped_rows_correctable", rows[0])
        put("remapped_rows_uncorrectable", rows[1])
        put("remapped_rows_pending", _yes_no(rows[2]))
        put("remapped_rows_failure", _yes_no(rows[3]))

    out.update({k: v for k, v in _pcie_link(handle).items() if v})
    # GpuMax is what the card can do; Max is min(card, slot): "a gen-2 device on a gen-1 bus reports 1".
    put("pcie_gen_max", _first(("nvmlDeviceGetGpuMaxPcieLinkGeneration",
                                "nvmlDeviceGetMaxPcieLinkGeneration"), handle))
    put("pcie_width_max", _get("nvmlDeviceGetMaxPcieLinkWidth", handle))
    put("pcie_replay_count", _get("nvmlDeviceGetPcieReplayCounter", handle))
    put("compute_processes", _other_processes(handle))
    return out


def _other_processes(handle) -> int | None:
    """Processes other than this one with a compute context on the card, or None when NVML cannot tell."""
    procs = _first(("nvmlDeviceGetComputeRunningProcesses",
                    "nvmlDeviceGetComputeRunningProcesses_v2"), handle)
    if procs is None:
        return None
    return sum(1 for p in procs if getattr(p, "pid", None) != os.getpid())


def _pcie_link(handle) -> dict[str, str]:
    return {"pcie_gen_current": _text(_get("nvmlDeviceGetCurrPcieLinkGeneration", handle)),
            "pcie_width_current": _text(_get("nvmlDeviceGetCurrPcieLinkWidth", handle))}


def pcie_link(index: int) -> dict[str, str]:
    """Current PCIe generation and width; read it under load, idle links train down to Gen1."""
    handle = _device_handle(index, torch_props(index))[0]
    if handle is None:
        return {"pcie_gen_current": "", "pcie_width_current": ""}
    return _pcie_link(handle)


def max_sm_clock_mhz(index: int | None) -> int | None:
    """The maximum SM clock NVML reports for CUDA device `index` (sizes the timers' spin kernel)."""
    handle = nvml_handle(index)
    if handle is None:
        return None
    return _get("nvmlDeviceGetMaxClockInfo", handle, _nvml_module().NVML_CLOCK_SM)


def nvml():
    """The initialised NVML binding, or None without a driver (for modules reading more of NVML)."""
    return _nvml_module()


def nvml_handle(index: int | None):
    """The NVML handle of CUDA device `index` (mapped by UUID / PCI bus id), or None."""
    if index is None or _nvml_module() is None:
        return None
    return _device_handle(index, torch_props(index))[0]


def idle_state(index: int) -> tuple[float | None, float | None]:
    """(GPU utilization %, temperature C) now, for an idle gate; (None, None) without NVML."""
    nv, handle = _nvml_module(), nvml_handle(index)
    if handle is None:
        return None, None
    util = _get("nvmlDeviceGetUtilizationRates", handle)
    temp = _get("nvmlDeviceGetTemperature", handle, nv.NVML_TEMPERATURE_GPU)
    return (float(util.gpu) if util is not None else None), (float(temp) if temp is not None else None)


def _cache_bytes(text: str) -> int:
    """sysfs cache size ("32K", "36864K", "1M": binary units) in bytes."""
    text = text.strip()
    scale = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}.get(text[-1:].upper(), 1)
    return int(text.rstrip("KkMmGg")) * scale


def _last_level_cache_bytes(cache_dir: Path = Path("/sys/devices/system/cpu/cpu0/cache")) -> int | None:
    best = None
    for d in cache_dir.glob("index*"):
        try:
            level, size = int((d / "level").read_text()), _cache_bytes((d / "size").read_text())
        except (OSError, ValueError):
            continue
        best = max(best or (level, size), (level, size))
    return best[1] if best else None


def host_memory_total_bytes(meminfo: Path = Path("/proc/meminfo")) -> int | None:
    try:
        for line in meminfo.read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) * 1024  # the kernel's "kB" is KiB
    except (OSError, ValueError, IndexError):
        pass
    return None


def cpu_identity() -> dict[str, str]:
    """The host CPU in device_identity's keys, for CPU-mode rows."""
    out = dict.fromkeys(DEVICE_KEYS, "")
    out["device_name"] = _cpu_model()
    out["sm_count"] = _text(os.cpu_count())
    out["l2_cache_bytes"] = _text(_last_level_cache_bytes())  # last level (L3 on x86), not L2
    out["memory_total_bytes"] = _text(host_memory_total_bytes())
    return out


# ---------------------------------------------------------------- telemetry during a window

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

    def __enter__(self) -> "Sampler":
        # A fresh list and event per window: a thread left over from a hung window cannot write into this one.
        self._rows, self._stop, self._procs = [], threading.Event(), []
        if self.index is not None and nvml_available():
            self._handle = _device_handle(self.index, torch_props(self.index))[0]
        if self._handle is not None:
            self._count_processes()
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
            self._count_processes()
        return False

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
        nv, h = _nvml_module(), self._handle
        if nv is None:
            return
        row = (_get("nvmlDeviceGetClockInfo", h, nv.NVML_CLOCK_SM),
               _get("nvmlDeviceGetClockInfo", h, nv.NVML_CLOCK_MEM),
               # On recent boards NVML averages power over ~1 s: short windows read partly idle power.
               _get("nvmlDeviceGetPowerUsage", h),
               _get("nvmlDeviceGetTemperature", h, nv.NVML_TEMPERATURE_GPU),
               _first(("nvmlDeviceGetCurrentClocksEventReasons",
                       "nvmlDeviceGetCurrentClocksThrottleReasons"), h))
        if any(v is not None for v in row):
            rows.append(row)

    def summary(self) -> dict[str, str]:
        out = dict.fromkeys(SAMPLE_KEYS, "")
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
