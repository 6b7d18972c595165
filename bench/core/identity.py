"""Who measured what on which card: the run's and each device's identity, configuration and health.

Every value is text, "" when unknown, read through NVML (bench/core/nvml.py) and torch;
without a driver every function returns its keys with empty values and never raises.
"""
from __future__ import annotations

import importlib.metadata
import os
import platform
import subprocess
from pathlib import Path

from . import nvml

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
        "driver_version": _text(nvml.call("nvmlSystemGetDriverVersion")),
        "cuda_driver_version": _cuda_version_text(nvml.call("nvmlSystemGetCudaDriverVersion")),
        "cuda_runtime_version": cuda_runtime,
        "torch_version": torch_version,
        "triton_version": _dist_version("triton", "pytorch-triton", "pytorch-triton-rocm"),
        "nccl_version": nccl,
        "cardbench_version": _dist_version("cardbench"),
        "cardbench_commit": _git_commit(Path(__file__).resolve().parents[2]),
    }


def device_identity(index: int | None, handle=None) -> dict[str, str]:
    """Identity, configuration and health of CUDA device `index` (torch numbering); "" where unknown.

    `handle`: an NVML handle to read instead of the one mapped from `index` (`cardbench env`
    lists every card the driver sees, also those CUDA does not; index None: no torch fields).
    """
    out = dict.fromkeys(DEVICE_KEYS, "")
    props = nvml.torch_props(index) if index is not None else None
    if props is not None:  # NVML has no SM count or L2 size; the rest are fallbacks for NVML below
        out["device_name"] = _text(getattr(props, "name", None))
        out["pci_bus_id"] = nvml.torch_bus_id(props)
        out["compute_capability"] = f"{props.major}.{props.minor}"
        out["sm_count"] = _text(getattr(props, "multi_processor_count", None))
        out["l2_cache_bytes"] = _text(getattr(props, "L2_cache_size", None))  # torch >= 2.5
        out["memory_total_bytes"] = _text(getattr(props, "total_memory", None))
    if handle is None and index is not None:
        handle, _how = nvml.device_handle(index, props)
    if handle is None:
        return out
    nv = nvml.module()

    def put(key: str, value) -> None:
        if value is not None and value != "":
            out[key] = value if isinstance(value, str) else _text(value)

    put("device_name", nvml.call("nvmlDeviceGetName", handle))
    put("device_uuid", nvml.call("nvmlDeviceGetUUID", handle))
    put("device_serial", nvml.call("nvmlDeviceGetSerial", handle))
    put("board_part_number", nvml.call("nvmlDeviceGetBoardPartNumber", handle))
    put("vbios_version", nvml.call("nvmlDeviceGetVbiosVersion", handle))
    pci = nvml.call("nvmlDeviceGetPciInfo", handle)
    if pci is not None:
        put("pci_bus_id", _text(getattr(pci, "busId", None)))
        device_id = getattr(pci, "pciDeviceId", None)  # device id << 16 | vendor id (0x10DE)
        put("pci_device_id", f"0x{device_id:08X}" if isinstance(device_id, int) else None)
    cc = nvml.call("nvmlDeviceGetCudaComputeCapability", handle)
    put("compute_capability", f"{cc[0]}.{cc[1]}" if cc else None)
    put("memory_total_bytes", getattr(nvml.call("nvmlDeviceGetMemoryInfo", handle), "total", None))

    bus_width = nvml.call("nvmlDeviceGetMemoryBusWidth", handle)
    mem_mhz = nvml.call("nvmlDeviceGetMaxClockInfo", handle, nv.NVML_CLOCK_MEM)
    put("mem_bus_width_bits", bus_width)
    put("mem_clock_max_mhz", mem_mhz)
    if bus_width and mem_mhz:
        # Peak = max memory clock x bus width / 8 x 2 (double data rate), as the CUDA C++ Best
        # Practices Guide computes it ("Theoretical Bandwidth Calculation",
        # https://docs.nvidia.com/cuda/cuda-c-best-practices-guide/); integer arithmetic keeps it
        # exact. The *max* clock, not the current (idle) one.
        put("mem_peak_bytes_per_s", mem_mhz * 1_000_000 * bus_width * 2 // 8)
    put("sm_clock_max_mhz", nvml.call("nvmlDeviceGetMaxClockInfo", handle, nv.NVML_CLOCK_SM))
    limit_mw = nvml.call("nvmlDeviceGetEnforcedPowerLimit", handle)
    put("power_limit_w", limit_mw / 1000 if limit_mw is not None else None)

    put("persistence_mode", _on_off(nvml.call("nvmlDeviceGetPersistenceMode", handle)))
    put("mig_mode", _on_off(nvml.call("nvmlDeviceGetMigMode", handle)))
    put("ecc_mode", _on_off(nvml.call("nvmlDeviceGetEccMode", handle)))
    unc, corr = nv.NVML_MEMORY_ERROR_TYPE_UNCORRECTED, nv.NVML_MEMORY_ERROR_TYPE_CORRECTED
    put("ecc_errors_uncorrected", nvml.call("nvmlDeviceGetTotalEccErrors", handle, unc, nv.NVML_VOLATILE_ECC))
    put("ecc_errors_corrected", nvml.call("nvmlDeviceGetTotalEccErrors", handle, corr, nv.NVML_VOLATILE_ECC))
    put("ecc_errors_uncorrected_aggregate",
        nvml.call("nvmlDeviceGetTotalEccErrors", handle, unc, nv.NVML_AGGREGATE_ECC))
    rows = nvml.call("nvmlDeviceGetRemappedRows", handle)  # (correctable, uncorrectable, pending, failure)
    if rows is not None:
        put("remapped_rows_correctable", rows[0])
        put("remapped_rows_uncorrectable", rows[1])
        put("remapped_rows_pending", _yes_no(rows[2]))
        put("remapped_rows_failure", _yes_no(rows[3]))

    out.update({k: v for k, v in pcie_link_of(handle).items() if v})
    # GpuMax is what the card can do; Max is min(card, slot): "a gen-2 device on a gen-1 bus reports 1".
    put("pcie_gen_max", nvml.first(("nvmlDeviceGetGpuMaxPcieLinkGeneration",
                                "nvmlDeviceGetMaxPcieLinkGeneration"), handle))
    put("pcie_width_max", nvml.call("nvmlDeviceGetMaxPcieLinkWidth", handle))
    put("pcie_replay_count", nvml.call("nvmlDeviceGetPcieReplayCounter", handle))
    put("compute_processes", _other_processes(handle))
    return out


def pcie_link_of(handle) -> dict[str, str]:
    return {"pcie_gen_current": _text(nvml.call("nvmlDeviceGetCurrPcieLinkGeneration", handle)),
            "pcie_width_current": _text(nvml.call("nvmlDeviceGetCurrPcieLinkWidth", handle))}


# Processes of this cardbench run besides this one (a gate worker's supervisor, which holds a
# context on the card but runs nothing there while the worker measures): not "other" work.
OWN_PIDS: set[int] = set()


def _other_processes(handle) -> int | None:
    """Processes other than this run's with a compute context on the card, or None when NVML cannot tell."""
    procs = nvml.first(("nvmlDeviceGetComputeRunningProcesses",
                    "nvmlDeviceGetComputeRunningProcesses_v2"), handle)
    if procs is None:
        return None
    mine = {os.getpid(), *OWN_PIDS}
    return sum(1 for p in procs if getattr(p, "pid", None) not in mine)


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
