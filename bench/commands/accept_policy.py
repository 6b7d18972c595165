"""The acceptance policy: checks with their bars and the evidence behind each, health checks, the idle gate.

The shipped policy is bench/commands/policy.toml; a user file overrides it key by key
(`[[check]]` with the same name changes that check, `enabled = false` turns it off, a
health check included). `[drift]` names the identity fields every GPU of a node must
share (and the values expected); `[profile.gate]` says what `accept --profile gate`
measures and which checks judge it. Every mistake is a PolicyError naming the file, the
check and the field.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from importlib import resources

from ..core import telemetry

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

SHIPPED_LABEL = "bench/commands/policy.toml"

CHECK_KEYS = {"name", "title", "select", "each", "against", "min_pct", "why", "enabled"}
SELECT_FIELDS = {"family", "benchmark", "provider", "dtype", "case", "metric"}
HEALTH_KEYS = {
    "pcie_link_at_max": bool, "forbidden_clock_reasons": list, "max_uncorrectable_ecc": int,
    "require_ecc": bool, "allow_row_remap_pending": bool, "allow_row_remap_failure": bool,
    "max_other_processes": int, "max_temperature_c": (int, float),
}
HEALTH_CHECKS = ("pcie-link", "throttling", "ecc", "row-remap", "other-processes", "temperature", "config-drift")
# Identity columns a node's GPUs can be compared on (results/SCHEMA.md): the card's and the driver.
DRIFT_FIELDS = ("vbios_version", "driver_version", "ecc_mode", "power_limit_w", "persistence_mode", "mig_mode",
                "board_part_number", "cuda_driver_version")
PROFILES = ("gate", "quick", "full")  # accept --profile; a profile without a [profile.X] table runs every check
PROFILE_KEYS = {"cases": list, "checks": list, "timeout_s": (int, float)}
BURN_KEYS = {"max_mismatches": int, "max_memory_errors": int, "min_memtest_coverage_pct": (int, float),
             "max_throughput_drop_pct": (int, float), "max_behind_best_pct": (int, float),
             "temperature_margin_c": (int, float)}
BURN_CHECKS = ("burn-sdc", "burn-memtest", "burn-ecc", "burn-stability", "burn-throttling", "burn-temperature",
               "burn-node-spread")
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
    disabled: set[str] = field(default_factory=set)  # health checks turned off with [[check]] enabled = false
    drift: dict = field(default_factory=dict)  # {"fields": [...], "expected": {field: value}}
    profiles: dict[str, dict] = field(default_factory=dict)  # [profile.gate]: cases, checks, timeout_s
    burn: dict = field(default_factory=dict)  # the burn-in bars ([burn]; bench/commands/accept_burn.py)

    def applies(self, check: str, profile: str | None) -> bool:
        """Whether `check` judges a run of accept's `profile` (every enabled check unless its table lists them)."""
        if check in self.disabled or any(c.name == check and not c.enabled for c in self.checks):
            return False
        listed = self.profiles.get(profile or "", {}).get("checks")
        return listed is None or check in listed


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
    unknown = set(data) - {"check", "health", "idle_gate", "drift", "profile", "burn"}
    if unknown:
        raise PolicyError(f"{path}: unknown top-level key '{sorted(unknown)[0]}' "
                          "(allowed: burn, check, drift, health, idle_gate, profile)")
    checks = {c.name: c for c in base.checks} if base else {}
    seen = set()
    raw_checks = data.get("check", [])
    if not isinstance(raw_checks, list):
        raise PolicyError(f"{path}: [[check]] must be an array of tables")
    disabled = set(base.disabled) if base else set()
    for raw in raw_checks:
        name = raw.get("name") if isinstance(raw, dict) else None
        if not isinstance(name, str) or not name:
            raise PolicyError(f"{path}: a [[check]] without a 'name'")
        if name in seen:
            raise PolicyError(f"{path}: check '{name}', field 'name': defined twice in this file")
        seen.add(name)
        if name in HEALTH_CHECKS or name in BURN_CHECKS:  # built-in checks: only turned on or off here
            _health_switch(path, raw, disabled)
            continue
        if name not in checks and set(raw) <= {"name", "enabled"}:
            raise PolicyError(f"{path}: check '{name}', field 'name': no such check to turn on or off (checks: "
                              f"{', '.join([*checks, *HEALTH_CHECKS, *BURN_CHECKS])})")
        checks[name] = _check_from(path, raw, checks.get(name))
    health = _section(path, data, "health", HEALTH_KEYS, base.health if base else {})
    for reason in health.get("forbidden_clock_reasons", []):
        if not isinstance(reason, str) or reason not in telemetry.CLOCKS_EVENT_REASONS.values():
            raise PolicyError(f"{path}: [health], field 'forbidden_clock_reasons': unknown reason '{reason}' "
                              f"(known: {', '.join(telemetry.CLOCKS_EVENT_REASONS.values())})")
    idle = _section(path, data, "idle_gate", IDLE_KEYS, base.idle_gate if base else {})
    drift = _drift(path, data.get("drift", {}), base.drift if base else {"fields": [], "expected": {}})
    known = {*checks, *HEALTH_CHECKS, *BURN_CHECKS}
    profiles = _profiles(path, data.get("profile", {}), base.profiles if base else {}, known)
    burn = _section(path, data, "burn", BURN_KEYS, base.burn if base else {})
    return Policy(list(checks.values()), health, idle, path, disabled, drift, profiles, burn)


def _health_switch(path: str, raw: dict, disabled: set[str]) -> None:
    """`[[check]] name = "temperature"  enabled = false`: a health check is turned off (or on) here;
    its bar lives in [health]."""
    name = raw["name"]
    where = f"{path}: check '{name}'"
    other = sorted(set(raw) - {"name", "enabled"})
    if other:
        raise PolicyError(f"{where}, field '{other[0]}': '{name}' is a health check: only 'enabled' can be set in "
                          "[[check]] (its limits are in [health] and [drift])")
    enabled = raw.get("enabled", True)
    if not isinstance(enabled, bool):
        raise PolicyError(f"{where}, field 'enabled': {enabled!r} is not true or false")
    (disabled.discard if enabled else disabled.add)(name)


def _drift(path: str, raw, base: dict) -> dict:
    if not isinstance(raw, dict):
        raise PolicyError(f"{path}: [drift] must be a table")
    unknown = set(raw) - {"fields", "expected"}
    if unknown:
        raise PolicyError(f"{path}: [drift], field '{sorted(unknown)[0]}': unknown key (allowed: expected, fields)")
    fields = raw.get("fields", base.get("fields", []))
    if not isinstance(fields, list) or not all(isinstance(f, str) and f in DRIFT_FIELDS for f in fields):
        raise PolicyError(f"{path}: [drift], field 'fields': a list among {', '.join(DRIFT_FIELDS)}")
    expected = dict(base.get("expected", {}))
    extra = raw.get("expected", {})
    if not isinstance(extra, dict):
        raise PolicyError(f"{path}: [drift.expected] must be a table")
    for key, value in extra.items():
        if key not in DRIFT_FIELDS:
            raise PolicyError(f"{path}: [drift.expected], field '{key}': unknown field "
                              f"(known: {', '.join(DRIFT_FIELDS)})")
        if isinstance(value, bool) or not isinstance(value, (str, int, float)):
            raise PolicyError(f"{path}: [drift.expected], field '{key}': {value!r} is not a text or a number")
        expected[key] = value
    return {"fields": list(fields), "expected": expected}


def _profiles(path: str, raw, base: dict, known: set[str]) -> dict[str, dict]:
    if not isinstance(raw, dict):
        raise PolicyError(f"{path}: [profile] must hold tables such as [profile.gate]")
    out = {name: dict(table) for name, table in base.items()}
    for name, table in raw.items():
        if name not in PROFILES or not isinstance(table, dict):
            raise PolicyError(f"{path}: [profile.{name}]: not a profile table (profiles: {', '.join(PROFILES)})")
        merged = out.setdefault(name, {})
        for key, value in table.items():
            where = f"{path}: [profile.{name}], field '{key}'"
            if key not in PROFILE_KEYS:
                raise PolicyError(f"{where}: unknown key (allowed: {', '.join(sorted(PROFILE_KEYS))})")
            if isinstance(value, bool) or not isinstance(value, PROFILE_KEYS[key]):
                raise PolicyError(f"{where}: {value!r} has the wrong type")
            if key in ("cases", "checks") and not all(isinstance(v, str) and v for v in value):
                raise PolicyError(f"{where}: a list of texts")
            if key == "checks" and set(value) - known:
                raise PolicyError(f"{where}: unknown check '{sorted(set(value) - known)[0]}'")
            if key == "timeout_s" and not value > 0:
                raise PolicyError(f"{where}: {value!r} is not a positive number of seconds")
            merged[key] = value
    return out


def load_policy(user_file: str | None = None) -> Policy:
    """The shipped policy, overridden key by key by the user's file."""
    shipped = resources.files(__package__) / "policy.toml"
    policy = _parse(SHIPPED_LABEL, tomllib.loads(shipped.read_text(encoding="utf-8")), None)
    missing = set(HEALTH_KEYS) - set(policy.health) or set(IDLE_KEYS) - set(policy.idle_gate) or \
        set(BURN_KEYS) - set(policy.burn)
    if missing:
        raise PolicyError(f"{SHIPPED_LABEL}: missing {', '.join(sorted(missing))}")
    if user_file:
        policy = _parse(str(user_file), _read_toml(str(user_file)), policy)
    return policy
