"""`cardbench run`: measure the selected families on the selected devices, write one CSV."""
from __future__ import annotations

import shlex
import signal
import sys
from datetime import datetime, timezone
from pathlib import Path

import torch
from tabulate import tabulate
from tqdm import tqdm

from bench import devices, measure, memory, specs, telemetry
from bench.results import ResultsWriter, new_run_id, results_path

# A family is a module with cases(target, profile) and run_case(target, case, profile, tuned).
FAMILIES = {"memory": memory}

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
    """
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

    plan = [(t, name, case) for t in targets for name in families for case in FAMILIES[name].cases(t, args.profile)]
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
                row = FAMILIES[name].run_case(target, case, args.profile, tuned)
                row.update(normalized(row, target))
                writer.write(row)
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
        return (f"cardbench: CPU mode ({why}): measuring host memory with torch; "
                "Triton rows are skipped; numbers describe this host, not a GPU")
    names = ", ".join(f"{t.device} {t.name}" for t in targets)
    return f"cardbench: measuring {len(targets)} GPU(s): {names}"


def normalized(row: dict, target: devices.Target) -> dict:
    """Spec columns for a row; a family that normalized the row itself (transfers
    against link theory) keeps its own figures."""
    return {k: v for k, v in specs.normalize(row, target.spec).items() if v not in ("", None) or k not in row}


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
            headers = ["benchmark", "provider", "case", "value", "p10..p90", "% of spec", "% NVML peak", "status", "note"]
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


def table_row(r: dict) -> list[str]:
    ok = r["status"] == "ok"
    value = f"{float(r['value']):,.1f} {r['unit']}" if ok else ""
    spread = f"{float(r['p10']):,.1f}..{float(r['p90']):,.1f}" if ok else ""
    pct_spec = f"{float(r['pct_of_spec']):.1f}%" if ok and r.get("pct_of_spec") not in (None, "") else ""
    pct_derived = f"{float(r['pct_of_derived']):.1f}%" if ok and r.get("pct_of_derived") not in (None, "") else ""
    return [f"{r['family']}/{r['benchmark']}", r["provider"], r["case"], value, spread, pct_spec, pct_derived,
            r["status"], r["message"]]


def copy_summary(rows: list[dict]) -> str:
    """Triton copy against torch copy_ at the plateau: the headline should never be below the framework."""
    found = {r["provider"]: float(r["value"]) for r in rows
             if r["family"] == "memory" and r["benchmark"] == "copy" and r["case"] == "plateau" and r["status"] == "ok"}
    if "triton" in found and "torch" in found:
        return f"plateau copy: triton {found['triton']:,.1f} GB/s = {found['triton'] / found['torch']:.1%} of torch copy_"
    return ""
