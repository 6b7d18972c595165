"""Judging results rows against the acceptance policy: a verdict per check per card.

A check that could not be measured is INCONCLUSIVE, never PASS; a `wrong` row is FAIL;
a check whose rows were all skipped as not applicable on a GPU machine is N/A.
"""
from __future__ import annotations

import fnmatch
from dataclasses import dataclass

from ..core import specs, telemetry
from ..core.results import card_key, device_of
from .accept_policy import Check, Policy

PASS, FAIL, INCONCLUSIVE = "PASS", "FAIL", "INCONCLUSIVE"
# Shown, never counted: every row of the check was `skipped` as not applicable on this
# GPU machine (P2P with one GPU). On the CPU a skipped GPU check stays INCONCLUSIVE.
NOT_APPLICABLE = "N/A"


@dataclass
class Result:
    check: str
    verdict: str
    measured: str  # what was measured, in words and units
    bar: str
    reason: str


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
        what = check.select.get("family", "")
        return Result(check.name, INCONCLUSIVE, "", bar, f"no {what + ' ' if what else ''}measurement in this run")
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
    """The card's health over one run: PCIe link, throttling, ECC, row remapping, other processes,
    temperature. A check the user's policy turned off (pcie_link_at_max = false) is left out."""
    h = policy.health
    out = [_pcie_link(rows)] if h["pcie_link_at_max"] else []
    return out + [_throttling(h, rows), _ecc(h, rows[0]), _row_remap(h, rows[0]), _other_processes(h, rows[0]),
                  _temperature(h, rows)]


def _pcie_link(rows: list[dict]) -> Result:
    """Trained at the card's max generation and width, read under load (idle links train down)."""
    first = rows[0]
    gen_max, width_max = _ints([first], "pcie_gen_max"), _ints([first], "pcie_width_max")
    loaded = [r for r in rows if r["family"] == "transfer"]
    readings = [(g, w) for r in (loaded or rows) for g, w in
                zip(_ints([r], "pcie_gen_current"), _ints([r], "pcie_width_current"))]
    bar = f"Gen{gen_max[0]} x{width_max[0]}" if gen_max and width_max else "the card's maximum"
    if not gen_max or not width_max or not readings:
        return Result("pcie-link", INCONCLUSIVE, "", bar, "no PCIe link reading (no NVML)")
    g, w = max(readings)
    measured = f"Gen{g} x{w}" + (" under load" if loaded else "")
    if g >= gen_max[0] and w >= width_max[0]:
        return Result("pcie-link", PASS, measured, bar, "")
    if loaded:
        return Result("pcie-link", FAIL, measured, bar,
                      f"PCIe link trained at Gen{g} x{w} during transfers; the card supports {bar}")
    if w < width_max[0]:
        return Result("pcie-link", FAIL, measured, bar, f"PCIe link width x{w}; the card supports x{width_max[0]}")
    return Result("pcie-link", INCONCLUSIVE, measured, bar,
                  "only idle readings (idle links train down); run the transfer family to read it under load")


def _throttling(h: dict, rows: list[dict]) -> Result:
    """Any forbidden clocks-event bit in any row (combined bits decoded one by one)."""
    forbidden = set(h["forbidden_clock_reasons"])
    masks = [(r, int(r["clocks_event_reasons"], 16)) for r in rows if r.get("clocks_event_reasons")]
    if not masks:
        return Result("throttling", INCONCLUSIVE, "", "no forbidden reason", "no clocks-event readings (no NVML)")
    seen: dict[str, dict[str, None]] = {}  # reason -> the measurements it came in, each once, in order
    for r, mask in masks:
        for name in telemetry.reason_names(mask):
            if name in forbidden:
                seen.setdefault(name, {})[f"{r['family']}/{r['benchmark']} {r['case']}"] = None
    if not seen:
        return Result("throttling", PASS, "none", "no forbidden reason", f"{len(masks)} measurements checked")
    text = "; ".join(f"{n} during {', '.join(list(w)[:3])}{' ...' if len(w) > 3 else ''}" for n, w in seen.items())
    return Result("throttling", FAIL, ", ".join(seen), "no forbidden reason", text)


def _ecc(h: dict, first: dict) -> Result:
    mode = first.get("ecc_mode", "")
    unc = _ints([first], "ecc_errors_uncorrected") + _ints([first], "ecc_errors_uncorrected_aggregate")
    limit = h["max_uncorrectable_ecc"]
    if not mode:
        return Result("ecc", INCONCLUSIVE, "", f"<= {limit} uncorrectable",
                      "no ECC reading (no NVML, or not supported)")
    if mode != "on" and h["require_ecc"]:
        return Result("ecc", FAIL, "ECC off", "ECC on", "ECC is off (set require_ecc = false for boards without it)")
    if unc and max(unc) > limit:
        return Result("ecc", FAIL, f"{max(unc)} uncorrectable", f"<= {limit}", "uncorrectable ECC errors")
    return Result("ecc", PASS, f"{max(unc) if unc else 0} uncorrectable", f"<= {limit}", "")


def _row_remap(h: dict, first: dict) -> Result:
    pending, failure = first.get("remapped_rows_pending", ""), first.get("remapped_rows_failure", "")
    if not pending and not failure:
        return Result("row-remap", INCONCLUSIVE, "", "none pending or failed", "no row-remapping reading")
    if pending == "yes" and not h["allow_row_remap_pending"] or failure == "yes" and not h["allow_row_remap_failure"]:
        return Result("row-remap", FAIL, f"pending {pending}, failed {failure}", "none",
                      "row remapping pending or failed: the memory needs service")
    return Result("row-remap", PASS, "none pending or failed", "none", "")


def _other_processes(h: dict, first: dict) -> Result:
    others, limit = _ints([first], "compute_processes"), h["max_other_processes"]
    if not others:
        return Result("other-processes", INCONCLUSIVE, "", f"<= {limit}", "no process list (no NVML)")
    if others[0] > limit:
        return Result("other-processes", FAIL, f"{others[0]}", f"<= {limit}",
                      "other processes were computing on the card: every measurement is disturbed")
    return Result("other-processes", PASS, f"{others[0]}", f"<= {limit}", "")


def _temperature(h: dict, rows: list[dict]) -> Result:
    temps = [float(r["temp_c_max"]) for r in rows if r.get("temp_c_max")]
    limit = h["max_temperature_c"]
    if not temps:
        return Result("temperature", INCONCLUSIVE, "", f"<= {limit} C", "no temperature reading (no NVML)")
    hot = max(temps)
    if hot > limit:
        return Result("temperature", FAIL, f"{hot:g} C max", f"<= {limit} C",
                      "too hot under load: check cooling and airflow")
    return Result("temperature", PASS, f"{hot:g} C max", f"<= {limit} C", "")


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


def _same(a, b) -> bool:
    """Equal as numbers where both are numbers ("700.0" and 700), else as text."""
    try:
        return float(a) == float(b)
    except (TypeError, ValueError):
        return str(a).strip() == str(b).strip()


def drift_checks(policy: Policy, cards: dict[str, list[dict]]) -> dict[str, Result]:
    """config-drift per card: the GPUs of each node agree on every [drift] field and match [drift.expected].

    Within a node the odd GPU out FAILs (the value most GPUs share is the reference; with no
    single most common value every GPU fails); the reason shows every value and its GPUs.
    A field not read (no NVML) leaves the check INCONCLUSIVE.
    """
    fields, expected = policy.drift["fields"], policy.drift["expected"]
    bar = "same on every GPU of the node" + (", as [drift.expected] says" if expected else "")
    nodes: dict[str, list[str]] = {}
    for key, rows in cards.items():
        nodes.setdefault(rows[0]["host"], []).append(key)
    out = {}
    for keys in nodes.values():
        first = {k: cards[k][0] for k in keys}
        for k in keys:
            problems, unread = [], []
            for f in fields:
                mine = first[k].get(f, "")
                if mine == "":
                    unread.append(f)
                    continue
                if f in expected and not _same(mine, expected[f]):
                    problems.append(f"{f} {mine} on {device_of(first[k])}, the policy expects {expected[f]}")
                groups: dict[str, list[str]] = {}
                for other in keys:
                    if first[other].get(f, ""):
                        groups.setdefault(first[other][f], []).append(device_of(first[other]))
                top = max(len(g) for g in groups.values())
                reference = [v for v, g in groups.items() if len(g) == top]
                if len(groups) > 1 and (len(reference) > 1 or mine != reference[0]):
                    problems.append(f"{f} differs: " + "; ".join(f"{v} on {', '.join(g)}" for v, g in groups.items()))
            if problems:
                out[k] = Result("config-drift", FAIL, f"{len(problems)} mismatch(es)", bar, "; ".join(problems))
            elif unread:
                out[k] = Result("config-drift", INCONCLUSIVE, "", bar, f"no {', '.join(unread)} reading (no NVML, "
                                "or not reported by this board: drop it from [drift] fields)")
            else:
                out[k] = Result("config-drift", PASS, f"same on {len(keys)} GPU(s)", bar, ", ".join(fields))
    return out


def judge(rows: list[dict], policy: Policy, db: specs.SpecDB | None = None, profile: str | None = None,
          burn_required: bool = False) -> list[CardVerdict]:
    """Verdicts per card; `db` as in judge_check (loaded once here); `profile`: accept's profile, whose
    [profile.X] table in the policy may name the checks that judge it (default: every enabled check).
    The burn checks are judged for a card with burn rows, and for every card when `burn_required`
    (accept --burn-in)."""
    from .accept_burn import burn_checks  # it imports this module's verdict names

    db = db if db is not None else specs.load()
    cards: dict[str, list[dict]] = {}
    for r in rows:
        cards.setdefault(card_key(r, False), []).append(r)
    drift = drift_checks(policy, cards)
    out = []
    for key, card_rows in cards.items():
        first = card_rows[0]
        label = f"{device_of(first)} {first['device_name']}"
        if first["device_uuid"]:
            label += f" ({first['device_uuid']})"
        if first["device_serial"]:
            label += f" serial {first['device_serial']}"
        results = [judge_check(c, card_rows, db) for c in policy.checks if c.enabled]
        results += health_checks(policy, card_rows) + [drift[key]]
        if burn_required or any(r["family"] == "burn" for r in card_rows):
            results += burn_checks(policy, card_rows, rows)
        out.append(CardVerdict(key, label, [r for r in results if policy.applies(r.check, profile)]))
    return out
