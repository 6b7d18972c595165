"""`cardbench report RESULTS...`: a publishable measured-versus-claimed report.

Writes report.md, a self-contained report.html (plots embedded, opens from a
file with no server or network) and the PNG plots. One card: its table and
conditions. Several models: one column per card, plots overlaid. Many cards of
one model (a fleet): per-metric distribution and the cards more than a margin
below the fleet median, by UUID, host and metric. Rows that are not `ok` are
shown with status and reason and never plotted; a missing claim is shown as
missing.
"""
from __future__ import annotations

import argparse
import base64
import html
import re
import statistics
import sys
from dataclasses import dataclass
from pathlib import Path

from ..core import specs
from ..core.results import Results, ResultsFileError, card_key, read_results
from ..core.normalize import renormalize

EXIT_OK, EXIT_BAD_INPUT = 0, 2
DEFAULT_FLEET_MARGIN = 0.05  # ml-engineering: 5%+ spread between healthy GPUs of one node
FLEET_MIN_CARDS = 3

CONDITION_FIELDS = ("command", "cardbench_version", "cardbench_commit", "driver_version", "cuda_driver_version",
                    "cuda_runtime_version", "torch_version", "triton_version", "nccl_version", "power_limit_w",
                    "ecc_mode", "persistence_mode", "mig_mode", "pcie_gen_max", "pcie_width_max", "host")


@dataclass
class Card:
    key: str
    name: str
    label: str  # short column title
    rows: list[dict]
    runs: list[Results]


@dataclass
class Headline:
    metric: str  # "memory copy", "matmul bf16", ...
    unit: str
    row: dict | None  # the best ok row, or None
    problem: str  # status and reason when no row is ok


def load(paths: list[str]) -> list[Results]:
    files: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            files += sorted(p.rglob("*.csv"))
        else:
            files.append(p)
    if not files:
        raise ResultsFileError(paths[0] if paths else "(none)", None, None, "no results CSV found")
    return [read_results(f) for f in files]


def cards_of(runs: list[Results]) -> list[Card]:
    by: dict[str, Card] = {}
    for res in runs:
        for r in res.rows:
            key = card_key(r, False)
            card = by.setdefault(key, Card(key, r["device_name"], "", [], []))
            card.rows.append(r)
            if res not in card.runs:
                card.runs.append(res)
    cards = list(by.values())
    for c in cards:
        short = c.key[-8:] if c.key.startswith("GPU-") else c.rows[0]["host"]
        c.label = f"{c.name} ({short})" if sum(x.name == c.name for x in cards) > 1 else c.name
    return cards


def metric_name(r: dict) -> str:
    parts = [r["family"], r["benchmark"]]
    if r["dtype"] and r["family"] != "memory" and r["dtype"] != r["benchmark"]:
        parts.append(r["dtype"])
    return " ".join(parts)


def headlines(card: Card) -> list[Headline]:
    """Best ok row per (family, benchmark, dtype); memory sweep points are curves, not headlines."""
    groups: dict[str, list[dict]] = {}
    for r in card.rows:
        if r["family"] == "memory" and r["case"].startswith("sweep-"):
            continue
        groups.setdefault(metric_name(r), []).append(r)
    out = []
    for metric, rows in groups.items():
        ok = [r for r in rows if r["status"] == "ok"]
        lower_better = rows[0]["unit"] in ("us", "ms", "s")
        if ok:
            best = (min if lower_better else max)(ok, key=lambda r: float(r["value"]))
            out.append(Headline(metric, best["unit"], best, ""))
        else:
            statuses = sorted({r["status"] for r in rows})
            out.append(Headline(metric, rows[0]["unit"], None, f"{'/'.join(statuses)}: {rows[0]['message']}"))
    return out


def _num(text: str, spec: str = ",.1f") -> str:
    return format(float(text), spec) if text not in ("", None) else ""


def claim_table(card: Card) -> tuple[list[str], list[list[str]]]:
    headers = ["metric", "measured", "claim (dense)", "% of claim", "% of NVML-derived peak", "case", "provider",
               "status", "source of the claim"]
    rows = []
    for h in headlines(card):
        r = h.row
        if r is None:
            rows.append([h.metric, "", "", "", "", "", "", h.problem.split(":")[0], h.problem])
            continue
        claim = f"{_num(r['spec_value'])} {r['spec_unit']}" if r.get("spec_value") else "missing"
        pct = f"{float(r['pct_of_spec']):.1f}%" if r.get("pct_of_spec") else ""
        pct_d = f"{float(r['pct_of_derived']):.1f}%" if r.get("pct_of_derived") else ""
        rows.append([h.metric, f"{_num(r['value'])} {r['unit']}", claim, pct, pct_d, r["case"], r["provider"],
                     "ok", r.get("spec_source", "")])
    return headers, rows


def side_by_side(cards: list[Card]) -> tuple[list[str], list[list[str]]]:
    metrics: dict[str, dict[str, str]] = {}
    for c in cards:
        for h in headlines(c):
            cell = (f"{_num(h.row['value'])} {h.unit}" + (f" ({float(h.row['pct_of_spec']):.0f}% of claim)"
                                                         if h.row.get("pct_of_spec") else " (claim missing)")
                    if h.row else h.problem.split(":")[0])
            metrics.setdefault(h.metric, {})[c.key] = cell
    headers = ["metric"] + [c.label for c in cards]
    return headers, [[m] + [vals.get(c.key, "not measured") for c in cards] for m, vals in metrics.items()]


def fleet(cards: list[Card], margin: float) -> tuple[list[list[str]], list[list[str]]]:
    """Per model with at least FLEET_MIN_CARDS cards: distribution per metric, and the outliers."""
    dist, flagged = [], []
    for model in sorted({c.name for c in cards}):
        members = [c for c in cards if c.name == model]
        if len(members) < FLEET_MIN_CARDS:
            continue
        values: dict[str, list[tuple[float, Card, dict]]] = {}
        for c in members:
            for h in headlines(c):
                if h.row is not None:
                    values.setdefault(h.metric, []).append((float(h.row["value"]), c, h.row))
        for metric, vals in values.items():
            xs = [v for v, _, _ in vals]
            med = statistics.median(xs)
            unit = vals[0][2]["unit"]
            dist.append([model, metric, str(len(xs)), f"{min(xs):,.1f}", f"{med:,.1f}", f"{max(xs):,.1f}", unit])
            lower_better = unit in ("us", "ms", "s")
            for v, c, r in vals:
                off = (v - med) / med if med else 0.0
                if (off > margin) if lower_better else (off < -margin):
                    flagged.append([model, c.rows[0]["device_uuid"] or c.key, c.rows[0]["host"], metric,
                                    f"{v:,.1f} {unit}", f"{off:+.1%} vs median {med:,.1f}"])
    return dist, flagged


def conditions(card: Card) -> list[list[str]]:
    rows = card.rows
    out = []
    for f in CONDITION_FIELDS:
        vals = sorted({r.get(f, "") for r in rows if r.get(f)})
        if vals:
            out.append([f, "; ".join(vals)])
    clocks = [float(r["sm_clock_mhz_mean"]) for r in rows if r.get("sm_clock_mhz_mean")]
    if clocks:
        out.append(["SM clock during measurements (mean per row)", f"{min(clocks):.0f}..{max(clocks):.0f} MHz"])
    temps = [float(r["temp_c_max"]) for r in rows if r.get("temp_c_max")]
    if temps:
        out.append(["temperature (max)", f"{max(temps):g} C"])
    reasons = sorted({n for r in rows for n in r.get("clocks_event_reason_names", "").split("|") if n})
    out.append(["clocks-event reasons seen", ", ".join(reasons) or ("none" if clocks else "no NVML readings")])
    dates = sorted(r["timestamp_utc"] for r in rows if r.get("timestamp_utc"))
    if dates:
        out.append(["measured (UTC)", f"{dates[0]} .. {dates[-1]}"])
    out.append(["runs", "; ".join(f"{Path(res.path).name}" + ("" if res.complete else " (incomplete)")
                                  for res in card.runs)])
    return out


def not_ok(card: Card) -> list[list[str]]:
    """Rows that are not ok, those sharing metric, provider, status and reason told once with their cases."""
    groups: dict[tuple, list[str]] = {}
    for r in card.rows:
        if r["status"] != "ok":
            groups.setdefault((metric_name(r), r["provider"], r["status"], r["message"]), []).append(r["case"])
    return [[m, p, ", ".join(dict.fromkeys(cases)), s, msg] for (m, p, s, msg), cases in groups.items()]


# ---------------------------------------------------------------------------------------
# Plots (matplotlib; only ok rows are drawn, a missing claim draws no claim marker)


def plots(cards: list[Card], out: Path) -> list[tuple[str, Path]]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    made = []

    def save(fig, name, title):
        path = out / name
        fig.tight_layout()
        fig.savefig(path, dpi=110)
        plt.close(fig)
        made.append((title, path))

    # % of claim per headline metric, one bar per card.
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
            ax.bar(xs, [per_metric[m].get(label, 0) if label in per_metric[m] else float("nan") for m in per_metric],
                   width, label=label)
        ax.axhline(100, color="black", linewidth=0.8, linestyle="--")
        ax.set_xticks([j + 0.4 - width / 2 for j in range(len(per_metric))], list(per_metric), rotation=20, ha="right")
        ax.set_ylabel("% of the vendor's dense claim")
        ax.set_title("Measured as % of claimed, per headline metric")
        ax.legend(fontsize=8)
        save(fig, "pct_of_claim.png", "Measured as % of claimed")

    # Bandwidth against working set (memory sweep), L2 marked.
    series = {}
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
        save(fig, "memory_sweep.png", "Memory bandwidth against working-set size")

    # Matmul throughput per dtype against the dense claim, in T(FLOP|OP)/s: CPU rows are
    # stored in G units, so every value is scaled by its own row's unit.
    mm = {(c.label, h.metric.split()[-1]): h.row for c in cards for h in headlines(c)
          if h.row is not None and h.metric.startswith("matmul")}
    if mm:
        def tera(row, column):
            scale = 1e-3 if row["unit"].startswith("G") else 1.0  # GFLOP/s, GOPS -> T
            return float(row[column]) * scale if row.get(column) else float("nan")

        dtypes = sorted({d for _, d in mm})
        fig, ax = plt.subplots(figsize=(max(6, len(dtypes) * 1.1 * max(1, len(cards))), 4))
        width = 0.8 / len(cards)
        any_claim = False
        for i, c in enumerate(cards):
            xs = [j + i * width for j in range(len(dtypes))]
            rows = [mm.get((c.label, d)) for d in dtypes]
            ax.bar(xs, [tera(r, "value") if r else float("nan") for r in rows], width, label=f"{c.label} measured")
            claims = [tera(r, "spec_value") if r else float("nan") for r in rows]
            if any(x == x for x in claims):  # a claim to draw (NaN != NaN)
                ax.scatter(xs, claims, marker="_", s=400, color="black", zorder=3,
                           label=None if any_claim else "dense claim")
                any_claim = True
        ax.set_xticks([j + 0.4 - width / 2 for j in range(len(dtypes))], dtypes)
        ax.set_ylabel("TFLOP/s (TOPS for int8)")
        ax.set_title("Matmul throughput per dtype" + (" against the dense claim" if any_claim else " (no claim known)"))
        ax.legend(fontsize=8)
        save(fig, "matmul.png", "Matmul throughput per dtype")

    # P2P matrix as a heat map.
    for c in cards:
        p2p = [r for r in c.rows if r["family"] == "transfer" and r["benchmark"] == "p2p" and r["status"] == "ok"]
        pairs = {}
        for r in p2p:
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
            save(fig, f"p2p_{len(made)}.png", f"P2P bandwidth matrix, {c.label}")

    # All-reduce bus bandwidth against message size.
    coll = [(c, r) for c in cards for r in c.rows if r["family"] == "collective" and r["status"] == "ok"]
    if coll:
        fig, ax = plt.subplots(figsize=(7, 4.5))
        for c in cards:
            for bench, dtype in sorted({(r["benchmark"], r["dtype"]) for cc, r in coll if cc is c}):
                pts = sorted((float(r["size_bytes"]), float(r["value"])) for cc, r in coll
                             if cc is c and (r["benchmark"], r["dtype"]) == (bench, dtype) and r["size_bytes"])
                if pts:  # one curve per collective and dtype: bf16 and fp32 are separate sweeps
                    ax.plot(*zip(*pts), marker="o", markersize=3, label=f"{c.label} {bench} {dtype}")
        ax.set_xscale("log", base=2)
        ax.set_xlabel("message size (bytes)")
        ax.set_ylabel("bus bandwidth (GB/s)")
        ax.set_title("Collective bus bandwidth against message size")
        ax.legend(fontsize=7)
        save(fig, "collective_busbw.png", "Collective bus bandwidth")
    return made


# ---------------------------------------------------------------------------------------
# Markdown and HTML


def _md_table(headers, rows) -> str:
    from tabulate import tabulate

    return tabulate(rows, headers=headers, tablefmt="github", disable_numparse=True)


_URL = re.compile(r"https?://[^\s<>\"')]+")


def _html_cell(text: str) -> str:
    escaped = html.escape(str(text))
    return _URL.sub(lambda m: f'<a href="{m.group(0)}">{m.group(0)}</a>', escaped)


def _html_table(headers, rows) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{_html_cell(c)}</td>" for c in r) + "</tr>" for r in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def build(cards: list[Card], figures: list[tuple[str, Path]], margin: float) -> tuple[str, str]:
    sections: list[tuple[str, list]] = []  # (title, [("table", headers, rows) | ("text", str) | ("figure", title, path)])
    if len(cards) > 1:
        sections.append(("Side by side", [("table", *side_by_side(cards))]))
    dist, flagged = fleet(cards, margin)
    if dist:
        parts = [("table", ["model", "metric", "cards", "min", "median", "max", "unit"], dist)]
        parts.append(("text", f"Cards more than {margin:.0%} below the fleet median:" if flagged
                      else f"No card is more than {margin:.0%} below its fleet median."))
        if flagged:
            parts.append(("table", ["model", "card", "host", "metric", "measured", "off the median"], flagged))
        sections.append(("Fleet", parts))
    for c in cards:
        parts = [("table", *claim_table(c)), ("text", "Conditions:"), ("table", ["condition", "value"], conditions(c))]
        bad = not_ok(c)
        if bad:
            parts += [("text", "Measurements that are not `ok` (not plotted):"),
                      ("table", ["metric", "provider", "case", "status", "reason"], bad)]
        sections.append((f"{c.label}: measured versus claimed", parts))
    if figures:
        sections.append(("Plots", [("figure", t, p) for t, p in figures]))

    intro = ("Measured by cardbench. Claims are the vendor's dense figures from cardbench's sourced spec "
             "database; with-sparsity figures are never used. Units are decimal (GB/s = 1e9 B/s).")
    md = ["# cardbench report", "", intro, ""]
    body = [f"<h1>cardbench report</h1><p>{html.escape(intro)}</p>"]
    for title, parts in sections:
        md += [f"## {title}", ""]
        body.append(f"<h2>{html.escape(title)}</h2>")
        for part in parts:
            if part[0] == "table":
                md += [_md_table(part[1], part[2]), ""]
                body.append(_html_table(part[1], part[2]))
            elif part[0] == "text":
                md += [part[1], ""]
                body.append(f"<p>{html.escape(part[1])}</p>")
            else:
                md += [f"![{part[1]}]({part[2].name})", ""]
                data = base64.b64encode(part[2].read_bytes()).decode("ascii")
                body.append(f'<figure><img alt="{html.escape(part[1])}" src="data:image/png;base64,{data}">'
                            f"<figcaption>{html.escape(part[1])}</figcaption></figure>")
    style = ("body{font-family:sans-serif;max-width:1200px;margin:2em auto;padding:0 1em}"
             "table{border-collapse:collapse;margin:1em 0;font-size:13px}"
             "td,th{border:1px solid #ccc;padding:3px 6px;text-align:left;vertical-align:top}"
             "th{background:#f0f0f0}img{max-width:100%}")
    page = (f"<!doctype html><html><head><meta charset=\"utf-8\"><title>cardbench report</title>"
            f"<style>{style}</style></head><body>{''.join(body)}</body></html>")
    return "\n".join(md), page


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("results", nargs="+", help="results CSV files or directories of them")
    p.add_argument("--out", default="report", help="directory for report.md, report.html and the plots")
    p.add_argument("--specs", metavar="FILE", help="renormalize against the shipped spec data plus this file")
    p.add_argument("--fleet-margin", type=float, default=DEFAULT_FLEET_MARGIN * 100, metavar="PCT",
                   help="flag cards more than PCT%% below their fleet median (default 5)")


def main(args) -> int:
    try:
        runs = load(args.results)
        if args.specs:
            renormalize([r for res in runs for r in res.rows], specs.load(args.specs))
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
    except (ResultsFileError, specs.SpecError) as e:
        print(f"cardbench report: {e}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except OSError as e:
        print(f"cardbench report: cannot write to {args.out}: {e.strerror or e}", file=sys.stderr)
        return EXIT_BAD_INPUT
    cards = cards_of(runs)
    if not cards:
        print("cardbench report: the results hold no measurements", file=sys.stderr)
        return EXIT_BAD_INPUT
    figures = plots(cards, out)
    md, page = build(cards, figures, args.fleet_margin / 100)
    (out / "report.md").write_text(md, encoding="utf-8")
    (out / "report.html").write_text(page, encoding="utf-8")
    print(f"report: {out / 'report.md'}, {out / 'report.html'} ({len(figures)} plot(s), {len(cards)} card(s))")
    return EXIT_OK
