"""Burn family: every device of the node under sustained load at once, every result checked.

Per device: a GEMM soak per dtype (bf16, and fp8 where the device runs it) whose every
iteration is compared bit for bit with the first, and whose first result is compared with
the other devices' of the same model (bench/families/burn_run.py); then a pattern test of the
free device memory (bench/families/burn_memtest.py) with the ECC counters and remapped rows
read before and after. `cardbench burn` runs it (bench/commands/burn.py); the first case
starts every device's worker at once, and each case's row is written as soon as its phase
ends. Silent data corruption, a memory error or a new uncorrectable ECC error makes the row
`wrong` (a FAIL, never a warning); a memory test that could not take at least 90% of the
free memory is an `error` row (INCONCLUSIVE, never a pass).
"""
from __future__ import annotations

from dataclasses import replace

from ..core import faults, identity, timeline, timing
from ..core.devices import Target
from ..core.harness import Case, Status, Timed
from ..core.results import device_of, params_of
from ..core.units import human_bytes
from . import burn_memtest
from .burn_run import Burn, cross_check, key
from .burn_worker import CPU_SIZE, DTYPES, GPU_SIZE

NAME = "burn"
ECC_FIELDS = ("ecc_errors_uncorrected", "ecc_errors_uncorrected_aggregate", "ecc_errors_corrected",
              "remapped_rows_correctable", "remapped_rows_uncorrectable", "remapped_rows_pending",
              "remapped_rows_failure")


def soak_case(target: Target, dtype: str) -> Case:
    size = GPU_SIZE if target.is_cuda else CPU_SIZE
    unit, scale = ("TFLOP/s", 1e12) if target.is_cuda else ("GFLOP/s", 1e9)
    in_bytes = {"bf16": 2, "fp8": 1}[dtype]
    return Case(NAME, "soak", "torch", dtype, f"{size}x{size}x{size}", "throughput", unit, scale,
                2.0 * size ** 3, "FLOP", size * size * (2 * in_bytes + 2), id_dtype=True)


def memtest_case(target: Target) -> Case:
    provider = "triton" if target.is_cuda else "torch"
    name = "free-memory" if target.is_cuda else f"host-{human_bytes(burn_memtest.HOST_BYTES)}"
    return Case(NAME, "memtest", provider, "uint32", name, "bandwidth", "GB/s", 1e9, 0.0, "B", "")


def cases(target: Target, run) -> list[Case]:
    return [soak_case(target, d) for d in DTYPES] + [memtest_case(target)]


class State:
    """The run's one burn (every device at once) and the timeline sampler watching it."""

    def __init__(self, run):
        self.run = run
        self.burn: Burn | None = None
        self.sampler: timeline.Sampler | None = None

    def start(self, writer: timeline.TimelineWriter | None = None) -> Burn:
        """Start every worker and the timeline (rows into `writer`); once per run."""
        if self.burn is None:
            options = self.run.options
            self.burn = Burn(self.run.targets, float(getattr(options, "duration_s", 60.0)), faults.active())
            devices = [timeline.Device(key(t), t.index, t.identity.get("device_uuid", ""))
                       for t in self.run.targets if t.is_cuda]
            self.sampler = timeline.Sampler(writer, devices, self.burn.latest)
            self.burn.start()
            self.sampler.start()
        return self.burn

    def heat(self, k: str, phase: str) -> dict:
        """The hottest GPU and memory readings of a phase, and the card's own limits (timeline's NVML)."""
        if self.sampler is None:
            return {}
        hot = self.sampler.hottest.get((k, phase), {})
        limits = next((d.limits for d in self.sampler.devices if d.key == k), {})
        out = {"temp_gpu_max_c": hot.get("temp_gpu_c"), "temp_mem_max_c": hot.get("temp_mem_c"),
               "temp_slowdown_c": limits.get("slowdown"), "temp_gpu_limit_c": limits.get("gpu_max"),
               "temp_mem_limit_c": limits.get("mem_max")}
        return {name: v for name, v in out.items() if v is not None}


def waive(target: Target, case: Case, state: State) -> tuple[str, str] | None:
    return None


def measure(target: Target, case: Case, state: State) -> Timed | Status:
    """This case's row, as soon as the device's worker has finished its phase."""
    burn = state.start()
    if case.benchmark == "soak":
        result = _soak(target, case, burn)
        result.params.update(state.heat(key(target), f"soak {case.dtype}"))
    else:
        result = _memtest(target, case, burn)
        result.params.update(state.heat(key(target), "memtest"))
    return result


# ---------------------------------------------------------------- the soak rows


def _soak(target: Target, case: Case, burn: Burn) -> Timed | Status:
    k = key(target)
    rec = burn.wait(k, "soak", case.dtype)
    if rec is None:
        return _unfinished(burn, k, case.dtype)
    if rec["status"] != "ok":
        return Status(rec["status"], rec["message"], rec.get("params", {}))
    params = {**rec["params"], "iterations": rec["iterations"], "soak_s": rec["seconds"], "planned_s": rec["planned_s"],
              "mismatch_iterations": rec["mismatch_iterations"], "mismatch_elements": rec["mismatch_elements"],
              "mismatches": rec["mismatches"], "elements_per_iteration": rec["elements"],
              "compared_with": "iteration 0, bit for bit", **stability(rec["bins"], case.scale)}
    cross, more = cross_check(burn, target, case.dtype)
    params.update(more)
    problems = []
    if rec["mismatch_iterations"]:
        problems.append(mismatch_text(k, case.dtype, rec))
    if cross:
        problems.append(f"{k}: {cross}")
    notes = [injected_note()] if rec.get("injected") else []
    if rec["stopped"]:
        notes.append(f"stopped after {rec['seconds']:.1f} s of {rec['planned_s']:.0f} s: {rec['stopped']}")
    if problems:
        return Status("wrong", "; ".join(notes + problems), params)
    if not rec["bins"]:
        return Status("error", f"no iteration finished in {rec['seconds']:.2f} s of soak", params)
    samples = [case.work / flop_per_s for flop_per_s in rec["bins"]]  # seconds per GEMM in each second
    calls = max(1, round(rec["iterations"] / len(samples)))
    return Timed(timing.Timing(samples, rec["timer"], calls), params, rec["telemetry"], notes)


def stability(bins: list[float], scale: float) -> dict:
    """Throughput of the first and the last window of the soak (a minute, or a third of a shorter
    soak) and the drop between them: a card whose cooling cannot hold it slows as it heats."""
    if len(bins) < 3:
        return {"window_s": 0}
    w = max(1, min(60, len(bins) // 3))
    first, last = sum(bins[:w]) / w / scale, sum(bins[-w:]) / w / scale
    return {"window_s": w, "throughput_first_window": first, "throughput_last_window": last,
            "drop_pct": 100.0 * (1 - last / first) if first > 0 else 0.0}


def mismatch_text(k: str, dtype: str, rec: dict) -> str:
    first = rec["mismatches"][0]
    return (f"silent data corruption on {k}: {rec['mismatch_iterations']} {dtype} iteration(s) of "
            f"{rec['iterations']} differ from the first, {rec['mismatch_elements']} element(s) in all; first: "
            f"iteration {first['iteration']} at {first['time_s']:.2f} s, {first['elements']} of "
            f"{rec['elements']} elements")


def injected_note() -> str:
    return f"fault injected ({faults.ENV}): a test of cardbench's checks, not a finding about the card"


def _unfinished(burn: Burn, k: str, dtype: str | None) -> Status:
    """A phase the worker never finished: what it did report (seconds of soak, mismatches) in params;
    mismatches it had found are silent data corruption all the same."""
    seconds = burn.find(k, "second", dtype) if dtype else []
    found = max((int(s.get("mismatching", 0)) for s in seconds), default=0)
    params = {"seconds_reported": len(seconds), "mismatch_iterations": found}
    why = f"not measured: {burn.why_missing(k)}"
    if found:
        return Status("wrong", f"silent data corruption on {k}: {found} {dtype} iteration(s) differed from the first "
                               f"in {len(seconds)} s of soak; then {why}", params)
    return Status("error", why, params)


# ---------------------------------------------------------------- the memory test row


def _memtest(target: Target, case: Case, burn: Burn) -> Timed | Status:
    k = key(target)
    rec = burn.wait(k, "memtest")
    if target.is_cuda:
        burn.wait_ended(k, 10.0)  # read the counters once the worker has let go of the device
    ecc_problems, ecc = ecc_delta(burn.before.get(k), identity.device_identity(target.index) if target.is_cuda
                                  else None)
    if rec is None:
        missing = _unfinished(burn, k, None)
        missing.params.update(ecc)
        return Status("wrong", "; ".join(ecc_problems), missing.params) if ecc_problems else missing
    if rec["status"] != "ok":
        return Status(rec["status"], rec["message"], ecc)
    params = {"bytes_tested": rec["bytes_tested"], "free_bytes": rec["free_bytes"], "coverage": rec["coverage"],
              "chunks": rec["chunks"], "patterns": rec["patterns"], "errors": rec["errors"],
              "ranges": rec["ranges"], "passes": len(rec["passes"]), "managed_memory": False,
              "min_coverage": burn_memtest.MIN_COVERAGE, **ecc}
    measured = replace(case, work=float(rec["bytes_tested"]), size_bytes=rec["bytes_tested"])
    notes = [injected_note()] if rec.get("injected") else []
    problems = []
    if rec["errors"]:
        problems.append(f"memory errors on {k}: " + burn_memtest.describe(rec["ranges"], rec["errors"]))
    problems += ecc_problems
    if rec["self_check"]:
        return Status("error", rec["self_check"], params)
    if rec["stopped"]:
        return Status("error", f"stopped before every pattern ran: {rec['stopped']}", params)
    if problems:
        return Status("wrong", "; ".join(notes + problems), params)
    if target.is_cuda and rec["coverage"] < burn_memtest.MIN_COVERAGE:
        why = rec["allocation"] or "the free memory could not be taken"
        return Status("error", f"tested {rec['coverage']:.1%} of the free memory, under the "
                               f"{burn_memtest.MIN_COVERAGE:.0%} a memory test needs: {why}", params)
    if not target.is_cuda:
        notes.append(f"CPU mode: a {human_bytes(burn_memtest.HOST_BYTES)} host test of the same patterns, "
                     "not a test of the host's memory")
    # One sample: every byte the passes moved over their time (a fill only writes, a check reads, a
    # moving-inversions check does both: per-pass rates differ by design, their spread is no noise).
    moved, seconds = sum(b for b, _ in rec["passes"]), sum(s for _, s in rec["passes"])
    if not seconds > 0:
        return Status("error", "the memory test timed no pass", params)
    params["bytes_moved"] = moved
    sample = seconds * rec["bytes_tested"] / moved  # seconds per pass over the whole region
    return Timed(timing.Timing([sample], rec["timer"]), params, rec["telemetry"], notes, measured)


def ecc_delta(before: dict | None, after: dict | None) -> tuple[list[str], dict]:
    """New uncorrectable ECC errors and remaps between two NVML readings; what fails, and the params."""
    if not before or not after or not after.get("ecc_mode"):
        return [], {"ecc": "not read (no NVML, or the card does not report ECC)"}
    params = {"ecc_before": {f: before.get(f, "") for f in ECC_FIELDS},
              "ecc_after": {f: after.get(f, "") for f in ECC_FIELDS}}

    def grew(field: str) -> int:
        a, b = before.get(field, ""), after.get(field, "")
        return int(b) - int(a) if a.isdigit() and b.isdigit() else 0
    new_unc = max(grew("ecc_errors_uncorrected"), grew("ecc_errors_uncorrected_aggregate"))
    params.update(ecc_new_uncorrectable=new_unc, ecc_new_correctable=grew("ecc_errors_corrected"),
                  remapped_rows_new=grew("remapped_rows_uncorrectable") + grew("remapped_rows_correctable"))
    problems = []
    if new_unc > 0:
        problems.append(f"{new_unc} new uncorrectable ECC error(s) during the burn")
    if after.get("remapped_rows_pending") == "yes":
        problems.append("a row remap is pending (the memory needs a reset to remap it)")
    if after.get("remapped_rows_failure") == "yes":
        problems.append("row remapping failed (the memory needs service)")
    return problems, params


# ---------------------------------------------------------------- after the table


def summary_lines(rows: list[dict]) -> list[str]:
    """Per device: each soak's throughput and stability, the memory test; then who falls behind."""

    lines = []
    for r in rows:
        if r["family"] != NAME:
            continue
        where = device_of(r)
        p = params_of(r)
        if r["benchmark"] == "soak" and r["status"] in ("ok", "wrong"):
            drop = (f", first {p['window_s']} s {p['throughput_first_window']:,.1f} -> last {p['window_s']} s "
                    f"{p['throughput_last_window']:,.1f} {r['unit']} ({-p['drop_pct']:+.1f}%)") if p.get("window_s") else ""
            value = f"{float(r['value']):,.1f} {r['unit']}" if r.get("value") not in (None, "") else "WRONG"
            lines.append(f"burn {where} {r['dtype']} soak: {value}{drop}; {p.get('iterations', 0)} iterations "
                         f"compared with the first, {p.get('mismatch_iterations', 0)} differ; against the other "
                         f"GPUs: {p.get('cross_check', 'not compared')}")
        elif r["benchmark"] == "memtest" and "bytes_tested" in p:
            lines.append(f"burn {where} memory test: {_size(p['bytes_tested'])} of {_size(p['free_bytes'])} free "
                         f"({p['coverage']:.1%}), {p['errors']} wrong word(s); ECC: {_ecc_text(p)}")
    return lines + behind_lines(rows)


def _size(n: int) -> str:
    return f"{n / 2**30:,.2f} GiB" if n >= 2**30 else f"{n / 2**20:,.1f} MiB"


def _ecc_text(p: dict) -> str:
    if "ecc_new_uncorrectable" not in p:
        return p.get("ecc", "not read")
    return (f"{p['ecc_new_uncorrectable']} new uncorrectable, {p['ecc_new_correctable']} new correctable, "
            f"{p['remapped_rows_new']} new remapped row(s)")


BEHIND_PCT = 10.0  # gpu-fryer's default tolerance against the node's best GPU


def behind_lines(rows: list[dict], pct: float = BEHIND_PCT) -> list[str]:
    """Devices more than `pct` below the best device of their model in the same soak (gpu-fryer's rule)."""
    best: dict[tuple, dict] = {}
    soaks = [r for r in rows if r["family"] == NAME and r["benchmark"] == "soak" and r["status"] == "ok"]
    for r in soaks:
        group = (r.get("run_id"), r.get("host"), r["device_name"], r["dtype"])
        if group not in best or float(r["value"]) > float(best[group]["value"]):
            best[group] = r
    out = []
    for r in soaks:
        top = best[(r.get("run_id"), r.get("host"), r["device_name"], r["dtype"])]
        ratio = float(r["value"]) / float(top["value"])
        if ratio < 1 - pct / 100:
            out.append(f"burn: cuda:{r['device_index']} falls behind: {r['dtype']} {float(r['value']):,.1f} "
                       f"{r['unit']} = {ratio:.0%} of the node's best (cuda:{top['device_index']}, "
                       f"{float(top['value']):,.1f})")
    return out
