"""The accept verdict of a card, read from the JUnit XML `cardbench accept --junit FILE` writes.

accept writes nothing into the results CSV, so its verdict reaches the report only through
that file: one <testcase classname="cardbench.accept.<card key>"> per check, a <failure> for
FAIL, an <error> for INCONCLUSIVE, <skipped> for N/A. The file names no run and carries no
time, so it is matched to a card by the card key and dated by its modification time; the
newest file wins.
"""
from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

CLASS_PREFIX = "cardbench.accept."
SUITES_NAME = "cardbench accept"


class AcceptFileError(ValueError):
    """An XML file given as an input that is not a cardbench accept JUnit file."""


@dataclass
class AcceptVerdict:
    path: str
    written_utc: str  # the file's modification time, ISO 8601
    checks: dict[str, str] = field(default_factory=dict)  # check -> PASS / FAIL / INCONCLUSIVE / N/A
    reasons: dict[str, str] = field(default_factory=dict)  # check -> reason, for FAIL and INCONCLUSIVE

    @property
    def verdict(self) -> str:
        """accept's rule for a card: any FAIL fails; any INCONCLUSIVE, or nothing judged, is INCONCLUSIVE."""
        seen = set(self.checks.values())
        if "FAIL" in seen:
            return "FAIL"
        if "INCONCLUSIVE" in seen or seen <= {"N/A"}:
            return "INCONCLUSIVE"
        return "PASS"

    def text(self, run_start_utc: str | None) -> str:
        counts = {v: sum(x == v for x in self.checks.values()) for v in ("PASS", "FAIL", "INCONCLUSIVE", "N/A")}
        told = ", ".join(f"{n} {v}" for v, n in counts.items() if n)
        # Failures with their reasons; INCONCLUSIVE checks by name only (their reasons are in the file).
        failed = [f"{c}: FAIL ({r})" for c, r in self.reasons.items() if self.checks[c] == "FAIL"]
        open_ = [c for c in self.reasons if self.checks[c] == "INCONCLUSIVE"]
        bad = "; ".join(failed + ([f"INCONCLUSIVE: {', '.join(open_)}"] if open_ else []))
        when = f"{Path(self.path).name}, written {self.written_utc[:19].replace('T', ' ')} UTC"
        stale = (" -- written before this run started, so it judged an earlier run"
                 if run_start_utc and self.written_utc < run_start_utc else "")
        return f"accept: {self.verdict} ({told}; {when}{stale})" + (f". {bad}" if bad else "")


def read_junit(path: Path) -> dict[str, AcceptVerdict] | None:
    """Card key -> verdict from one JUnit file; None when the file is not cardbench accept's."""
    try:
        root = ET.parse(path).getroot()
    except (ET.ParseError, OSError):
        return None
    if root.tag != "testsuites" or root.get("name") != SUITES_NAME:
        return None
    written = datetime.fromtimestamp(path.stat().st_mtime, timezone.utc).isoformat(timespec="microseconds")
    out: dict[str, AcceptVerdict] = {}
    for case in root.iter("testcase"):
        classname = case.get("classname", "")
        if not classname.startswith(CLASS_PREFIX):
            continue
        v = out.setdefault(classname[len(CLASS_PREFIX):], AcceptVerdict(str(path), written))
        check = case.get("name", "?")
        failure, error, skipped = case.find("failure"), case.find("error"), case.find("skipped")
        if failure is not None:
            v.checks[check], v.reasons[check] = "FAIL", failure.get("message", "")
        elif error is not None:
            v.checks[check], v.reasons[check] = "INCONCLUSIVE", error.get("message", "")
        elif skipped is not None:
            v.checks[check] = "N/A"
        else:
            v.checks[check] = "PASS"
    return out


def find_verdicts(paths: list[str]) -> dict[str, AcceptVerdict]:
    """The newest accept verdict per card among the XML files given or found under the folders given.

    An XML file named on the command line must be an accept JUnit file (else AcceptFileError);
    other XML found in a folder (pytest's own JUnit, say) is passed over.
    """
    best: dict[str, AcceptVerdict] = {}
    for p in map(Path, paths):
        named = [] if p.is_dir() else [p] if p.suffix.lower() == ".xml" else []
        found = sorted(p.rglob("*.xml")) if p.is_dir() else []
        for f in named + found:
            verdicts = read_junit(f)
            if verdicts is None:
                if f in named:
                    raise AcceptFileError(f"{f}: not a JUnit file written by `cardbench accept --junit`")
                continue
            for card, v in verdicts.items():
                if card not in best or v.written_utc > best[card].written_utc:
                    best[card] = v
    return best
