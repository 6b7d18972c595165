"""How sizes and numbers are written: exact binary sizes in case names, significant digits in tables."""
from __future__ import annotations


def human_bytes(n: int) -> str:
    """Exact binary size text: 1048576 -> '1MiB', 1610612736 -> '1536MiB', 16 -> '16B'."""
    for unit, scale in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if n >= scale and n % scale == 0:
            return f"{n // scale}{unit}"
    return f"{n}B"


def number(x) -> str:
    """Printed value: one decimal from 10 up, three significant digits below (never a bare 0.0)."""
    v = float(x)
    return f"{v:,.1f}" if abs(v) >= 10 else f"{v:.3g}"
