"""Normalization: what each results row is compared with, from the row itself and a spec database.

One rule for every family, used when a row is measured and again when `report`,
`accept` or `size` read a stored run against another database (`--specs FILE`):

- memory and matmul: the spec entry's claim for the row (memory bandwidth; the
  DENSE figure of the row's dtype, never the with-sparsity one) in `pct_of_spec`
  (a burn soak, a GEMM sustained for minutes, against the same dense figure);
  memory also against the peak derived from NVML (max memory clock x bus width x 2)
  in `pct_of_derived`;
- host<->device copies: the PCIe link the card supports (the entry's generation x
  lanes, else NVML's maximum) in `pct_of_spec`, the link NVML reported as trained
  while the copy ran in `pct_of_derived`; both-ways totals against twice that;
- peer copies: over NVLink the entry's per-direction NVLink figure, and the links
  NVML counts between the pair x one link's rate; over PCIe the slower card's link;
- collectives: busbw against the per-direction NVLink figure on one node with
  NVLink up (nccl-tests compares busbw with the link rate);
- llm: attention rows against the dense claim of their dtype (as matmul rows), decode rows
  (decode_attention, decode_gemm: GB/s of the bytes they must read) against memory bandwidth;
- a MIG slice no entry names: nothing, with the reason on the row.

PCIe per lane and encoding: PCI-SIG base specifications (Gen1-2 8b/10b, Gen3-5
128b/130b, Gen6 FLIT mode, where each 256-byte flit carries 242 bytes of payload).
"""
from __future__ import annotations


from .results import params_of
from .specs import MIG_NO_ENTRY, NORMALIZE_KEYS, Entry, convert, figure_bytes_per_s, finite_float, mig_slice

_DTYPE_FIGURE = {
    "fp32": "fp32", "float32": "fp32", "tf32": "tf32_dense", "bf16": "bf16_dense", "bfloat16": "bf16_dense",
    "fp16": "fp16_dense", "float16": "fp16_dense", "fp16_acc16": "fp16_acc16_dense",
    "fp8": "fp8_dense", "e4m3": "fp8_dense", "fp8_e4m3": "fp8_dense", "float8_e4m3fn": "fp8_dense",
    "e5m2": "fp8_dense", "fp8_e5m2": "fp8_dense", "fp8_acc16": "fp8_acc16_dense",
    "fp6": "fp6_dense", "mxfp6": "fp6_dense",
    "fp4": "fp4_dense", "mxfp4": "fp4_dense", "nvfp4": "fp4_dense", "e2m1": "fp4_dense",
    "int8": "int8_dense",
    "fp64": "fp64_tensor",  # cuBLAS DGEMM runs on the FP64 tensor cores where a card has them
}
HOST_LINK_BENCHMARKS = ("h2d", "d2h", "h2d_bidir", "d2h_bidir", "bidir_total")
PEER_BENCHMARKS = ("p2p", "p2p_bidir")
# NVLink generation of data-center GPUs by compute capability: one link's rate per
# generation is in the spec database ([[nvlink]]). Other boards (GeForce, RTX bridges)
# run their links slower: no derived NVLink peak for them.
NVLINK_GENERATION = {"6.0": 1, "7.0": 2, "8.0": 3, "9.0": 4, "10.0": 5, "10.3": 5}

_PCIE = {1: (2.5e9, 8 / 10), 2: (5e9, 8 / 10), 3: (8e9, 128 / 130), 4: (16e9, 128 / 130),
         5: (32e9, 128 / 130), 6: (64e9, 242 / 256)}


def claim_key(family: str, benchmark: str, dtype: str) -> str | None:
    """The figure a memory, matmul or llm row is normalized against: never a with-sparsity one.

    memory/* -> memory_bandwidth; matmul/*/<dtype> -> that dtype's dense figure (fp32 -> the
    non-tensor fp32, fp64 -> fp64_tensor, fp16_acc16 -> fp16_acc16_dense); llm/decode_* ->
    memory_bandwidth, other llm rows -> their dtype's dense figure; other families are
    compared with a link (pcie_bytes_per_s, nvlink_*), not with a figure of this kind.
    """
    if family == "memory":
        return "memory_bandwidth"
    if family == "llm" and benchmark.startswith("decode"):  # memory-bound: the bytes it must read
        return "memory_bandwidth"
    if family in ("matmul", "llm") or (family, benchmark) == ("burn", "soak"):  # a burn soak is a sustained GEMM
        return _DTYPE_FIGURE.get((dtype or "").strip().lower())
    return None


def columns(row: dict, entry: Entry | None, db) -> dict[str, object]:
    """Every normalization column of one row (NORMALIZE_KEYS), and `message` for a MIG slice."""
    family, benchmark = str(row.get("family", "")), str(row.get("benchmark", ""))
    if family in ("memory", "matmul", "llm") or (family, benchmark) == ("burn", "soak"):
        out = spec_claim_columns(row, entry)
    elif family == "transfer" and benchmark in HOST_LINK_BENCHMARKS:
        out = _host_link(row, entry)
    elif family == "transfer" and benchmark in PEER_BENCHMARKS:
        out = _peer_link(row, entry, db)
    elif family == "collective":
        out = _collective_link(row, entry)
    else:
        out = _empty(entry)
    message = str(row.get("message") or "")
    if entry is None and mig_slice(str(row.get("device_name") or "")) and MIG_NO_ENTRY not in message:
        out["message"] = f"{message}; {MIG_NO_ENTRY}" if message else MIG_NO_ENTRY
    return out


def _empty(entry: Entry | None) -> dict[str, object]:
    out: dict[str, object] = dict.fromkeys(NORMALIZE_KEYS, "")
    if entry is not None:
        out["spec_entry"] = entry.name
    return out


def _value(row: dict) -> float | None:
    return finite_float(row.get("value")) if str(row.get("status", "")) == "ok" else None


def spec_claim_columns(row: dict, entry: Entry | None) -> dict[str, object]:
    """A memory or matmul row against the entry's claim, and memory against the NVML-derived peak.

    spec_value is in the row's unit; a figure whose unit cannot be converted is left out.
    Percentages only for `ok` rows.
    """
    out = _empty(entry)
    unit = str(row.get("unit") or "")
    value = _value(row)
    if entry is not None:
        key = claim_key(str(row.get("family", "")), str(row.get("benchmark", "")), str(row.get("dtype", "")))
        fig = entry.figures.get(key) if key else None
        spec = convert(fig.value, fig.unit, unit or fig.unit, key) if fig else None
        if spec is not None:
            out.update(spec_figure=key, spec_value=spec, spec_unit=unit or fig.unit, spec_source=fig.source)
            if value is not None:
                out["pct_of_spec"] = 100.0 * value / spec
    peak = finite_float(row.get("mem_peak_bytes_per_s"))
    if row.get("family") == "memory" and peak and peak > 0:
        derived = convert(peak, "B/s", unit or "GB/s", "memory_bandwidth")
        if derived is not None:
            out["derived_peak"] = derived
            if value is not None:
                out["pct_of_derived"] = 100.0 * value / derived
    return out


# ---------------------------------------------------------------- link theory

def pcie_bytes_per_s(gen: int, lanes: int) -> float:
    """Theoretical PCIe bandwidth per direction after line encoding (Gen5 x16: 63.0e9 B/s).

    Vendors' "128 GB/s" for Gen5 x16 is both directions before encoding.
    """
    if gen not in _PCIE:
        raise ValueError(f"PCIe generation {gen!r}: known are {', '.join(map(str, _PCIE))}")
    if isinstance(lanes, bool) or not isinstance(lanes, int) or lanes <= 0:
        raise ValueError(f"PCIe lanes {lanes!r}: a positive whole number")
    transfers, efficiency = _PCIE[gen]
    return transfers * lanes / 8 * efficiency


def pcie_link(gen, width) -> float | None:
    """Per-direction theoretical of a link given as NVML reports it (strings or numbers); None if unknown."""
    try:
        return pcie_bytes_per_s(int(gen), int(width))
    except (TypeError, ValueError):
        return None


def nvlink_per_direction_bytes_per_s(entry: Entry | None) -> float | None:
    """NVLink per GPU, one direction: the entry's figure, else half its bidirectional figure."""
    if entry is None:
        return None
    if "nvlink_per_direction" in entry.figures:
        return figure_bytes_per_s(entry.figures["nvlink_per_direction"])
    if "nvlink_bidir" in entry.figures:
        return figure_bytes_per_s(entry.figures["nvlink_bidir"]) / 2
    return None


def nvlink_link_bytes_per_s(generation: int, db) -> float | None:
    """One NVLink link of `generation`, one direction (for a link count NVML reports), from `db`."""
    g = db.nvlink.get(generation) if db is not None else None
    return figure_bytes_per_s(g.per_direction) / g.links if g else None


def nvlink_peak(links: int, compute_capability: str, db) -> float | None:
    """links x one link's per-direction rate, for the NVLink generation of this compute capability."""
    generation = NVLINK_GENERATION.get(str(compute_capability or ""))
    per_link = nvlink_link_bytes_per_s(generation, db) if generation else None
    return links * per_link if per_link and links else None


def pcie_claim(entry: Entry | None, gen_max, width_max) -> tuple[float, str, str] | None:
    """(bytes/s per direction, source, "GenN xW") of the link the card supports: the entry's, else NVML's maximum."""
    figs = getattr(entry, "figures", {}) or {}
    if "pcie_gen" in figs and "pcie_lanes" in figs:
        gen, lanes = int(figs["pcie_gen"].value), int(figs["pcie_lanes"].value)
        source = "; ".join(dict.fromkeys([figs["pcie_gen"].source, figs["pcie_lanes"].source]))
    else:
        try:
            gen, lanes = int(gen_max), int(width_max)
        except (TypeError, ValueError):
            return None
        source = "NVML: the card's maximum PCIe link (GPU max generation x max width); no spec entry figure"
    rate = pcie_link(gen, lanes)
    return (rate, source, f"Gen{gen} x{lanes}") if rate else None


def nvlink_claim(entry: Entry | None) -> tuple[float, str] | None:
    per_direction = nvlink_per_direction_bytes_per_s(entry)
    if not per_direction:
        return None
    fig = entry.figures.get("nvlink_per_direction") or entry.figures.get("nvlink_bidir")
    source = fig.source if fig.key == "nvlink_per_direction" else f"half of nvlink_bidir: {fig.source}"
    return per_direction, source


def link_columns(entry: Entry | None, value: float | None, claim: tuple | None, figure: str,
                 derived_bytes_per_s: float | None, directions: int = 1) -> dict[str, object]:
    """spec_* and derived columns in GB/s; `directions` 2 for a both-ways total."""
    out = _empty(entry)
    if claim is not None:
        spec = claim[0] * directions / 1e9
        name = figure if directions == 1 else figure.replace("per_direction", "both_directions")
        out.update(spec_figure=name, spec_value=spec, spec_unit="GB/s", spec_source=claim[1])
        if value is not None:
            out["pct_of_spec"] = 100.0 * value / spec
    if derived_bytes_per_s:
        derived = derived_bytes_per_s * directions / 1e9
        out["derived_peak"] = derived
        if value is not None:
            out["pct_of_derived"] = 100.0 * value / derived
    return out




def _host_link(row: dict, entry: Entry | None) -> dict[str, object]:
    directions = 2 if row.get("benchmark") == "bidir_total" else 1
    claim = pcie_claim(entry, row.get("pcie_gen_max"), row.get("pcie_width_max"))
    trained = pcie_link(row.get("pcie_gen_current"), row.get("pcie_width_current"))  # read under load
    return link_columns(entry, _value(row), claim, "pcie_per_direction", trained, directions)


def _peer_link(row: dict, entry: Entry | None, db) -> dict[str, object]:
    p = params_of(row)
    value = _value(row)
    if p.get("nvlinks"):
        peak = nvlink_peak(p["nvlinks"], p.get("compute_capability") or row.get("compute_capability"), db)
        return link_columns(entry, value, nvlink_claim(entry), "nvlink_per_direction", peak)
    # Over PCIe: the slower of the two cards' links (the peer's own entry only when it is the same card).
    peer = p.get("peer") or {}
    same_card = peer.get("device_name") == row.get("device_name")
    claims = [c for c in (pcie_claim(entry, row.get("pcie_gen_max"), row.get("pcie_width_max")),
                          pcie_claim(entry if same_card else None, peer.get("pcie_gen_max"), peer.get("pcie_width_max")))
              if c]
    claim = min(claims, key=lambda c: c[0]) if claims else None
    under_load = p.get("links_under_load") or {}
    peaks = [pcie_link(*link) for link in under_load.values() if isinstance(link, list) and len(link) == 2]
    peak = min(peaks) if len(peaks) == 2 and all(peaks) else None
    return link_columns(entry, value, claim, "pcie_per_direction", peak)


def _collective_link(row: dict, entry: Entry | None) -> dict[str, object]:
    """busbw against the per-direction NVLink figure: one node, NVLink up (nccl-tests' comparison)."""
    p = params_of(row)
    if row.get("provider") != "nccl" or not p.get("nvlinks_active") or int(p.get("nodes") or 0) != 1:
        return _empty(entry)
    return link_columns(entry, _value(row), nvlink_claim(entry), "nvlink_per_direction", None)


def renormalize(rows: list[dict], db) -> None:
    """A stored run's rows normalized again against `db` (a --specs file may add or dispute claims)."""
    for r in rows:
        entry = db.match(r.get("device_name", ""), r.get("pci_device_id", ""))
        r.update({k: "" if v is None else (repr(v) if isinstance(v, float) else str(v))
                  for k, v in columns(r, entry, db).items()})
