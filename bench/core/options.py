"""The typed options commands pass to each other (never a hand-built argparse.Namespace), and argparse types."""
from __future__ import annotations

import argparse
from dataclasses import dataclass

PROFILES = ("quick", "full")


@dataclass(frozen=True)
class RunOptions:
    """What `cardbench run` measures and how; `accept` and `pytest bench/` build one too."""

    device: str = "all"  # cpu, cuda:N, or all
    families: tuple[str, ...] = ()  # () = every family
    profile: str = "quick"
    out: str = "results"
    specs: str | None = None  # a user spec file
    case_timeout_s: float = 1800.0
    ranks: int = 2  # CPU mode: gloo processes for the collectives
    collective_timeout_s: float = 300.0
    pairs: bool = False  # collective family: all-reduce between every pair of ranks (or nodes) instead of the sweep
    cases: tuple[str, ...] = ()  # --case GLOBs: only matching case ids run
    argv: tuple[str, ...] = ()  # the command line, stored in the `command` column

    @classmethod
    def from_args(cls, args: argparse.Namespace, argv: list[str]) -> "RunOptions":
        return cls(device=args.device, families=tuple(args.families or ()), profile=args.profile, out=args.out,
                   specs=args.specs, case_timeout_s=args.case_timeout, ranks=args.ranks,
                   collective_timeout_s=args.collective_timeout, cases=tuple(args.case or ()),
                   pairs=bool(getattr(args, "pairs", False)),
                   argv=("cardbench", *argv))


def positive(convert, what: str):
    """An argparse type: `convert` the text and require it above zero."""
    def parse(text: str):
        try:
            value = convert(text)
        except ValueError:
            value = 0
        if not value > 0:
            raise argparse.ArgumentTypeError(f"{text!r} is not {what}")
        return value
    return parse


positive_int = positive(int, "a whole number of at least 1")
seconds = positive(float, "a positive number of seconds")


@dataclass(frozen=True)
class BurnOptions:
    """What `cardbench burn` runs; `accept --burn-in` builds one too."""

    device: str = "all"
    duration_s: float = 600.0
    out: str = "results"
    specs: str | None = None
    prometheus: str | None = None
    profile: str = "quick"  # the burn has one size per device; kept for the run state's sake
    argv: tuple[str, ...] = ()


_DURATION_UNITS = {"": 1.0, "s": 1.0, "m": 60.0, "h": 3600.0}


def duration(text: str) -> float:
    """An argparse type: a duration, "90" or "90s" (seconds), "10m", "1.5h"; above zero."""
    import re

    m = re.fullmatch(r"\s*(\d+(?:\.\d*)?|\.\d+)\s*([smh]?)\s*", text or "")
    if m is None:
        raise argparse.ArgumentTypeError(f"{text!r} is not a duration: a positive number with an optional unit, "
                                         "s, m or h (90s, 10m, 1.5h)")
    seconds = float(m.group(1)) * _DURATION_UNITS[m.group(2)]
    if not seconds > 0:
        raise argparse.ArgumentTypeError(f"{text!r}: a duration must be above zero")
    return seconds
