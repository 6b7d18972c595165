"""The tables `cardbench run` prints after the transfer family: host copies, and nvbandwidth-style P2P matrices."""
from __future__ import annotations

from ..core import topology
from ..core.results import device_of, params_of
from ..core.units import human_bytes
from .transfer import HOST_BENCHMARKS, LATENCY_BYTES, NAME


def summary_lines(rows: list[dict]) -> list[str]:
    """Host-transfer table and nvbandwidth-style P2P matrices from a run's transfer rows; [] when none is ok."""
    from tabulate import tabulate

    ok = [r for r in rows if r.get("family") == NAME and r.get("status") == "ok"]
    if not ok:
        return []
    lines: list[str] = []
    host = [r for r in ok if not str(r["benchmark"]).startswith("p2p")]
    if host:
        table = []
        for (device, memory) in dict.fromkeys((device_of(r), r["case"].split("-")[0]) for r in host):
            mine = [r for r in host if device_of(r) == device and r["case"].startswith(memory + "-")]
            size = max(int(float(r["size_bytes"])) // (2 if r["benchmark"] == "bidir_total" else 1) for r in mine)
            at = {r["benchmark"]: r for r in mine if r["case"] == f"{memory}-{human_bytes(size)}"}
            cells = [f"{float(at[b]['value']):,.1f}" if b in at else "" for b in HOST_BENCHMARKS]
            link = next((f"Gen{r['pcie_gen_current']} x{r['pcie_width_current']}" for r in at.values()
                         if r.get("pcie_gen_current") not in (None, "")), "")
            pct = " / ".join(f"{float(at[b]['pct_of_derived']):.0f}%" for b in ("h2d", "d2h")
                             if b in at and at[b].get("pct_of_derived") not in (None, ""))
            table.append([device, memory, human_bytes(size), *cells, link, pct])
        lines += ["", "host<->device copies, GB/s per direction (bidir_total: both summed); largest size measured",
                  tabulate(table, headers=["device", "memory", "size", *HOST_BENCHMARKS, "link under load",
                                           "h2d / d2h % of link"], disable_numparse=True)]
    p2p = [r for r in ok if str(r["benchmark"]).startswith("p2p")]
    devices = sorted({device_of(r) for r in p2p} | {f"cuda:{_peer(r)}" for r in p2p}, key=lambda d: int(d[5:]))
    titles = {"p2p": "one way, GB/s", "p2p_bidir": "both ways at once, GB/s per direction (the reverse copy runs meanwhile)",
              "p2p_latency": f"latency of a {LATENCY_BYTES}-byte copy, us"}
    for bench, title in titles.items():
        mine = [r for r in p2p if r["benchmark"] == bench]
        if not mine:
            continue
        size = max(int(float(r["size_bytes"])) for r in mine)
        cell = {(device_of(r), f"cuda:{_peer(r)}"): float(r["value"]) for r in mine if int(float(r["size_bytes"])) == size}
        fmt = "{:,.2f}" if bench == "p2p_latency" else "{:,.1f}"
        table = [[a] + ["-" if a == b else (fmt.format(cell[(a, b)]) if (a, b) in cell else "") for b in devices]
                 for a in devices]
        where = "" if bench == "p2p_latency" else f", {human_bytes(size)}"
        lines += ["", f"p2p {title}{where}: row = source, column = destination",
                  tabulate(table, headers=["", *devices], disable_numparse=True)]
    paths = {}
    for r in p2p:
        p = params_of(r)
        paths[(device_of(r), f"cuda:{_peer(r)}")] = f"{p.get('path', '?')} {'yes' if p.get('peer_access_torch') else 'no'}"
    if paths:
        table = [[a] + ["X" if a == b else paths.get((a, b), "") for b in devices] for a in devices]
        lines += ["", "p2p path (NVML, as nvidia-smi topo -m) and peer access (torch)",
                  tabulate(table, headers=["", *devices], disable_numparse=True), "legend: " + topology.LEGEND]
    return lines


def _peer(r: dict) -> str:
    dst = params_of(r).get("dst", "")
    if dst:
        return dst.split(":")[-1]
    return r["case"].split("->cuda:")[-1].split("-")[0]  # "cuda:0->cuda:1-256MiB"
