"""`cardbench burn`: every selected device under sustained load at once, every result checked.

One worker process per device, all started together (bench/families/burn_run.py): a GEMM
soak per dtype whose every iteration must equal the first bit for bit, and whose first result
must equal the other devices' of the same model; then a pattern test of the free device
memory, with the ECC counters and remapped rows read before and after. Writes the usual
results CSV (rows through the one harness, each written as its phase ends) and, beside it,
the NVML timeline (bench/core/timeline.py). Verdicts are `cardbench accept`'s (its burn checks).

Exit codes: 0 every row ok (or unsupported: fp8 on a card without it); 1 a row is wrong
(silent data corruption, a memory error, a new uncorrectable ECC error) or an error (a check
that could not run); 2 bad input; 130 / 143 interrupted by SIGINT / SIGTERM: every worker is
stopped, and the rows and timeline so far are kept, marked incomplete.
"""
from __future__ import annotations

import re
import shlex
import signal
import sys
import threading
import time
from datetime import datetime, timezone
from pathlib import Path

from ..core import devices, faults, harness, identity, prometheus, specs, timeline
from ..core.options import BurnOptions, duration
from ..core.results import ResultsWriter, device_of, new_run_id, params_of, results_path, timeline_path
from ..families import burn as family
from .run import Interrupted, _on_sigterm, _warn_before, setup
from .run_output import first_line, header, print_table, spec_line

EXIT_OK, EXIT_FAILED_ROWS, EXIT_BAD_INPUT = 0, 1, 2
STOP_GRACE_S = 15.0  # after SIGINT / SIGTERM: how long the workers get to report the phase they were in


def add_arguments(p) -> None:
    # "--duration -5m" must reach the type (which says what is wrong), not be taken for an option.
    p._negative_number_matcher = re.compile(r"^-\.?\d")
    p.add_argument("--device", default="all", help="cpu, cuda:N, or all (default: every visible GPU at once; the "
                                                   "CPU when there is none)")
    p.add_argument("--duration", type=duration, default=600.0, metavar="TIME",
                   help="how long the load lasts: the memory test and the soak together, 90s, 10m, 1.5h "
                        "(default 10m)")
    p.add_argument("--out", default="results", help="directory for the results CSV and its timeline "
                                                    "(default: results/ in the current folder)")
    p.add_argument("--specs", metavar="FILE", help="TOML spec entries that add to or override the shipped ones")
    p.add_argument("--prometheus", metavar="FILE", help="also write the burn counts as a node_exporter textfile "
                                                        "(a .prom file in its textfile directory)")


def main(args) -> int:
    options = BurnOptions(device=args.device, duration_s=args.duration, out=args.out, specs=args.specs,
                          prometheus=args.prometheus, argv=("cardbench", *args.argv))
    return execute(options)[0]


def check_faults() -> str:
    """Why CARDBENCH_INJECT_FAULT cannot be used, or ""."""
    try:
        injected = faults.active()
    except faults.FaultError as e:
        return str(e)
    arg = injected.get("bitflip", "")
    if arg and not (arg.isdigit() and int(arg) >= 1):
        return f"{faults.ENV}: bitflip:{arg}: the iteration to flip must be a whole number of at least 1"
    return ""


def execute(options: BurnOptions) -> tuple[int, Path | None]:
    """Run the burn; returns the exit code and the results CSV written (None when nothing was)."""
    problem = check_faults()
    if not problem and options.prometheus:
        try:
            prometheus.check_path(options.prometheus)
        except ValueError as e:
            problem = f"--prometheus: {e}"
    if problem:
        print(f"cardbench burn: {problem}", file=sys.stderr)
        return EXIT_BAD_INPUT, None
    try:
        run = setup(options)
    except (devices.DeviceError, specs.SpecError) as e:
        print(f"cardbench burn: {e}", file=sys.stderr)
        return EXIT_BAD_INPUT, None
    faults.warn()
    targets = run.targets
    print(first_line(targets, not any(t.is_cuda for t in targets)), flush=True)
    for t in targets:
        print(spec_line(t), flush=True)
    run_id, started = new_run_id(), datetime.now(timezone.utc)
    run_fields = identity.run_identity()
    run_fields.update(run_id=run_id, profile="burn", command=shlex.join(options.argv or ("cardbench", "burn")))
    print(header(run_fields), flush=True)
    label = targets[0].name if len(targets) == 1 else f"{len(targets)}x{targets[0].name}"
    path = results_path(Path(options.out), label, run_id, started)
    try:
        writer = ResultsWriter(path, run_fields)
        line = timeline.TimelineWriter(timeline_path(path), run_id)
    except OSError as e:
        print(f"cardbench burn: cannot write results to {options.out}: {e.strerror or e}", file=sys.stderr)
        return EXIT_BAD_INPUT, None
    items = [(t, c) for phase in range(len(family.DTYPES) + 1) for t in targets for c in [family.cases(t, run)[phase]]]
    _warn_before(run, [(t, family, c) for t, c in items])  # other processes on a card, another cardbench run
    state = run.state(family)
    state.start(line)
    code = _measure(run, state, items, writer, line, options)
    print(f"results{'' if code in (EXIT_OK, EXIT_FAILED_ROWS) else ' (incomplete)'}: {path}")
    print(f"timeline: {line.path}")
    return code, path


def _measure(run, state, items, writer: ResultsWriter, line: timeline.TimelineWriter, options: BurnOptions) -> int:
    rows: list[dict] = []
    previous = signal.signal(signal.SIGTERM, _on_sigterm)
    progress = _Progress(options.duration_s)
    try:
        for target, case in items:
            _write(writer, rows, harness.run_case(family, target, case, run))
    except (KeyboardInterrupt, Interrupted) as e:
        why = str(e) if isinstance(e, Interrupted) else "SIGINT"
        progress.close()
        print(f"\ncardbench burn: interrupted by {why}: stopping every worker, keeping what was measured",
              file=sys.stderr, flush=True)
        _finish_stopped(run, state, items[len(rows):], writer, rows, why)
        writer.close("error", f"interrupted by {why} after {writer.rows_written} rows")
        state.sampler.stop()
        line.close(False, f"interrupted by {why}")
        print_table(rows)
        return 128 + (signal.SIGTERM if why == "SIGTERM" else signal.SIGINT)
    except OSError as e:  # disk full, file system gone: never claim a complete file
        print(f"cardbench burn: cannot write to {writer.path}: {e.strerror or e}; it holds the rows before "
              "this one and no closing row (incomplete)", file=sys.stderr)
        state.burn.stop("the results file could not be written")
        return EXIT_BAD_INPUT
    except BaseException as e:
        writer.close("error", f"crashed: {harness.error_message(e)}")
        line.close(False, f"crashed: {harness.error_message(e)}")
        state.burn.stop("crashed")
        raise
    finally:
        signal.signal(signal.SIGTERM, previous)
        progress.close()
        state.sampler.stop()
        state.burn.close()
    writer.close()
    line.close(True, "complete")
    print_table(rows)
    for text in family.summary_lines(rows):
        print(text)
    if options.prometheus:
        _prometheus(options.prometheus, rows)
    failed = [r for r in rows if r["status"] in ("wrong", "error")]
    if failed:
        print(f"cardbench burn: {len(failed)} row(s) wrong or error: "
              + "; ".join(f"{device_of(r)} {r['benchmark']} {r['dtype']}: {r['message']}" for r in failed)[:2000],
              file=sys.stderr)
        return EXIT_FAILED_ROWS
    return EXIT_OK


def _write(writer: ResultsWriter, rows: list[dict], row: dict) -> None:
    writer.write(row)
    rows.append(row)


def _finish_stopped(run, state, rest, writer: ResultsWriter, rows: list[dict], why: str) -> None:
    """After a stop: every worker reports its phase so far within STOP_GRACE_S (a second signal stops
    waiting); the rows of phases that never ran say so."""
    burn = state.burn
    burn.stop(f"interrupted by {why}")
    try:
        if not burn.join(STOP_GRACE_S):
            burn.abandon(f"the worker did not stop within {STOP_GRACE_S:g} s of {why}")
        for target, case in rest:
            _write(writer, rows, harness.run_case(family, target, case, run))
    except (KeyboardInterrupt, Interrupted):
        burn.abandon(f"interrupted twice by {why}")


def _prometheus(path: str, rows: list[dict]) -> None:
    counts: dict[str, dict[str, int]] = {}
    for r in rows:
        if r["family"] != family.NAME or not r["device_uuid"]:
            continue
        p = params_of(r)
        c = counts.setdefault(r["device_uuid"], {"mismatches": 0, "memory_errors": 0})
        c["mismatches"] += int(p.get("mismatch_iterations", 0)) + (1 if p.get("cross_differ") else 0)
        c["memory_errors"] += int(p.get("errors", 0))
    try:
        written = prometheus.write_textfile(path, rows, burn=counts)
        print(f"prometheus: {written}")
    except (OSError, ValueError) as e:
        print(f"warning: --prometheus {path}: {e}", file=sys.stderr)


class _Progress:
    """A bar over the burn's duration on a terminal (tqdm draws nothing when stderr is not one)."""

    def __init__(self, total_s: float):
        from tqdm import tqdm

        self.bar = tqdm(total=int(total_s), unit="s", desc="burn", file=sys.stderr, disable=None, leave=False)
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._run, name="cardbench-burn-progress", daemon=True)
        self.started = time.monotonic()
        self.thread.start()

    def _run(self) -> None:
        while not self.done.wait(1.0):
            self.bar.n = min(self.bar.total, int(time.monotonic() - self.started))
            self.bar.refresh()

    def close(self) -> None:
        if not self.done.is_set():
            self.done.set()
            self.thread.join(timeout=2)
            self.bar.close()
