"""What `cardbench run` prints after the table for the collective family: per collective and dtype
its peak busbw, knee and latency; the rank the others waited for; each pair's busbw (--pairs)."""
from __future__ import annotations

import json

from . import collective_ranks as ranks
from .collective import KNEE_FRACTION, NAME, NVLS_NOTE


def summary_lines(rows: list[dict]) -> list[str]:
    """One line per collective and dtype: peak busbw (and % of the link), knee, latency; then the slow
    rank and the pairs."""
    lines = []
    for r in rows:
        if r["family"] != NAME or r["case"] != "peak" or r["status"] != "ok":
            continue
        p = json.loads(r["params"])
        pct = f" = {float(r['pct_of_spec']):.0f}% of NVLink {float(r['spec_value']):g} GB/s per direction" \
            if r.get("pct_of_spec") not in (None, "") else ""
        lines.append(f"{r['benchmark']} {r['dtype']}, {p['world_size']} ranks ({r['provider']}): peak busbw "
                     f"{float(r['value']):,.1f} GB/s at {p['peak_case'][5:]}{pct}; {KNEE_FRACTION:.0%} of peak from "
                     f"{p['knee_case'][5:]}; latency {p['latency_us']:,.1f} us at {p['latency_case'][5:]}")
    if any(NVLS_NOTE in r.get("message", "") for r in rows if r["family"] == NAME):
        lines.append(f"collective: {NVLS_NOTE}")
    return lines + _slow_rank_line(rows) + ranks.pair_lines(rows)


def _slow_rank_line(rows: list[dict]) -> list[str]:
    """The rank the others waited for at most sizes of every collective measured, with its host and device."""
    params = [json.loads(r["params"]) for r in rows if r["family"] == NAME and r["status"] == "ok"
              and r["case"].startswith("size-") and r["params"]]
    note = ranks.slow_rank_note(params, next((p["rank_names"] for p in params if p.get("rank_names")), []))
    return [f"collective: {note}"] if note else []
