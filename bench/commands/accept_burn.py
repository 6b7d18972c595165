"""The burn-in verdicts of `cardbench accept`: one per check per card, from the rows `cardbench burn`
wrote (bench/families/burn.py), against the [burn] bars of the policy.

A check the burn could not make is INCONCLUSIVE, never PASS: a soak or memory test that did
not run, a memory test short of its coverage, no NVML reading. A `wrong` row is the finding
it names (silent data corruption, memory errors, new uncorrectable ECC errors): FAIL.
"""
from __future__ import annotations


from ..core import telemetry
from ..core.results import device_of, params_of
from .accept_judge import FAIL, INCONCLUSIVE, NOT_APPLICABLE, PASS, Result
from .accept_policy import BURN_CHECKS, Policy


def burn_checks(policy: Policy, rows: list[dict], all_rows: list[dict]) -> list[Result]:
    """The burn checks of one card's rows; `all_rows` holds the other cards' (the node's best)."""
    b = policy.burn
    soaks = [r for r in rows if r["family"] == "burn" and r["benchmark"] == "soak"]
    memtests = [r for r in rows if r["family"] == "burn" and r["benchmark"] == "memtest"]
    if not soaks and not memtests:
        return [Result(name, INCONCLUSIVE, "", "", "no burn in this run (cardbench accept --burn-in 10m)")
                for name in BURN_CHECKS]
    burn_rows = soaks + memtests
    return [_sdc(b, soaks), _memtest(b, memtests), _ecc(memtests), _stability(b, soaks),
            _throttling(policy, burn_rows), _temperature(b, burn_rows), _spread(b, soaks, all_rows)]


def _sdc(b: dict, soaks: list[dict]) -> Result:
    bar = f"<= {b['max_mismatches']} differing iterations, first result equal to the other GPUs'"
    wrong = [r for r in soaks if r["status"] == "wrong"]
    if wrong:
        return Result("burn-sdc", FAIL, "silent data corruption", bar, wrong[0]["message"])
    ok = [r for r in soaks if r["status"] == "ok"]
    over = [r for r in ok if int(params_of(r).get("mismatch_iterations", 0)) > b["max_mismatches"]]
    if over:
        return Result("burn-sdc", FAIL, f"{params_of(over[0])['mismatch_iterations']} iterations", bar,
                      f"{over[0]['dtype']}: iterations differ from the first")
    if not soaks:
        return Result("burn-sdc", INCONCLUSIVE, "", bar, "no soak in this run")
    missing = [r for r in soaks if r["status"] not in ("ok", "unsupported")]
    if not ok or missing:
        r = (missing or soaks)[0]
        return Result("burn-sdc", INCONCLUSIVE, "", bar, f"{r['dtype']} soak {r['status']}: {r['message']}")
    iterations = sum(int(params_of(r).get("iterations", 0)) for r in ok)
    return Result("burn-sdc", PASS, f"0 of {iterations} iterations differ", bar,
                  "; ".join(f"{r['dtype']}: {params_of(r).get('cross_check', '')}" for r in ok))


def _memtest(b: dict, memtests: list[dict]) -> Result:
    bar = f"<= {b['max_memory_errors']} errors over >= {b['min_memtest_coverage_pct']:g}% of the free memory"
    if not memtests:
        return Result("burn-memtest", INCONCLUSIVE, "", bar, "no memory test in this run")
    r = memtests[0]
    p = params_of(r)
    errors = int(p.get("errors", 0) or 0)
    if errors > b["max_memory_errors"]:
        return Result("burn-memtest", FAIL, f"{errors} wrong word(s)", bar, r["message"])
    if r["status"] == "error" or "coverage" not in p:
        return Result("burn-memtest", INCONCLUSIVE, "", bar,
                      f"{r['status']}: {r['message'] or 'the row does not say how much memory was tested'}")
    coverage = 100.0 * float(p["coverage"])
    tested = int(p["bytes_tested"])
    size = f"{tested / 2**30:,.2f} GiB" if tested >= 2**30 else f"{tested / 2**20:,.1f} MiB"
    measured = f"{errors} errors in {size} ({coverage:.1f}% of free)"
    if coverage < b["min_memtest_coverage_pct"]:
        return Result("burn-memtest", INCONCLUSIVE, measured, bar, "the test covered too little of the free memory"
                      + (" (CPU mode: a small host test)" if r["device_index"] == "" else ""))
    return Result("burn-memtest", PASS, measured, bar, "")


def _ecc(memtests: list[dict]) -> Result:
    bar = "no new uncorrectable ECC error, no pending or failed remap"
    if not memtests:
        return Result("burn-ecc", INCONCLUSIVE, "", bar, "no memory test row (ECC is read around it)")
    p = params_of(memtests[0])
    if "ecc_new_uncorrectable" not in p:
        return Result("burn-ecc", INCONCLUSIVE, "", bar, p.get("ecc", "no ECC reading"))
    after = p.get("ecc_after", {})
    new = int(p["ecc_new_uncorrectable"])
    measured = f"{new} new uncorrectable, {p.get('ecc_new_correctable', 0)} new correctable"
    if new > 0 or after.get("remapped_rows_pending") == "yes" or after.get("remapped_rows_failure") == "yes":
        why = [f"{new} new uncorrectable ECC error(s)"] if new else []
        why += ["row remap pending"] if after.get("remapped_rows_pending") == "yes" else []
        why += ["row remapping failed"] if after.get("remapped_rows_failure") == "yes" else []
        return Result("burn-ecc", FAIL, measured, bar, "; ".join(why) + " during the burn")
    return Result("burn-ecc", PASS, measured, bar, "")


def _stability(b: dict, soaks: list[dict]) -> Result:
    bar = f"last window within {b['max_throughput_drop_pct']:g}% of the first"
    timed = [(r, params_of(r)) for r in soaks if r["status"] == "ok" and params_of(r).get("window_s")]
    if not timed:
        return Result("burn-stability", INCONCLUSIVE, "", bar, "no soak long enough to compare its first and last "
                                                               "window (3 s at least)")
    r, p = max(timed, key=lambda rp: rp[1]["drop_pct"])
    measured = (f"{r['dtype']} {p['throughput_first_window']:,.1f} -> {p['throughput_last_window']:,.1f} {r['unit']} "
                f"({-p['drop_pct']:+.1f}%, windows of {p['window_s']} s)")
    if r["device_index"] == "":
        return Result("burn-stability", INCONCLUSIVE, measured, bar, "CPU mode: the host's throughput moves with "
                                                                     "its other work and says nothing of cooling")
    verdict = PASS if p["drop_pct"] <= b["max_throughput_drop_pct"] else FAIL
    return Result("burn-stability", verdict, measured, bar,
                  "" if verdict == PASS else "throughput fell as the card heated: cooling or power delivery")


def _throttling(policy: Policy, rows: list[dict]) -> Result:
    forbidden = set(policy.health["forbidden_clock_reasons"])
    bar = "no " + ", ".join(sorted(forbidden))
    masks = [(r, int(r["clocks_event_reasons"], 16)) for r in rows if r.get("clocks_event_reasons")]
    if not masks:
        return Result("burn-throttling", INCONCLUSIVE, "", bar, "no clocks-event readings (no NVML)")
    seen = sorted({(n, f"{r['benchmark']} {r['dtype']}") for r, m in masks for n in telemetry.reason_names(m)
                   if n in forbidden})
    if seen:
        return Result("burn-throttling", FAIL, ", ".join(sorted({n for n, _ in seen})), bar,
                      "; ".join(f"{n} during {w}" for n, w in seen))
    return Result("burn-throttling", PASS, "none", bar, f"{len(masks)} burn phases checked")


def _temperature(b: dict, rows: list[dict]) -> Result:
    margin = b["temperature_margin_c"]
    bar = f"hottest reading <= the card's limits - {margin:g} C"
    found = []  # (hottest reading, the card's limit, GPU or memory, the phase)
    for r in rows:
        p = params_of(r)
        for value, limit, what in (("temp_gpu_max_c", "temp_slowdown_c", "GPU"), ("temp_mem_max_c",
                                                                                 "temp_mem_limit_c", "memory")):
            if p.get(value) is not None and p.get(limit) is not None:
                found.append((float(p[value]), float(p[limit]), what, f"{r['benchmark']} {r['dtype']}"))
    if not found:
        return Result("burn-temperature", INCONCLUSIVE, "", bar, "no temperature with its limit (no NVML, or the "
                                                                 "card reports no limit)")
    hot = [f for f in found if f[0] > f[1] - margin]
    worst = max(found, key=lambda f: f[0] - f[1])
    measured = f"{worst[2]} {worst[0]:g} C, limit {worst[1]:g} C"
    if hot:
        return Result("burn-temperature", FAIL, measured, bar,
                      "; ".join(f"{w} {v:g} C during {phase}, the card slows down at {lim:g} C" for v, lim, w, phase
                                in hot))
    return Result("burn-temperature", PASS, measured, bar, "")


def _spread(b: dict, soaks: list[dict], all_rows: list[dict]) -> Result:
    pct = b["max_behind_best_pct"]
    bar = f">= {100 - pct:g}% of the node's best GPU of the model"
    ok = [r for r in soaks if r["status"] == "ok"]
    if not ok:
        return Result("burn-node-spread", INCONCLUSIVE, "", bar, "no soak measured")
    worst = None
    for r in ok:
        peers = [x for x in all_rows if x["family"] == "burn" and x["benchmark"] == "soak" and x["status"] == "ok"
                 and (x["run_id"], x["host"], x["device_name"], x["dtype"]) ==
                 (r["run_id"], r["host"], r["device_name"], r["dtype"])]
        best = max(peers, key=lambda x: float(x["value"]))
        ratio = float(r["value"]) / float(best["value"])
        if len(peers) > 1 and (worst is None or ratio < worst[0]):
            worst = (ratio, r, best)
    if worst is None:
        if ok[0]["device_index"] == "":
            return Result("burn-node-spread", INCONCLUSIVE, "", bar, "CPU mode: no GPUs to compare")
        return Result("burn-node-spread", NOT_APPLICABLE, "", bar, "one GPU of this model in the burn")
    ratio, r, best = worst
    measured = f"{r['dtype']} {float(r['value']):,.1f} {r['unit']} = {ratio:.1%} of {device_of(best)}"
    if ratio < 1 - pct / 100:
        return Result("burn-node-spread", FAIL, measured, bar,
                      f"{device_of(r)} falls behind: {ratio:.1%} of the node's best ({device_of(best)}, "
                      f"{float(best['value']):,.1f} {best['unit']})")
    return Result("burn-node-spread", PASS, measured, bar, "")
