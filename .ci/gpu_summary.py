#!/usr/bin/env python3
"""The two helpers of .ci/gpu-check.

  gpu_summary.py merge MERGED.csv RESULTS.csv...   one results file of the per-family runs, for `accept`
  gpu_summary.py summary WORKDIR SUMMARY.json      key numbers next to the expected ones, step exit
                                                   codes and wall times, test counts

Runs from the checkout on the GPU image with PYTHONPATH=. and nothing installed. WORKDIR is the
scratch folder gpu-check fills: steps.tsv (name, exit code, milliseconds, limit in s per step), results/**.csv,
junit-*.xml. Numbers come from GPU rows only; in CPU mode each says "not measured".
"""
from __future__ import annotations

import csv
import io
import json
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

# The one place this script touches cardbench: the results reader (change here when it moves).
from bench.core.results import ResultsFileError, read_results, results_files  # noqa: E402

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

REFERENCE = Path(__file__).with_name("gpu_reference.toml")
NOT_MEASURED = "not measured"


# ---------------------------------------------------------------------------------------
# merge


def merge(out: Path, inputs: list[Path]) -> int:
    """Write the measurement rows of every readable input under one header, closed by one end row
    that says `complete` only when every input run completed. Returns the rows written."""
    header, rows, end, notes = None, [], None, []
    for path in inputs:
        try:
            res = read_results(path)  # validates; the raw rows below keep the file's exact text
        except ResultsFileError as e:
            notes.append(str(e))
            continue
        reader = csv.reader(io.StringIO(path.read_text(encoding="utf-8"), newline=""))
        head = next(reader)
        if header is None:
            header = head
        elif head != header:
            notes.append(f"{path}: other columns than {inputs[0]}; left out")
            continue
        for fields in reader:
            if not fields:
                continue
            row = dict(zip(head, fields))
            if row["family"] == "run" and row["benchmark"] == "end":
                end = row
            else:
                rows.append(fields)
        if not res.complete:
            notes.append(f"{path}: incomplete ({res.end_message or 'no closing row'})")
    if header is None:
        raise SystemExit(f"merge: no readable results among {len(inputs)} file(s): {'; '.join(notes)}")
    with open(out, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(header)
        w.writerows(rows)
        if end is not None:  # one closing row for the whole: the last run's, recounted
            end.update(value=repr(float(len(rows))), status="error" if notes else "ok",
                       message="; ".join(notes) if notes else "complete")
            w.writerow([end[c] for c in header])
    return len(rows)


# ---------------------------------------------------------------------------------------
# summary


def _steps(work: Path) -> dict:
    out = {}
    path = work / "steps.tsv"
    for line in path.read_text().splitlines() if path.exists() else []:
        name, rc, ms, limit = line.split("\t")
        out[name] = {"exit_code": int(rc), "seconds": int(ms) / 1000, "limit_s": float(limit),
                     "timed_out": int(rc) in (124, 137)}
    return out


def _junit(path: Path) -> dict:
    """Counts of a JUnit XML file (pytest's, or accept's)."""
    if not path.exists():
        return {"file": path.name, "status": "no JUnit file (the step did not get that far)"}
    try:
        root = ET.parse(path).getroot()
    except ET.ParseError as e:
        return {"file": path.name, "status": f"unreadable: {e}"}
    suites = [root] if root.tag == "testsuite" else list(root.iter("testsuite"))
    total = {k: sum(int(s.get(k, 0)) for s in suites) for k in ("tests", "failures", "errors", "skipped")}
    total["passed"] = total["tests"] - total["failures"] - total["errors"] - total["skipped"]
    return {"file": path.name, **total}


def _rows(work: Path) -> tuple[list[dict], list[dict]]:
    """(measurement rows of every results file, one note per file)."""
    rows, files = [], []
    for path in results_files(work / "results"):
        try:
            res = read_results(path)
        except ResultsFileError as e:
            files.append({"file": str(path.relative_to(work)), "error": str(e)})
            continue
        statuses: dict[str, int] = {}
        for r in res.rows:
            statuses[r["status"]] = statuses.get(r["status"], 0) + 1
        files.append({"file": str(path.relative_to(work)), "complete": res.complete,
                      "end": res.end_message, "rows": statuses})
        rows += res.rows
    return rows, files


def _pick(rows: list[dict], **match) -> list[dict]:
    return [r for r in rows if r["status"] == "ok" and all(r[k] == v for k, v in match.items())]


def _number(rows: list[dict], reference: dict) -> dict:
    """The best of `rows` (by value) with its conditions, next to the expected range."""
    out = {"expected": reference}
    if not rows:
        return {"measured": NOT_MEASURED, **out}
    best = max(rows, key=lambda r: float(r["value"]))
    value = float(best["value"])
    measured = {"value": value, "unit": best["unit"], "provider": best["provider"], "case": best["case"]}
    if best.get("pct_of_spec"):
        measured["pct_of_spec"] = float(best["pct_of_spec"])
    in_range = reference["low"] <= value <= reference["high"] if reference.get("unit") == best["unit"] else None
    return {"measured": measured, **out, "in_range": in_range}


def _largest(rows: list[dict]) -> list[dict]:
    """The rows of the largest transfer size (the plateau)."""
    top = max((int(r["size_bytes"] or 0) for r in rows), default=0)
    return [r for r in rows if int(r["size_bytes"] or 0) == top]


def key_numbers(rows: list[dict], ref: dict) -> dict:
    big = "8192x8192x8192"
    return {
        "memory_copy_plateau_torch": _number(_pick(rows, family="memory", benchmark="copy", provider="torch",
                                                   case="plateau"), ref["memory_copy_plateau_torch"]),
        "memory_copy_plateau_triton": _number(_pick(rows, family="memory", benchmark="copy", provider="triton",
                                                    case="plateau"), ref["memory_copy_plateau_triton"]),
        "matmul_bf16_8192": _number(_pick(rows, family="matmul", benchmark="bf16", provider="torch", case=big),
                                    ref["matmul_bf16_8192"]),
        "matmul_bf16_best": _number(_pick(rows, family="matmul", benchmark="bf16"), ref["matmul_bf16_8192"]),
        "matmul_fp8_8192": _number([r for r in _pick(rows, family="matmul", benchmark="fp8", provider="torch")
                                    if r["case"].removesuffix("-fastacc") == big], ref["matmul_fp8_8192"]),
        "matmul_fp8_best": _number(_pick(rows, family="matmul", benchmark="fp8"), ref["matmul_fp8_8192"]),
        "h2d_pinned": _number(_largest([r for r in _pick(rows, family="transfer", benchmark="h2d")
                                        if r["case"].startswith("pinned-")]), ref["h2d_pinned"]),
        "d2h_pinned": _number(_largest([r for r in _pick(rows, family="transfer", benchmark="d2h")
                                        if r["case"].startswith("pinned-")]), ref["d2h_pinned"]),
    }


BURN_PARAMS = ("iterations", "mismatch_iterations", "drop_pct", "cross_check", "coverage", "errors",
               "ecc_new_uncorrectable", "temp_gpu_max_c", "temp_mem_max_c", "temp_slowdown_c")


def burn_summary(rows: list[dict]):
    """What the burn step found per GPU: each soak's sustained rate, stability and mismatches; the memory test."""
    out = []
    for r in rows:
        if r["family"] != "burn":
            continue
        p = json.loads(r["params"]) if r["params"] else {}
        out.append({"device": r["device_index"], "benchmark": r["benchmark"], "dtype": r["dtype"],
                    "status": r["status"], "value": float(r["value"]) if r["value"] else None, "unit": r["unit"],
                    "message": r["message"][:300], **{k: p[k] for k in BURN_PARAMS if k in p}})
    return out or NOT_MEASURED


def summary(work: Path) -> dict:
    steps = _steps(work)
    rows, files = _rows(work)
    gpu = [r for r in rows if r["device_index"] != ""]  # CPU mode rows describe the host: no GPU number
    ref = tomllib.loads(REFERENCE.read_text())
    first = (gpu or rows or [{}])[0]
    return {
        "mode": "gpu" if gpu else "cpu (no GPU rows: the GPU numbers are not measured)",
        "device": {k: first.get(k, "") for k in ("device_name", "compute_capability", "driver_version",
                                                 "torch_version", "triton_version", "cuda_runtime_version")},
        "numbers": key_numbers(gpu, ref),
        "burn": burn_summary(gpu),
        "reference_card": "one NVIDIA H200 SXM (.ci/gpu_reference.toml)",
        "tests": {name: _junit(work / f"junit-{name}.xml") for name in ("gpu-tests", "kernel-build-all", "accept")},
        "family_seconds": {n.removeprefix("run-"): s["seconds"] for n, s in steps.items() if n.startswith("run-")},
        "steps": steps,
        "total_seconds": round(sum(s["seconds"] for s in steps.values()), 1),
        "results_files": files,
    }


def main(argv: list[str]) -> int:
    if len(argv) >= 3 and argv[0] == "merge":
        print(f"merged {merge(Path(argv[1]), [Path(p) for p in argv[2:]])} rows into {argv[1]}")
        return 0
    if len(argv) == 3 and argv[0] == "summary":
        data = summary(Path(argv[1]))
        Path(argv[2]).write_text(json.dumps(data, indent=1) + "\n")
        for name, n in data["numbers"].items():
            m = n["measured"]
            print(f"{name}: " + (m if isinstance(m, str) else f"{m['value']:,.1f} {m['unit']}")
                  + f" (expected {n['expected']['low']}-{n['expected']['high']} {n['expected']['unit']})")
        return 0
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
