"""bench.core.telemetry without a driver (this machine) and against a fake NVML built from an H100's answers."""

import copy
import importlib.metadata
import json
import logging
import os
import platform
import shutil
import subprocess
import threading
import time
import types
import warnings
from pathlib import Path

import pynvml
import pytest
import torch

from bench.core import identity, telemetry
from bench.core import nvml as nvml_api

FIXTURE = Path(__file__).parent / "fixtures" / "nvml_h100.json"
H100 = json.loads(FIXTURE.read_text())["devices"][0]


def nvml_error(code=pynvml.NVML_ERROR_NOT_SUPPORTED):
    """The binding's own exception (NVMLError.__new__ picks the subclass, e.g. NVMLError_NotSupported)."""
    def raiser(*args):
        raise pynvml.NVMLError(code)
    return raiser


def fake_nvml(devices=None) -> types.ModuleType:
    """A pynvml stand-in answering from the fixture; same function names and constants as the binding."""
    data = json.loads(FIXTURE.read_text())
    devices = copy.deepcopy(devices if devices is not None else data["devices"])
    nv = types.ModuleType("fake_pynvml")
    for name in dir(pynvml):
        if name.startswith("NVML_"):
            setattr(nv, name, getattr(pynvml, name))
    nv.NVMLError = pynvml.NVMLError
    nv.init_calls = 0
    nv.sample_reads = 0  # completed samples: the clocks-event read is the last of each sample
    handles = [types.SimpleNamespace(dev=d) for d in devices]

    def init():
        nv.init_calls += 1

    def by_index(i):
        if not 0 <= i < len(handles):
            raise pynvml.NVMLError(pynvml.NVML_ERROR_INVALID_ARGUMENT)
        return handles[i]

    def find(key, value):
        for h in handles:
            if h.dev[key].upper() == value.upper():
                return h
        raise pynvml.NVMLError(pynvml.NVML_ERROR_NOT_FOUND)

    def sample(h):
        return h.dev["samples"][min(nv.sample_reads, len(h.dev["samples"]) - 1)]

    def clock(h, kind):
        return sample(h)["sm_mhz" if kind == pynvml.NVML_CLOCK_SM else "mem_mhz"]

    def reasons(h):
        value = sample(h)["clocks_event_reasons"]
        nv.sample_reads += 1
        return value

    def ecc_errors(h, error_type, counter_type):
        kind = "uncorrected" if error_type == pynvml.NVML_MEMORY_ERROR_TYPE_UNCORRECTED else "corrected"
        when = "volatile" if counter_type == pynvml.NVML_VOLATILE_ECC else "aggregate"
        return h.dev["ecc_errors"][f"{kind}_{when}"]

    def max_clock(h, kind):
        return h.dev["max_clock_mhz"]["sm" if kind == pynvml.NVML_CLOCK_SM else "mem"]

    nv.nvmlInit = init
    nv.nvmlShutdown = lambda: None
    nv.nvmlSystemGetDriverVersion = lambda: data["system"]["driver_version"]
    nv.nvmlSystemGetCudaDriverVersion = lambda: data["system"]["cuda_driver_version"]
    nv.nvmlDeviceGetCount = lambda: len(handles)
    nv.nvmlDeviceGetHandleByIndex = by_index
    nv.nvmlDeviceGetHandleByPciBusId = lambda bus_id: find("pci_bus_id", bus_id)
    nv.nvmlDeviceGetHandleByUUID = lambda uuid: find("uuid", uuid)
    nv.nvmlDeviceGetName = lambda h: h.dev["name"]
    nv.nvmlDeviceGetUUID = lambda h: h.dev["uuid"]
    nv.nvmlDeviceGetSerial = lambda h: h.dev["serial"]
    nv.nvmlDeviceGetBoardPartNumber = lambda h: h.dev["board_part_number"]
    nv.nvmlDeviceGetVbiosVersion = lambda h: h.dev["vbios_version"]
    nv.nvmlDeviceGetPciInfo = lambda h: types.SimpleNamespace(
        busId=h.dev["pci_bus_id"], pciDeviceId=int(h.dev["pci_device_id"], 16))
    nv.nvmlDeviceGetCudaComputeCapability = lambda h: tuple(h.dev["compute_capability"])
    nv.nvmlDeviceGetMemoryInfo = lambda h: types.SimpleNamespace(
        total=h.dev["memory_total_bytes"], free=h.dev["memory_total_bytes"], used=0)
    nv.nvmlDeviceGetMemoryBusWidth = lambda h: h.dev["memory_bus_width_bits"]
    nv.nvmlDeviceGetMaxClockInfo = max_clock
    nv.nvmlDeviceGetEnforcedPowerLimit = lambda h: h.dev["enforced_power_limit_mw"]
    nv.nvmlDeviceGetPersistenceMode = lambda h: h.dev["persistence_mode"]
    nv.nvmlDeviceGetMigMode = lambda h: list(h.dev["mig_mode"])
    nv.nvmlDeviceGetEccMode = lambda h: list(h.dev["ecc_mode"])
    nv.nvmlDeviceGetTotalEccErrors = ecc_errors
    nv.nvmlDeviceGetRemappedRows = lambda h: tuple(h.dev["remapped_rows"])
    nv.nvmlDeviceGetCurrPcieLinkGeneration = lambda h: h.dev["pcie"]["gen_current"]
    nv.nvmlDeviceGetMaxPcieLinkGeneration = lambda h: h.dev["pcie"]["gen_max"]
    nv.nvmlDeviceGetGpuMaxPcieLinkGeneration = lambda h: h.dev["pcie"]["gpu_gen_max"]
    nv.nvmlDeviceGetCurrPcieLinkWidth = lambda h: h.dev["pcie"]["width_current"]
    nv.nvmlDeviceGetMaxPcieLinkWidth = lambda h: h.dev["pcie"]["width_max"]
    nv.nvmlDeviceGetPcieReplayCounter = lambda h: h.dev["pcie"]["replay_counter"]
    nv.nvmlDeviceGetComputeRunningProcesses = lambda h: [
        types.SimpleNamespace(**p) for p in h.dev["compute_processes"]]
    nv.nvmlDeviceGetClockInfo = clock
    nv.nvmlDeviceGetPowerUsage = lambda h: sample(h)["power_mw"]
    nv.nvmlDeviceGetTemperature = lambda h, sensor: sample(h)["temp_c"]
    nv.nvmlDeviceGetCurrentClocksEventReasons = reasons
    return nv


def install(monkeypatch, module, torch_props=None):
    """Make `module` the NVML binding (bench.core.nvml), not yet initialised; monkeypatch undoes it."""
    monkeypatch.setattr(nvml_api, "_module", module)
    monkeypatch.setattr(nvml_api, "_state", None)
    monkeypatch.setattr(nvml_api, "torch_props", lambda index: torch_props)
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)


@pytest.fixture
def nvml(monkeypatch):
    fake = fake_nvml()
    install(monkeypatch, fake)
    return fake


H100_IDENTITY = {
    "device_name": "NVIDIA H100 80GB HBM3",
    "device_uuid": "GPU-5f1c2a8e-93b4-4d6e-a0c7-1e2f3a4b5c6d",
    "device_serial": "1652223045871",
    "board_part_number": "692-2G520-0200-000",
    "vbios_version": "96.00.99.00.01",
    "pci_bus_id": "00000000:19:00.0",
    "pci_device_id": "0x233010DE",
    "compute_capability": "9.0",
    "sm_count": "",          # NVML has none; torch's properties supply it on a real GPU
    "l2_cache_bytes": "",
    "memory_total_bytes": "85520809984",
    "mem_bus_width_bits": "5120",
    "mem_clock_max_mhz": "2619",
    "mem_peak_bytes_per_s": "3352320000000",  # 2619e6 * 5120/8 * 2
    "sm_clock_max_mhz": "1980",
    "power_limit_w": "700.0",
    "persistence_mode": "on",
    "mig_mode": "off",
    "ecc_mode": "on",
    "ecc_errors_uncorrected": "0",
    "ecc_errors_corrected": "0",
    "ecc_errors_uncorrected_aggregate": "0",
    "remapped_rows_correctable": "0",
    "remapped_rows_uncorrectable": "0",
    "remapped_rows_pending": "no",
    "remapped_rows_failure": "no",
    "pcie_gen_current": "1",   # idle link trained down to Gen1
    "pcie_gen_max": "5",
    "pcie_width_current": "16",
    "pcie_width_max": "16",
    "pcie_replay_count": "0",
    "compute_processes": "1",  # pid 4242 in the fixture
}


# ---------------------------------------------------------------- no NVML

def _assert_empty_without_nvml():
    assert nvml_api.available() is False
    run = identity.run_identity()
    assert tuple(run) == identity.RUN_KEYS
    assert run["host"] == platform.node()
    assert run["cpu_cores"] == str(os.cpu_count())
    assert run["python_version"] == platform.python_version()
    assert run["os"] == platform.platform() and run["os"].startswith(platform.system())
    assert run["torch_version"] == torch.__version__
    assert run["cuda_runtime_version"] == (torch.version.cuda or "")
    assert run["driver_version"] == "" and run["cuda_driver_version"] == ""
    try:
        assert run["triton_version"] == importlib.metadata.version("triton")
    except importlib.metadata.PackageNotFoundError:
        assert run["triton_version"] == ""
    if torch.version.cuda is None:  # CPU torch has no NCCL: empty, no crash
        assert run["nccl_version"] == ""
    assert run["cpu_model"] == identity._cpu_model() != ""

    assert identity.device_identity(0) == dict.fromkeys(identity.DEVICE_KEYS, "")
    assert telemetry.pcie_link(0) == {"pcie_gen_current": "", "pcie_width_current": ""}
    with telemetry.Sampler(0, interval_s=0.001) as s:
        assert s._thread is None
        time.sleep(0.01)
    assert s.summary() == dict.fromkeys(telemetry.SAMPLE_KEYS, "")


def test_without_driver_everything_is_empty_and_silent(monkeypatch, capfd, caplog):
    """The real binding on a machine without a driver: nvmlInit raises LibraryNotFound."""
    install(monkeypatch, None)  # None: bench.core.nvml imports the real pynvml itself
    if nvml_api.available():
        pytest.skip("an NVIDIA driver is present here")
    monkeypatch.setattr(nvml_api, "_state", None)
    caplog.set_level(logging.DEBUG)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        _assert_empty_without_nvml()
    assert caught == []
    assert caplog.records == []
    assert capfd.readouterr() == ("", "")


def test_init_failure_is_silent_everywhere(monkeypatch, capfd, caplog):
    """Same as above on any machine: a binding whose nvmlInit fails like a missing driver's."""
    nv = fake_nvml()
    nv.nvmlInit = nvml_error(pynvml.NVML_ERROR_LIBRARY_NOT_FOUND)
    install(monkeypatch, nv)
    caplog.set_level(logging.DEBUG)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        _assert_empty_without_nvml()
    assert caught == [] and caplog.records == []
    assert capfd.readouterr() == ("", "")
    assert nv.sample_reads == 0


# ---------------------------------------------------------------- identity from a fake H100

def test_h100_device_identity(nvml):
    assert nvml_api.available()
    ident = identity.device_identity(0)
    assert tuple(ident) == identity.DEVICE_KEYS
    assert ident == H100_IDENTITY
    assert int(ident["mem_peak_bytes_per_s"]) == 2619 * 10**6 * 5120 // 8 * 2 == 3352320000000


def test_nvml_is_initialised_once(nvml):
    identity.run_identity()
    identity.device_identity(0)
    telemetry.pcie_link(0)
    with telemetry.Sampler(0, interval_s=60):
        pass
    assert nvml.init_calls == 1


def test_run_identity_versions_from_nvml(nvml):
    run = identity.run_identity()
    assert run["driver_version"] == "580.159.04"
    assert run["cuda_driver_version"] == "13.0"
    assert identity._cuda_version_text(12040) == "12.4"
    assert identity._cuda_version_text(11080) == "11.8"
    assert identity._cuda_version_text(None) == ""


def test_not_supported_field_is_empty_others_filled(nvml):
    """Consumer boards answer NotSupported for serial, part number, ECC, remapped rows, MIG."""
    for name in ("nvmlDeviceGetSerial", "nvmlDeviceGetEccMode", "nvmlDeviceGetRemappedRows",
                 "nvmlDeviceGetMigMode"):
        setattr(nvml, name, nvml_error())
    nvml.nvmlDeviceGetTotalEccErrors = nvml_error(pynvml.NVML_ERROR_NO_PERMISSION)
    ident = identity.device_identity(0)
    emptied = {"device_serial", "ecc_mode", "mig_mode", "ecc_errors_uncorrected", "ecc_errors_corrected",
               "ecc_errors_uncorrected_aggregate", "remapped_rows_correctable", "remapped_rows_uncorrectable",
               "remapped_rows_pending", "remapped_rows_failure"}
    assert ident == {k: "" if k in emptied else v for k, v in H100_IDENTITY.items()}


def test_remapped_rows_and_ecc_errors_are_reported(monkeypatch):
    dev = copy.deepcopy(H100)
    dev["remapped_rows"] = [3, 2, 1, 0]
    dev["ecc_errors"] = {"uncorrected_volatile": 2, "corrected_volatile": 17, "uncorrected_aggregate": 5}
    dev["persistence_mode"], dev["ecc_mode"], dev["mig_mode"] = 0, [0, 1], [1, 1]
    install(monkeypatch, fake_nvml([dev]))
    ident = identity.device_identity(0)
    assert [ident[k] for k in ("remapped_rows_correctable", "remapped_rows_uncorrectable",
                               "remapped_rows_pending", "remapped_rows_failure")] == ["3", "2", "yes", "no"]
    assert [ident[k] for k in ("ecc_errors_uncorrected", "ecc_errors_corrected",
                               "ecc_errors_uncorrected_aggregate")] == ["2", "17", "5"]
    assert (ident["persistence_mode"], ident["ecc_mode"], ident["mig_mode"]) == ("off", "off", "on")


def test_pcie_gen_max_prefers_gpu_capability(monkeypatch):
    """A Gen5 card in a Gen4 slot: GpuMax says 5, Max says min(card, slot) = 4."""
    dev = copy.deepcopy(H100)
    dev["pcie"]["gen_max"] = 4
    nv = fake_nvml([dev])
    install(monkeypatch, nv)
    assert identity.device_identity(0)["pcie_gen_max"] == "5"
    nv.nvmlDeviceGetGpuMaxPcieLinkGeneration = nvml_error(pynvml.NVML_ERROR_FUNCTION_NOT_FOUND)
    assert identity.device_identity(0)["pcie_gen_max"] == "4"
    del nv.nvmlDeviceGetGpuMaxPcieLinkGeneration  # an older binding without the call
    assert identity.device_identity(0)["pcie_gen_max"] == "4"


def test_pcie_link_reads_current_link(nvml):
    assert telemetry.pcie_link(0) == {"pcie_gen_current": "1", "pcie_width_current": "16"}
    nvml.nvmlDeviceGetCurrPcieLinkGeneration = lambda h: 5  # under load it trains up
    assert telemetry.pcie_link(0) == {"pcie_gen_current": "5", "pcie_width_current": "16"}


def test_compute_processes_excludes_own_pid(monkeypatch):
    dev = copy.deepcopy(H100)
    dev["compute_processes"] = [{"pid": os.getpid(), "usedGpuMemory": 1 << 30},
                                {"pid": 4242, "usedGpuMemory": None}, {"pid": 4343, "usedGpuMemory": 0}]
    install(monkeypatch, fake_nvml([dev]))
    assert identity.device_identity(0)["compute_processes"] == "2"
    dev["compute_processes"] = [{"pid": os.getpid(), "usedGpuMemory": 1 << 30}]
    install(monkeypatch, fake_nvml([dev]))
    assert identity.device_identity(0)["compute_processes"] == "0"


def _two_gpus():
    """NVML index 0 is another card; the H100 is NVML index 1 at bus 0x19."""
    other = copy.deepcopy(H100)
    other.update(uuid="GPU-00000000-1111-2222-3333-444444444444", pci_bus_id="00000000:04:00.0")
    return [other, copy.deepcopy(H100)]


def test_torch_pci_bus_id_maps_cuda_index_to_nvml_handle(monkeypatch):
    props = types.SimpleNamespace(name="NVIDIA H100 80GB HBM3", major=9, minor=0, multi_processor_count=132,
                                  total_memory=85021163520, L2_cache_size=52428800,
                                  pci_domain_id=0, pci_bus_id=0x19, pci_device_id=0)
    install(monkeypatch, fake_nvml(_two_gpus()), torch_props=props)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0")  # would point at the wrong card: bus id wins
    handle, how = nvml_api.device_handle(0, props)
    assert how == "pci_bus_id" and handle.dev["pci_bus_id"] == "00000000:19:00.0"
    ident = identity.device_identity(0)
    assert ident["device_uuid"] == H100_IDENTITY["device_uuid"]
    assert ident["sm_count"] == "132" and ident["l2_cache_bytes"] == "52428800"
    assert ident["memory_total_bytes"] == "85520809984"  # NVML's figure first, torch's only without it
    assert ident == {**H100_IDENTITY, "sm_count": "132", "l2_cache_bytes": "52428800"}


def test_torch_uuid_is_tried_before_the_pci_bus_id(monkeypatch):
    """torch 2.11 has both props.uuid and the pci ids: the UUID decides (exact under any device order)."""
    props = types.SimpleNamespace(name="NVIDIA H100 80GB HBM3", major=9, minor=0, multi_processor_count=132,
                                  total_memory=85021163520, L2_cache_size=52428800,
                                  uuid=H100_IDENTITY["device_uuid"].removeprefix("GPU-"),
                                  pci_domain_id=0, pci_bus_id=0x04, pci_device_id=0)  # a stale bus id
    install(monkeypatch, fake_nvml(_two_gpus()), torch_props=props)
    handle, how = nvml_api.device_handle(0, props)
    assert how == "uuid" and handle.dev["pci_bus_id"] == "00000000:19:00.0"


def test_torch_fallbacks_when_nvml_lacks_fields(monkeypatch):
    props = types.SimpleNamespace(name="NVIDIA H100 80GB HBM3", major=9, minor=0, multi_processor_count=132,
                                  total_memory=85021163520)  # old torch: no L2_cache_size, no pci ids
    nv = fake_nvml()
    nv.nvmlDeviceGetCudaComputeCapability = nvml_error()
    del nv.nvmlDeviceGetMemoryInfo  # deprecated: "will be removed in CUDA 14.0"
    install(monkeypatch, nv, torch_props=props)
    assert nvml_api.device_handle(0, props)[1] == "index"
    ident = identity.device_identity(0)
    assert (ident["compute_capability"], ident["memory_total_bytes"], ident["l2_cache_bytes"]) == (
        "9.0", "85021163520", "")


def test_cuda_visible_devices_mapping(monkeypatch):
    install(monkeypatch, fake_nvml(_two_gpus()))
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "1")
    assert nvml_api.device_handle(0)[1] == "cuda_visible_devices"
    assert identity.device_identity(0)["pci_bus_id"] == "00000000:19:00.0"
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "GPU-00000000-1111-2222-3333-444444444444")
    assert identity.device_identity(0)["pci_bus_id"] == "00000000:04:00.0"
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES")
    handle, how = nvml_api.device_handle(0)
    assert how == "index" and handle.dev["pci_bus_id"] == "00000000:04:00.0"
    assert identity.device_identity(5) == dict.fromkeys(identity.DEVICE_KEYS, "")  # no such card


# ---------------------------------------------------------------- Sampler

def test_sampler_window_with_two_samples_exact(nvml):
    """A window shorter than one interval still has its first and last instant."""
    assert telemetry.Sampler(0).summary() == dict.fromkeys(telemetry.SAMPLE_KEYS, "")  # never entered
    with telemetry.Sampler(0, interval_s=60) as s:
        pass
    assert nvml.sample_reads == 2  # fixture samples 0 (idle, 0x1) and 1 (power-capped, 0x4)
    assert s.summary() == {
        "sm_clock_mhz_mean": "1050.0", "sm_clock_mhz_min": "345", "mem_clock_mhz_mean": "2619.0",
        "power_w_mean": "385.373", "power_w_max": "699.512", "temp_c_max": "58",
        "clocks_event_reasons": "0x5", "clocks_event_reason_names": "sw_power_cap", "telemetry_samples": "2",
        "energy_j": "", "energy_window_s": "",  # the fixture's binding has no energy counter
        "compute_processes": "1"}  # the fixture's other process, counted at the window's edges: it disturbs the row


def test_sampler_thread_ors_reasons_over_the_window(nvml):
    with telemetry.Sampler(0, interval_s=0.002) as s:
        assert s._thread.daemon
        deadline = time.monotonic() + 5
        while nvml.sample_reads < 4 and time.monotonic() < deadline:
            time.sleep(0.002)
    summary = s.summary()
    assert summary["clocks_event_reasons"] == "0x5"            # 0x1 | 0x4 | 0x0
    assert summary["clocks_event_reason_names"] == "sw_power_cap"  # gpu_idle left out
    assert int(summary["telemetry_samples"]) >= 4
    assert summary["sm_clock_mhz_min"] == "345"
    assert 345 < float(summary["sm_clock_mhz_mean"]) < 1980
    assert summary["power_w_max"] == "699.512" and summary["temp_c_max"] == "61"
    assert not any(t.name == "cardbench-telemetry" for t in threading.enumerate())


def test_sampler_survives_failing_reads(nvml, monkeypatch):
    hooked = []
    monkeypatch.setattr(threading, "excepthook", hooked.append)

    def broken(h):
        raise RuntimeError("driver hiccup")
    nvml.nvmlDeviceGetPowerUsage = broken
    nvml.nvmlDeviceGetCurrentClocksEventReasons = nvml_error(pynvml.NVML_ERROR_FUNCTION_NOT_FOUND)
    nvml.nvmlDeviceGetCurrentClocksThrottleReasons = lambda h: 0x48  # deprecated name still answers
    with telemetry.Sampler(0, interval_s=0.001):
        time.sleep(0.02)
    assert hooked == []
    with telemetry.Sampler(0, interval_s=60) as s:
        pass
    summary = s.summary()
    assert summary["power_w_mean"] == summary["power_w_max"] == ""
    assert summary["clocks_event_reasons"] == "0x48"
    assert summary["clocks_event_reason_names"] == "hw_slowdown|hw_thermal_slowdown"
    assert summary["sm_clock_mhz_min"] == "345" and summary["telemetry_samples"] == "2"


def test_sampler_without_index_is_a_noop(nvml):
    with telemetry.Sampler(None, interval_s=0.001) as s:
        time.sleep(0.01)
    assert s.summary() == dict.fromkeys(telemetry.SAMPLE_KEYS, "")
    assert nvml.sample_reads == 0


def test_reason_names_match_the_binding():
    assert telemetry.reason_names(0x5) == ["gpu_idle", "sw_power_cap"]
    assert telemetry.reason_names(0) == []
    assert telemetry.reason_names(0x808) == ["hw_slowdown", "unknown_0x800"]
    expected = {
        "GpuIdle": "gpu_idle", "ApplicationsClocksSetting": "applications_clocks_setting",
        "SwPowerCap": "sw_power_cap", "HwSlowdown": "hw_slowdown", "SyncBoost": "sync_boost",
        "SwThermalSlowdown": "sw_thermal_slowdown", "HwThermalSlowdown": "hw_thermal_slowdown",
        "HwPowerBrakeSlowdown": "hw_power_brake_slowdown", "DisplayClockSetting": "display_clock_setting",
        "BoardLimit": "board_limit", "Reliability": "reliability"}
    table = {getattr(pynvml, "nvmlClocksThrottleReason" + k): v for k, v in expected.items()}
    assert telemetry.CLOCKS_EVENT_REASONS == table
    all_bits = 0
    for bit in table:
        all_bits |= bit
    assert all_bits == pynvml.nvmlClocksThrottleReasonAll


# ---------------------------------------------------------------- CPU identity, git

def test_cpu_identity_host_figures():
    ident = identity.cpu_identity()
    assert tuple(ident) == identity.DEVICE_KEYS
    assert ident["device_name"] == identity._cpu_model() != ""
    assert ident["sm_count"] == str(os.cpu_count())
    assert int(ident["memory_total_bytes"]) == os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    if Path("/sys/devices/system/cpu/cpu0/cache/index0").exists():
        assert int(ident["l2_cache_bytes"]) > 0
    filled = {"device_name", "sm_count", "l2_cache_bytes", "memory_total_bytes"}
    assert all(v == "" for k, v in ident.items() if k not in filled)


def test_last_level_cache_is_the_highest_level(tmp_path):
    for name, level, size in [("index0", 1, "48K"), ("index1", 1, "32K"), ("index2", 2, "2048K"),
                              ("index3", 3, "107520K")]:
        (tmp_path / name).mkdir()
        (tmp_path / name / "level").write_text(f"{level}\n")
        (tmp_path / name / "size").write_text(f"{size}\n")
    (tmp_path / "index4").mkdir()  # unreadable entry: skipped
    assert identity._last_level_cache_bytes(tmp_path) == 107520 * 1024
    assert identity._last_level_cache_bytes(tmp_path / "missing") is None
    assert identity._cache_bytes("1M") == 1 << 20


@pytest.mark.skipif(shutil.which("git") is None, reason="git not installed")
def test_git_commit_with_dirty_suffix(tmp_path):
    def git(*args):
        argv = ["git", "-c", "user.name=t", "-c", "user.email=t@example.com", "-C", str(tmp_path), *args]
        return subprocess.run(argv, capture_output=True, text=True, check=True).stdout.strip()
    git("init", "-q")
    assert identity._git_commit(tmp_path) == ""  # no commits yet
    (tmp_path / "bench").mkdir()
    (tmp_path / "bench" / "x.py").write_text("x = 1\n")
    git("add", ".")
    git("commit", "-q", "-m", "one")
    head = git("rev-parse", "HEAD")
    assert len(head) == 40
    assert identity._git_commit(tmp_path) == head
    (tmp_path / "run.csv").write_text("untracked results do not make the checkout dirty\n")
    assert identity._git_commit(tmp_path) == head
    (tmp_path / "bench" / "x.py").write_text("x = 2\n")
    assert identity._git_commit(tmp_path) == head + "-dirty"
    # a package sitting below the checkout's top (an install inside some repo) is not that repo
    assert identity._git_commit(tmp_path / "bench") == ""
    assert identity._git_commit(tmp_path.parent) == ""


# ---------------------------------------------------------------- real GPU (skipped without one)

@pytest.mark.gpu
def test_real_gpu_identity_and_sampler():
    if not torch.cuda.is_available() or not nvml_api.available():
        pytest.skip("needs a CUDA GPU and its driver")
    props = torch.cuda.get_device_properties(0)
    handle, how = nvml_api.device_handle(0, props)
    assert handle is not None
    # The UUID (torch >= 2.2) is tried first: it is exact whatever CUDA_DEVICE_ORDER says.
    assert how == ("uuid" if getattr(props, "uuid", None) else "pci_bus_id")
    ident = identity.device_identity(0)
    assert ident["device_name"] == torch.cuda.get_device_name(0)
    assert ident["device_uuid"].startswith(("GPU-", "MIG-"))
    assert ident["compute_capability"] == f"{props.major}.{props.minor}"
    assert ident["sm_count"] == str(props.multi_processor_count)
    assert int(ident["mem_peak_bytes_per_s"]) > 1e11
    run = identity.run_identity()
    assert run["driver_version"] and run["cuda_driver_version"] and run["cuda_runtime_version"]
    a = torch.randn(4096, 4096, device="cuda")
    with telemetry.Sampler(0, interval_s=0.005) as s:
        for _ in range(50):
            a = a @ a / 64
        torch.cuda.synchronize()
    summary = s.summary()
    assert int(summary["telemetry_samples"]) >= 2
    assert float(summary["sm_clock_mhz_mean"]) > 0 and summary["clocks_event_reasons"].startswith("0x")
