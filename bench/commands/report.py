"""`cardbench report RESULTS...`: a publishable measured-versus-claimed report.

Writes report.md, a self-contained report.html (plots embedded, opens from a
file with no server or network) and the PNG plots. It opens with a one-screen
summary per card (headline % of claim per family, the accept verdict when an
accept JUnit file is among the inputs, the roofline), then the detail tables.
Each card is reported from ONE run: its latest complete run in the inputs
(an older, better run must not hide a newer regression); `--aggregate` merges
every run of a card and shows the best value per metric, and says so. Several
runs of a card add its history plot. Several models: one column per card.
Many cards of one model (a fleet): per-metric distribution and the cards more
than a margin below the fleet median. Rows that are not `ok` are grouped by
reason and never plotted; a missing claim is shown as missing.
"""
from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

from ..core import specs
from ..core.results import Results, ResultsFileError, card_key, is_timeline, read_results, results_files
from ..core.normalize import renormalize
from . import report_burn
from . import report_roofline as roofline
from .report_accept import AcceptFileError, find_verdicts
from .report_plots import plots
from .report_render import render
from .report_tables import (FLEET_MIN_CARDS, Card, claim_table, conditions, fleet, fleet_absent, not_ok,  # noqa: F401
                            side_by_side, summary_counts, summary_table)

EXIT_OK, EXIT_BAD_INPUT = 0, 2
DEFAULT_FLEET_MARGIN = 0.05  # ml-engineering: 5%+ spread between healthy GPUs of one node


def load(paths: list[str]) -> list[Results]:
    """Every results CSV given or under the folders given; accept's copies under baselines/ count once."""
    files: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            files += results_files(p)
        elif p.suffix.lower() != ".xml" and not is_timeline(p):  # JUnit, timelines: read apart
            files.append(p)
    if not files:
        raise ResultsFileError(paths[0] if paths else "(none)", None, None, "no results CSV found")
    runs, seen = [], set()
    for f in sorted(files, key=lambda f: "baselines" in f.parts):  # the original before its copy
        res = read_results(f)
        ids = {(r["run_id"], card_key(r, False)) for r in res.rows}
        if ids and ids <= seen:
            continue
        seen |= ids
        runs.append(res)
    return runs


def _start(res: Results, key: str) -> str:
    return min(r["timestamp_utc"] for r in res.rows if card_key(r, False) == key)


def _run_name(res: Results, key: str) -> str:
    run_id = next(r["run_id"] for r in res.rows if card_key(r, False) == key)
    state = "complete" if res.complete else f"incomplete: {res.end_message or 'no closing row'}"
    return f"{Path(res.path).name} (run {run_id}, started {_start(res, key)[:19].replace('T', ' ')} UTC, {state})"


def choose(key: str, runs: list[Results], aggregate: bool) -> tuple[list[Results], str]:
    """The runs a card is reported from, and the sentence that says which and why."""
    runs = sorted(runs, key=lambda res: _start(res, key))
    if aggregate and len(runs) > 1:
        return runs, (f"Aggregated over {len(runs)} runs (--aggregate): each metric shows its best value "
                      f"across {', '.join(Path(r.path).name for r in runs)}; a newer regression can hide "
                      "behind an older run's better value.")
    complete = [r for r in runs if r.complete]
    chosen = (complete or runs)[-1]
    text = f"Reported run: {_run_name(chosen, key)}"
    if not complete:
        text += "; no complete run of this card in the inputs, so the latest incomplete one is shown"
    elif len(runs) > 1:
        text += f"; the latest complete of {len(runs)} runs of this card in the inputs"
        newer = [r for r in runs if _start(r, key) > _start(chosen, key)]
        if newer:
            text += f" (newer, not reported: {'; '.join(_run_name(r, key) for r in newer)})"
        text += " (one run per card; --aggregate merges them)"
    return [chosen], text + "."


def cards_of(runs: list[Results], aggregate: bool = False) -> list[Card]:
    by: dict[str, list[Results]] = {}
    names: dict[str, tuple[str, str]] = {}
    for res in runs:
        for r in res.rows:
            key = card_key(r, False)
            names.setdefault(key, (r["device_name"], r["host"]))
            if res not in by.setdefault(key, []):
                by[key].append(res)
    cards = []
    for key, card_runs in by.items():
        # A burn is reported beside the card's benchmark run, not instead of it.
        burns = [res for res in card_runs if all(r["family"] == "burn" for r in res.rows)]
        others = [res for res in card_runs if res not in burns]
        chosen, text = choose(key, others or burns, aggregate)
        if others and burns:
            burn_chosen, burn_text = choose(key, burns, aggregate)
            chosen, text = chosen + burn_chosen, f"{text} Burn-in: {burn_text}"
        rows = [r for res in chosen for r in res.rows if card_key(r, False) == key]
        cards.append(Card(key, names[key][0], "", rows, chosen, card_runs, text))
    for c in cards:
        short = c.key[-8:] if c.key.startswith("GPU-") else names[c.key][1]
        c.label = f"{c.name} ({short})" if sum(x.name == c.name for x in cards) > 1 else c.name
    return cards


def history_figure(card: Card, out: Path, index: int) -> tuple[list, str] | None:
    """The card's history plot and its steps, when the inputs hold more than one run of it."""
    if len(card.all_runs) < 2:
        return None
    from . import history

    series = [s for s in history.build(card.all_runs) if s.card == card.key]
    drawn = history.plot(series, out / f"history_{index}.png") if series else None
    steps = history.steps(series)
    text = (f"History: {len(card.all_runs)} runs of this card. "
            + ("Steps beyond the run-to-run noise: " + " | ".join(steps) if steps
               else "No step beyond the run-to-run noise between consecutive runs."))
    return ([("figure", f"History of {card.label}", drawn)] if drawn else []), text


def sections(cards: list[Card], out: Path, margin: float, aggregate: bool) -> list:
    """Summary per card first, then side by side, fleet, the details per card and the plots."""
    summary, details = [], []
    for i, c in enumerate(cards):
        roof = roofline.roofline(c.rows)
        drawn = roofline.draw(roof, f"Roofline: {c.label}", out / f"roofline_{i}.png")
        start = min(r["timestamp_utc"] for r in c.rows)
        accept = c.accept.text(None if aggregate else start) if c.accept else (
            "accept: no verdict (no `cardbench accept --junit` file for this card among the inputs)")
        parts = [("text", c.chosen), ("table", *summary_table(c)), ("text", accept), ("text", summary_counts(c)),
                 ("text", roofline.describe(roof))]
        if drawn:
            parts.append(("figure", f"Roofline: {c.label}", drawn))
        summary.append((3, c.label, parts))
        parts = [("table", *claim_table(c))]
        placed = roofline.placement(roof)
        if placed[1]:
            parts += [("text", "Roofline placement: each kernel against the roof at its arithmetic intensity, "
                               "min(its dtype's measured matmul peak, measured bandwidth x intensity):"),
                      ("table", *placed)]
        bad = not_ok(c)
        if bad:
            parts += [("text", "Measurements that are not `ok`, grouped by reason (not plotted):"),
                      ("table", ["reason", "status", "rows", "message", "cases"], bad)]
        parts += [("text", "Conditions:"), ("table", ["condition", "value"], conditions(c))]
        for title, (headers, table) in (("Burn-in (`cardbench burn`):", report_burn.burn_table(c.rows)),
                                        ("Performance per watt (NVML's energy counter over each timed window):",
                                         report_burn.efficiency_table(c.rows))):
            if table:
                parts += [("text", title), ("table", headers, table)]
        hist = history_figure(c, out, i)
        if hist:
            parts += [("text", hist[1])] + hist[0]
        details.append((2, f"{c.label}: measured versus claimed", parts))
    out_sections = [(2, "Summary", [])] + summary
    if len(cards) > 1:
        out_sections.append((2, "Side by side", [("table", *side_by_side(cards))]))
    dist, flagged = fleet(cards, margin)
    if dist:
        parts = [("table", ["model", "metric", "cards", "min", "median", "max", "unit"], dist),
                 ("text", f"Cards more than {margin:.0%} below the fleet median:" if flagged
                  else f"No card is more than {margin:.0%} below its fleet median.")]
        if flagged:
            parts.append(("table", ["model", "card", "host", "metric", "measured", "off the median"], flagged))
        out_sections.append((2, "Fleet", parts))
    else:
        out_sections.append((2, "Fleet", [("text", fleet_absent(cards))]))
    out_sections += details
    figures = plots(cards, out)
    if figures:
        out_sections.append((2, "Plots", [("figure", t, p) for t, p in figures]))
    return out_sections


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("results", nargs="+", help="results CSV files, accept JUnit XML files, or directories of them")
    p.add_argument("--out", default="report", help="directory for report.md, report.html and the plots")
    p.add_argument("--specs", metavar="FILE", help="renormalize against the shipped spec data plus this file")
    p.add_argument("--fleet-margin", type=float, default=DEFAULT_FLEET_MARGIN * 100, metavar="PCT",
                   help="flag cards more than PCT%% below their fleet median (default 5; >= 0)")
    p.add_argument("--aggregate", action="store_true",
                   help="merge every run of a card, best value per metric (default: the latest complete run)")


def main(args) -> int:
    if not math.isfinite(args.fleet_margin) or args.fleet_margin < 0:
        print(f"cardbench report: --fleet-margin {args.fleet_margin:g}: must be a percentage >= 0 "
              "(how far below the fleet median a card is flagged)", file=sys.stderr)
        return EXIT_BAD_INPUT
    try:
        runs = load(args.results)
        verdicts = find_verdicts(args.results)
        timelines = report_burn.find_timelines(args.results, runs)
        if args.specs:
            renormalize([r for res in runs for r in res.rows], specs.load(args.specs))
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
    except (ResultsFileError, AcceptFileError, specs.SpecError) as e:
        print(f"cardbench report: {e}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except OSError as e:
        print(f"cardbench report: cannot write to {args.out}: {e.strerror or e}", file=sys.stderr)
        return EXIT_BAD_INPUT
    cards = cards_of(runs, args.aggregate)
    if not cards:
        print("cardbench report: the results hold no measurements", file=sys.stderr)
        return EXIT_BAD_INPUT
    for c in cards:
        c.accept = verdicts.get(c.key)
    intro = ["Measured by cardbench. Claims are the vendor's dense figures from cardbench's sourced spec "
             "database; with-sparsity figures are never used. Units are decimal (GB/s = 1e9 B/s).",
             "Aggregated (--aggregate): each card's metrics are the best over all its runs in the inputs, "
             "so an older, better run can hide a newer regression." if args.aggregate else
             "Each card is reported from one run: its latest complete run in the inputs (--aggregate merges "
             "a card's runs instead)."]
    parts = sections(cards, out, args.fleet_margin / 100, args.aggregate) + \
        report_burn.timelines_section(timelines, out)
    md, page = render("cardbench report", intro, parts)
    (out / "report.md").write_text(md, encoding="utf-8")
    (out / "report.html").write_text(page, encoding="utf-8")
    n_figures = sum(p[0] == "figure" for _, _, ps in parts for p in ps)
    print(f"report: {out / 'report.md'}, {out / 'report.html'} ({n_figures} plot(s), {len(cards)} card(s))")
    return EXIT_OK
