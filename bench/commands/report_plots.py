"""The report's overview plots (matplotlib, imported inside the functions): % of claim, memory sweep,
matmul per dtype, P2P matrix, collective bus bandwidth. Only ok rows are drawn; a missing claim
draws no claim marker."""
from __future__ import annotations

import re
from pathlib import Path

from .report_tables import Card, headlines

# A matmul row's unit -> (unit family, multiple of 1 FLOP/s): the plot keeps the rows' own unit.
MATMUL_UNITS = {"GFLOP/s": ("G", 1e9), "GOPS": ("G", 1e9), "TFLOP/s": ("T", 1e12), "TOPS": ("T", 1e12)}


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(plt, fig, path: Path, title: str, made: list) -> None:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    made.append((title, path))


def matmul_groups(cards: list[Card]) -> dict[str, dict[tuple[str, str], dict]]:
    """Matmul headline rows by unit prefix ("G" on a CPU run, "T" on a GPU), keyed (card label, dtype)."""
    groups: dict[str, dict[tuple[str, str], dict]] = {}
    for c in cards:
        for h in headlines(c):
            if h.row is not None and h.metric.startswith("matmul") and h.row["unit"] in MATMUL_UNITS:
                prefix = MATMUL_UNITS[h.row["unit"]][0]
                groups.setdefault(prefix, {})[(c.label, h.metric.split()[-1])] = h.row
    return groups


def matmul_value(row: dict, column: str, prefix: str) -> float:
    """A matmul row's value (or claim) in the plot's unit prefix, from the row's own unit."""
    if not row.get(column):
        return float("nan")
    return float(row[column]) * MATMUL_UNITS[row["unit"]][1] / (1e9 if prefix == "G" else 1e12)


def plots(cards: list[Card], out: Path) -> list[tuple[str, Path]]:
    """Every plot the cards' rows can fill, as (title, PNG path), in the report's order."""
    plt = _pyplot()
    made: list[tuple[str, Path]] = []
    for draw in (_pct_of_claim, _memory_sweep, _matmul, _p2p, _collectives):
        draw(plt, cards, out, made)
    return made


def _pct_of_claim(plt, cards: list[Card], out: Path, made: list) -> None:
    """% of claim per headline metric, one bar per card."""
    per_metric: dict[str, dict[str, float]] = {}
    for c in cards:
        for h in headlines(c):
            if h.row is not None and h.row.get("pct_of_spec"):
                per_metric.setdefault(h.metric, {})[c.label] = float(h.row["pct_of_spec"])
    if per_metric:
        fig, ax = plt.subplots(figsize=(max(6, 1.2 * len(per_metric) * max(1, len(cards))), 4))
        labels = [c.label for c in cards]
        width = 0.8 / len(labels)
        for i, label in enumerate(labels):
            xs = [j + i * width for j in range(len(per_metric))]
            ax.bar(xs, [per_metric[m].get(label, float("nan")) for m in per_metric], width, label=label)
        ax.axhline(100, color="black", linewidth=0.8, linestyle="--")
        ax.set_xticks([j + 0.4 - width / 2 for j in range(len(per_metric))], list(per_metric), rotation=20, ha="right")
        ax.set_ylabel("% of the vendor's dense claim")
        ax.set_title("Measured as % of claimed, per headline metric")
        ax.legend(fontsize=8)
        _save(plt, fig, out / "pct_of_claim.png", "Measured as % of claimed", made)


def _memory_sweep(plt, cards: list[Card], out: Path, made: list) -> None:
    """Bandwidth against working set (memory sweep), L2 marked."""
    series: dict[tuple[str, str, str], list[tuple[float, float]]] = {}
    for c in cards:
        for r in c.rows:
            if r["family"] == "memory" and r["status"] == "ok" and r["size_bytes"]:
                series.setdefault((c.label, r["benchmark"], r["provider"]), []).append(
                    (float(r["size_bytes"]), float(r["value"])))
    series = {k: sorted(v) for k, v in series.items() if len(v) > 1}
    if series:
        fig, ax = plt.subplots(figsize=(7, 4.5))
        for (label, bench, provider), pts in series.items():
            ax.plot(*zip(*pts), marker="o", markersize=3, label=f"{label} {bench} {provider}")
        for c in cards:
            l2 = c.rows[0].get("l2_cache_bytes")
            if l2 and any(k[0] == c.label for k in series):
                ax.axvline(float(l2), color="grey", linestyle=":", linewidth=1)
                ax.text(float(l2), 0.97, f" L2 ({c.label})" if len(cards) > 1 else " L2", color="grey",
                        fontsize=8, va="top", transform=ax.get_xaxis_transform())
        ax.set_xscale("log", base=2)
        ax.set_xlabel("working set (bytes, all arrays)")
        ax.set_ylabel("bandwidth (GB/s)")
        ax.set_title("Memory bandwidth against working-set size")
        ax.legend(fontsize=6, ncol=2)
        _save(plt, fig, out / "memory_sweep.png", "Memory bandwidth against working-set size", made)


def _matmul(plt, cards: list[Card], out: Path, made: list) -> None:
    """Matmul throughput per dtype against the dense claim, in the rows' own unit (GFLOP/s on a
    CPU run, TFLOP/s on a GPU), as the table shows it; CPU and GPU cards get a plot each."""
    for prefix, mm in sorted(matmul_groups(cards).items()):
        group = [c for c in cards if any(label == c.label for label, _ in mm)]
        dtypes = sorted({d for _, d in mm})
        fig, ax = plt.subplots(figsize=(max(6, len(dtypes) * 1.1 * max(1, len(group))), 4))
        width = 0.8 / len(group)
        any_claim = False
        for i, c in enumerate(group):
            xs = [j + i * width for j in range(len(dtypes))]
            rows = [mm.get((c.label, d)) for d in dtypes]
            ax.bar(xs, [matmul_value(r, "value", prefix) if r else float("nan") for r in rows], width,
                   label=f"{c.label} measured")
            claims = [matmul_value(r, "spec_value", prefix) if r else float("nan") for r in rows]
            if any(x == x for x in claims):  # a claim to draw (NaN != NaN)
                ax.scatter(xs, claims, marker="_", s=400, color="black", zorder=3,
                           label=None if any_claim else "dense claim")
                any_claim = True
        ax.set_xticks([j + 0.4 - width / 2 for j in range(len(dtypes))], dtypes)
        ax.set_ylabel(f"{prefix}FLOP/s ({prefix}OPS for int8)")  # the unit of the table's matmul rows
        ax.set_title("Matmul throughput per dtype" + (" against the dense claim" if any_claim else " (no claim known)"))
        ax.legend(fontsize=8)
        name = "matmul.png" if len(matmul_groups(cards)) == 1 else f"matmul_{prefix}.png"
        _save(plt, fig, out / name, f"Matmul throughput per dtype ({prefix}FLOP/s)", made)


def _p2p(plt, cards: list[Card], out: Path, made: list) -> None:
    """P2P matrix as a heat map."""
    for c in cards:
        pairs: dict[tuple[int, int], float] = {}
        for r in c.rows:
            if r["family"] == "transfer" and r["benchmark"] == "p2p" and r["status"] == "ok":
                m = re.match(r"cuda:(\d+)->cuda:(\d+)", r["case"])
                if m:
                    key = (int(m.group(1)), int(m.group(2)))
                    pairs[key] = max(pairs.get(key, 0.0), float(r["value"]))
        if pairs:
            n = max(max(k) for k in pairs) + 1
            grid = [[pairs.get((i, j), float("nan")) for j in range(n)] for i in range(n)]
            fig, ax = plt.subplots(figsize=(4 + n * 0.4, 3.5 + n * 0.4))
            im = ax.imshow(grid, cmap="viridis")
            fig.colorbar(im, ax=ax, label="GB/s per direction")
            ax.set_xlabel("destination GPU")
            ax.set_ylabel("source GPU")
            ax.set_title(f"P2P one-way bandwidth: {c.label}")
            _save(plt, fig, out / f"p2p_{len(made)}.png", f"P2P bandwidth matrix, {c.label}", made)


def _collectives(plt, cards: list[Card], out: Path, made: list) -> None:
    """Collective bus bandwidth against message size, a curve per card, collective and dtype."""
    coll = [(c, r) for c in cards for r in c.rows if r["family"] == "collective" and r["status"] == "ok"]
    curves = []  # one curve per card, collective and dtype: bf16 and fp32 are separate sweeps
    for c in cards:
        for bench, dtype in sorted({(r["benchmark"], r["dtype"]) for cc, r in coll if cc is c}):
            pts = sorted((float(r["size_bytes"]), float(r["value"])) for cc, r in coll
                         if cc is c and (r["benchmark"], r["dtype"]) == (bench, dtype) and r["size_bytes"])
            if pts:  # a peak row alone (no sizes) draws no curve
                curves.append((pts, f"{c.label} {bench} {dtype}"))
    if curves:
        fig, ax = plt.subplots(figsize=(7, 4.5))
        for pts, label in curves:
            ax.plot(*zip(*pts), marker="o", markersize=3, label=label)
        ax.set_xscale("log", base=2)
        ax.set_xlabel("message size (bytes)")
        ax.set_ylabel("bus bandwidth (GB/s)")
        ax.set_title("Collective bus bandwidth against message size")
        ax.legend(fontsize=7)
        _save(plt, fig, out / "collective_busbw.png", "Collective bus bandwidth", made)
