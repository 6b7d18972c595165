"""`cardbench accept`: PASS / FAIL / INCONCLUSIVE per check per card, judged by a policy file.

A check that could not be measured is INCONCLUSIVE, never PASS; a card passes
only when every check passes. Exit codes: 0 every check of every card passes;
1 any FAIL; 2 not proven either way (INCONCLUSIVE without FAIL, or input that
could not be judged: a broken policy or results file, named on stderr). Both
meanings of 2 tell a script the same thing: a person has to look.
"""
from __future__ import annotations

import argparse
import shutil
import sys
import time
import xml.etree.ElementTree as ET
from pathlib import Path

from ..core import prometheus, specs, telemetry
from ..core.normalize import renormalize
from ..core.options import BurnOptions, RunOptions, duration
from ..core.results import ResultsFileError, read_results

from .accept_judge import (DERIVED_CLAIM, FAIL, INCONCLUSIVE, NOT_APPLICABLE, PASS, CardVerdict, Result,  # noqa: F401
                           health_checks, judge, judge_check)
from .accept_policy import HEALTH_CHECKS, PROFILES, Policy, PolicyError, load_policy  # noqa: F401

EXIT_PASS, EXIT_FAIL, EXIT_INCONCLUSIVE = 0, 1, 2


# ---------------------------------------------------------------------------------------
# Output


def render(verdicts: list[CardVerdict]) -> str:
    from tabulate import tabulate

    parts = []
    for v in verdicts:
        parts.append(f"\n{v.label}: {v.verdict}")
        parts.append(tabulate([[r.verdict, r.check, r.measured, r.bar, r.reason] for r in v.results],
                              headers=["verdict", "check", "measured", "bar", "reason"], disable_numparse=True))
    return "\n".join(parts)


def write_junit(verdicts: list[CardVerdict], path: Path) -> None:
    """One test case per check per card. INCONCLUSIVE is an <error>: a CI run must not go green on it."""
    suites = ET.Element("testsuites", name="cardbench accept")
    for v in verdicts:
        fails = sum(r.verdict == FAIL for r in v.results)
        errors = sum(r.verdict == INCONCLUSIVE for r in v.results)
        skipped = sum(r.verdict == NOT_APPLICABLE for r in v.results)
        suite = ET.SubElement(suites, "testsuite", name=f"cardbench accept {v.label}", tests=str(len(v.results)),
                              failures=str(fails), errors=str(errors), skipped=str(skipped))
        for r in v.results:
            case = ET.SubElement(suite, "testcase", classname=f"cardbench.accept.{v.card}", name=r.check)
            text = f"measured {r.measured or '-'}; bar {r.bar}; {r.reason}"
            if r.verdict == FAIL:
                ET.SubElement(case, "failure", message=r.reason or "below the bar", type="FAIL").text = text
            elif r.verdict == INCONCLUSIVE:
                ET.SubElement(case, "error", message=r.reason or "not measured", type="INCONCLUSIVE").text = text
            elif r.verdict == NOT_APPLICABLE:
                ET.SubElement(case, "skipped", message=r.reason)
            else:
                ET.SubElement(case, "system-out").text = text
    ET.ElementTree(suites).write(path, encoding="utf-8", xml_declaration=True)


def keep_birth_certificate(verdicts: list[CardVerdict], results_file: Path, out_dir: Path) -> list[Path]:
    """The first accepted run of a card is kept as its baseline: <out>/baselines/<card>.csv, never replaced."""
    kept = []
    for v in verdicts:
        if v.verdict != PASS:
            continue
        safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in v.card)
        target = out_dir / "baselines" / f"{safe}.csv"
        if target.exists():
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(results_file, target)
        kept.append(target)
    return kept


# ---------------------------------------------------------------------------------------
# Idle gate and command


def idle_gate(policy: Policy):
    """Before each family: wait (bounded) until the card is idle and its temperature has settled."""
    g = policy.idle_gate

    def wait(target, family: str) -> None:
        if not target.is_cuda:
            return
        deadline = time.monotonic() + g["timeout_s"]
        history: list[tuple[float, float]] = []
        while time.monotonic() < deadline:
            util, temp = telemetry.idle_state(target.index)
            if util is None or temp is None:
                return  # no NVML: nothing to wait on
            now = time.monotonic()
            history = [(t, c) for t, c in history if now - t <= g["settle_window_s"]] + [(now, temp)]
            settled = now - history[0][0] >= g["settle_window_s"] * 0.8 and \
                max(c for _, c in history) - min(c for _, c in history) <= g["settle_delta_c"]
            if util <= g["max_utilization_pct"] and settled:
                return
            time.sleep(0.5)
        print(f"warning: {target.device} did not settle within {g['timeout_s']} s before {family} "
              f"(utilization or temperature still moving)", file=sys.stderr)
    return wait


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--device", default="all", help="cpu, cuda:N or all (default: every visible GPU)")
    p.add_argument("--policy", metavar="FILE", help="TOML policy overriding the shipped bench/commands/policy.toml")
    p.add_argument("--from", dest="from_file", metavar="RESULTS.csv", help="judge an existing run instead of measuring")
    p.add_argument("--out", default="results", help="directory for the run's CSV and the birth certificates")
    p.add_argument("--junit", metavar="FILE", help="write JUnit XML, one test case per check per card")
    p.add_argument("--burn-in", type=duration, metavar="TIME",
                   help="after the families, run `cardbench burn` for TIME (10m, 1h) on the same devices and judge "
                        "it too: silent data corruption, memory errors, ECC, stability, throttling, temperature, "
                        "each GPU against the node's best")
    p.add_argument("--specs", metavar="FILE", help="TOML spec entries that add to or override the shipped ones "
                   "(with --from, the rows are normalized again against them); a figure the file gives is "
                   "confirmed, so a check against it is judged even where the shipped claim is derived")
    p.add_argument("--profile", choices=PROFILES, default="quick",
                   help="quick (default): every family's headline cases, one GPU after another; full: adds the "
                        "sweeps; gate: the policy's [profile.gate] cases on every GPU at once, judged by the checks "
                        "it lists (health, link, drift, one memory and one matmul point: for Slurm prologs)")
    prometheus.add_argument(p)


def _burn_in(args, policy: Policy) -> Path | None:
    """`cardbench burn` on the same devices, once they are idle and cool again; its results file."""
    from . import burn, run

    wait = idle_gate(policy)
    try:
        for target in run.setup(RunOptions(device=args.device, specs=args.specs)).targets:
            wait(target, "the burn-in")
    except Exception:  # the burn itself reports a bad device or spec file
        pass
    options = BurnOptions(device=args.device, duration_s=args.burn_in, out=args.out, specs=args.specs,
                          argv=("cardbench", *args.argv))
    return burn.execute(options)[1]


def main(args) -> int:
    try:
        policy = load_policy(args.policy)
        db = specs.load(args.specs)
    except (PolicyError, specs.SpecError) as e:
        print(f"cardbench accept: {e}", file=sys.stderr)
        return EXIT_INCONCLUSIVE
    profile = args.profile
    if args.from_file:
        path = Path(args.from_file)
    else:
        options = RunOptions(device=args.device, profile="quick" if profile == "gate" else profile, out=args.out,
                             specs=args.specs, argv=("cardbench", *args.argv))
        if profile == "gate":
            from . import accept_gate

            gate = policy.profiles.get("gate", {})
            if not gate.get("cases"):
                print(f"cardbench accept: {policy.origin}: [profile.gate] names no cases to measure", file=sys.stderr)
                return EXIT_INCONCLUSIVE
            code, path = accept_gate.execute(accept_gate.options_for(options, gate),
                                             gate.get("timeout_s", accept_gate.DEFAULT_TIMEOUT_S))
        else:
            from . import run

            code, path = run.execute(options, before_family=idle_gate(policy))
        if path is None:
            return EXIT_INCONCLUSIVE  # nothing measured; run printed why
    burn_path = _burn_in(args, policy) if args.burn_in else None
    try:
        runs = [read_results(p) for p in (path, burn_path) if p is not None]
    except ResultsFileError as e:
        print(f"cardbench accept: {e}", file=sys.stderr)
        return EXIT_INCONCLUSIVE
    rows = [r for res in runs for r in res.rows]
    if not rows:
        print(f"cardbench accept: {path}: no measurements to judge", file=sys.stderr)
        return EXIT_INCONCLUSIVE
    if args.from_file and args.specs:
        renormalize(rows, db)  # the one normalization rule, against the --specs database
    verdicts = judge(rows, policy, db, profile, burn_required=bool(args.burn_in))
    judged = " and ".join(f"{res.path}" + ("" if res.complete else " (an incomplete run)") for res in runs)
    print(f"\nacceptance ({policy.origin}, profile {profile}), judging {judged}")
    print(render(verdicts))
    if args.junit:
        write_junit(verdicts, Path(args.junit))
        print(f"JUnit: {args.junit}")
    if profile != "gate":  # a gate is a health check, not the acceptance a baseline stands for
        for kept in keep_birth_certificate(verdicts, path, Path(args.out)):
            print(f"birth certificate (this card's baseline for `cardbench compare`): {kept}")
    exported = not args.prometheus or prometheus.export(args.prometheus, rows, verdicts)
    overall = {v.verdict for v in verdicts}
    code = EXIT_FAIL if FAIL in overall else EXIT_INCONCLUSIVE if INCONCLUSIVE in overall else EXIT_PASS
    return code if exported or code else EXIT_INCONCLUSIVE
