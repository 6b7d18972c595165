"""`cardbench accept`: PASS / FAIL / INCONCLUSIVE per check per card, judged by a policy file.

A check that could not be measured is INCONCLUSIVE, never PASS; a card passes
only when every check passes. Exit codes: 0 every check of every card passes;
1 any FAIL; 2 not proven either way (INCONCLUSIVE without FAIL, or input that
could not be judged: a broken policy or results file, named on stderr). Both
meanings of 2 tell a script the same thing: a person has to look.
"""
from __future__ import annotations

import argparse
import fnmatch
import shutil
import sys
import time
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

from ..core import specs, telemetry
from ..core.normalize import renormalize
from ..core.options import RunOptions
from ..core.results import ResultsFileError, card_key, read_results

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

EXIT_PASS, EXIT_FAIL, EXIT_INCONCLUSIVE = 0, 1, 2
PASS, FAIL, INCONCLUSIVE = "PASS", "FAIL", "INCONCLUSIVE"
# Shown, never counted: every row of the check was `skipped` as not applicable on this
# GPU machine (P2P with one GPU). On the CPU a skipped GPU check stays INCONCLUSIVE.
NOT_APPLICABLE = "N/A"
SHIPPED_LABEL = "bench/commands/policy.toml"

CHECK_KEYS = {"name", "title", "select", "each", "against", "min_pct", "why", "enabled"}
SELECT_FIELDS = {"family", "benchmark", "provider", "dtype", "case", "metric"}
HEALTH_KEYS = {
    "pcie_link_at_max": bool, "forbidden_clock_reasons": list, "max_uncorrectable_ecc": int,
    "require_ecc": bool, "allow_row_remap_pending": bool, "allow_row_remap_failure": bool,
    "max_other_processes": int, "max_temperature_c": (int, float),
}
HEALTH_CHECKS = ("pcie-link", "throttling", "ecc", "row-remap", "other-processes", "temperature")
IDLE_KEYS = {"timeout_s": (int, float), "max_utilization_pct": (int, float), "settle_window_s": (int, float),
             "settle_delta_c": (int, float)}


class PolicyError(ValueError):
    """A policy file that cannot be used; names the file, the section or check, and the field."""


@dataclass
class Check:
    name: str
    title: str
    select: dict[str, str]
    against: str  # "spec" or "derived"
    min_pct: float
    why: str = ""
    each: list[str] = field(default_factory=list)
    enabled: bool = True


@dataclass
class Policy:
    checks: list[Check]
    health: dict
    idle_gate: dict
    origin: str


@dataclass
class Result:
    check: str
    verdict: str
    measured: str  # what was measured, in words and units
    bar: str
    reason: str


# ---------------------------------------------------------------------------------------
# Policy


def _read_toml(path: str) -> dict:
    try:
        with open(path, "rb") as f:
            return tomllib.load(f)
    except OSError as e:
        raise PolicyError(f"{path}: cannot read: {e.strerror or e}") from None
    except tomllib.TOMLDecodeError as e:
        raise PolicyError(f"{path}: not valid TOML: {e}") from None
    except UnicodeDecodeError as e:
        raise PolicyError(f"{path}: not UTF-8 text (byte {e.start}); not a policy file") from None


def _check_from(path: str, raw: dict, base: Check | None = None) -> Check:
    name = raw.get("name")
    where = f"{path}: check '{name}'"
    unknown = set(raw) - CHECK_KEYS
    if unknown:
        raise PolicyError(f"{where}, field '{sorted(unknown)[0]}': unknown key (allowed: {', '.join(sorted(CHECK_KEYS))})")
    merged = dict(vars(base)) if base else {}
    merged.update(raw)
    for key in ("title", "select", "against", "min_pct"):
        if key not in merged:
            raise PolicyError(f"{where}, field '{key}': missing")
    select = merged["select"]
    if not isinstance(select, dict) or not select or set(select) - SELECT_FIELDS or \
            not all(isinstance(v, str) for v in select.values()):
        raise PolicyError(f"{where}, field 'select': a table of text values over {', '.join(sorted(SELECT_FIELDS))}")
    if merged["against"] not in ("spec", "derived"):
        raise PolicyError(f"{where}, field 'against': '{merged['against']}' is not 'spec' or 'derived'")
    pct = merged["min_pct"]
    if isinstance(pct, bool) or not isinstance(pct, (int, float)) or not 0 < pct <= 200:
        raise PolicyError(f"{where}, field 'min_pct': {pct!r} is not a percentage in (0, 200]")
    each = merged.get("each", [])
    if not isinstance(each, list) or not all(isinstance(x, str) for x in each) or set(each) - SELECT_FIELDS:
        raise PolicyError(f"{where}, field 'each': a list of fields among {', '.join(sorted(SELECT_FIELDS))}")
    enabled = merged.get("enabled", True)
    if not isinstance(enabled, bool):
        raise PolicyError(f"{where}, field 'enabled': {enabled!r} is not true or false")
    return Check(name=name, title=str(merged["title"]), select=select, against=merged["against"],
                 min_pct=float(pct), why=str(merged.get("why", "")), each=each, enabled=enabled)


def _section(path: str, data: dict, name: str, types: dict, base: dict) -> dict:
    raw = data.get(name, {})
    if not isinstance(raw, dict):
        raise PolicyError(f"{path}: [{name}] must be a table")
    out = dict(base)
    for key, value in raw.items():
        if key not in types:
            raise PolicyError(f"{path}: [{name}], field '{key}': unknown key (allowed: {', '.join(sorted(types))})")
        if isinstance(value, bool) and types[key] is not bool or not isinstance(value, types[key]):
            raise PolicyError(f"{path}: [{name}], field '{key}': {value!r} has the wrong type")
        if not isinstance(value, (bool, list)) and value < 0:
            raise PolicyError(f"{path}: [{name}], field '{key}': {value!r} is negative")
        out[key] = value
    return out


def _parse(path: str, data: dict, base: Policy | None) -> Policy:
    unknown = set(data) - {"check", "health", "idle_gate"}
    if unknown:
        raise PolicyError(f"{path}: unknown top-level key '{sorted(unknown)[0]}' (allowed: check, health, idle_gate)")
    checks = {c.name: c for c in base.checks} if base else {}
    seen = set()
    raw_checks = data.get("check", [])
    if not isinstance(raw_checks, list):
        raise PolicyError(f"{path}: [[check]] must be an array of tables")
    for raw in raw_checks:
        name = raw.get("name") if isinstance(raw, dict) else None
        if not isinstance(name, str) or not name:
            raise PolicyError(f"{path}: a [[check]] without a 'name'")
        if name in seen:
            raise PolicyError(f"{path}: check '{name}', field 'name': defined twice in this file")
        seen.add(name)
        checks[name] = _check_from(path, raw, checks.get(name))
    health = _section(path, data, "health", HEALTH_KEYS, base.health if base else {})
    for reason in health.get("forbidden_clock_reasons", []):
        if not isinstance(reason, str) or reason not in telemetry.CLOCKS_EVENT_REASONS.values():
            raise PolicyError(f"{path}: [health], field 'forbidden_clock_reasons': unknown reason '{reason}' "
                              f"(known: {', '.join(telemetry.CLOCKS_EVENT_REASONS.values())})")
    idle = _section(path, data, "idle_gate", IDLE_KEYS, base.idle_gate if base else {})
    return Policy(list(checks.values()), health, idle, path)


def load_policy(user_file: str | None = None) -> Policy:
    """The shipped policy, overridden key by key by the user's file."""
    shipped = resources.files(__package__) / "policy.toml"
    policy = _parse(SHIPPED_LABEL, tomllib.loads(shipped.read_text(encoding="utf-8")), None)
    missing = set(HEALTH_KEYS) - set(policy.health) or set(IDLE_KEYS) - set(policy.idle_gate)
    if missing:
        raise PolicyError(f"{SHIPPED_LABEL}: missing {', '.join(sorted(missing))}")
    if user_file:
        policy = _parse(str(user_file), _read_toml(str(user_file)), policy)
    return policy


# ---------------------------------------------------------------------------------------
# Judging


def _matches(row: dict, select: dict[str, str]) -> bool:
    return all(fnmatch.fnmatchcase(row.get(k, ""), pattern) for k, pattern in select.items())


DERIVED_CLAIM = "the claim is derived, not printed by the vendor: confirm it with --specs FILE"


def judge_check(check: Check, rows: list[dict], db: specs.SpecDB | None = None) -> Result:
    """One check's verdict over one card's rows. `db`: the spec database the rows' claims come
    from (the shipped one by default): a claim it marks `derived` that no user file confirms
    makes a spec check INCONCLUSIVE, whatever the percentage."""
    bar = f">= {check.min_pct:g}% of {'spec' if check.against == 'spec' else 'derived peak'}"
    picked = [r for r in rows if _matches(r, check.select)]
    if not picked:
        what = check.select.get("family", "these")
        return Result(check.name, INCONCLUSIVE, "", bar, f"no {what} measurement in this run")
    wrong = [r for r in picked if r["status"] == "wrong"]
    if wrong:
        r = wrong[0]
        return Result(check.name, FAIL, "", bar, f"verification failed ({r['benchmark']} {r['case']}): {r['message']}")
    column = "pct_of_spec" if check.against == "spec" else "pct_of_derived"
    groups: dict[tuple, list[dict]] = {}
    for r in picked:
        groups.setdefault(tuple(r.get(k, "") for k in check.each), []).append(r)
    verdicts = []
    for key, group in groups.items():
        label = " ".join(key)
        ok = [r for r in group if r["status"] == "ok"]
        if not ok and all(r["status"] == "skipped" and r["device_index"] != "" for r in group):
            verdicts.append(Result(check.name, NOT_APPLICABLE, "", bar,
                                   f"{label + ': ' if label else ''}not applicable here: {group[0]['message']}"))
            continue
        if not ok:
            r = group[0]
            verdicts.append(Result(check.name, INCONCLUSIVE, "", bar,
                                   f"{label + ': ' if label else ''}{r['status']}: {r['message']}".strip()))
            continue
        normalized = [r for r in ok if r.get(column)]
        if not normalized:
            best = max(ok, key=lambda r: float(r["value"]))
            why = ("no derived peak (no NVML reading)" if check.against != "spec"
                   else f"{specs.MIG_NO_ENTRY}: add one with --specs" if specs.mig_slice(best.get("device_name", ""))
                   else "no spec entry (or no figure) for this card: add one with --specs")
            verdicts.append(Result(check.name, INCONCLUSIVE, f"{float(best['value']):,.1f} {best['unit']}", bar,
                                   f"{label + ': ' if label else ''}{why}"))
            continue
        best = max(normalized, key=lambda r: float(r[column]))
        pct = float(best[column])
        measured = f"{float(best['value']):,.1f} {best['unit']} = {pct:.1f}%"
        where = f"{label + ': ' if label else ''}best of {len(normalized)} ({best['provider']} {best['case']})"
        claim = specs.claim_figure(best, db if db is not None else specs.load()) if check.against == "spec" else None
        if specs.unconfirmed_derived(claim):
            verdicts.append(Result(check.name, INCONCLUSIVE, measured, bar,
                                   f"{where}: {best['spec_entry']} {claim.key} {claim.value:g} {claim.unit}: "
                                   f"{DERIVED_CLAIM}"))
            continue
        verdicts.append(Result(check.name, PASS if pct >= check.min_pct else FAIL, measured, bar, where))
    # A check with several groups (P2P pairs) reports its worst group.
    order = {FAIL: 0, INCONCLUSIVE: 1, PASS: 2, NOT_APPLICABLE: 3}
    return min(verdicts, key=lambda v: order[v.verdict])


def _ints(rows: list[dict], column: str) -> list[int]:
    out = []
    for r in rows:
        try:
            out.append(int(float(r[column])))
        except (KeyError, ValueError):
            pass
    return out


def health_checks(policy: Policy, rows: list[dict]) -> list[Result]:
    h = policy.health
    first = rows[0]
    out = []

    # PCIe link: trained at the card's max generation and width, read under load.
    gen_max, width_max = _ints([first], "pcie_gen_max"), _ints([first], "pcie_width_max")
    loaded = [r for r in rows if r["family"] == "transfer"]
    readings = [(g, w) for r in (loaded or rows) for g, w in
                zip(_ints([r], "pcie_gen_current"), _ints([r], "pcie_width_current"))]
    bar = f"Gen{gen_max[0]} x{width_max[0]}" if gen_max and width_max else "the card's maximum"
    if not h["pcie_link_at_max"]:
        pass  # the user's policy turned the check off
    elif not gen_max or not width_max or not readings:
        out.append(Result("pcie-link", INCONCLUSIVE, "", bar, "no PCIe link reading (no NVML)"))
    else:
        g, w = max(readings)
        measured = f"Gen{g} x{w}" + (" under load" if loaded else "")
        if g >= gen_max[0] and w >= width_max[0]:
            out.append(Result("pcie-link", PASS, measured, bar, ""))
        elif loaded:
            out.append(Result("pcie-link", FAIL, measured, bar,
                              f"PCIe link trained at Gen{g} x{w} during transfers; the card supports {bar}"))
        elif w < width_max[0]:
            out.append(Result("pcie-link", FAIL, measured, bar, f"PCIe link width x{w}; the card supports x{width_max[0]}"))
        else:
            out.append(Result("pcie-link", INCONCLUSIVE, measured, bar,
                              "only idle readings (idle links train down); run the transfer family to read it under load"))

    # Throttling: any forbidden clocks-event bit in any row (combined bits decoded one by one).
    forbidden = set(h["forbidden_clock_reasons"])
    masks = [(r, int(r["clocks_event_reasons"], 16)) for r in rows if r.get("clocks_event_reasons")]
    if not masks:
        out.append(Result("throttling", INCONCLUSIVE, "", "no forbidden reason",
                          "no clocks-event readings (no NVML)"))
    else:
        seen: dict[str, list[str]] = {}
        for r, mask in masks:
            for name in telemetry.reason_names(mask):
                if name in forbidden:
                    seen.setdefault(name, []).append(f"{r['family']}/{r['benchmark']} {r['case']}")
        if seen:
            text = "; ".join(f"{n} during {', '.join(w[:3])}{' ...' if len(w) > 3 else ''}" for n, w in seen.items())
            out.append(Result("throttling", FAIL, ", ".join(seen), "no forbidden reason", text))
        else:
            out.append(Result("throttling", PASS, "none", "no forbidden reason", f"{len(masks)} measurements checked"))

    # ECC.
    mode = first.get("ecc_mode", "")
    unc = _ints([first], "ecc_errors_uncorrected") + _ints([first], "ecc_errors_uncorrected_aggregate")
    limit = h["max_uncorrectable_ecc"]
    if not mode:
        out.append(Result("ecc", INCONCLUSIVE, "", f"<= {limit} uncorrectable", "no ECC reading (no NVML, or not supported)"))
    elif mode != "on" and h["require_ecc"]:
        out.append(Result("ecc", FAIL, "ECC off", "ECC on", "ECC is off (set require_ecc = false for boards without it)"))
    elif unc and max(unc) > limit:
        out.append(Result("ecc", FAIL, f"{max(unc)} uncorrectable", f"<= {limit}", "uncorrectable ECC errors"))
    else:
        out.append(Result("ecc", PASS, f"{max(unc) if unc else 0} uncorrectable", f"<= {limit}", ""))

    # Row remapping.
    pending, failure = first.get("remapped_rows_pending", ""), first.get("remapped_rows_failure", "")
    if not pending and not failure:
        out.append(Result("row-remap", INCONCLUSIVE, "", "none pending or failed", "no row-remapping reading"))
    elif pending == "yes" and not h["allow_row_remap_pending"] or failure == "yes" and not h["allow_row_remap_failure"]:
        out.append(Result("row-remap", FAIL, f"pending {pending}, failed {failure}", "none", "row remapping pending or failed: the memory needs service"))
    else:
        out.append(Result("row-remap", PASS, "none pending or failed", "none", ""))

    # Other processes.
    others = _ints([first], "compute_processes")
    if not others:
        out.append(Result("other-processes", INCONCLUSIVE, "", f"<= {h['max_other_processes']}", "no process list (no NVML)"))
    elif others[0] > h["max_other_processes"]:
        out.append(Result("other-processes", FAIL, f"{others[0]}", f"<= {h['max_other_processes']}",
                          "other processes were computing on the card: every measurement is disturbed"))
    else:
        out.append(Result("other-processes", PASS, f"{others[0]}", f"<= {h['max_other_processes']}", ""))

    # Temperature.
    temps = [float(r["temp_c_max"]) for r in rows if r.get("temp_c_max")]
    limit_c = h["max_temperature_c"]
    if not temps:
        out.append(Result("temperature", INCONCLUSIVE, "", f"<= {limit_c} C", "no temperature reading (no NVML)"))
    else:
        hot = max(temps)
        out.append(Result("temperature", PASS if hot <= limit_c else FAIL, f"{hot:g} C max", f"<= {limit_c} C",
                          "" if hot <= limit_c else "too hot under load: check cooling and airflow"))
    return out


@dataclass
class CardVerdict:
    card: str  # card key (UUID, serial, or host:name)
    label: str
    results: list[Result]

    @property
    def verdict(self) -> str:
        verdicts = {r.verdict for r in self.results}
        if FAIL in verdicts:
            return FAIL
        if INCONCLUSIVE in verdicts or verdicts <= {NOT_APPLICABLE}:
            return INCONCLUSIVE
        return PASS


def judge(rows: list[dict], policy: Policy, db: specs.SpecDB | None = None) -> list[CardVerdict]:
    """Verdicts per card; `db` as in judge_check (loaded once here)."""
    db = db if db is not None else specs.load()
    cards: dict[str, list[dict]] = {}
    for r in rows:
        cards.setdefault(card_key(r, False), []).append(r)
    out = []
    for key, card_rows in cards.items():
        first = card_rows[0]
        where = "cpu" if first["device_index"] == "" else f"cuda:{first['device_index']}"
        label = f"{where} {first['device_name']}" + (f" ({first['device_uuid']})" if first["device_uuid"] else "")
        if first["device_serial"]:
            label += f" serial {first['device_serial']}"
        results = [judge_check(c, card_rows, db) for c in policy.checks if c.enabled] + health_checks(policy, card_rows)
        out.append(CardVerdict(key, label, results))
    return out


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
    p.add_argument("--specs", metavar="FILE", help="TOML spec entries that add to or override the shipped ones "
                   "(with --from, the rows are normalized again against them); a figure the file gives is "
                   "confirmed, so a check against it is judged even where the shipped claim is derived")


def main(args) -> int:
    try:
        policy = load_policy(args.policy)
        db = specs.load(args.specs)
    except (PolicyError, specs.SpecError) as e:
        print(f"cardbench accept: {e}", file=sys.stderr)
        return EXIT_INCONCLUSIVE
    if args.from_file:
        path = Path(args.from_file)
    else:
        from . import run

        options = RunOptions(device=args.device, profile="quick", out=args.out, specs=args.specs,
                             argv=("cardbench", *args.argv))
        code, path = run.execute(options, before_family=idle_gate(policy))
        if path is None:
            return EXIT_INCONCLUSIVE  # nothing measured; run printed why
    try:
        res = read_results(path)
    except ResultsFileError as e:
        print(f"cardbench accept: {e}", file=sys.stderr)
        return EXIT_INCONCLUSIVE
    if not res.rows:
        print(f"cardbench accept: {path}: no measurements to judge", file=sys.stderr)
        return EXIT_INCONCLUSIVE
    if args.from_file and args.specs:
        renormalize(res.rows, db)  # the one normalization rule, against the --specs database
    verdicts = judge(res.rows, policy, db)
    print(f"\nacceptance ({policy.origin}), judging {path}" + ("" if res.complete else " (an incomplete run)"))
    print(render(verdicts))
    if args.junit:
        write_junit(verdicts, Path(args.junit))
        print(f"JUnit: {args.junit}")
    for kept in keep_birth_certificate(verdicts, path, Path(args.out)):
        print(f"birth certificate (this card's baseline for `cardbench compare`): {kept}")
    overall = {v.verdict for v in verdicts}
    return EXIT_FAIL if FAIL in overall else EXIT_INCONCLUSIVE if INCONCLUSIVE in overall else EXIT_PASS
