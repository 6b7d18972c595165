"""Fault injection for tests: CARDBENCH_INJECT_FAULT, off by default, loud when on.

A comma-separated list of faults, each a name with an optional argument after a colon:
`bitflip` (flip one bit of one burn-in iteration's output on one worker), `memtest`
(plant one wrong word in the burn-in memory test), `slow-rank:2` (rank 2 of a collective
sleeps before each timed operation). They prove the checks catch real faults; a run
with any of them on says so on stderr at its start and its results are not a card's.
"""
from __future__ import annotations

import os
import sys

ENV = "CARDBENCH_INJECT_FAULT"
KNOWN = ("bitflip", "memtest", "slow-rank")


class FaultError(ValueError):
    """A CARDBENCH_INJECT_FAULT value that names no known fault."""


def active(environ=None) -> dict[str, str]:
    """{fault name: argument ("" when none)} of the faults asked for; {} when the variable is unset."""
    text = (environ if environ is not None else os.environ).get(ENV, "").strip()
    faults: dict[str, str] = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        name, _, arg = item.partition(":")
        if name not in KNOWN:
            raise FaultError(f"{ENV}={text!r}: unknown fault {name!r}; known: {', '.join(KNOWN)}")
        faults[name] = arg
    return faults


def warn(environ=None) -> None:
    """Say loudly, once per run, that faults are injected (results of such a run are not a card's)."""
    faults = active(environ)
    if faults:
        names = ", ".join(f"{k}:{v}" if v else k for k, v in faults.items())
        print(f"cardbench: FAULT INJECTION ON ({ENV}={names}): these results are a test of cardbench's checks, "
              "not measurements of the card", file=sys.stderr, flush=True)
