"""How numbers and sizes are written: significant digits, so a small value never reads as 0.0; exact binary sizes.

Stored numbers are never rounded (results CSVs and JSON keep full precision); this is
only for text a person reads.
"""
from __future__ import annotations


def number(x: float, signed: bool = False) -> str:
    """One decimal from 10 up (thousands separated), three significant digits below: 0.0123, 4.56, 1,234.5."""
    v = float(x)
    sign = "+" if signed else ""
    short = f"{v:{sign}.3g}"
    # 9.996 rounds to "10" at three digits: print it as the numbers from 10 up are printed.
    return short if abs(float(short)) < 10 else f"{v:{sign},.1f}"


def human_bytes(n: int) -> str:
    """Exact binary size text: 1048576 -> '1MiB', 1610612736 -> '1536MiB', 16 -> '16B'."""
    for unit, scale in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if n >= scale and n % scale == 0:
            return f"{n // scale}{unit}"
    return f"{n}B"
