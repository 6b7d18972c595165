"""`cardbench history RESULTS_DIR`: each card's headline numbers over time, version changes marked.

Every run of a card is one point per headline metric (bench/headline.py: the
same measurement every run): its start time, value, p10/p90 and the driver,
CUDA and torch versions. Each point is compared with the card's previous
comparable point (same provider and case) by the statistics `compare` uses:
ratio of medians with a bootstrap interval and a rank test over the raw
samples. A step beyond the noise is pointed out, and said to coincide with a
version change when one happened between the two runs. Incomplete runs are
shown and marked; damaged files are named and skipped.
"""
from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path

from ..core.stats import LOWER_IS_BETTER_UNITS, speed_ratio_ci, threshold_for, verdict_for
from ..core.headline import headlines
from ..core.results import Results, ResultsFileError, card_key, parse_samples, read_results, results_files

EXIT_OK, EXIT_BAD_INPUT = 0, 2
# What a "version change" is: the software and firmware a driver / CUDA / torch update touches.
VERSION_FIELDS = ("driver_version", "cuda_driver_version", "cuda_runtime_version", "torch_version",
                  "triton_version", "nccl_version", "vbios_version")


@dataclass
class Step:
    verdict: str  # "slower" or "faster" (stats.verdict_for)
    change_pct: float
    ci_low_pct: float
    ci_high_pct: float
    p_value: float
    since: str  # the earlier run's start time
    changes: list[str]  # version fields that differ between the two runs (empty: none)

    def text(self) -> str:
        return (f"{self.verdict} {self.change_pct:+.1f}% "
                f"(95% CI {self.ci_low_pct:+.1f}..{self.ci_high_pct:+.1f}%, p={self.p_value:.2g})")


@dataclass
class Point:
    when: str  # the run's start (its first row for this card), ISO 8601 UTC
    run: str  # results file
    complete: bool
    value: float | None  # None: the headline row is not ok
    p10: float | None
    p90: float | None
    status: str
    message: str
    provider: str
    case: str
    threshold: float  # the change that counts (stats.threshold_for this row)
    versions: dict[str, str]
    changes: list[str] = field(default_factory=list)  # version fields changed since the previous point
    step: Step | None = None
    note: str = ""
    samples: list[float] = field(default_factory=list, repr=False)


@dataclass
class Series:
    card: str  # results.card_key: UUID, else serial, else host:name
    model: str
    host: str
    metric: str  # headline name: "memory copy", "matmul bf16", ...
    unit: str
    points: list[Point]

    @property
    def label(self) -> str:
        short = self.card[-8:] if self.card.startswith("GPU-") else self.host
        return f"{self.model} ({short})"


def _float(text: str) -> float | None:
    return float(text) if text not in ("", None) else None


def load(paths: list[str]) -> tuple[list[Results], list[str]]:
    """Every readable results CSV under PATHS, each run once; damaged files are named, not fatal."""
    files: list[Path] = []
    for p in map(Path, paths):
        files += results_files(p) if p.is_dir() else [p]
    runs, skipped, seen = [], [], set()
    # accept keeps a copy of a card's first accepted run under baselines/: the same run twice.
    for f in sorted(files, key=lambda f: "baselines" in f.parts):
        try:
            res = read_results(f)
        except ResultsFileError as e:
            skipped.append(str(e))
            continue
        ids = {(r["run_id"], card_key(r, False)) for r in res.rows}
        if ids and ids <= seen:
            continue
        seen |= ids
        runs.append(res)
    return runs, skipped


def _matches(text: str | None, *candidates: str) -> bool:
    return text is None or any(text.lower() in c.lower() for c in candidates)


def build(runs: list[Results], card: str | None = None, metric: str | None = None) -> list[Series]:
    """The series per card and headline metric, points in time order, changes and steps found."""
    by: dict[tuple[str, str], Series] = {}
    for res in runs:
        cards: dict[str, list[dict[str, str]]] = {}
        for r in res.rows:
            cards.setdefault(card_key(r, False), []).append(r)
        for key, rows in cards.items():
            if not _matches(card, key, rows[0]["device_uuid"], rows[0]["host"]):
                continue
            when = min(r["timestamp_utc"] for r in rows)
            for h in headlines(rows):
                if not _matches(metric, h.name):
                    continue
                r = h.row
                s = by.setdefault((key, h.name), Series(key, r["device_name"], r["host"], h.name, r["unit"], []))
                s.points.append(Point(
                    when, res.path, res.complete, _float(r["value"]) if h.ok else None, _float(r["p10"]),
                    _float(r["p90"]), r["status"], r["message"], r["provider"], r["case"],
                    threshold_for(r, {}), {f: r.get(f, "") for f in VERSION_FIELDS}, samples=parse_samples(r["samples"]),
                    note="" if res.complete else f"incomplete run ({res.end_message or 'no closing row'})"))
    series = sorted(by.values(), key=lambda s: (s.model, s.card))  # stable: headline order within a card
    for s in series:
        s.points.sort(key=lambda p: p.when)
        _mark(s)
    return series


def _changes(before: Point, after: Point) -> list[str]:
    return [f"{f} {before.versions[f] or '?'} -> {after.versions[f] or '?'}" for f in VERSION_FIELDS
            if before.versions[f] != after.versions[f]]


def _mark(s: Series) -> None:
    """Version changes between consecutive points; steps between consecutive comparable ok points."""
    previous: Point | None = None
    last_ok: Point | None = None
    for p in s.points:
        if previous is not None:
            p.changes = _changes(previous, p)
        previous = p
        if p.value is None:
            continue
        if last_ok is not None and (last_ok.provider, last_ok.case) != (p.provider, p.case):
            p.note = "; ".join(filter(None, [p.note, f"measured as {p.provider} {p.case}, before as "
                                             f"{last_ok.provider} {last_ok.case}: not compared"]))
        elif last_ok is not None:
            higher = s.unit not in LOWER_IS_BETTER_UNITS
            ratio, low, high, pv = speed_ratio_ci(last_ok.samples or [last_ok.value], p.samples or [p.value], higher)
            verdict = verdict_for(ratio, low, high, pv, p.threshold)
            if verdict in ("slower", "faster"):
                p.step = Step(verdict, (ratio - 1) * 100, (low - 1) * 100, (high - 1) * 100, pv, last_ok.when,
                              _changes(last_ok, p))
        last_ok = p


def steps(series: list[Series]) -> list[str]:
    out = []
    for s in series:
        for p in s.points:
            if p.step:
                where = (f"at a version change ({'; '.join(p.step.changes)})" if p.step.changes
                         else "with no version change")
                out.append(f"{s.card} {s.model}, {s.metric}: {p.step.text()} at {p.when[:19]}Z, {where}")
    return out


# ---------------------------------------------------------------------------------------
# Output


def _fmt(x: float | None) -> str:
    return "" if x is None else f"{x:,.1f}"


def table(s: Series) -> tuple[list[str], list[list[str]]]:
    headers = ["run start (UTC)", s.unit, "p10..p90", "driver", "CUDA (torch)", "torch", "version change",
               "step", "note"]
    rows = []
    for p in s.points:
        value = _fmt(p.value) if p.value is not None else f"{p.status}: {p.message}"[:60]
        spread = f"{_fmt(p.p10)}..{_fmt(p.p90)}" if p.p10 is not None and p.p90 is not None else ""
        rows.append([p.when[:19].replace("T", " "), value, spread, p.versions["driver_version"],
                     p.versions["cuda_runtime_version"], p.versions["torch_version"], "; ".join(p.changes),
                     p.step.text() if p.step else "", p.note])
    return headers, rows


def render(series: list[Series]) -> str:
    from tabulate import tabulate

    parts = []
    for s in series:
        parts += [f"\n{s.model} {s.card} on {s.host}: {s.metric} ({s.unit})",
                  tabulate(table(s)[1], headers=table(s)[0], disable_numparse=True)]
    found = steps(series)
    parts.append("\nsteps beyond the run-to-run noise:" if found else
                 "\nno step beyond the noise between consecutive runs")
    parts += [f"  {line}" for line in found]
    return "\n".join(parts)


def to_json(series: list[Series], skipped: list[str]) -> dict:
    def point(p: Point) -> dict:
        d = asdict(p)
        d.pop("samples")
        d["n_samples"] = len(p.samples)
        return d

    return {"series": [{"card": s.card, "model": s.model, "host": s.host, "metric": s.metric, "unit": s.unit,
                        "points": [point(p) for p in s.points]} for s in series],
            "steps": steps(series), "skipped": skipped}


def plot(series: list[Series], path: str | Path) -> Path | None:
    """One panel per headline metric, one line per card over time; version changes as dotted
    lines, steps as red triangles, incomplete runs hollow. Returns None when nothing is ok."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    metrics = list(dict.fromkeys(s.metric for s in series if any(p.value is not None for p in s.points)))
    if not metrics:
        return None
    fig, axes = plt.subplots(len(metrics), 1, figsize=(9, 2.8 * len(metrics) + 0.6), squeeze=False)
    for ax, metric in zip(axes[:, 0], metrics):
        marked: set[tuple[str, str]] = set()
        for s in (s for s in series if s.metric == metric):
            pts = [(datetime.fromisoformat(p.when), p) for p in s.points if p.value is not None]
            if not pts:
                continue
            xs, ys = [t for t, _ in pts], [p.value for _, p in pts]
            err = [[max(0.0, p.value - (p.p10 if p.p10 is not None else p.value)) for _, p in pts],
                   [max(0.0, (p.p90 if p.p90 is not None else p.value) - p.value) for _, p in pts]]
            line = ax.errorbar(xs, ys, yerr=err, marker="o", markersize=4, capsize=2, label=s.label)[0]
            hollow = [(t, p.value) for t, p in pts if not p.complete]
            if hollow:
                ax.scatter(*zip(*hollow), s=60, facecolors="white", edgecolors=line.get_color(), zorder=3)
            stepped = [(t, p.value) for t, p in pts if p.step]
            if stepped:
                ax.scatter(*zip(*stepped), marker="v", s=80, color="red", zorder=4)
            for t, p in ((datetime.fromisoformat(p.when), p) for p in s.points if p.changes):
                ax.axvline(t, color=line.get_color(), linestyle=":", linewidth=1)
                text = "; ".join(c.replace("_version", "") for c in p.changes)
                if (p.when[:10], text) not in marked:
                    marked.add((p.when[:10], text))
                    ax.text(t, 0.98, f" {text}", rotation=90, fontsize=6, va="top", color="dimgray",
                            transform=ax.get_xaxis_transform())
        unit = next(s.unit for s in series if s.metric == metric)
        ax.set_title(f"{metric} over time", fontsize=9)
        ax.set_ylabel(unit)
        ax.legend(fontsize=6)
    fig.suptitle("dotted line: version change; red triangle: step beyond the noise; hollow: incomplete run",
                 fontsize=8)
    fig.autofmt_xdate()
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


# ---------------------------------------------------------------------------------------
# Command


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("results", nargs="+", metavar="RESULTS_DIR", help="directories (or files) of results CSVs")
    p.add_argument("--card", metavar="UUID", help="only cards whose UUID (or serial, host) contains this")
    p.add_argument("--metric", metavar="NAME", help="only headline metrics containing this ('memory copy', 'matmul')")
    p.add_argument("--plot", metavar="FILE", help="also draw the history as a PNG")
    p.add_argument("--json", action="store_true", help="print JSON instead of tables")


def main(args) -> int:
    missing = [p for p in args.results if not Path(p).exists()]
    if missing:
        print(f"cardbench history: {', '.join(missing)}: no such file or directory", file=sys.stderr)
        return EXIT_BAD_INPUT
    runs, skipped = load(args.results)
    for e in skipped:
        print(f"warning: skipping {e}", file=sys.stderr)
    if not any(res.rows for res in runs):
        print(f"cardbench history: no results with measurements in {', '.join(args.results)}", file=sys.stderr)
        return EXIT_BAD_INPUT
    series = build(runs, args.card, args.metric)
    if not series:
        everything = build(runs)
        print(f"cardbench history: nothing matches --card {args.card or '(any)'} --metric {args.metric or '(any)'}; "
              f"cards: {', '.join(sorted({s.card for s in everything}))}; "
              f"metrics: {', '.join(sorted({s.metric for s in everything}))}", file=sys.stderr)
        return EXIT_BAD_INPUT
    if args.plot:
        try:
            drawn = plot(series, args.plot)
        except OSError as e:
            print(f"cardbench history: cannot write {args.plot}: {e.strerror or e}", file=sys.stderr)
            return EXIT_BAD_INPUT
        if drawn is None:
            print("warning: no ok measurement to plot", file=sys.stderr)
    print(json.dumps(to_json(series, skipped), indent=2) if args.json else render(series))
    if args.plot and not args.json:
        print(f"plot: {args.plot}")
    return EXIT_OK
