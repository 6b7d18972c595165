"""fp8 and fp4 against bf16 in the matmul family: the silent-emulation flag on a row, and the
dtype ladder printed after the table (bf16 -> fp8 -> fp4, measured versus claimed)."""
from __future__ import annotations

from ..core.devices import Target
from ..core.harness import Case
from ..core.normalize import claim_key
from ..core.results import device_of
from .matmul_gemm import FP4

NAME = "matmul"
CLEARLY_FASTER = 1.25  # fp8/fp4 below this multiple of bf16, where the spec claims >= 1.5x: flagged


def value_key(target: Target, provider: str, recipe: str, casename: str) -> tuple:
    return ("matmul-value", str(target.device), provider, recipe, casename.removesuffix("-fastacc"))


def claimed_ratio(spec, recipe: str) -> float | None:
    """What the spec entry claims for `recipe` over bf16 (dense figures); None without both."""
    if spec is None:
        return None
    low = spec.figures.get(claim_key(NAME, recipe, recipe) or "")
    bf16 = spec.figures.get(claim_key(NAME, "bf16", "bf16") or "")
    return low.value / bf16.value if low and bf16 and bf16.value > 0 else None


def emulation_note(target: Target, case: Case, value: float, values: dict) -> str:
    """fp8/fp4 not clearly faster than bf16 on a card whose spec says it should be: say so."""
    if case.spec.recipe not in ("fp8", *FP4):
        return ""
    bf16 = values.get(value_key(target, case.provider, "bf16", case.name))
    claimed = claimed_ratio(target.spec, case.spec.recipe)
    if not bf16 or claimed is None or claimed < 1.5:
        return ""
    measured = value / bf16
    if measured >= CLEARLY_FASTER:
        return ""
    return (f"not clearly faster than bf16 ({measured:.2f}x at this shape; the spec claims {claimed:.1f}x): "
            f"{case.spec.recipe} may be emulated here")


# ---------------------------------------------------------------------------------------
# The dtype ladder: bf16 -> fp8 -> fp4, measured versus claimed.

LADDER = (("bf16", ("bf16",)), ("fp8", ("fp8",)), ("fp4", FP4))
LADDER_RECIPES = {r for _, recipes in LADDER for r in recipes}


def summary_lines(rows: list[dict]) -> list[str]:
    """Per device and provider with a measured rung: the best row of each rung, and its ratio to
    the rung below, measured and (where the spec entry has both figures) claimed."""
    groups: dict[tuple[str, str], list[dict]] = {}
    for r in rows:
        if r.get("family") == NAME:
            where = device_of(r)
            groups.setdefault((f"{where} {r.get('device_name', '')}".strip(), r["provider"]), []).append(r)
    lines = []
    for (device, provider), group in groups.items():
        if not any(r["status"] == "ok" and r["benchmark"] in LADDER_RECIPES for r in group):
            continue
        rungs, below = [], None
        for rung, recipes in LADDER:
            mine = [r for r in group if r["benchmark"] in recipes]
            ok = [r for r in mine if r["status"] == "ok"]
            if not ok:
                if mine:
                    rungs.append(f"{rung} {mine[0]['status']} ({mine[0]['message']})")
                continue
            best = max(ok, key=lambda r: float(r["value"]))
            name = rung if best["benchmark"] == rung else f"{rung} ({best['benchmark']})"
            text = f"{name} {float(best['value']):,.1f} {best['unit']}"
            if below is not None:
                text += f" ({float(best['value']) / float(below['value']):.2f}x {below['benchmark']}"
                if best.get("spec_value") not in (None, "") and below.get("spec_value") not in (None, ""):
                    text += f"; spec {float(best['spec_value']) / float(below['spec_value']):.2f}x"
                text += ")"
            rungs.append(text)
            below = best
        lines.append(f"dtype ladder, {device}, {provider} (best row per dtype): " + " -> ".join(rungs))
    return lines
