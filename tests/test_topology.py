"""bench.core.topology against fake NVML machines (2, 4 and 8 GPUs) built from tests/fixtures/nvml_topology.json:
path labels and P2P matrices, NUMA placement, the "trained below max" check and reading the link under load."""
import copy
import json
import threading
import time
import types
from pathlib import Path

import pynvml
import pytest

from bench.core import nvml, placement, topology
from test_telemetry import H100, fake_nvml, install

MACHINES = json.loads((Path(__file__).parent / "fixtures" / "nvml_topology.json").read_text())["machines"]


def _words(cpus: frozenset[int]) -> list[int]:
    words = [0] * (max(cpus) // 64 + 1 if cpus else 1)
    for c in cpus:
        words[c // 64] |= 1 << (c % 64)
    return words


def machine_nvml(name: str, edit=None) -> types.ModuleType:
    """A fake pynvml for one machine of the fixture: identity calls from nvml_h100.json, topology from the machine.

    `edit(machine)` may change the machine first (take links down, change a level).
    """
    m = copy.deepcopy(MACHINES[name])
    if edit:
        edit(m)
    devices = []
    for i, g in enumerate(m["gpus"]):
        d = copy.deepcopy(H100)
        d.update(name=m["name"], pci_bus_id=g["bus_id"], pci_device_id=m["pci_device_id"],
                 uuid=f"GPU-{i:08x}-93b4-4d6e-a0c7-1e2f3a4b5c6d", serial=f"16522230458{i:02d}")
        d["topo"] = g
        devices.append(d)
    nv = fake_nvml(devices)
    handles = [nv.nvmlDeviceGetHandleByIndex(i) for i in range(len(devices))]
    index = {id(h): i for i, h in enumerate(handles)}

    def not_supported(*_):
        raise pynvml.NVMLError(pynvml.NVML_ERROR_NOT_SUPPORTED)

    def numa(h):
        node = h.dev["topo"].get("numa_node")
        if node is None:
            not_supported()
        return node

    def affinity(h, words):
        mask = _words(placement.parse_cpulist(h.dev["topo"]["cpus"]))
        return (mask + [0] * words)[:words]

    def link(h, i):
        links = h.dev["topo"]["nvlinks"]
        if links is None:
            not_supported()
        if not 0 <= i < len(links):
            raise pynvml.NVMLError(pynvml.NVML_ERROR_INVALID_ARGUMENT)
        return links[i]

    def p2p(h1, h2, which):
        if not isinstance(which, int):  # ctypes refuses the binding's NVML_P2P_CAPS_INDEX_READ = (0,)
            raise TypeError(f"p2pIndex {which!r}")
        name = {0: "read", 1: "write", 2: "nvlink"}.get(which)
        if name is None:
            not_supported()
        return m["p2p"][name][index[id(h1)]][index[id(h2)]]

    nv.nvmlSystemGetNVMLVersion = lambda: m["nvml_version"]
    nv.nvmlDeviceGetNumaNodeId = numa
    nv.nvmlDeviceGetCpuAffinity = affinity
    nv.nvmlDeviceGetTopologyCommonAncestor = lambda h1, h2: m["levels"][index[id(h1)]][index[id(h2)]]
    nv.nvmlDeviceGetP2PStatus = p2p
    nv.nvmlDeviceGetNvLinkState = lambda h, i: link(h, i).get("state", 1)
    nv.nvmlDeviceGetNvLinkRemotePciInfo = lambda h, i: types.SimpleNamespace(busId=link(h, i)["remote_bus_id"])
    nv.nvmlDeviceGetNvLinkRemoteDeviceType = lambda h, i: link(h, i)["remote_type"]
    nv.nvmlDeviceGetNvLinkVersion = lambda h, i: link(h, i)["version"]
    nv.machine = m
    return nv


def labels(nv) -> list[list[str]]:
    gpus = topology.all_gpus(nv)
    pairs = topology.pairs(nv, gpus)
    return [["X" if a == b else pairs[(a, b)].label for b in range(len(gpus))] for a in range(len(gpus))]


# ---------------------------------------------------------------- path labels and P2P matrices

def test_hgx_8_gpus_all_nvlink_through_switches():
    nv = machine_nvml("hgx_h100_8")
    gpus = topology.all_gpus(nv)
    assert len(gpus) == 8 and all(g.nvlinks_active == 18 and g.nvlinks_down == 0 for g in gpus)
    assert all(link.remote_type == "switch" and link.version == 6 for g in gpus for link in g.nvlinks)
    assert labels(nv) == [["X" if a == b else "NV18" for b in range(8)] for a in range(8)]
    pairs = topology.pairs(nv, gpus)
    # Under the NVLinks, the PCIe path is kept: same switch tree, same socket, across sockets.
    assert [pairs[(0, b)].pcie_label for b in range(1, 8)] == ["PXB", "NODE", "NODE", "SYS", "SYS", "SYS", "SYS"]
    assert pairs[(0, 5)].description == "NVLink, 18 links through NVSwitch"
    assert all(p.p2p == {"read": "ok", "write": "ok", "nvlink": "ok"} for p in pairs.values())
    assert [g.numa_node for g in gpus] == [0, 0, 0, 0, 1, 1, 1, 1]
    assert placement.format_cpulist(gpus[5].local_cpus) == "56-111,168-223"


def test_nvlink_bridge_pair_counts_direct_links():
    nv = machine_nvml("h100_nvl_pair")
    gpus = topology.all_gpus(nv)
    pairs = topology.pairs(nv, gpus)
    assert labels(nv) == [["X", "NV12"], ["NV12", "X"]]
    assert pairs[(0, 1)].via_switch is False and pairs[(0, 1)].description == "NVLink, 12 links"
    assert pairs[(1, 0)].pcie_label == "NODE"


def test_pcie_box_labels_and_p2p_matrix():
    nv = machine_nvml("pcie_4_two_sockets")
    gpus = topology.all_gpus(nv)
    assert all(g.nvlinks == [] for g in gpus)  # NOT_SUPPORTED for every link: no NVLink, nothing "down"
    assert labels(nv) == [["X", "PIX", "PHB", "SYS"],
                          ["PIX", "X", "PHB", "SYS"],
                          ["PHB", "PHB", "X", "SYS"],
                          ["SYS", "SYS", "SYS", "X"]]
    pairs = topology.pairs(nv, gpus)
    read = [["X" if a == b else pairs[(a, b)].p2p["read"] for b in range(4)] for a in range(4)]
    assert read == [["X", "ok", "ok", "IOH topology not supported"],
                    ["ok", "X", "ok", "IOH topology not supported"],
                    ["ok", "ok", "X", "IOH topology not supported"],
                    ["IOH topology not supported"] * 3 + ["X"]]
    assert pairs[(0, 1)].p2p["nvlink"] == "not supported"
    assert pairs[(0, 1)].description == "PCIe: same PCIe switch"
    assert pairs[(2, 3)].description == "PCIe: across NUMA nodes (the CPU sockets' interconnect)"
    assert pairs[(0, 2)].description == "PCIe: a PCIe host bridge (the CPU)"
    assert [g.numa_node for g in gpus] == [0, 0, 0, 1]


def test_links_down_shrink_the_pair_and_are_reported():
    def two_down(m):
        for link in m["gpus"][3]["nvlinks"][:2]:
            link["state"] = 0
    nv = machine_nvml("hgx_h100_8", two_down)
    gpus = topology.all_gpus(nv)
    assert (gpus[3].nvlinks_active, gpus[3].nvlinks_down) == (16, 2)
    assert gpus[3].health() == ["NVLink: 2 of 18 links down"]
    assert gpus[0].health() == []
    grid = labels(nv)
    assert grid[3][0] == grid[0][3] == "NV16" and grid[0][1] == "NV18"


def test_unknown_remote_type_falls_back_to_nvml_nvlink_p2p():
    """An older driver without nvmlDeviceGetNvLinkRemoteDeviceType: switch links still counted when NVML says NVLink P2P works."""
    nv = machine_nvml("hgx_h100_8")
    del nv.nvmlDeviceGetNvLinkRemoteDeviceType
    assert labels(nv)[0][7] == "NV18"
    nv.machine["p2p"]["nvlink"][0][7] = 5  # now NVML says no NVLink P2P for 0 -> 7
    gpus = topology.all_gpus(nv)
    assert topology.read_pair(nv, gpus, 0, 7).label == "SYS"


def test_binding_constants_match_ours():
    assert pynvml.NVML_P2P_CAPS_INDEX_READ in (0, (0,))  # a tuple in nvidia-ml-py 13: why we use plain numbers
    assert (pynvml.NVML_P2P_CAPS_INDEX_WRITE, pynvml.NVML_P2P_CAPS_INDEX_NVLINK) == (topology.P2P_WRITE, topology.P2P_NVLINK)
    assert topology.P2P_READ == 0
    assert {pynvml.NVML_TOPOLOGY_INTERNAL, pynvml.NVML_TOPOLOGY_SINGLE, pynvml.NVML_TOPOLOGY_MULTIPLE,
            pynvml.NVML_TOPOLOGY_HOSTBRIDGE, pynvml.NVML_TOPOLOGY_NODE, pynvml.NVML_TOPOLOGY_SYSTEM} == set(topology.LEVELS)
    assert topology.P2P_STATUS[pynvml.NVML_P2P_STATUS_OK] == "ok"
    assert topology.P2P_STATUS[pynvml.NVML_P2P_STATUS_IOH_TOPOLOGY_NOT_SUPPORTED] == "IOH topology not supported"
    assert pynvml.NVML_NVLINK_MAX_LINKS >= 18


def test_without_nvml_everything_is_empty():
    assert topology.all_gpus(None) == []
    assert topology.pairs(None, []) == {}
    assert nvml.call("nvmlDeviceGetCount", nv=None) is None
    with topology.LinkSampler(None, [None]) as s:
        pass
    assert s.result(0) == (None, None, 0)


# ---------------------------------------------------------------- PCI addresses and CPU lists

def test_bus_ids_compare_across_spellings():
    assert placement.bus_key("00000000:19:00.0") == placement.bus_key("0000:19:00.0") == (0, 0x19, 0, 0)
    assert placement.bus_key("00000001:AB:1f.3") == (1, 0xAB, 0x1F, 3)
    assert placement.sysfs_bus_id("00000000:AB:00.0") == "0000:ab:00.0"
    assert placement.bus_key("junk") == "JUNK"


@pytest.mark.parametrize("text, cpus", [("0-3,8", {0, 1, 2, 3, 8}), ("5", {5}), ("", set()),
                                        ("0-55,112-167", set(range(56)) | set(range(112, 168)))])
def test_cpulist_round_trip(text, cpus):
    assert placement.parse_cpulist(text) == cpus
    assert placement.format_cpulist(cpus) == text


def test_affinity_mask_words():
    assert placement._mask_cpus([0b1011, 1 << 63 | 1]) == {0, 1, 3, 64, 127}
    assert placement._mask_cpus(None) == frozenset()


# ---------------------------------------------------------------- NUMA placement

def fake_sysfs(root: Path, nodes: dict[int, str], gpus: dict[str, tuple[str, str]] = None) -> Path:
    for n, cpus in nodes.items():
        d = root / "devices" / "system" / "node" / f"node{n}"
        d.mkdir(parents=True)
        (d / "cpulist").write_text(cpus + "\n")
        (d / "meminfo").write_text(f"Node {n} MemTotal:       263856592 kB\nNode {n} MemFree: 1 kB\n")
    for bus, (numa, cpus) in (gpus or {}).items():
        d = root / "bus" / "pci" / "devices" / bus
        d.mkdir(parents=True)
        (d / "numa_node").write_text(numa + "\n")
        (d / "local_cpulist").write_text(cpus + "\n")
    return root


def test_host_numa_nodes_and_gpu_node_from_sysfs(tmp_path):
    root = fake_sysfs(tmp_path, {0: "0-55,112-167", 1: "56-111,168-223"},
                      {"0000:9a:00.0": ("1", "56-111,168-223"), "0000:18:00.0": ("-1", "")})
    nodes = placement.host_numa_nodes(root)
    assert list(nodes) == [0, 1] and placement.format_cpulist(nodes[1]) == "56-111,168-223"
    assert placement.node_memory_bytes(1, root) == 263856592 * 1024
    # NVML without nvmlDeviceGetNumaNodeId (older driver): sysfs answers; -1 means no NUMA information
    assert placement.gpu_numa_node(None, None, "00000000:9A:00.0", root) == 1
    assert placement.gpu_numa_node(None, None, "00000000:18:00.0", root) is None
    assert placement.format_cpulist(placement.gpu_local_cpus(None, None, "00000000:9A:00.0", root)) == "56-111,168-223"
    nv = machine_nvml("hgx_h100_8")
    h = nv.nvmlDeviceGetHandleByIndex(4)
    assert placement.gpu_numa_node(nv, h, "", root) == 1  # NVML first


def test_placement_warns_only_when_process_can_leave_the_gpu_node():
    nodes = {0: placement.parse_cpulist("0-55,112-167"), 1: placement.parse_cpulist("56-111,168-223")}
    everything = nodes[0] | nodes[1]
    p = placement.placement(1, nodes[1], everything, nodes, "cuda:4")
    assert p.process_numa_nodes == [0, 1]
    assert "cuda:4 is on NUMA node 1" in p.warning and "numactl --cpunodebind=1 --membind=1" in p.warning
    assert p.params()["numa_local"] is False and p.params()["gpu_numa_node"] == 1
    pinned = placement.placement(1, nodes[1], nodes[1], nodes, "cuda:4")  # numactl --cpunodebind=1
    assert pinned.warning == "" and pinned.params()["numa_local"] is True
    wrong = placement.placement(1, nodes[1], nodes[0], nodes, "cuda:4")  # pinned to the other socket
    assert "NUMA node(s) 0" in wrong.warning
    # one NUMA node: nothing to warn about
    assert placement.placement(0, nodes[0], everything, {0: everything}).warning == ""
    # no node number, but NVML's local CPUs
    assert "taskset -c 56-111,168-223" in placement.placement(None, nodes[1], everything, nodes).warning
    assert placement.placement(None, frozenset(), everything, nodes).warning == ""


# ---------------------------------------------------------------- link health

@pytest.mark.parametrize("gen, width, flagged", [(4, 8, True), (5, 8, True), (4, 16, True), (5, 16, False),
                                                 (1, 16, True), (None, 16, False), ("", "", False)])
def test_trained_below_max(gen, width, flagged):
    msg = topology.pcie_below_max(gen, width, 5, 16)
    assert (msg is not None) == flagged
    if flagged:
        assert msg == f"PCIe link trained at Gen{gen} x{width}, the card supports Gen5 x16"


def test_gen5_card_in_gen4_slot_names_the_slot():
    assert topology.pcie_below_max(4, 16, 5, 16, gen_max_system=4) == (
        "PCIe link trained at Gen4 x16, the card supports Gen5 x16 (the slot or platform allows Gen4)")
    assert topology.pcie_below_max("5", "16", "5", "16") is None  # identity values are text


def test_link_text():
    assert topology.link_text(5, 16) == "Gen5 x16"
    assert topology.link_text(None, 16) == "Gen? x16"
    assert topology.link_text(None, None) == ""


def busy_link_nvml(loaded: tuple[int, int], idle: tuple[int, int] = (1, 16)):
    """An H100 whose PCIe link reads `idle` unless a transfer is running (nv.busy set), then `loaded`."""
    nv = fake_nvml()
    nv.busy = threading.Event()
    nv.nvmlDeviceGetCurrPcieLinkGeneration = lambda h: (loaded if nv.busy.is_set() else idle)[0]
    nv.nvmlDeviceGetCurrPcieLinkWidth = lambda h: (loaded if nv.busy.is_set() else idle)[1]
    return nv


def run_transfer(nv, seconds=0.06):
    nv.busy.set()
    try:
        time.sleep(seconds)
    finally:
        nv.busy.clear()


def test_link_read_under_load_not_at_idle():
    """Idle the link reads Gen1 (power saving, not a fault); during the transfer Gen5 x16: not flagged."""
    nv = busy_link_nvml(loaded=(5, 16))
    h = nv.nvmlDeviceGetHandleByIndex(0)
    idle = (nv.nvmlDeviceGetCurrPcieLinkGeneration(h), nv.nvmlDeviceGetCurrPcieLinkWidth(h))
    assert topology.pcie_below_max(*idle, 5, 16) is not None  # a naive idle read would flag a healthy card
    with topology.LinkSampler(nv, [h], interval_s=0.005) as s:
        run_transfer(nv)
    gen, width, readings = s.result(0)
    assert (gen, width) == (5, 16) and readings >= 3
    assert topology.pcie_below_max(gen, width, 5, 16) is None
    assert not any(t.name == "cardbench-pcie-link" for t in threading.enumerate())


def test_link_trained_at_gen4_x8_under_load_is_flagged():
    nv = busy_link_nvml(loaded=(4, 8))
    h = nv.nvmlDeviceGetHandleByIndex(0)
    with topology.LinkSampler(nv, [h], interval_s=0.005) as s:
        run_transfer(nv)
    gen, width, _ = s.result(0)
    assert (gen, width) == (4, 8)
    assert topology.pcie_below_max(gen, width, 5, 16) == "PCIe link trained at Gen4 x8, the card supports Gen5 x16"


def test_link_sampler_survives_failing_reads(monkeypatch):
    nv = fake_nvml()
    hooked = []
    monkeypatch.setattr(threading, "excepthook", hooked.append)

    def broken(h):
        raise RuntimeError("driver hiccup")
    nv.nvmlDeviceGetCurrPcieLinkGeneration = broken
    h = nv.nvmlDeviceGetHandleByIndex(0)
    with topology.LinkSampler(nv, [h, None], interval_s=0.001) as s:
        time.sleep(0.02)
    assert hooked == []
    gen, width, readings = s.result(0)
    assert gen is None and width == 16 and readings >= 1
    assert s.result(1) == (None, None, 0)


def test_read_gpu_pcie_fields_from_the_h100_fixture(monkeypatch):
    nv = fake_nvml()
    install(monkeypatch, nv)
    g = topology.read_gpu(nv, nv.nvmlDeviceGetHandleByIndex(0), 0)
    assert (g.name, g.bus_id, g.pcie_gen_current, g.pcie_width_current) == (
        "NVIDIA H100 80GB HBM3", "00000000:19:00.0", 1, 16)
    assert (g.pcie_gen_max, g.pcie_gen_max_system, g.pcie_width_max, g.pcie_replay_count) == (5, 5, 16, 0)
    assert g.nvlinks == [] and g.numa_node is None  # the identity fixture has no topology calls


@pytest.mark.parametrize("machine, expected", [
    ("hgx_h100_8", (18, True)),      # NVSwitch board: NVLS may be in use
    ("h100_nvl_pair", (12, False)),  # a bridge between two cards: no switch
    ("pcie_4_two_sockets", (0, False)),  # no NVLink at all
])
def test_collective_reads_nvlinks_through_topology(monkeypatch, machine, expected):
    from bench.families import collective

    nv = machine_nvml(machine)
    handle = nv.nvmlDeviceGetHandleByIndex(0)
    monkeypatch.setattr(nvml, "module", lambda: nv)
    monkeypatch.setattr(nvml, "handle", lambda index: handle)
    assert collective.nvlink_state(0) == expected
