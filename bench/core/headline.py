"""The headline measurement of each family for one card: what history and the Prometheus export track.

One fixed rule per family, so that consecutive runs of a card put the same
measurement side by side (the best row of whatever was measured would jump
between shapes, sizes and providers from run to run):

- memory: `copy` at the `plateau` working set (far above L2); the Triton
  kernel, else the torch op.
- matmul: `bf16` and `fp8`; the searched `best` shape (`--profile full`; for
  fp8 `best-fastacc`, the only searched fp8 row), else the largest fixed shape
  by work (2*M*N*K; fp8 without fast accumulation); cuBLAS (torch), else Triton.
- transfer: pinned `h2d` and `d2h`, one way, the largest copy.
- collective: the `all_reduce` `peak` row (highest busbw over the sizes), per dtype.

The first `ok` row in that order is the headline; when none is `ok` the first
candidate is kept, so a failed headline shows its status and reason.
"""
from __future__ import annotations

from dataclasses import dataclass

MATMUL_DTYPES = ("bf16", "fp8")
TRANSFER_DIRECTIONS = ("h2d", "d2h")


@dataclass
class Headline:
    name: str  # "memory copy", "matmul bf16", "transfer h2d", "collective all_reduce bf16"
    family: str
    row: dict[str, str]  # the chosen row; `ok` unless no candidate was

    @property
    def ok(self) -> bool:
        return self.row["status"] == "ok"


def _number(text: str) -> float:
    try:
        return float(text)
    except (TypeError, ValueError):
        return 0.0


def _first_ok(rows: list[dict[str, str]]) -> dict[str, str] | None:
    return next((r for r in rows if r["status"] == "ok"), rows[0] if rows else None)


def headlines(rows: list[dict[str, str]]) -> list[Headline]:
    """The headline of each family among one card's rows of one run, in family order."""
    out: list[Headline] = []

    def add(name: str, family: str, ordered: list[dict[str, str]]) -> None:
        row = _first_ok(ordered)
        if row is not None:
            out.append(Headline(name, family, row))

    def rank(order: tuple[str, ...]):
        return lambda r: order.index(r["provider"]) if r["provider"] in order else len(order)

    memory = [r for r in rows if r["family"] == "memory" and r["benchmark"] == "copy" and r["case"] == "plateau"]
    add("memory copy", "memory", sorted(memory, key=rank(("triton", "torch"))))

    by_provider = rank(("torch", "triton"))
    for dtype in MATMUL_DTYPES:
        mm = [r for r in rows if r["family"] == "matmul" and r["benchmark"] == dtype]
        searched = [r for r in mm if r["case"] in ("best", "best-fastacc")]
        fixed = [r for r in mm if r["case"] not in ("best", "best-fastacc") and not r["case"].endswith("-fastacc")]
        fixed.sort(key=lambda r: (-_number(r["work"]), by_provider(r)))
        add(f"matmul {dtype}", "matmul", searched + fixed)

    for direction in TRANSFER_DIRECTIONS:
        copies = [r for r in rows if r["family"] == "transfer" and r["benchmark"] == direction
                  and r["case"].startswith("pinned-")]
        add(f"transfer {direction}", "transfer", sorted(copies, key=lambda r: -_number(r["size_bytes"])))

    peaks = [r for r in rows if r["family"] == "collective" and r["benchmark"] == "all_reduce" and r["case"] == "peak"]
    for dtype in sorted({r["dtype"] for r in peaks}, key=lambda d: (d != "bf16", d)):
        add(f"collective all_reduce {dtype}", "collective", [r for r in peaks if r["dtype"] == dtype])
    return out
