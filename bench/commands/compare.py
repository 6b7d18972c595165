"""`cardbench compare BASELINE NEW`: per-metric change with a confidence interval and a verdict.

Statistics come from the raw samples every row keeps: the ratio of medians
with a bootstrap confidence interval (scipy) plus a Mann-Whitney rank test, as
Go's benchstat does (https://pkg.go.dev/golang.org/x/perf/cmd/benchstat); the
statistics live in bench/core/stats.py. A row is `slower` only when its whole
interval lies beyond the threshold, so noise reads as `inconclusive`, not as
a regression. Rows whose runs differ in throttle reasons or mean SM clock are
marked, so a thermal event is not reported as a driver regression.
"""
from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ..core.results import Results, ResultsFileError, card_key, parse_samples, read_results, results_files
from ..core.stats import (ALL_ROWS, LATENCY_BOUND, LOWER_IS_BETTER_UNITS, speed_ratio_ci, threshold_for,
                          verdict_for)
from ..core.units import number

EXIT_OK, EXIT_REGRESSION, EXIT_BAD_INPUT = 0, 1, 2

CLOCK_DIFFERENCE = 0.03  # mean SM clocks further apart than this mark the row

ROW_KEY = ("family", "benchmark", "provider", "dtype", "case")
# Run-level fields whose change is context for every difference found.
CONTEXT_FIELDS = ("driver_version", "cuda_driver_version", "cuda_runtime_version", "torch_version",
                  "triton_version", "nccl_version", "vbios_version", "power_limit_w", "sm_clock_max_mhz",
                  "mem_clock_max_mhz", "ecc_mode", "persistence_mode", "mig_mode", "cardbench_version",
                  "cardbench_commit", "profile", "host")
# Clock-event bits that say the card slowed itself down (gpu_idle and the like do not).
THROTTLE_BITS = 0x4 | 0x8 | 0x20 | 0x40 | 0x80


class CompareError(ValueError):
    """Input that cannot be compared (no common rows, different cards, no baseline)."""


@dataclass
class Comparison:
    key: tuple[str, ...]
    card: str
    unit: str
    baseline: float | None
    new: float | None
    verdict: str  # same, faster, slower, inconclusive, failed (ok before, not ok now), fixed, only-baseline, only-new
    ratio: float | None = None  # speed ratio: > 1 is better, whatever the unit's direction
    ci_low: float | None = None
    ci_high: float | None = None
    p_value: float | None = None
    threshold: float | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def change_pct(self) -> float | None:
        return None if self.ratio is None else (self.ratio - 1) * 100


def _conditions(b: dict[str, str], n: dict[str, str]) -> list[str]:
    """Why two rows' conditions differ: throttling in one run only, or different mean clocks."""
    notes = []
    tb = int(b["clocks_event_reasons"] or "0", 16) & THROTTLE_BITS
    tn = int(n["clocks_event_reasons"] or "0", 16) & THROTTLE_BITS
    if tb != tn:
        notes.append(f"throttle reasons differ: baseline {b['clocks_event_reason_names'] or 'none'}, "
                     f"new {n['clocks_event_reason_names'] or 'none'}")
    if b["sm_clock_mhz_mean"] and n["sm_clock_mhz_mean"]:
        cb, cn = float(b["sm_clock_mhz_mean"]), float(n["sm_clock_mhz_mean"])
        if cb > 0 and abs(cn - cb) / cb > CLOCK_DIFFERENCE:
            notes.append(f"mean SM clock {cb:.0f} -> {cn:.0f} MHz")
    return notes


def compare_rows(base: Results, new: Results, overrides: dict[str, float], any_card: bool) -> list[Comparison]:
    def index(res: Results):
        return {(card_key(r, any_card), *(r[k] for k in ROW_KEY)): r for r in res.rows}

    bi, ni = index(base), index(new)
    if not {k[0] for k in bi} & {k[0] for k in ni}:
        raise CompareError(
            f"no card in common: baseline {sorted({k[0] for k in bi})}, new {sorted({k[0] for k in ni})} "
            "(pass --any-card to compare different cards)")
    if not bi.keys() & ni.keys():
        raise CompareError("no measurement in common between the two runs")
    out = []
    for key in sorted(bi.keys() | ni.keys()):
        b, n = bi.get(key), ni.get(key)
        row = n or b
        c = Comparison(key[1:], key[0], row["unit"], None, None, "")
        if b is None or n is None:
            c.verdict = "only-new" if b is None else "only-baseline"
            out.append(c)
            continue
        c.baseline = float(b["value"]) if b["status"] == "ok" else None
        c.new = float(n["value"]) if n["status"] == "ok" else None
        if c.baseline is None or c.new is None:
            if c.baseline is not None:
                c.verdict, c.notes = "failed", [f"now {n['status']}: {n['message']}"]
            elif c.new is not None:
                c.verdict, c.notes = "fixed", [f"was {b['status']}: {b['message']}"]
            else:
                c.verdict, c.notes = "not-measured", [f"{b['status']} -> {n['status']}"]
            out.append(c)
            continue
        c.threshold = threshold_for(n, overrides)
        higher = n["unit"] not in LOWER_IS_BETTER_UNITS
        c.ratio, c.ci_low, c.ci_high, c.p_value = speed_ratio_ci(
            parse_samples(b["samples"]) or [c.baseline], parse_samples(n["samples"]) or [c.new], higher)
        c.verdict = verdict_for(c.ratio, c.ci_low, c.ci_high, c.p_value, c.threshold)
        c.notes = _conditions(b, n)
        out.append(c)
    return worst_first(out)


def worst_first(comps: list[Comparison]) -> list[Comparison]:
    """failed, slower, inconclusive, same, faster, then the rest (fixed, only in one run, not measured);
    within a verdict the largest loss first."""
    order = {"failed": 0, "slower": 1, "inconclusive": 2, "same": 3, "faster": 4}
    return sorted(comps, key=lambda c: (order.get(c.verdict, 5), c.ratio if c.ratio is not None else 0))


def context_changes(base: Results, new: Results) -> list[str]:
    """Run-level fields (driver, CUDA, torch, VBIOS, power limit...) that differ between the runs."""
    changes = []
    for f in CONTEXT_FIELDS:
        vb = sorted({r[f] for r in base.rows if r.get(f)})
        vn = sorted({r[f] for r in new.rows if r.get(f)})
        if vb != vn:
            changes.append(f"{f}: {', '.join(vb) or '(none)'} -> {', '.join(vn) or '(none)'}")
    return changes


def pick_baseline(path: Path, new: Results, any_card: bool) -> Results:
    """BASELINE is a file, or a directory of runs: the same card's latest run before NEW."""
    if not path.is_dir():
        return read_results(path)
    cards = {card_key(r, any_card) for r in new.rows}
    started = min(r["timestamp_utc"] for r in new.rows)
    candidates = []
    for f in results_files(path):
        if f.resolve() == Path(new.path).resolve():
            continue
        try:
            res = read_results(f)
        except ResultsFileError as e:
            print(f"warning: skipping {e}", file=sys.stderr)
            continue
        if res.rows and cards & {card_key(r, any_card) for r in res.rows}:
            when = min(r["timestamp_utc"] for r in res.rows)
            if when < started:
                candidates.append((when, res))
    if not candidates:
        raise CompareError(f"{path}: no earlier run of the same card ({', '.join(sorted(cards))})")
    return max(candidates, key=lambda c: c[0])[1]


def table_rows(comps: list[Comparison]) -> list[list[str]]:
    """Printed cells (table and Markdown): significant digits (core/units.number), never a bare 0.0."""
    rows = []
    for c in comps:
        interval = (f"{number((c.ci_low - 1) * 100, signed=True)}..{number((c.ci_high - 1) * 100, signed=True)}%"
                    if c.ci_low is not None else "")  # speed_ratio_ci gives both bounds or neither
        rows.append(["/".join(c.key[:2]), c.key[2], c.key[3], c.key[4],
                     f"{number(c.baseline)} {c.unit}" if c.baseline is not None else "",
                     f"{number(c.new)} {c.unit}" if c.new is not None else "",
                     f"{number(c.change_pct, signed=True)}%" if c.change_pct is not None else "", interval,
                     format(c.p_value, ".2g") if c.p_value is not None else "",
                     f"±{number(c.threshold * 100)}%" if c.threshold is not None else "", c.verdict,
                     "; ".join(c.notes)])
    return rows


HEADERS = ["benchmark", "provider", "dtype", "case", "baseline", "new", "change", "95% CI",
           "p", "threshold", "verdict", "note"]


def summary(comps: list[Comparison]) -> str:
    counts = {v: sum(c.verdict == v for c in comps) for v in
              ("same", "faster", "slower", "inconclusive", "failed", "fixed", "only-baseline", "only-new",
               "not-measured")}
    return ", ".join(f"{n} {v}" for v, n in counts.items() if n or v in ("same", "faster", "slower", "inconclusive"))


def render(comps, changes, base: Results, new: Results, fmt: str) -> str:
    from tabulate import tabulate

    if fmt == "json":
        return json.dumps({
            "baseline": base.path, "new": new.path, "summary": summary(comps), "context_changes": changes,
            "rows": [dict(asdict(c), key=dict(zip(ROW_KEY, c.key)), change_pct=c.change_pct) for c in comps],
        }, indent=2)
    counts = summary(comps)  # rows measured in neither run are counted, not tabled
    comps = [c for c in comps if c.verdict != "not-measured"]
    head = [f"baseline: {base.path}", f"new:      {new.path}"]
    head += [f"changed:  {c}" for c in changes] or ["changed:  nothing in the recorded environment"]
    if fmt == "markdown":
        lines = ["## cardbench compare", ""] + [f"- {h.strip()}" for h in head] + ["",
                 tabulate(table_rows(comps), headers=HEADERS, tablefmt="github", disable_numparse=True),
                 "", f"**{counts}**"]
        return "\n".join(lines)
    return "\n".join(head + ["", tabulate(table_rows(comps), headers=HEADERS, disable_numparse=True), "",
                             counts])


THRESHOLD_SYNTAX = "expected PCT, FAMILY=PCT or latency=PCT (percent; repeat the option or separate with commas)"


def parse_thresholds(values: list[str]) -> dict[str, float]:
    """`--threshold` values (`3`, `memory=3,matmul=4`, `latency=10`) as stats.threshold_for's overrides.

    Which override decides a row is stats.threshold_for's rule; here only the syntax is checked
    (family names need the runs: check_families)."""
    out: dict[str, float] = {}
    for value in values:
        for item in value.split(","):
            part = item.strip() or "an empty item"
            where = f"--threshold {value}" + (f" ({part})" if part != value.strip() else "")
            name, eq, pct = item.partition("=")
            name, pct = (name.strip(), pct.strip()) if eq else (ALL_ROWS, name.strip())
            if not name or not pct:
                raise CompareError(f"{where}: {THRESHOLD_SYNTAX}")
            try:
                percent = float(pct.removesuffix("%"))
            except ValueError:
                raise CompareError(f"{where}: {pct!r} is not a number; {THRESHOLD_SYNTAX}") from None
            if not 0 < percent < 100:
                raise CompareError(f"{where}: {pct}% is not a percentage above 0 and below 100")
            if name in out:
                raise CompareError(f"{where}: {'a bare PCT (every row)' if name == ALL_ROWS else name} is given twice")
            out[name] = percent / 100
    return out


def check_families(overrides: dict[str, float], base: Results, new: Results) -> None:
    """A FAMILY=PCT override must name a family these runs measured: a typo would change nothing."""
    known = sorted({r["family"] for res in (base, new) for r in res.rows})
    for name in overrides:
        if name not in (ALL_ROWS, LATENCY_BOUND) and name not in known:
            raise CompareError(f"--threshold {name}={overrides[name] * 100:g}: unknown family {name!r}; "
                               f"families in these runs: {', '.join(known)} "
                               f"({LATENCY_BOUND}=PCT sets latency-bound rows)")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("baseline", help="a results CSV, or a directory of runs (the same card's latest run before NEW)")
    p.add_argument("new", help="the results CSV to judge")
    p.add_argument("--threshold", action="append", default=[], metavar="[FAMILY=]PCT",
                   help="change that counts, in percent (repeat or comma-separate): FAMILY=PCT for every row of a "
                        "family, else latency=PCT for latency-bound rows (latency units or working sets under "
                        "64 MiB), else a bare PCT for every row; built in: 5 latency-bound, 2 the others")
    p.add_argument("--format", choices=("table", "markdown", "json"), default="table")
    p.add_argument("--any-card", action="store_true",
                   help="compare runs of different cards (rows matched by device index)")


def main(args) -> int:
    try:
        overrides = parse_thresholds(args.threshold)
        new = read_results(args.new)
        if not new.rows:
            raise CompareError(f"{args.new}: no measurements in this file")
        base = pick_baseline(Path(args.baseline), new, args.any_card)
        check_families(overrides, base, new)
        comps = compare_rows(base, new, overrides, args.any_card)
    except (ResultsFileError, CompareError) as e:
        print(f"cardbench compare: {e}", file=sys.stderr)
        return EXIT_BAD_INPUT
    for res in (base, new):
        if not res.complete:
            print(f"warning: {res.path} is an incomplete run ({res.end_message or 'no closing row'})",
                  file=sys.stderr)
    print(render(comps, context_changes(base, new), base, new, args.format))
    return EXIT_REGRESSION if any(c.verdict in ("slower", "failed") for c in comps) else EXIT_OK
