"""`cardbench run`: measure the selected families on the selected devices, write one CSV.

The plan is every (device, family, case), made before anything is measured and from
what the devices hold (no I/O); `--list` prints it, `--case GLOB` picks from it. Each
case goes through the one harness (bench/core/harness.py) and its row reaches the disk
at once; Ctrl-C, SIGTERM, a crash or a hung case close the file as incomplete.
"""
from __future__ import annotations

import fnmatch
import shlex
import signal
import sys
from datetime import datetime, timezone
from pathlib import Path

import torch
from tqdm import tqdm

from ..core import devices, harness, identity, launch, prometheus, specs
from ..core.options import PROFILES, RunOptions, positive_int, seconds
from ..core.results import ResultsFileError, ResultsWriter, new_run_id, read_results, results_path
from ..families import FAMILIES
from .run_guard import CASE_TIMEOUT_S, Watchdog, device_lock
from .run_output import first_line, header, print_table, spec_line

EXIT_OK, EXIT_FAILED_ROWS, EXIT_BAD_INPUT = 0, 1, 2


class Interrupted(BaseException):
    """SIGTERM arrived: close the file as incomplete and stop (BaseException: no case may swallow it)."""


def _on_sigterm(signum, frame):
    raise Interrupted("SIGTERM")


def families_arg(text: str) -> list[str]:
    """argparse type of --families: a comma-separated list of known family names."""
    import argparse

    names = [n.strip() for n in text.split(",") if n.strip()]
    if not names:
        raise argparse.ArgumentTypeError(f"no family named in {text!r}; available: {', '.join(FAMILIES)}")
    unknown = [n for n in names if n not in FAMILIES]
    if unknown:
        raise argparse.ArgumentTypeError(f"unknown family {', '.join(unknown)}; available: {', '.join(FAMILIES)}")
    return names


def add_arguments(p) -> None:
    p.add_argument("--device", default="all",
                   help="cpu, cuda:N, or all (default: every visible GPU; the CPU when there is none)")
    p.add_argument("--families", type=families_arg, default=None,
                   help=f"comma-separated benchmark families: {', '.join(FAMILIES)} (default: all)")
    p.add_argument("--profile", choices=PROFILES, default="quick",
                   help="quick: headline sizes only; full: adds size sweeps and a wider tuning search")
    p.add_argument("--case", action="append", metavar="GLOB",
                   help="run only the cases whose id matches (repeatable; ids as --list prints them, "
                        "e.g. 'memory/copy/*/plateau')")
    p.add_argument("--list", action="store_true", help="print every case id, whether it runs here and why not; "
                   "measure nothing")
    p.add_argument("--out", default="results", help="directory for the results CSV (default: results/ in the "
                   "current folder)")
    p.add_argument("--specs", metavar="FILE", help="TOML spec entries that add to or override the shipped ones")
    p.add_argument("--case-timeout", type=seconds, default=CASE_TIMEOUT_S, metavar="SECONDS",
                   help="a case still running after this long is taken as hung: the file is closed as "
                        "incomplete naming it, and the run exits 124 (default 1800)")
    p.add_argument("--ranks", type=positive_int, default=2,
                   help="CPU mode: gloo processes the collective family starts (default 2)")
    p.add_argument("--collective-timeout", type=seconds, default=300.0, metavar="SECONDS",
                   help="collective family: rendezvous and per-operation timeout; a job where no rank made "
                        "progress for this long is ended (default 300)")
    p.add_argument("--pairs", action="store_true",
                   help="collective family: instead of the size sweep, all-reduce between every pair of ranks "
                        "(of nodes, when the job spans several), one pair at a time, and each pair's busbw: "
                        "to find a slow GPU, node or link")
    prometheus.add_argument(p)


def main(args) -> int:
    options = RunOptions.from_args(args, args.argv)
    if args.list:
        return list_cases(options)
    code, path = execute(options)
    if args.prometheus and path is not None:  # also after Ctrl-C or SIGTERM: what was measured
        try:
            rows = read_results(path).rows
        except ResultsFileError as e:
            print(f"cardbench: no Prometheus file: {e}", file=sys.stderr)
            return code or EXIT_BAD_INPUT
        if not prometheus.export(args.prometheus, rows):
            return code or EXIT_BAD_INPUT
    return code


def setup(options: RunOptions) -> harness.RunState:
    """The devices, the spec database and the run state; raises DeviceError or SpecError."""
    targets = devices.select(options.device)
    if any(not t.is_cuda for t in targets):
        torch.set_num_threads(devices.host_threads())  # set, and recorded on every row (host_threads)
    db = specs.load(options.specs)
    for t in targets:
        t.spec = db.match(t.identity.get("device_name", ""), t.identity.get("pci_device_id", ""))
    gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
    return harness.RunState(targets, db, options.profile, options, gpus)


def plan(run: harness.RunState, options: RunOptions) -> list[tuple[devices.Target, object, harness.Case]]:
    """Every (target, family, case) of the run, in order; no I/O. --case GLOBs pick some."""
    names = options.families or tuple(FAMILIES)
    out = [(t, FAMILIES[n], c) for t in run.targets for n in names for c in FAMILIES[n].cases(t, run)]
    if options.cases:
        out = [item for item in out if any(fnmatch.fnmatchcase(item[2].id, g) for g in options.cases)]
    return out


def list_cases(options: RunOptions) -> int:
    """`run --list`: each case id, and whether it would run here or why not (nvbandwidth's -l)."""
    try:
        run = setup(options)
    except (devices.DeviceError, specs.SpecError) as e:
        print(f"cardbench: {e}", file=sys.stderr)
        return EXIT_BAD_INPUT
    items = plan(run, options)
    if not items:
        print(f"cardbench: no case matches {', '.join(options.cases)}", file=sys.stderr)
        return EXIT_BAD_INPUT
    for target, family, case in items:
        waived = harness.waiver(target, case) or family.waive(target, case, run.state(family))
        where = f"{target.device}"
        print(f"{case.id}  {where}  " + (f"{waived[0]}: {waived[1]}" if waived else "runs"))
    return EXIT_OK


def execute(options: RunOptions, before_family=None, measure=None) -> tuple[int, Path | None]:
    """Run the plan; returns the exit code and the CSV written (None when nothing was).

    `before_family(target, family_name)` runs each time a device starts a new family
    (`cardbench accept` waits there for the card to be idle and cool). `measure(run, items,
    writer, path, options, before_family)` replaces the one-case-after-another loop
    (`accept --profile gate` measures every GPU at once); it closes the writer.

    Joined mode (started by torchrun or srun, bench/core/launch.py): only local rank 0 of
    each node measures and writes that node's CSV, and it runs the collective family
    first (the other ranks wait for it in the rendezvous); the other ranks only take part
    in the collectives (collective.follow) and write nothing.
    """
    job = launch.joined_job()
    if job is not None and job.local_rank != 0:
        return FAMILIES["collective"].follow(job, options), None
    try:
        run = setup(options)
    except (devices.DeviceError, specs.SpecError) as e:
        print(f"cardbench: {e}", file=sys.stderr)
        return EXIT_BAD_INPUT, None
    items = plan(run, options)
    if not items:
        print(f"cardbench: no case matches {', '.join(options.cases)} (`cardbench run --list` shows them)",
              file=sys.stderr)
        return EXIT_BAD_INPUT, None
    targets = run.targets
    print(first_line(targets, not any(t.is_cuda for t in targets)), flush=True)
    for t in targets:
        print(spec_line(t), flush=True)
        warning = specs.cross_check(t.spec, t.identity)
        if warning:
            print(f"warning: {t.device}: {warning}", file=sys.stderr)
    run_id, started = new_run_id(), datetime.now(timezone.utc)
    run_fields = identity.run_identity()
    run_fields.update(run_id=run_id, profile=options.profile, command=shlex.join(options.argv or ("cardbench",)))
    print(header(run_fields), flush=True)
    label = targets[0].name if len(targets) == 1 else f"{len(targets)}x{targets[0].name}"
    path = results_path(Path(options.out), label, run_id, started)
    in_the_way = next((p for p in (Path(options.out), *Path(options.out).parents) if p.exists()), None)
    if in_the_way is not None and not in_the_way.is_dir():
        print(f"cardbench: --out {options.out}: {in_the_way} is a file; --out names the folder the results CSV "
              "goes in (made if missing)", file=sys.stderr)
        return EXIT_BAD_INPUT, None
    try:
        writer = ResultsWriter(path, run_fields)
    except OSError as e:
        print(f"cardbench: cannot write results to {options.out}: {e.strerror or e}", file=sys.stderr)
        return EXIT_BAD_INPUT, None
    _warn_before(run, items)
    if job is not None:
        items.sort(key=lambda item: item[1].NAME != "collective")  # stable: the rest keeps its order
    return (measure or _measure)(run, items, writer, path, options, before_family)


def _warn_before(run: harness.RunState, items) -> None:
    """Warnings before the first case: other processes on a card, another cardbench run, the families' own."""
    for t in run.targets:
        others = t.identity.get("compute_processes")
        if others and others != "0":
            print(f"warning: {others} other process(es) are computing on {t.device} ({t.name}); "
                  "its measurements are disturbed", file=sys.stderr)
    run.locks = [device_lock(t) for t in run.targets]  # held until the process ends
    for t, lock in zip(run.targets, run.locks):
        t.lock = lock  # each row asks it for other runs (bench/core/harness.py)
        busy = harness.busy_host(t)
        if busy:
            print(f"warning: {busy}: the CPU numbers will read low", file=sys.stderr)
    for family in dict.fromkeys(item[1] for item in items):
        prepare = getattr(family, "prepare", None)
        for line in prepare(run.targets, run.state(family)) if prepare else []:
            print(f"warning: {line}", file=sys.stderr, flush=True)


def _measure(run, items, writer: ResultsWriter, path: Path, options: RunOptions, before_family):
    rows: list[dict] = []
    previous = signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        with tqdm(total=len(items), unit="case", file=sys.stderr, disable=None, leave=False) as bar:
            current = None
            for target, family, case in items:
                if before_family is not None and current != (target.device, family.NAME):
                    current = (target.device, family.NAME)
                    before_family(target, family.NAME)
                bar.set_description(f"{target.device} {case.id}")
                with Watchdog(writer, f"{target.device} {case.id}", options.case_timeout_s):
                    row = harness.run_case(family, target, case, run)
                try:
                    writer.write(row)
                except OSError as e:  # disk full, file system gone: never claim a complete file
                    print(f"cardbench: cannot write to {path}: {e.strerror or e}; it holds the "
                          f"{writer.rows_written} rows before this one and no closing row (incomplete)",
                          file=sys.stderr)
                    return EXIT_BAD_INPUT, path
                rows.append(row)
                bar.update()
                if row["status"] == "error" and not harness.cuda_context_usable(target):
                    writer.close("error", f"stopped: the CUDA context on {target.device} is unusable after: "
                                          f"{row['message']}")
                    print(f"cardbench: stopped, {target.device} can no longer run work after an error: "
                          f"{row['message']}", file=sys.stderr)
                    print_table(rows)
                    print(f"results (incomplete): {path}")
                    return EXIT_FAILED_ROWS, path
    except (KeyboardInterrupt, Interrupted) as e:
        why = str(e) if isinstance(e, Interrupted) else "SIGINT"
        writer.close("error", f"interrupted by {why} after {writer.rows_written} rows")
        print_table(rows)
        print(f"\ncardbench: interrupted by {why}; results so far (marked incomplete): {path}", file=sys.stderr)
        return 128 + (signal.SIGTERM if why == "SIGTERM" else signal.SIGINT), path
    except BaseException as e:
        writer.close("error", f"crashed: {harness.error_message(e)}")
        print(f"cardbench: crashed; results so far (marked incomplete): {path}", file=sys.stderr)
        raise
    finally:
        signal.signal(signal.SIGTERM, previous)
    writer.close()
    return outcome(rows, items, path)


def outcome(rows: list[dict], items, path: Path) -> tuple[int, Path]:
    """After the closing row: the table, the families' summaries, the file; exit 1 when a row is wrong or error."""
    _print_end(rows, items, path)
    failed = [r for r in rows if r["status"] in ("wrong", "error")]
    if failed:
        print(f"cardbench: {len(failed)} row(s) wrong or error", file=sys.stderr)
        return EXIT_FAILED_ROWS, path
    return EXIT_OK, path


def _print_end(rows: list[dict], items, path: Path) -> None:
    print_table(rows)
    for family in dict.fromkeys(item[1] for item in items):  # family summaries: dtype ladder, P2P matrices
        for line in getattr(family, "summary_lines", lambda rows: [])(rows):
            print(line)
    print(f"results: {path}")

