"""`cardbench env`: a snapshot of the machine, the card's "birth certificate" when it arrives.

Host, NUMA nodes and versions; every GPU the driver sees with its identity, PCIe
link (current and max), NVLink links, NUMA node, ECC and remapped rows; the
topology and peer-access matrices. NVML only, never nvidia-smi's text. Without a
driver it shows the host and says there is no GPU, without a traceback or a warning.
"""
from __future__ import annotations

import json
import sys

from ..core import identity, nvml, placement, topology

VERSION_KEYS = ("driver_version", "cuda_driver_version", "cuda_runtime_version", "torch_version",
                "triton_version", "nccl_version", "cardbench_version", "cardbench_commit")


def add_arguments(parser) -> None:
    parser.add_argument("--json", action="store_true",
                        help="print JSON for scripts (keys documented in bench/env.py: snapshot())")


def _cuda_indices() -> dict[object, int]:
    """PCI address -> CUDA index of every GPU torch sees ({} with a CPU-only torch or no GPU)."""
    try:
        import torch
        if not torch.cuda.is_available():
            return {}
        out = {}
        for i in range(torch.cuda.device_count()):
            bus = nvml.torch_bus_id(torch.cuda.get_device_properties(i))
            if bus:
                out[placement.bus_key(bus)] = i
        return out
    except Exception:
        return {}


def _torch_peer(a: int | None, b: int | None) -> bool | None:
    if a is None or b is None:
        return None
    try:
        import torch
        return bool(torch.cuda.can_device_access_peer(a, b))
    except Exception:
        return None


def snapshot(nv=None, cuda_indices: dict | None = None) -> dict:
    """The machine as JSON-ready data.

    Keys: host {host, cpu_model, cpu_cores, os, python_version, memory_total_bytes,
    numa_nodes [{node, cpus, memory_bytes}], process_cpus}; versions {driver_version,
    cuda_driver_version, cuda_runtime_version, torch_version, triton_version, nccl_version,
    cardbench_version, cardbench_commit, nvml_version}; nvml (bool); gpus [{gpu (NVML index),
    cuda_index, identity {identity.DEVICE_KEYS}, numa_node, local_cpus, pcie {current, max,
    max_slot, replay_count, note}, nvlink {active, down, links [{link, active, remote_bus_id,
    remote_type, version}]}, health [..]}]; pairs [{from, to, path, description, pcie_path,
    nvlinks, p2p_nvml {read, write, nvlink}, peer_access_torch}] (NVML indices); notes [..].
    """
    nv = nvml.module() if nv is None else nv
    run = identity.run_identity()
    nodes = placement.host_numa_nodes()
    host = {k: run[k] for k in ("host", "cpu_model", "cpu_cores", "os", "python_version")}
    host["memory_total_bytes"] = identity.host_memory_total_bytes()
    host["numa_nodes"] = [{"node": n, "cpus": placement.format_cpulist(c), "memory_bytes": placement.node_memory_bytes(n)}
                          for n, c in nodes.items()]
    host["process_cpus"] = placement.format_cpulist(placement.process_cpus())
    versions = {k: run[k] for k in VERSION_KEYS}
    versions["nvml_version"] = str(nvml.call("nvmlSystemGetNVMLVersion", nv=nv) or "")
    gpus = topology.all_gpus(nv)
    cuda = _cuda_indices() if cuda_indices is None else cuda_indices
    snap = {"host": host, "versions": versions, "nvml": nv is not None, "gpus": [], "pairs": [], "notes": []}
    if nv is None:
        snap["notes"].append("no NVIDIA driver or NVML library: no GPU information (CPU mode)")
    elif not gpus:
        snap["notes"].append("NVML answers but lists no GPU")
    for g in gpus:
        index = cuda.get(placement.bus_key(g.bus_id))
        # Idle links train down to save power: the current generation here is not the trained one.
        note = "" if g.pcie_gen_current is None or g.pcie_gen_current == g.pcie_gen_max else (
            "idle reading: links train down when idle; `cardbench run --families transfer` reads it under load")
        ident = identity.device_identity(index, handle=g.handle)
        snap["gpus"].append({
            "gpu": g.nvml_index, "cuda_index": index, "identity": ident,
            "numa_node": g.numa_node, "local_cpus": placement.format_cpulist(g.local_cpus),
            "pcie": {"current": topology.link_text(g.pcie_gen_current, g.pcie_width_current),
                     "max": topology.link_text(g.pcie_gen_max, g.pcie_width_max),
                     "max_slot": "" if g.pcie_gen_max_system is None else f"Gen{g.pcie_gen_max_system}",
                     "replay_count": g.pcie_replay_count, "note": note},
            "nvlink": {"active": g.nvlinks_active, "down": g.nvlinks_down,
                       "links": [vars(link) for link in g.nvlinks]},
            "health": g.health() + _memory_health(ident),
        })
    by_nvml = {g["gpu"]: g["cuda_index"] for g in snap["gpus"]}
    for (a, b), p in topology.pairs(nv, gpus).items():
        snap["pairs"].append({"from": gpus[a].nvml_index, "to": gpus[b].nvml_index, "path": p.label,
                              "description": p.description, "pcie_path": p.pcie_label, "nvlinks": p.nvlinks,
                              "p2p_nvml": p.p2p,
                              "peer_access_torch": _torch_peer(by_nvml.get(gpus[a].nvml_index),
                                                               by_nvml.get(gpus[b].nvml_index))})
    return snap


def _memory_health(ident: dict) -> list[str]:
    out = []
    for key, what in (("ecc_errors_uncorrected", "uncorrectable ECC errors since the driver loaded"),
                      ("ecc_errors_uncorrected_aggregate", "uncorrectable ECC errors over the card's life")):
        if ident.get(key) not in ("", "0"):
            out.append(f"{ident[key]} {what}")
    if ident.get("remapped_rows_pending") == "yes":
        out.append("a row remap is pending (reset the GPU to apply it)")
    if ident.get("remapped_rows_failure") == "yes":
        out.append("a row remap failed")
    return out


def _gib(n) -> str:
    try:
        return f"{int(n) / 2**30:.1f} GiB"
    except (TypeError, ValueError):
        return "?"


def render(snap: dict) -> str:
    from tabulate import tabulate

    h, v = snap["host"], snap["versions"]
    lines = [f"host: {h['host']}  {h['cpu_model']}, {h['cpu_cores']} logical CPUs, {_gib(h['memory_total_bytes'])}",
             f"os: {h['os']}  python {h['python_version']}",
             "versions: " + "  ".join(f"{k.removesuffix('_version')}={v[k]}" for k in (*VERSION_KEYS, "nvml_version") if v.get(k))]
    if h["numa_nodes"]:
        lines.append("NUMA: " + "; ".join(f"node {n['node']}: CPUs {n['cpus']}, {_gib(n['memory_bytes'])}"
                                          for n in h["numa_nodes"]))
    lines.append(f"this process may run on CPUs {h['process_cpus']}")
    lines += [f"note: {n}" for n in snap["notes"]]
    for g in snap["gpus"]:
        i = g["identity"]
        cuda = f"cuda:{g['cuda_index']}" if g["cuda_index"] is not None else "not visible to CUDA"
        lines += ["", f"GPU{g['gpu']} ({cuda}): {i['device_name']}",
                  f"  uuid {i['device_uuid'] or '?'}  serial {i['device_serial'] or '-'}  "
                  f"part {i['board_part_number'] or '-'}  vbios {i['vbios_version'] or '-'}",
                  f"  PCI {i['pci_bus_id']} (id {i['pci_device_id']})  compute {i['compute_capability'] or '?'}  "
                  f"memory {_gib(i['memory_total_bytes'])}  power limit {i['power_limit_w'] or '?'} W",
                  f"  PCIe now {g['pcie']['current'] or '?'}, max {g['pcie']['max'] or '?'}"
                  + (f" (slot allows {g['pcie']['max_slot']})" if g["pcie"]["max_slot"] and g["pcie"]["max"]
                     and not g["pcie"]["max"].startswith(g["pcie"]["max_slot"] + " ") else "")
                  + f", replays {g['pcie']['replay_count'] if g['pcie']['replay_count'] is not None else '?'}"
                  + (f"  ({g['pcie']['note']})" if g["pcie"]["note"] else ""),
                  "  NVLink: " + (f"{g['nvlink']['active']} of {g['nvlink']['active'] + g['nvlink']['down']} links up"
                                   if g["nvlink"]["links"] else "none"),
                  f"  NUMA node {g['numa_node'] if g['numa_node'] is not None else '-'}, "
                  f"local CPUs {g['local_cpus'] or '?'}",
                  f"  ECC {i['ecc_mode'] or '?'}: uncorrected {i['ecc_errors_uncorrected'] or '?'} "
                  f"(lifetime {i['ecc_errors_uncorrected_aggregate'] or '?'}), corrected {i['ecc_errors_corrected'] or '?'}; "
                  f"remapped rows {i['remapped_rows_correctable'] or '?'} correctable, "
                  f"{i['remapped_rows_uncorrectable'] or '?'} uncorrectable, pending {i['remapped_rows_pending'] or '?'}, "
                  f"failure {i['remapped_rows_failure'] or '?'}",
                  f"  persistence {i['persistence_mode'] or '?'}, MIG {i['mig_mode'] or '?'}, "
                  f"other compute processes {i['compute_processes'] or '?'}"]
        lines += [f"  health: {m}" for m in g["health"]]
    if len(snap["gpus"]) > 1:
        names = [f"GPU{g['gpu']}" for g in snap["gpus"]]
        cell = {(p["from"], p["to"]): p for p in snap["pairs"]}
        topo = [[f"GPU{a['gpu']}"] + ["X" if a is b else cell[(a["gpu"], b["gpu"])]["path"] for b in snap["gpus"]]
                + [a["numa_node"] if a["numa_node"] is not None else "-", a["local_cpus"]] for a in snap["gpus"]]
        lines += ["", "topology (NVML; labels as nvidia-smi topo -m):",
                  tabulate(topo, headers=["", *names, "NUMA", "CPU affinity"], disable_numparse=True),
                  "legend: " + topology.LEGEND]

        def access(p) -> str:
            nvml = p["p2p_nvml"].get("read") or "?"
            torch_ = {True: "yes", False: "no", None: "-"}[p["peer_access_torch"]]
            return f"{'ok' if nvml == 'ok' else 'no'}/{torch_}"
        peer = [[f"GPU{a['gpu']}"] + ["X" if a is b else access(cell[(a["gpu"], b["gpu"])]) for b in snap["gpus"]]
                for a in snap["gpus"]]
        lines += ["", "peer access, row -> column: NVML P2P read / torch can_device_access_peer",
                  tabulate(peer, headers=["", *names], disable_numparse=True)]
        why = sorted({f"GPU{p['from']}->GPU{p['to']}: {p['p2p_nvml']['read']}" for p in snap["pairs"]
                      if p["p2p_nvml"].get("read") not in ("ok", "", None)})
        lines += [f"  {w}" for w in why]
    return "\n".join(lines)


def main(args) -> int:
    """`cardbench env [--json]`; exit 0 (a machine without a GPU is a valid answer)."""
    snap = snapshot()
    print(json.dumps(snap, indent=1, ensure_ascii=False, default=str) if args.json else render(snap))
    sys.stdout.flush()
    return 0
