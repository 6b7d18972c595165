"""The matmul family's verification: each recipe's tolerance as the README states it, an error
three times the tolerance caught and a third of it passed (so a tolerance loosened or tightened
tenfold fails here), int8 checked exactly, and a GEMM that writes nothing caught."""
import re
from pathlib import Path

import pytest
import torch

from bench.core.devices import Target
from bench.families import matmul, matmul_gemm

REPO = Path(__file__).resolve().parent.parent
SHAPE = (64, 48, 128)


def cpu():
    return Target(torch.device("cpu"), None, {"device_name": "test CPU", "sm_count": "2"})


def built_for(recipe: str) -> matmul_gemm.Built:
    case = matmul.make_case(cpu(), recipe, "torch", matmul_gemm.shape_name(SHAPE), SHAPE)
    return matmul_gemm.build(cpu(), case, SHAPE)


def answering(built: matmul_gemm.Built, got: torch.Tensor) -> matmul_gemm.Built:
    """`built` with its GEMM replaced by one that writes `got`."""
    built.launch = lambda: built.out.copy_(got) if built.out is not None else got
    return built


def off_by(built: matmul_gemm.Built, relative: float) -> matmul_gemm.Built:
    """The reference plus random noise of `relative` times its Frobenius norm."""
    want = built.want()
    noise = torch.randn(want.shape, generator=torch.Generator().manual_seed(11), dtype=want.dtype)
    scale = relative * torch.linalg.vector_norm(want) / torch.linalg.vector_norm(noise)
    return answering(built, want + noise * scale)


def readme_tolerances() -> dict[str, str]:
    """The README matmul table's `checked against` column: recipe -> the bound it states."""
    section = (REPO / "README.md").read_text().split("## Matmul", 1)[1].split("\n## ", 1)[0]
    out = {}
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip("|").split("|")]
        if len(cells) != 4 or not cells[0].startswith("`"):
            continue
        names = re.findall(r"`(\w+)`", cells[0])
        bound = re.search(r"<= ([\d.e-]+(?: / [\d.e-]+)*)", cells[3])  # "<= 1e-2 / 5e-3": one per name
        bounds = bound.group(1).split(" / ") if bound else ["0" if "exact" in cells[3] else cells[3]]
        out.update(zip(names, bounds * len(names) if len(bounds) == 1 else bounds))
    return out


def stated_tolerances() -> dict[str, float]:
    stated = readme_tolerances()
    stated.update({r: stated["fp8"] for r, bound in stated.items() if bound == "as fp8"})
    return {r: float(b) for r, b in stated.items()}


def test_the_tolerances_are_the_readme_s():
    assert stated_tolerances() == {r: rec.tolerance for r, rec in matmul.RECIPES.items()}


@pytest.mark.parametrize("recipe", [r for r, rec in matmul.RECIPES.items() if rec.tolerance > 0])
def test_an_error_three_times_the_tolerance_is_caught_a_third_of_it_passes(recipe):
    tolerance = stated_tolerances()[recipe]  # the README's word, not the code's
    assert matmul_gemm.check(off_by(built_for(recipe), tolerance / 3)) is None
    message = matmul_gemm.check(off_by(built_for(recipe), 3 * tolerance))
    err = float(message.split()[2])
    assert 2.5 * tolerance < err < 3.5 * tolerance
    assert message == (f"relative error {err:.3g} against the reference "
                       f"({built_for(recipe).params['reference']}) is above the tolerance {tolerance:g}")


def test_a_nan_in_the_output_is_caught():
    built = built_for("bf16")
    got = built.want().clone()
    got[3, 4] = float("nan")
    assert "relative error inf" in matmul_gemm.check(answering(built, got))


def test_int8_is_checked_exactly():
    built = built_for("int8")
    want = built.want()
    assert want.dtype == torch.float64 and matmul_gemm.check(answering(built, want.to(torch.int32))) is None
    got = want.to(torch.int32)
    got[5, 7] += 1  # one element off by one
    assert matmul_gemm.check(answering(built_for("int8"), got)) == (
        f"1 of {SHAPE[0] * SHAPE[1]} elements differ from the exact fp64 reference")


@pytest.mark.parametrize("recipe", ["fp32", "int8", "fp8"])
def test_a_gemm_that_writes_nothing_is_caught(recipe):
    """The output holds the right answer from before: the check re-randomizes it first."""
    built = built_for(recipe)
    built.out.copy_(built.want().to(built.out.dtype))
    built.launch = lambda: None
    assert matmul_gemm.check(built) is not None


def test_the_real_cpu_gemms_pass_their_own_check():
    for recipe in ("fp32", "bf16", "int8"):
        assert matmul_gemm.check(built_for(recipe)) is None, recipe


def test_a_gemm_that_returns_its_result_is_checked_on_what_it_returns():
    """F.scaled_mm has no `out`: the result it returns is what is checked."""
    built = built_for("fp32")
    want = built.want()
    built.out, built.out_rand = None, None
    built.launch = lambda: want.float()
    assert matmul_gemm.check(built) is None
    built.launch = lambda: want.float() * 1.01
    assert matmul_gemm.check(built).startswith("relative error 0.01 ")


def test_host_rows_are_in_giga_units_int8_in_operations():
    assert matmul_gemm.unit_and_scale(cpu(), "int8") == ("GOPS", 1e9, "OP")
    assert matmul_gemm.unit_and_scale(cpu(), "bf16") == ("GFLOP/s", 1e9, "FLOP")
