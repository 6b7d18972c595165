"""`cardbench env`: the host alone on a machine without a driver, and 2-, 4- and 8-GPU machines through a fake NVML."""
import json
import os
import subprocess
import sys
import types
from pathlib import Path

import pytest

from bench.commands import env
from bench.core import nvml, placement
from test_telemetry import install
from test_topology import machine_nvml

REPO = Path(__file__).resolve().parent.parent


def cardbench(*args):
    environ = dict(os.environ, CUDA_VISIBLE_DEVICES="")
    return subprocess.run([sys.executable, "-m", "bench", *args], cwd=REPO, env=environ, capture_output=True,
                          text=True, timeout=120)


@pytest.fixture
def no_driver(monkeypatch):
    install(monkeypatch, None)  # the real binding, tried afresh as a new `cardbench env` process does
    if nvml.available():
        pytest.skip("an NVIDIA driver is present here")


def test_env_on_a_machine_without_a_driver_shows_the_host_quietly(no_driver):
    out = cardbench("env")
    assert out.returncode == 0 and out.stderr == ""
    lines = out.stdout.splitlines()
    assert lines[0].startswith("host: ") and "logical CPUs" in lines[0]
    assert any(line.startswith("versions: ") and "torch=" in line for line in lines)
    assert "this process may run on CPUs" in out.stdout
    assert "note: no NVIDIA driver or NVML library: no GPU information (CPU mode)" in lines
    assert "GPU0" not in out.stdout and "Traceback" not in out.stdout


def test_env_json_without_a_driver(no_driver):
    out = cardbench("env", "--json")
    assert out.returncode == 0 and out.stderr == ""
    snap = json.loads(out.stdout)
    assert snap["nvml"] is False and snap["gpus"] == [] and snap["pairs"] == []
    assert snap["host"]["cpu_cores"] == str(os.cpu_count())
    assert snap["host"]["process_cpus"] == placement.format_cpulist(os.sched_getaffinity(0))
    assert snap["versions"]["torch_version"] and snap["versions"]["driver_version"] == ""
    if Path("/sys/devices/system/node/node0").exists():
        assert snap["host"]["numa_nodes"][0]["node"] == 0


def test_env_help_lists_json():
    out = cardbench("env", "--help")
    assert out.returncode == 0 and "--json" in out.stdout


@pytest.fixture
def hgx(monkeypatch):
    """The 8-GPU HGX H100 with two NVLink links of GPU3 down and an uncorrectable ECC error on GPU6."""
    def two_down(m):
        for link in m["gpus"][3]["nvlinks"][:2]:
            link["state"] = 0
    nv = machine_nvml("hgx_h100_8", two_down)
    nv.nvmlDeviceGetHandleByIndex(6).dev["ecc_errors"]["uncorrected_volatile"] = 2
    nv.nvmlDeviceGetHandleByIndex(6).dev["remapped_rows"] = [0, 1, 1, 0]
    install(monkeypatch, nv)
    return nv


def test_snapshot_of_an_8_gpu_hgx(hgx):
    bus0 = hgx.machine["gpus"][0]["bus_id"]
    snap = env.snapshot(cuda_indices={placement.bus_key(bus0): 0})
    assert snap["nvml"] is True and snap["notes"] == []
    assert snap["versions"]["driver_version"] == "580.159.04" and snap["versions"]["nvml_version"] == "13.580.159.04"
    gpus = snap["gpus"]
    assert [g["gpu"] for g in gpus] == list(range(8))
    assert [g["cuda_index"] for g in gpus] == [0] + [None] * 7
    assert {g["identity"]["device_name"] for g in gpus} == {"NVIDIA H100 80GB HBM3"}
    assert gpus[5]["identity"]["pci_bus_id"] == "00000000:AB:00.0" and gpus[5]["numa_node"] == 1
    assert gpus[0]["local_cpus"] == "0-55,112-167"
    assert gpus[0]["pcie"] == {"current": "Gen1 x16", "max": "Gen5 x16", "max_slot": "Gen5", "replay_count": 0,
                               "note": "idle reading: links train down when idle; `cardbench run --families transfer` "
                                       "reads it under load"}
    assert (gpus[3]["nvlink"]["active"], gpus[3]["nvlink"]["down"]) == (16, 2)
    assert gpus[3]["health"] == ["NVLink: 2 of 18 links down"]
    assert gpus[6]["health"] == ["2 uncorrectable ECC errors since the driver loaded",
                                 "a row remap is pending (reset the GPU to apply it)"]
    assert all(g["health"] == [] for i, g in enumerate(gpus) if i not in (3, 6))
    paths = {(p["from"], p["to"]): p for p in snap["pairs"]}
    assert len(paths) == 56
    assert paths[(0, 1)]["path"] == "NV18" and paths[(0, 3)]["path"] == "NV16" and paths[(3, 0)]["path"] == "NV16"
    assert paths[(0, 7)]["pcie_path"] == "SYS" and paths[(0, 7)]["p2p_nvml"]["read"] == "ok"
    assert paths[(0, 1)]["peer_access_torch"] is None  # torch sees only GPU0 here
    json.dumps(snap)  # JSON-ready as it is


def test_render_an_8_gpu_hgx(hgx):
    text = env.render(env.snapshot(cuda_indices={}))
    assert "GPU0 (not visible to CUDA): NVIDIA H100 80GB HBM3" in text
    assert "  PCIe now Gen1 x16, max Gen5 x16, replays 0  (idle reading:" in text
    assert "  NVLink: 16 of 18 links up" in text and "  health: NVLink: 2 of 18 links down" in text
    assert "  NUMA node 1, local CPUs 56-111,168-223" in text
    assert "topology (NVML; labels as nvidia-smi topo -m):" in text
    row0 = next(line for line in text.splitlines() if line.startswith("GPU0 ") and "NV18" in line)
    assert row0.split() == ["GPU0", "X", "NV18", "NV18", "NV16", "NV18", "NV18", "NV18", "NV18", "0", "0-55,112-167"]
    assert "legend: X = self" in text and "peer access, row -> column" in text


def test_render_a_pcie_box_names_refused_peer_access(monkeypatch):
    install(monkeypatch, machine_nvml("pcie_4_two_sockets"))
    text = env.render(env.snapshot(cuda_indices={}))
    row2 = next(line for line in text.splitlines() if line.startswith("GPU2 ") and "PHB" in line)
    assert row2.split() == ["GPU2", "PHB", "PHB", "X", "SYS", "0", "0-31,64-95"]
    assert "  NVLink: none" in text
    assert "  GPU0->GPU3: IOH topology not supported" in text
    peer0 = next(line for line in text.splitlines() if line.startswith("GPU0 ") and "/" in line)
    assert peer0.split() == ["GPU0", "X", "ok/-", "ok/-", "no/-"]


def test_render_an_nvlink_pair_and_json_main(monkeypatch, capsys):
    install(monkeypatch, machine_nvml("h100_nvl_pair"))
    monkeypatch.setattr(env, "_cuda_indices", lambda: {})
    assert env.main(types.SimpleNamespace(json=True)) == 0
    snap = json.loads(capsys.readouterr().out)
    assert [p["path"] for p in snap["pairs"]] == ["NV12", "NV12"]
    assert snap["pairs"][0]["description"] == "NVLink, 12 links"
    assert env.main(types.SimpleNamespace(json=False)) == 0
    assert "GPU1 (not visible to CUDA): NVIDIA H100 NVL" in capsys.readouterr().out


def test_snapshot_with_nvml_that_lists_no_gpu(monkeypatch):
    nv = machine_nvml("h100_nvl_pair")
    nv.nvmlDeviceGetCount = lambda: 0
    install(monkeypatch, nv)
    snap = env.snapshot(cuda_indices={})
    assert snap["gpus"] == [] and snap["notes"] == ["NVML answers but lists no GPU"]
    assert "note: NVML answers but lists no GPU" in env.render(snap)
