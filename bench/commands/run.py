"""`cardbench run`: measure the selected families on the selected devices, write one CSV."""
from __future__ import annotations

import os
import re
import shlex
import signal
import sys
import tempfile
import threading
from datetime import datetime, timezone
from pathlib import Path

import torch
from tabulate import tabulate
from tqdm import tqdm

from ..families import collective, matmul, memory, transfer
from ..core import devices, launch, measure, specs, telemetry
from ..core.results import ResultsWriter, new_run_id, results_path

# A family is a module with cases(target, profile) and run_case(target, case, profile, tuned);
# optionally prepare(targets, args), called before the plan is made, and summary_lines(rows).
FAMILIES = {"memory": memory, "matmul": matmul, "transfer": transfer, "collective": collective}

EXIT_OK, EXIT_FAILED_ROWS, EXIT_BAD_INPUT = 0, 1, 2


class Interrupted(BaseException):
    """SIGTERM arrived: close the file as incomplete and stop (BaseException: no case may swallow it)."""


def _on_sigterm(signum, frame):
    raise Interrupted("SIGTERM")


def main(args) -> int:
    return execute(args)[0]


def execute(args, before_family=None) -> tuple[int, Path | None]:
    """Run the plan; returns the exit code and the CSV written (None when nothing was).

    `before_family(target, family)` runs each time a device starts a new family
    (`cardbench accept` waits there for the card to be idle and cool).

    Joined mode (started by torchrun or srun, bench/launch.py): only local rank 0
    of each node measures and writes that node's CSV, and it runs the collective
    family first (the other ranks wait for it in the rendezvous); the other ranks
    only take part in the collectives (collective.follow) and write nothing.
    """
    job = launch.joined_job()
    if job is not None and job.local_rank != 0:
        return collective.follow(job, args), None
    try:
        targets = devices.select(args.device)
    except devices.DeviceError as e:
        print(f"cardbench: {e}", file=sys.stderr)
        return EXIT_BAD_INPUT, None
    try:
        db = specs.load(args.specs)
    except specs.SpecError as e:
        print(f"cardbench: {e}", file=sys.stderr)
        return EXIT_BAD_INPUT, None
    families = args.families
    cpu_mode = not any(t.is_cuda for t in targets)
    print(first_line(targets, cpu_mode), flush=True)
    for t in targets:
        t.spec = db.match(t.identity.get("device_name", ""), t.identity.get("pci_device_id", ""))
        print(spec_line(t), flush=True)
        warning = specs.cross_check(t.spec, t.identity)
        if warning:
            print(f"warning: {t.device}: {warning}", file=sys.stderr)

    run_id = new_run_id()
    started = datetime.now(timezone.utc)
    run_fields = telemetry.run_identity()
    run_fields.update(run_id=run_id, profile=args.profile, command=shlex.join(["cardbench", *args.argv]))
    print(header(run_fields), flush=True)
    label = targets[0].name if len(targets) == 1 else f"{len(targets)}x{targets[0].name}"
    path = results_path(Path(args.out), label, run_id, started)
    try:
        writer = ResultsWriter(path, run_fields)
    except OSError as e:
        print(f"cardbench: cannot write results to {args.out}: {e.strerror or e}", file=sys.stderr)
        return EXIT_BAD_INPUT, None
    for t in targets:
        others = t.identity.get("compute_processes")
        if others and others != "0":
            print(f"warning: {others} other process(es) are computing on {t.device} ({t.name}); "
                  "its measurements are disturbed", file=sys.stderr)
    locks = [device_lock(t) for t in targets]  # held until the process ends

    for name in families:  # e.g. the collective family: the run's GPUs form its group
        getattr(FAMILIES[name], "prepare", lambda targets, args: None)(targets, args)
    plan = [(t, name, case) for t in targets for name in families for case in FAMILIES[name].cases(t, args.profile)]
    if job is not None:
        plan.sort(key=lambda item: item[1] != "collective")  # stable: the rest keeps its order
    rows: list[dict] = []
    previous = signal.signal(signal.SIGTERM, _on_sigterm)
    tuned: dict = {}
    try:
        with tqdm(total=len(plan), unit="case", file=sys.stderr, disable=None, leave=False) as bar:
            current = None
            for target, name, case in plan:
                if before_family is not None and current != (target.device, name):
                    current = (target.device, name)
                    before_family(target, name)
                bar.set_description(f"{target.device} {case.id}")
                with Watchdog(writer, f"{target.device} {case.id}", getattr(args, "case_timeout", CASE_TIMEOUT_S)):
                    row = FAMILIES[name].run_case(target, case, args.profile, tuned)
                row.update(normalized(row, target))
                try:
                    writer.write(row)
                except OSError as e:  # disk full, file system gone: never claim a complete file
                    print(f"cardbench: cannot write to {path}: {e.strerror or e}; it holds the "
                          f"{writer.rows_written} rows before this one and no closing row (incomplete)",
                          file=sys.stderr)
                    return EXIT_BAD_INPUT, path
                rows.append(row)
                bar.update()
                if row["status"] == "error" and not measure.cuda_context_usable(target):
                    writer.close("error", f"stopped: the CUDA context on {target.device} is unusable after: {row['message']}")
                    print(f"cardbench: stopped, {target.device} can no longer run work after an error: {row['message']}",
                          file=sys.stderr)
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
        writer.close("error", f"crashed: {measure.error_message(e)}")
        print(f"cardbench: crashed; results so far (marked incomplete): {path}", file=sys.stderr)
        raise
    finally:
        signal.signal(signal.SIGTERM, previous)
    writer.close()
    print_table(rows)
    for name in families:  # family summaries: dtype ladder, P2P matrices
        for line in getattr(FAMILIES[name], "summary_lines", lambda rows: [])(rows):
            print(line)
    print(f"results: {path}")
    failed = [r for r in rows if r["status"] in ("wrong", "error")]
    if failed:
        print(f"cardbench: {len(failed)} row(s) wrong or error", file=sys.stderr)
        return EXIT_FAILED_ROWS, path
    return EXIT_OK, path


def first_line(targets: list[devices.Target], cpu_mode: bool) -> str:
    if cpu_mode:
        why = "no CUDA GPU visible" if not torch.cuda.is_available() else "--device cpu"
        return (f"cardbench: CPU mode ({why}): measuring this host with torch; Triton and GPU-only rows "
                "are skipped; numbers describe this host, not a GPU")
    names = ", ".join(f"{t.device} {t.name}" for t in targets)
    return f"cardbench: measuring {len(targets)} GPU(s): {names}"


# A case that has not finished after this long is taken as hung (a stuck kernel):
# the file is closed as incomplete naming the case, and the process exits.
CASE_TIMEOUT_S = 1800.0
EXIT_HUNG = 124


class Watchdog:
    """Ends the run when one case hangs: a stuck CUDA kernel cannot be interrupted from Python."""

    def __init__(self, writer: ResultsWriter, what: str, timeout_s: float):
        self.writer, self.what, self.timeout_s = writer, what, timeout_s
        self.timer = threading.Timer(timeout_s, self._fire)
        self.timer.daemon = True

    def __enter__(self):
        self.timer.start()
        return self

    def __exit__(self, *exc):
        self.timer.cancel()
        return False

    def _fire(self) -> None:
        message = f"hung: {self.what} did not finish within {self.timeout_s:g} s"
        try:
            self.writer.close("error", message)
        finally:
            print(f"\ncardbench: {message}; results so far (marked incomplete): {self.writer.path}",
                  file=sys.stderr, flush=True)
            os._exit(EXIT_HUNG)


def device_lock(target: devices.Target):
    """Take this device's lock; when another cardbench run holds it, warn: the runs disturb each other."""
    try:
        import fcntl
    except ImportError:  # not on this platform: no warning, the result files still never collide
        return None
    key = target.identity.get("device_uuid") or f"{target.device.type}-{target.identity.get('device_name', '')}"
    path = Path(tempfile.gettempdir()) / f"cardbench-{re.sub(r'[^A-Za-z0-9_.-]+', '_', key)}.lock"
    try:
        f = open(path, "a+")
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        f.seek(0)
        holder = f.read().strip() or "unknown"
        print(f"warning: another cardbench run (pid {holder}) is measuring {target.device} now: "
              "both runs' measurements disturb each other", file=sys.stderr)
        return f
    except OSError:
        return None
    f.truncate(0)
    f.write(str(os.getpid()))
    f.flush()
    return f


def normalized(row: dict, target: devices.Target) -> dict:
    """The spec columns for a row measured on `target` (specs.columns_for)."""
    return specs.columns_for(row, target.spec)


def spec_line(t: devices.Target) -> str:
    if t.spec is not None:
        return f"{t.device}: spec entry '{t.spec.name}' ({t.spec.origin})"
    if not t.is_cuda:
        return f"{t.device}: no spec entry for this CPU; normalization columns stay empty"
    return f"{t.device}: " + specs.unknown_card_message(t.identity.get("device_name", ""),
                                                        t.identity.get("pci_device_id", ""))


def header(run: dict[str, str]) -> str:
    keys = ("host", "cpu_model", "driver_version", "cuda_runtime_version", "torch_version",
            "triton_version", "nccl_version", "cardbench_version", "cardbench_commit", "profile", "run_id")
    return "  ".join(f"{k}={run[k]}" for k in keys if run.get(k))


def print_table(rows: list[dict]) -> None:
    if not rows:
        return
    by_device: dict[str, list[dict]] = {}
    for r in rows:
        index = r.get("device_index", "")
        where = "cpu" if index == "" else f"cuda:{index}"
        by_device.setdefault(f"{where}: {r.get('device_name', '')}", []).append(r)
    for device, device_rows in by_device.items():
        # Rows not run for the same reason are told once, not once per case.
        waived: dict[tuple[str, str, str], int] = {}
        shown = []
        for r in device_rows:
            if r["status"] in ("skipped", "unsupported"):
                key = (r["status"], r["provider"], r["message"])
                waived[key] = waived.get(key, 0) + 1
            else:
                shown.append(r)
        print(f"\n{device}")
        if shown:
            headers = ["benchmark", "provider", "case", "value", "p10..p90", "% of spec", "% derived", "status", "note"]
            table = [table_row(r) for r in shown]
            for col in (6, 5):  # drop a normalization column no row has (unknown card, CPU mode)
                if not any(t[col] for t in table):
                    headers.pop(col)
                    table = [t[:col] + t[col + 1:] for t in table]
            print(tabulate(table, headers=headers, disable_numparse=True))
        for (status, provider, message), count in waived.items():
            print(f"{status}: {count} {provider} row(s): {message}")
        summary = copy_summary(device_rows)
        if summary:
            print(summary)


def number(x) -> str:
    """Printed value: one decimal from 10 up, three significant digits below (never a bare 0.0)."""
    v = float(x)
    return f"{v:,.1f}" if abs(v) >= 10 else f"{v:.3g}"


def table_row(r: dict) -> list[str]:
    ok = r["status"] == "ok"
    value = f"{number(r['value'])} {r['unit']}" if ok else ""
    spread = f"{number(r['p10'])}..{number(r['p90'])}" if ok else ""
    pct_spec = f"{float(r['pct_of_spec']):.1f}%" if ok and r.get("pct_of_spec") not in (None, "") else ""
    pct_derived = f"{float(r['pct_of_derived']):.1f}%" if ok and r.get("pct_of_derived") not in (None, "") else ""
    name = f"{r['family']}/{r['benchmark']}"
    if r["family"] == "collective" and r["dtype"]:  # bf16 and fp32 rows of one size side by side
        name += f" {r['dtype']}"
    return [name, r["provider"], r["case"], value, spread, pct_spec, pct_derived, r["status"], r["message"]]


def copy_summary(rows: list[dict]) -> str:
    """Triton copy against torch copy_ at the plateau: the headline should never be below the framework."""
    found = {r["provider"]: float(r["value"]) for r in rows
             if r["family"] == "memory" and r["benchmark"] == "copy" and r["case"] == "plateau" and r["status"] == "ok"}
    if "triton" in found and "torch" in found:
        return f"plateau copy: triton {found['triton']:,.1f} GB/s = {found['triton'] / found['torch']:.1%} of torch copy_"
    return ""
