"""The report's burn-in and energy parts: per node, clocks, power, temperature and throughput against
time (one line per GPU, from the timeline `cardbench burn` writes beside its results); per card,
the burn's findings and every row's performance per watt (NVML's energy counter)."""
from __future__ import annotations

from pathlib import Path

from ..core.results import Results, is_timeline, params_of, timeline_path
from ..core.timeline import Timeline, read_timeline
from ..core.units import number

# The timeline's panels: (column, axis label); memory temperature joins the GPU's, dashed.
PANELS = (("sm_clock_mhz", "SM clock (MHz)"), ("power_w", "power (W)"), ("temp_gpu_c", "temperature (C)"),
          ("throughput_tflops", "achieved TFLOP/s"))


def find_timelines(paths: list[str], runs: list[Results]) -> list[tuple[str, Timeline]]:
    """(node title, timeline) of every timeline beside an input results file or named or found in the inputs."""
    files = {timeline_path(res.path).resolve() for res in runs if timeline_path(res.path).exists()}
    for p in map(Path, paths):
        found = sorted(p.rglob("*.csv")) if p.is_dir() else [p]
        files |= {f.resolve() for f in found if is_timeline(f)}
    hosts = {r["run_id"]: r["host"] for res in runs for r in res.rows}  # a merged file keeps each row's run
    out = []
    for f in sorted(files):
        line = read_timeline(f)  # a damaged timeline is bad input, as a damaged results file is
        out.append((f"Burn timeline: {hosts.get(line.run_id) or f.name} (run {line.run_id or 'unknown'})", line))
    return out


def plot_timeline(line: Timeline, title: str, path: Path) -> Path | None:
    """Clocks, power, temperatures and throughput against time, one line per GPU; None without samples."""
    if not line.rows:
        return None
    from .report_plots import _pyplot

    plt = _pyplot()
    fig, axes = plt.subplots(len(PANELS), 1, figsize=(9, 2.2 * len(PANELS)), sharex=True)
    gpus = sorted({r["device_index"] for r in line.rows}, key=lambda i: int(i) if i.isdigit() else -1)
    for gpu in gpus:
        rows = [r for r in line.rows if r["device_index"] == gpu]
        for ax, (column, label) in zip(axes, PANELS):
            pts = [(float(r["time_s"]), float(r[column])) for r in rows if r[column]]
            if pts:
                lines = ax.plot(*zip(*pts), linewidth=0.9, label=f"cuda:{gpu}")
                if column == "temp_gpu_c":
                    mem = [(float(r["time_s"]), float(r["temp_mem_c"])) for r in rows if r["temp_mem_c"]]
                    if mem:
                        ax.plot(*zip(*mem), linewidth=0.9, linestyle="--", color=lines[0].get_color())
            ax.set_ylabel(label, fontsize=8)
    axes[2].set_title("GPU (solid) and memory (dashed)", fontsize=8)
    axes[-1].set_xlabel("seconds since the burn started")
    axes[0].legend(fontsize=7, ncol=min(8, len(gpus)))
    axes[0].set_title(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def burn_table(rows: list[dict]) -> tuple[list[str], list[list[str]]]:
    """One line per burn row of a card: what the soak and the memory test found."""
    headers = ["burn", "status", "value", "found"]
    out = []
    for r in rows:
        if r["family"] != "burn":
            continue
        p = params_of(r)
        value = f"{number(r['value'])} {r['unit']}" if r["status"] == "ok" else ""
        if r["benchmark"] == "soak":
            found = (f"{p.get('iterations', 0)} iterations, {p.get('mismatch_iterations', 0)} differing; "
                     f"{p.get('cross_check', '')}")
            if p.get("window_s"):
                found += f"; last {p['window_s']} s {-p['drop_pct']:+.1f}% against the first"
        else:
            found = (f"{p.get('errors', 0)} memory errors in {int(p.get('bytes_tested', 0)) / 2**30:,.2f} GiB "
                     f"({float(p.get('coverage', 0)):.1%} of free)" if "bytes_tested" in p else "")
            if "ecc_new_uncorrectable" in p:
                found += f"; {p['ecc_new_uncorrectable']} new uncorrectable ECC errors"
        if r["status"] != "ok":
            found = f"{r['message']}; {found}" if found else r["message"]
        out.append([f"{r['benchmark']} {r['dtype']}", r["status"], value, found])
    return headers, out


def efficiency_table(rows: list[dict]) -> tuple[list[str], list[list[str]]]:
    """Every ok row with an energy reading: mean power over its window, value per watt, J per call."""
    headers = ["measurement", "case", "value", "mean power", "per watt", "J per call"]
    out = []
    for r in rows:
        if r["status"] != "ok" or not r.get("value_per_watt") and not r.get("joules_per_call"):
            continue
        watts = float(r["energy_j"]) / float(r["energy_window_s"])
        per_watt = f"{number(r['value_per_watt'])} {r['unit']}/W" if r.get("value_per_watt") else ""
        out.append([f"{r['family']} {r['benchmark']} {r['provider']} {r['dtype']}".strip(), r["case"],
                    f"{number(r['value'])} {r['unit']}", f"{watts:,.0f} W", per_watt,
                    number(r["joules_per_call"]) if r.get("joules_per_call") else ""])
    return headers, out


def timelines_section(found: list[tuple[str, Timeline]], out: Path) -> list:
    """The report section of the burn timelines (find_timelines): a figure per node, or a sentence why none."""
    parts = []
    for i, (title, line) in enumerate(found):
        drawn = plot_timeline(line, title, out / f"burn_timeline_{i}.png")
        state = "complete" if line.complete else f"incomplete: {line.end_message or 'no closing row'}"
        if drawn:
            parts += [("text", f"{title}: {len({r['device_index'] for r in line.rows})} GPU(s), "
                               f"{len(line.rows)} samples ({state})."), ("figure", title, drawn)]
        else:
            parts.append(("text", f"{title}: no samples (CPU mode: no NVML) ({state})."))
    return [(2, "Burn-in timelines", parts)] if parts else []
