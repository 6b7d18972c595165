"""A roofline per card (Williams, Waterman, Patterson, "Roofline: an insightful visual performance
model for multicore architectures", CACM 52(4), 2009): attainable FLOP/s = min(peak, bandwidth x
arithmetic intensity), with the measured memory bandwidth and the measured matmul peak of each dtype
as the roofs, the vendor's claims dashed beside them, and every measured kernel placed at its
arithmetic intensity (FLOP per byte of device memory traffic).

Placement:
- GEMM rows (family matmul): intensity = 2*M*N*K / bytes of A + B + C, each read or written once at
  the row's element sizes (inputs by the row's dtype, C by the `out_dtype` param): the compulsory
  traffic, as the paper counts it; block scales (FP4, FP8) are left out, under 1% of it.
- Any other row with a FLOP count and a byte count (an `llm` decode GEMV or attention row, say):
  FLOP = `work` when `work_unit` is FLOP or OP, else the `flops` param; bytes = the `bytes` param,
  else `work` when `work_unit` is B. Rate = FLOP / `time_s`. Transfers and collectives have no FLOP
  count and are not placed.
- Memory patterns (read, write, copy, triad at the plateau) do no or almost no arithmetic (triad:
  2 FLOP per 12 bytes in fp32; copy none), so the log axis has no place for them at their own
  intensity. They are drawn at MEMORY_INTENSITY on their own bandwidth line (height = bandwidth x
  MEMORY_INTENSITY): the gap below the memory roof there is their bandwidth shortfall.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

from ..core.results import params_of

MEMORY_INTENSITY = 1 / 16  # FLOP/byte where the memory patterns are drawn (left of any GEMM)
# Units of a row's value, as multiples of the base unit (results/SCHEMA.md: decimal prefixes).
UNIT_SCALE = {"GB/s": 1e9, "TB/s": 1e12, "GFLOP/s": 1e9, "TFLOP/s": 1e12, "GOPS": 1e9, "TOPS": 1e12}
# Bytes per element of a GEMM operand by the recipe name (FP4 packs two values per byte).
ELEMENT_BYTES = {"fp32": 4, "tf32": 4, "bf16": 2, "fp16": 2, "fp8": 1, "int8": 1, "int32": 4,
                 "mxfp4": 0.5, "nvfp4": 0.5}


@dataclass
class Placed:
    family: str
    label: str  # "matmul bf16 4096x4096x4096 torch"
    group: str  # the dtype (colour and roof it is judged against); "memory" for memory patterns
    intensity: float  # FLOP/byte
    rate: float  # FLOP/s (OP/s for int8)


@dataclass
class Roofline:
    bandwidth: float | None = None  # B/s, the best plateau memory pattern
    bandwidth_from: str = ""  # "copy triton"
    bandwidth_claim: float | None = None  # B/s
    peaks: dict[str, float] = field(default_factory=dict)  # dtype -> FLOP/s (best ok matmul row)
    peak_claims: dict[str, float] = field(default_factory=dict)  # dtype -> FLOP/s, dense
    points: list[Placed] = field(default_factory=list)
    scale: float = 1e12  # the plot's unit: 1e9 (GFLOP/s, CPU runs) or 1e12 (TFLOP/s)


def attainable(intensity: float, peak: float, bandwidth: float) -> float:
    """The roof at an intensity: min(peak FLOP/s, bandwidth B/s x intensity FLOP/B)."""
    return min(peak, bandwidth * intensity)


def _float(text) -> float | None:
    try:
        return float(text) if text not in ("", None) else None
    except (TypeError, ValueError):
        return None


def gemm_bytes(params: dict, dtype: str) -> float | None:
    """Bytes of A (M x K), B (K x N) and C (M x N), each moved once, at the recipe's element sizes."""
    try:
        m, n, k = int(params["m"]), int(params["n"]), int(params["k"])
    except (KeyError, TypeError, ValueError):
        return None
    a = ELEMENT_BYTES.get(dtype)
    c = ELEMENT_BYTES.get(params.get("out_dtype", dtype))
    if a is None or c is None:
        return None
    return (m * k + k * n) * a + m * n * c


def flops_and_bytes(row: dict) -> tuple[float, float] | None:
    """FLOP and bytes of one call of a row's kernel, or None when it has no FLOP or no byte count."""
    params, work = params_of(row), _float(row.get("work"))
    if row["family"] == "matmul":
        nbytes = gemm_bytes(params, row["dtype"])
        return (work, nbytes) if work and nbytes else None
    flops = work if row.get("work_unit") in ("FLOP", "OP") else _float(params.get("flops"))
    nbytes = _float(params.get("bytes")) if "bytes" in params and flops is not None else None
    if nbytes is None and row.get("work_unit") == "B" and flops is not None:
        nbytes = work
    return (flops, nbytes) if flops and nbytes else None


def _rate(row: dict, flops: float) -> float | None:
    """FLOP/s: the row's own value where it is a FLOP (OP) rate (value = work / time_s), else FLOP / time_s."""
    value, scale = _float(row.get("value")), UNIT_SCALE.get(row["unit"])
    if value is not None and scale and row.get("work_unit") in ("FLOP", "OP") and "B/s" not in row["unit"]:
        return value * scale
    time_s = _float(row.get("time_s"))
    return flops / time_s if time_s else None


def roofline(rows: list[dict]) -> Roofline:
    """Roofs and placed points from one card's rows (only `ok` rows count)."""
    roof = Roofline(scale=1e9 if rows and all(not r.get("device_index") for r in rows) else 1e12)
    for r in rows:
        if r["status"] != "ok":
            continue
        value, scale = _float(r["value"]), UNIT_SCALE.get(r["unit"])
        if r["family"] == "memory" and r["case"] == "plateau" and scale:
            bw = value * scale
            roof.points.append(Placed("memory", f"{r['benchmark']} {r['provider']}", "memory", MEMORY_INTENSITY,
                                      bw * MEMORY_INTENSITY))
            if roof.bandwidth is None or bw > roof.bandwidth:
                roof.bandwidth, roof.bandwidth_from = bw, f"{r['benchmark']} {r['provider']}"
            claim = _float(r.get("spec_value"))
            if claim and roof.bandwidth_claim is None:
                roof.bandwidth_claim = claim * UNIT_SCALE.get(r.get("spec_unit") or r["unit"], scale)
            continue
        if r["family"] == "matmul" and scale:
            dtype = r["benchmark"]
            roof.peaks[dtype] = max(roof.peaks.get(dtype, 0.0), value * scale)
            claim = _float(r.get("spec_value"))
            if claim:
                roof.peak_claims[dtype] = claim * UNIT_SCALE.get(r.get("spec_unit") or r["unit"], scale)
        counted = flops_and_bytes(r)
        if counted is None:
            continue
        rate = _rate(r, counted[0])
        if rate:
            group = r["benchmark"] if r["family"] == "matmul" else (r["dtype"] or r["family"])
            roof.points.append(Placed(r["family"], f"{r['family']} {r['benchmark']} {r['case']} {r['provider']}",
                                      group, counted[0] / counted[1], rate))
    return roof


def _si(x: float, scale: float, unit: str) -> str:
    return f"{x / scale:,.1f} {unit}"


def describe(roof: Roofline) -> str:
    """The roofs in words, for Markdown readers and for the summary."""
    if not roof.bandwidth and not roof.peaks:
        return "No roofline: this run has no ok plateau memory row and no ok matmul row."
    flops_unit = "GFLOP/s" if roof.scale == 1e9 else "TFLOP/s"
    parts = []
    if roof.bandwidth:
        claim = f", claim {_si(roof.bandwidth_claim, 1e9, 'GB/s')}" if roof.bandwidth_claim else ", no claim"
        parts.append(f"memory roof {_si(roof.bandwidth, 1e9, 'GB/s')} measured ({roof.bandwidth_from}{claim})")
    else:
        parts.append("no memory roof (no ok plateau memory row)")
    for dtype, peak in roof.peaks.items():
        unit = flops_unit.replace("FLOP/s", "OPS") if dtype == "int8" else flops_unit
        claim = f", claim {_si(roof.peak_claims[dtype], roof.scale, unit)}" if dtype in roof.peak_claims else ""
        ridge = f", ridge {peak / roof.bandwidth:,.1f} FLOP/B" if roof.bandwidth else ""
        parts.append(f"{dtype} {_si(peak, roof.scale, unit)}{claim}{ridge}")
    placed = sum(p.family != "memory" for p in roof.points)
    return ("Roofline: " + "; ".join(parts) + f". {placed} kernel(s) placed at their arithmetic intensity; "
            f"memory patterns drawn at {MEMORY_INTENSITY:g} FLOP/B on their own bandwidth line.")


def placement(roof: Roofline) -> tuple[list[str], list[list[str]]]:
    """Each placed kernel against the roof at its intensity: min(its dtype's measured peak, bandwidth x intensity)."""
    unit = "GFLOP/s" if roof.scale == 1e9 else "TFLOP/s"
    rows = []
    for p in sorted((p for p in roof.points if p.family != "memory"), key=lambda p: (p.group, p.intensity)):
        peak, bw = roof.peaks.get(p.group, math.inf), roof.bandwidth or math.inf
        at = attainable(p.intensity, peak, bw)
        if math.isinf(at):
            rows.append([p.label, f"{p.intensity:,.2f}", f"{p.rate / roof.scale:,.1f}", "no roof", "", ""])
            continue
        bound = "memory" if bw * p.intensity < peak else "compute"
        rows.append([p.label, f"{p.intensity:,.2f}", f"{p.rate / roof.scale:,.1f}", f"{at / roof.scale:,.1f}",
                     f"{100 * p.rate / at:.0f}%", bound])
    return ["kernel", "FLOP/byte", f"measured {unit}", f"roof {unit}", "% of roof", "roof bound by"], rows


def draw(roof: Roofline, title: str, path: Path) -> Path | None:
    """Log-log roofline plot; None when there is neither a memory roof nor a matmul peak."""
    if not roof.bandwidth and not roof.peaks:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    unit, s = ("GFLOP/s" if roof.scale == 1e9 else "TFLOP/s"), roof.scale
    bws = [b for b in (roof.bandwidth, roof.bandwidth_claim) if b]
    peaks = list(roof.peaks.values()) + list(roof.peak_claims.values())
    ridges = [pk / b for pk in peaks for b in bws]
    intensities = [p.intensity for p in roof.points] + [MEMORY_INTENSITY]
    lo, hi = min(intensities + ridges) / 2, max(intensities + ridges) * 4

    def span(a: float, b: float):
        return np.logspace(np.log10(a), np.log10(b), 128)

    fig, ax = plt.subplots(figsize=(7.5, 4.8))
    # The memory roofs rise until they meet the highest compute roof; each dtype's roof is flat
    # from its ridge point (peak / bandwidth) on, where min(peak, bandwidth x intensity) = peak.
    for bw, peak_set, style, what in ((roof.bandwidth, roof.peaks, "-", "measured"),
                                      (roof.bandwidth_claim, roof.peak_claims or roof.peaks, "--", "claimed")):
        if bw:
            top = max(peak_set.values()) if peak_set else bw * hi
            xs = span(lo, top / bw)
            ax.plot(xs, np.minimum(bw * xs, top) / s, color="black", linestyle=style, linewidth=1.4 if what ==
                    "measured" else 1.0, label=f"memory {bw / 1e9:,.1f} GB/s {what}"
                    + (f" ({roof.bandwidth_from})" if what == "measured" else ""))
    colours = {d: plt.cm.tab10(i % 10) for i, d in enumerate(dict.fromkeys(
        list(roof.peaks) + list(roof.peak_claims) + [p.group for p in roof.points if p.family != "memory"]))}
    for dtype, colour in colours.items():
        ops = unit.replace("FLOP/s", "OPS") if dtype == "int8" else unit
        for peak_set, bw, style, what in ((roof.peaks, roof.bandwidth, "-", "measured"),
                                          (roof.peak_claims, roof.bandwidth_claim or roof.bandwidth, "--",
                                           "claimed (dense)")):
            if dtype in peak_set:
                peak = peak_set[dtype]
                xs = span(peak / bw if bw else lo, hi)
                ax.plot(xs, [attainable(x, peak, bw) / s if bw else peak / s for x in xs], color=colour,
                        linestyle=style, linewidth=1.2, label=f"{dtype} {peak / s:,.1f} {ops} {what}")
        for gemm in (True, False):
            pts = [p for p in roof.points if p.group == dtype and p.family != "memory"
                   and (p.family == "matmul") == gemm]
            if pts:
                ax.scatter([p.intensity for p in pts], [p.rate / s for p in pts], color=colour, s=22,
                           marker="o" if gemm else "^", zorder=3, edgecolors="black", linewidths=0.4)
    for family, marker, what in (("matmul", "o", "GEMM shapes"), (None, "^", "other kernels (work / bytes)")):
        if any((p.family == family) if family else p.family not in ("matmul", "memory") for p in roof.points):
            ax.scatter([], [], marker=marker, color="grey", edgecolors="black", linewidths=0.4,
                       label=f"{what}, coloured by dtype")
    mem = sorted((p for p in roof.points if p.family == "memory"), key=lambda p: -p.rate)
    if mem:
        ax.scatter([p.intensity for p in mem], [p.rate / s for p in mem], marker="s", s=22, color="white",
                   edgecolors="black", zorder=3, label=f"memory patterns (at {MEMORY_INTENSITY:g} FLOP/B)")
        for i, p in enumerate(mem):  # stacked labels: the patterns sit close together
            ax.annotate(f"{p.label} {p.rate / MEMORY_INTENSITY / 1e9:,.1f} GB/s", (p.intensity, p.rate / s),
                        xytext=(10, -10 - 9 * i), textcoords="offset points", fontsize=6, ha="left", arrowprops={"arrowstyle": "-", "linewidth": 0.4, "color": "grey"})
    for p in roof.points:
        if p.family not in ("matmul", "memory"):
            ax.annotate(p.label, (p.intensity, p.rate / s), fontsize=6, xytext=(4, -2), textcoords="offset points")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlim(lo / 8, hi)
    bottom = min([p.rate for p in roof.points] + [b * lo for b in bws] + peaks) / s
    ax.set_ylim(bottom=bottom / 4)  # room for the memory patterns' labels
    ax.set_xlabel("arithmetic intensity (FLOP/byte of device memory traffic)")
    ax.set_ylabel(f"attainable {unit} ({unit.replace('FLOP/s', 'OPS')} for int8)")
    ax.set_title(title + ("  (CPU run)" if s == 1e9 else ""), fontsize=10)
    ax.grid(True, which="major", linewidth=0.3)
    ax.legend(fontsize=6, loc="upper left")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
