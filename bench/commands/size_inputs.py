"""The per-card numbers `cardbench size` computes with: measured where --results has them, else claimed.

Measured (results CSVs, columns in results/SCHEMA.md): memory bandwidth = the `plateau` row
of `read` (else `copy`), best provider; matmul = the `best` row of the dtype's recipe (full
profile), else its largest fixed shape, best provider; collective busbw = the `peak` row of
each collective, bf16 before fp32; host link = the slower of pinned `h2d` / `d2h`; device
memory = NVML's `memory_total_bytes` (labelled `reported`). With several GPUs of one card in
the files, the slowest GPU's value: a synchronous step waits for it.
Claimed (bench/core/specs.toml): memory_size_gb, memory_bandwidth, <dtype>_dense (never a sparse
figure), and the link: NVLink per direction where the entry's NVLink reaches all the GPUs,
else PCIe from pcie_gen x pcie_lanes (bench.core.normalize.pcie_bytes_per_s).
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path

from ..core import normalize, specs

SCALE = {"B": 1.0, "gen": 1.0, "lanes": 1.0, "GB": 1e9, "GB/s": 1e9, "TB/s": 1e12, "MB/s": 1e6, "GFLOP/s": 1e9, "TFLOP/s": 1e12,
         "PFLOP/s": 1e15}
MATMUL_RECIPES = {"bf16": ("bf16",), "fp8": ("fp8",), "fp4": ("nvfp4", "mxfp4")}
COLLECTIVES = ("all_gather", "reduce_scatter", "all_reduce")
_SHAPE = re.compile(r"^(\d+)x(\d+)x(\d+)")


@dataclass
class Value:
    value: float | None  # base units: bytes, bytes/s, FLOP/s
    origin: str  # "measured", "reported", "claimed" or "missing"
    source: str  # the results file and rows, or the spec figure and its source keys
    refs: tuple = ()  # (key, document) pairs of a claimed figure


@dataclass
class Card:
    name: str
    entry: specs.Entry | None
    memory: Value
    bandwidth: Value
    matmul: dict[str, Value]  # bf16 / fp8 / fp4
    collectives: dict[str, Value]  # busbw per collective
    host_link: Value
    fp4_cores: bool
    notes: list[str] = field(default_factory=list)


def claimed(entry: specs.Entry | None, key: str) -> Value:
    """A spec figure in base units, labelled claimed with its source keys; `missing` when absent."""
    fig = entry.figures.get(key) if entry else None
    if fig is None:
        return Value(None, "missing", f"no {key} figure" + (f" in '{entry.name}'" if entry else ""))
    refs = ", ".join(k for k, _ in fig.source_refs)
    how = f"; {fig.confidence}" if fig.confidence in ("derived", "disputed") else ""
    return Value(fig.value * SCALE[fig.unit], "claimed", f"{key}: {refs}{how}", fig.source_refs)


def nvlink_reach(entry: specs.Entry) -> int | None:
    """How many GPUs the entry's NVLink joins: None for switched NVLink (a whole HGX node), 2 for a
    bridged pair, N for an "N-way" bridge, 0 when the entry's NVLink does not join GPUs."""
    text = entry.text.get("nvlink", "").lower()
    if "c2c" in text or text in ("", "none"):
        return 0
    if "bridge" in text:
        ways = [int(w) for w in re.findall(r"(\d+)-way", text)]
        return max(ways) if ways else 2
    return None


def claimed_pcie(entry: specs.Entry | None) -> Value:
    """The card's PCIe link per direction after encoding, from pcie_gen x pcie_lanes, claimed."""
    gen, lanes = claimed(entry, "pcie_gen"), claimed(entry, "pcie_lanes")
    if gen.value is None or lanes.value is None:
        return Value(None, "missing", "no PCIe figures" + (f" in '{entry.name}'" if entry else ""))
    return Value(normalize.pcie_bytes_per_s(int(gen.value), int(lanes.value)), "claimed",
                 f"PCIe Gen{int(gen.value)} x{int(lanes.value)} per direction ({gen.source}; {lanes.source})",
                 gen.refs + lanes.refs)


def claimed_link(entry: specs.Entry | None, gpus: int) -> Value:
    """The per-direction link a ring collective over `gpus` GPUs of this card runs on, claimed."""
    nvlink = normalize.nvlink_per_direction_bytes_per_s(entry) if entry else None
    reach = nvlink_reach(entry) if entry else 0
    if nvlink and (reach is None or gpus <= reach):
        key = "nvlink_per_direction" if "nvlink_per_direction" in entry.figures else "nvlink_bidir"
        v = claimed(entry, key)
        return Value(nvlink, "claimed", f"NVLink per direction ({v.source}{'' if key.endswith('direction') else ' / 2'})",
                     v.refs)
    pcie = claimed_pcie(entry)
    if nvlink and reach:
        pcie.source += f"; the NVLink bridge joins {reach} GPUs, not {gpus}"
    return pcie


def group_results(db: specs.SpecDB, results: list) -> dict[str, tuple]:
    """Rows of the results files by card: {entry name or NVML name: (entry or None, [(path, row)])}."""
    groups: dict[str, tuple] = {}
    for res in results:
        for row in res.rows:
            entry = db.find(row["spec_entry"]) if row.get("spec_entry") else None
            entry = entry or db.match(row.get("device_name", ""), row.get("pci_device_id", ""))
            key = entry.name if entry else (row.get("device_name") or "unknown device")
            groups.setdefault(key, (entry, []))[1].append((res.path, row))
    return groups


def _per_gpu(rows: list) -> dict[tuple, list]:
    out: dict[tuple, list] = {}
    for path, row in rows:
        gpu = row.get("device_uuid") or row.get("device_index") or row.get("device_name", "")
        out.setdefault((path, gpu), []).append(row)
    return out


def _rate(row: dict) -> float | None:
    scale = SCALE.get(row.get("unit", ""))
    return float(row["value"]) * scale if scale and row.get("status") == "ok" and row.get("value") else None


def _slowest(rows: list, pick, what: str) -> Value | None:
    """`pick(rows of one GPU)` -> (rate, label) or None; the slowest GPU's, labelled measured."""
    found = []
    for (path, _), gpu_rows in _per_gpu(rows).items():
        got = pick(gpu_rows)
        if got:
            found.append((got[0], got[1], path))
    if not found:
        return None
    rate, label, path = min(found)
    of = f", slowest of {len(found)} GPUs" if len(found) > 1 else ""
    return Value(rate, "measured", f"{Path(path).name}: {what} {label}{of}")


def _memory_pick(rows: list):
    for bench in ("read", "copy"):
        got = [(v, f"{bench} plateau ({r['provider']})") for r in rows
               if r["family"] == "memory" and r["benchmark"] == bench and r["case"] == "plateau"
               and (v := _rate(r))]
        if got:
            return max(got)
    return None


def _matmul_pick(recipes: tuple[str, ...]):
    def pick(rows: list):
        ok = [r for r in rows if r["family"] == "matmul" and r["benchmark"] in recipes and _rate(r)]
        best = [r for r in ok if r["case"].startswith("best")]
        if not best:
            shaped = [(int(m[1]) * int(m[2]) * int(m[3]), r) for r in ok if (m := _SHAPE.match(r["case"]))]
            top = max((size for size, _ in shaped), default=None)
            best = [r for size, r in shaped if size == top]
        if not best:
            return None
        r = max(best, key=_rate)
        return _rate(r), f"{r['benchmark']} {r['case']} ({r['provider']})"
    return pick


def _host_pick(rows: list):
    best = {}
    for r in rows:
        if r["family"] == "transfer" and r["benchmark"] in ("h2d", "d2h") and r["case"].startswith("pinned"):
            if (v := _rate(r)) and v > best.get(r["benchmark"], (0, ""))[0]:
                best[r["benchmark"]] = (v, f"{r['benchmark']} {r['case']}")
    return min(best.values()) if len(best) == 2 else None


def _collective(rows: list, op: str) -> Value | None:
    for dtype in ("bf16", "fp32"):
        for path, r in rows:
            if (r["family"], r["benchmark"], r["case"], r["dtype"]) == ("collective", op, "peak", dtype) and _rate(r):
                world = json.loads(r["params"] or "{}").get("world_size", "?")
                return Value(_rate(r), "measured", f"{Path(path).name}: {op} {dtype} peak busbw, {world} ranks")
    return None


def _reported_memory(rows: list) -> Value | None:
    sizes = [(float(r["memory_total_bytes"]), path) for path, r in rows if r.get("memory_total_bytes")]
    if not sizes:
        return None
    size, path = min(sizes)
    return Value(size, "reported", f"{Path(path).name}: memory_total_bytes (NVML)")


def card_inputs(name: str, entry: specs.Entry | None, rows: list, gpus: int) -> Card:
    """Everything `cardbench size` needs about one card: measured where `rows` have it, else claimed."""
    matmul = {d: _slowest(rows, _matmul_pick(r), "matmul") or claimed(entry, f"{d}_dense")
              for d, r in MATMUL_RECIPES.items()}
    link = claimed_link(entry, gpus)
    collectives = {op: _collective(rows, op) or link for op in COLLECTIVES}
    card = Card(name, entry,
                memory=_reported_memory(rows) or claimed(entry, "memory_size_gb"),
                bandwidth=_slowest(rows, _memory_pick, "memory") or claimed(entry, "memory_bandwidth"),
                matmul=matmul, collectives=collectives,
                host_link=_slowest(rows, _host_pick, "transfer") or claimed_pcie(entry),
                fp4_cores=matmul["fp4"].value is not None)
    if not rows and entry is not None:
        card.notes.append("no --results rows for this card: every figure is the spec claim")
    measured_worlds = {v.source for v in collectives.values() if v.origin == "measured"}
    if measured_worlds:
        card.notes.append(f"collective busbw measured at its own rank count (busbw is nccl-tests' size-free "
                          f"normalization), used for {gpus} GPUs")
    if link.value and gpus > 8 and "NVLink" in link.source:
        card.notes.append("beyond one 8-GPU node the network bounds the collectives; the spec database has "
                          "no figure for it, so the NVLink bound shown is optimistic")
    return card
