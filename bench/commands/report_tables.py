"""The report's tables: per-card summary, measured versus claimed, side by side, fleet, conditions,
and the rows that are not `ok` grouped by reason."""
from __future__ import annotations

import statistics
from dataclasses import dataclass, field
from pathlib import Path

from ..core import headline as core_headline
from ..core.results import Results
from .report_accept import AcceptVerdict

FLEET_MIN_CARDS = 3  # below this a median says little about which card is off
LOWER_IS_BETTER = ("us", "ms", "s")

CONDITION_FIELDS = ("command", "cardbench_version", "cardbench_commit", "driver_version", "cuda_driver_version",
                    "cuda_runtime_version", "torch_version", "triton_version", "nccl_version", "power_limit_w",
                    "ecc_mode", "persistence_mode", "mig_mode", "pcie_gen_max", "pcie_width_max", "host")


@dataclass
class Card:
    key: str  # results.card_key: UUID, else serial, else host:name
    name: str
    label: str  # short column title
    rows: list[dict]  # the rows reported: the chosen run's, or every run's with --aggregate
    runs: list[Results]  # the runs those rows come from
    all_runs: list[Results] = field(default_factory=list)  # every run of this card in the inputs
    chosen: str = ""  # which run is reported and why, one sentence
    accept: AcceptVerdict | None = None


@dataclass
class Headline:
    metric: str  # "memory copy", "matmul bf16", ...
    unit: str
    row: dict | None  # the best ok row, or None
    status: str  # "ok", or the statuses of the rows when none is ok
    reason: str  # the reason id of the first row (see `reasons`) when none is ok


def metric_name(r: dict) -> str:
    parts = [r["family"], r["benchmark"]]
    if r["dtype"] and r["family"] != "memory" and r["dtype"] != r["benchmark"]:
        parts.append(r["dtype"])
    return " ".join(parts)


def reasons(card: Card) -> dict[tuple[str, str], str]:
    """(status, message) of every row that is not ok -> a short id, R1, R2, ... in order of appearance."""
    ids: dict[tuple[str, str], str] = {}
    for r in card.rows:
        if r["status"] != "ok":
            ids.setdefault((r["status"], r["message"]), f"R{len(ids) + 1}")
    return ids


def not_ok(card: Card) -> list[list[str]]:
    """One line per reason (status and message), with the count and the cases it covers."""
    ids = reasons(card)
    cases: dict[tuple[str, str], dict[str, list[str]]] = {k: {} for k in ids}
    for r in card.rows:
        if r["status"] != "ok":
            per_metric = cases[(r["status"], r["message"])].setdefault(f"{metric_name(r)} {r['provider']}", [])
            if r["case"] not in per_metric:
                per_metric.append(r["case"])
    out = []
    for (status, message), rid in ids.items():
        listed = "; ".join(f"{m}: {', '.join(cs)}" for m, cs in cases[(status, message)].items())
        count = sum(len(cs) for cs in cases[(status, message)].values())
        out.append([rid, status, str(count), message or "(no message)", listed])
    return out


def headlines(card: Card) -> list[Headline]:
    """Best ok row per (family, benchmark, dtype); memory sweep points are curves, not headlines."""
    groups: dict[str, list[dict]] = {}
    for r in card.rows:
        if r["family"] == "memory" and r["case"].startswith("sweep-"):
            continue
        groups.setdefault(metric_name(r), []).append(r)
    ids = reasons(card)
    out = []
    for metric, rows in groups.items():
        ok = [r for r in rows if r["status"] == "ok"]
        if ok:
            best = (min if rows[0]["unit"] in LOWER_IS_BETTER else max)(ok, key=lambda r: float(r["value"]))
            out.append(Headline(metric, best["unit"], best, "ok", ""))
        else:
            statuses = "/".join(sorted({r["status"] for r in rows}))
            out.append(Headline(metric, rows[0]["unit"], None, statuses,
                                ", ".join(dict.fromkeys(ids[(r["status"], r["message"])] for r in rows))))
    return out


def _num(text: str, spec: str = ",.1f") -> str:
    return format(float(text), spec) if text not in ("", None) else ""


def _pct(row: dict) -> str:
    return f"{float(row['pct_of_spec']):.1f}%" if row.get("pct_of_spec") else ""


def claim_table(card: Card) -> tuple[list[str], list[list[str]]]:
    headers = ["metric", "measured", "claim (dense)", "% of claim", "% of NVML-derived peak", "case", "provider",
               "status", "source of the claim"]
    rows = []
    for h in headlines(card):
        r = h.row
        if r is None:  # the reason is told once, in the table of rows that are not ok
            rows.append([h.metric, "", "", "", "", "", "", f"{h.status} ({h.reason})", ""])
            continue
        claim = f"{_num(r['spec_value'])} {r['spec_unit']}" if r.get("spec_value") else "missing"
        pct_d = f"{float(r['pct_of_derived']):.1f}%" if r.get("pct_of_derived") else ""
        rows.append([h.metric, f"{_num(r['value'])} {r['unit']}", claim, _pct(r), pct_d, r["case"], r["provider"],
                     "ok", r.get("spec_source", "")])
    return headers, rows


def summary_headlines(card: Card) -> list[core_headline.Headline]:
    """The headline of each family (bench.core.headline); with --aggregate, the best one over the runs."""
    per_run = [core_headline.headlines([r for r in card.rows if r.get("run_id") == run_id])
               for run_id in dict.fromkeys(r.get("run_id") for r in card.rows)]
    best: dict[str, core_headline.Headline] = {}
    for hs in per_run:
        for h in hs:
            old = best.get(h.name)
            better = old is None or (h.ok and (not old.ok or (
                float(h.row["value"]) < float(old.row["value"]) if h.row["unit"] in LOWER_IS_BETTER
                else float(h.row["value"]) > float(old.row["value"]))))
            if better:
                best[h.name] = h
    return list(best.values())


def summary_table(card: Card) -> tuple[list[str], list[list[str]]]:
    """Per family headline: measured, claim, % of claim; a failed headline shows its status and reason id."""
    ids = reasons(card)
    rows = []
    for h in summary_headlines(card):
        r = h.row
        if not h.ok:
            rows.append([h.name, "", "", "", f"{r['status']} ({ids.get((r['status'], r['message']), '')})"])
            continue
        claim = f"{_num(r['spec_value'])} {r['spec_unit']}" if r.get("spec_value") else "missing"
        rows.append([h.name, f"{_num(r['value'])} {r['unit']}", claim, _pct(r) or "-",
                     f"ok ({r['provider']} {r['case']})"])
    return ["headline", "measured", "claim (dense)", "% of claim", "status"], rows


def summary_counts(card: Card) -> str:
    bad = sum(r["status"] != "ok" for r in card.rows)
    n = len(reasons(card))
    return (f"{len(card.rows)} measurements: {len(card.rows) - bad} ok, {bad} not ok"
            + (f" for {n} reason(s) ({', '.join(f'R{i + 1}' for i in range(n))}, below)" if bad else ""))


def side_by_side(cards: list[Card]) -> tuple[list[str], list[list[str]]]:
    metrics: dict[str, dict[str, str]] = {}
    for c in cards:
        for h in headlines(c):
            cell = (f"{_num(h.row['value'])} {h.unit}" + (f" ({float(h.row['pct_of_spec']):.0f}% of claim)"
                                                         if h.row.get("pct_of_spec") else " (claim missing)")
                    if h.row else h.status)
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
            for v, c, _row in vals:
                off = (v - med) / med if med else 0.0
                if (off > margin) if unit in LOWER_IS_BETTER else (off < -margin):
                    flagged.append([model, c.rows[0]["device_uuid"] or c.key, c.rows[0]["host"], metric,
                                    f"{v:,.1f} {unit}", f"{off:+.1%} vs median {med:,.1f}"])
    return dist, flagged


def fleet_absent(cards: list[Card]) -> str:
    """Why there is no fleet section: the count of cards per model against FLEET_MIN_CARDS."""
    counts = {m: sum(c.name == m for c in cards) for m in dict.fromkeys(c.name for c in cards)}
    have = ", ".join(f"{n} x {m}" for m, n in counts.items())
    return (f"No fleet section: it needs at least {FLEET_MIN_CARDS} cards of one model "
            f"(a median of fewer says little about which card is off); the inputs hold {have}.")


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
    names = sorted({n for r in rows for n in r.get("clocks_event_reason_names", "").split("|") if n})
    out.append(["clocks-event reasons seen", ", ".join(names) or ("none" if clocks else "no NVML readings")])
    dates = sorted(r["timestamp_utc"] for r in rows if r.get("timestamp_utc"))
    if dates:
        out.append(["measured (UTC)", f"{dates[0]} .. {dates[-1]}"])
    out.append(["runs", "; ".join(f"{Path(res.path).name}" + ("" if res.complete else " (incomplete)")
                                  for res in card.runs)])
    return out
