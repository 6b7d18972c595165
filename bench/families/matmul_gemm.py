"""One GEMM of the matmul family, ready to verify and time: the recipes, their inputs, the call
and the reference it is checked against (bench/families/matmul.py plans, probes and tunes them).

Layout (kernels/matmul_ref.py): A row-major (M, K), B column-major (K, N) -- B = w.t() of a
contiguous (N, K) w, as mamf-finder builds it and the only layout Hopper's FP8 GEMM takes.
Inputs are random normal, never zeros (zeros draw less power and run faster); fp8, int8 and
fp4 quantize them, and the reference is the product of the very inputs the GEMM sees
(dequantized for fp8 and fp4), in fp32 -- fp64 for fp32 and int8.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Callable

import torch

from ..core.devices import Target
from ..kernels import matmul_ref as ref
from ..kernels import quant

Shape = tuple[int, int, int]


@dataclass(frozen=True)
class Recipe:
    name: str  # the `benchmark` and `dtype` columns (bench.core.specs.claim_key knows each)
    tolerance: float  # relative Frobenius error allowed against the reference; 0: exact
    min_cc: tuple[int, int]  # compute capability of the tensor-core path
    cc_reason: str  # what unsupported says below min_cc
    torch_needs: tuple[str, ...] = ()  # torch attributes the torch provider needs
    triton_needs: tuple[str, ...] = ()  # torch attributes the Triton provider needs
    triton: bool = False  # has a Triton provider


# Tolerances: the reference uses the same (rounded or quantized) inputs, so what is left is
# accumulation order and the output rounding: bf16 output ~2^-9, fp16 ~2^-11 relative per
# element, tf32 inputs ~2^-11; a wrong kernel is off by order 1. fp32 at 1e-4 also catches a
# GEMM that silently ran in TF32 (~5e-4).
_FP4_REASON = "FP4 tensor cores need compute capability 10.0 or 12.0"
RECIPES = {r.name: r for r in (
    Recipe("bf16", 1e-2, (8, 0), "BF16 tensor cores need compute capability 8.0 or newer", triton=True),
    Recipe("fp16", 5e-3, (7, 0), "FP16 tensor cores need compute capability 7.0 or newer", triton=True),
    Recipe("fp32", 1e-4, (0, 0), ""),
    Recipe("tf32", 5e-3, (8, 0), "TF32 tensor cores need compute capability 8.0 or newer"),
    Recipe("int8", 0.0, (7, 5), "INT8 tensor cores need compute capability 7.5 or newer", ("_int_mm",)),
    Recipe("fp8", 2e-2, (8, 9), "FP8 tensor cores need compute capability 8.9 or newer",
           ("float8_e4m3fn", "_scaled_mm"), ("float8_e4m3fn",), triton=True),
    Recipe("mxfp4", 2e-2, (10, 0), _FP4_REASON, ("float4_e2m1fn_x2", "float8_e8m0fnu"), triton=True),
    Recipe("nvfp4", 2e-2, (10, 0), _FP4_REASON, ("float4_e2m1fn_x2", "float8_e4m3fn")),
)}
FP4 = ("mxfp4", "nvfp4")


@dataclass
class Built:
    """One GEMM ready to run: `launch` runs it once, `out` receives the result (None: returned)."""

    launch: Callable[[], object]
    out: torch.Tensor | None
    out_rand: torch.Tensor | None
    want: Callable[[], torch.Tensor]  # the reference result
    tolerance: float
    work: float
    size_bytes: int
    params: dict = field(default_factory=dict)

    def run(self) -> torch.Tensor:
        result = self.launch()
        return self.out if self.out is not None else result


def shape_name(shape: Shape) -> str:
    return "x".join(map(str, shape))


def flops(shape: Shape) -> int:
    """Work of one GEMM: M*N*K multiply-adds, two operations each."""
    m, n, k = shape
    return 2 * m * n * k


def unit_and_scale(target: Target, recipe: str) -> tuple[str, float, str]:
    """(unit, scale, work_unit): TFLOP/s on a GPU, GFLOP/s on the host (TOPS/GOPS for int8)."""
    big = target.is_cuda
    if recipe == "int8":
        return ("TOPS", 1e12, "OP") if big else ("GOPS", 1e9, "OP")
    return ("TFLOP/s", 1e12, "FLOP") if big else ("GFLOP/s", 1e9, "FLOP")


def capability(target: Target) -> tuple[int, int]:
    text = target.identity.get("compute_capability", "")
    if re.fullmatch(r"\d+\.\d+", text):
        major, minor = text.split(".")
        return int(major), int(minor)
    return torch.cuda.get_device_capability(target.device)


def build(target: Target, case, shape: Shape, config=None, api: str = "") -> Built:
    """Inputs (random normal), output buffers, the call and its reference for one GEMM.

    `case` is a bench.families.matmul.Case (recipe, provider, fast_accum); `config` the Triton
    configuration; `api` the torch FP4 entry point the capability trial settled on.
    """
    m, n, k = shape
    dev = target.device
    gen = torch.Generator(device=dev).manual_seed(m * 1_000_003 + n * 1009 + k)
    # Random normal data, never zeros: zeros draw less power and run faster ("Strangely, Matrix
    # Multiplications on GPUs Run Faster When Given 'Predictable' Data!",
    # https://www.thonking.ai/p/strangely-matrix-multiplications).
    x = torch.randn(m, k, device=dev, generator=gen)
    w = torch.randn(n, k, device=dev, generator=gen)  # B = w.t(): column-major (K, N)
    r = case.spec.recipe
    params: dict = {"m": m, "n": n, "k": k, "layout": "A row-major (M,K), B column-major (K,N)", "inputs": "randn"}
    if case.provider == "triton":
        params.update(config=config.as_dict(), config_label=config.label())
    make = (_float if r in ("fp32", "tf32", "bf16", "fp16") else _int8 if r == "int8" else _fp8 if r == "fp8"
            else _fp4)
    g = make(target, case, x, w, config, api, params)
    del x, w
    # F.scaled_mm has no `out`: it allocates its result, so there is no output to re-randomize.
    c = None if api == "F.scaled_mm" else torch.empty(m, n, dtype=g.out_dtype, device=dev)
    c_rand = None if c is None else _random_like(c, gen)
    element = {"fp32": 4, "tf32": 4, "bf16": 2, "fp16": 2, "int8": 1, "fp8": 1, "mxfp4": 0.5, "nvfp4": 0.5}[r]
    size = int(element * (m + n) * k) + g.scales_bytes + m * n * torch.empty((), dtype=g.out_dtype).element_size()
    return Built(lambda: g.call(c), c, c_rand, g.want, RECIPES[r].tolerance, flops(shape), size, params)


@dataclass
class _Gemm:
    """One recipe's operands, made ready: the call (given the output buffer), its reference."""

    call: Callable[[torch.Tensor | None], object]
    want: Callable[[], torch.Tensor]
    out_dtype: torch.dtype
    scales_bytes: int = 0


def _float(target: Target, case, x, w, config, api: str, params: dict) -> _Gemm:
    """fp32 (TF32 off), tf32, bf16, fp16: torch.mm or Triton's tl.dot."""
    r = case.spec.recipe
    dt = {"fp32": torch.float32, "tf32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[r]
    a, b = x.to(dt), w.to(dt).t()
    want_dtype = torch.float64 if r == "fp32" else torch.float32
    params.update(out_dtype=r if r != "tf32" else "fp32", accumulate="fp32",
                  reference="fp64" if r == "fp32" else "fp32")
    if r in ("fp32", "tf32"):
        params["fp32_matmul_precision"] = "high (TF32)" if r == "tf32" else "highest (TF32 off)"
    if case.provider == "torch":
        params["api"] = "torch.mm"
        call = lambda c: ref.mm(a, b, c, tf32=r == "tf32")  # noqa: E731
    else:
        from ..kernels import matmul as km
        call = lambda c: km.triton_matmul(a, b, c, config)  # noqa: E731
    return _Gemm(call, lambda: ref.reference(a, b, want_dtype), dt)


def _int8(target: Target, case, x, w, config, api: str, params: dict) -> _Gemm:
    def to_int8(t):  # normal values at 32 per unit: most of int8's range, never saturating much
        return (t * 32).round().clamp(-127, 127).to(torch.int8)
    a, b = to_int8(x), to_int8(w).t()
    params.update(api="torch._int_mm", out_dtype="int32", accumulate="int32", reference="fp64, exact")
    # exact: |sums| << 2^53
    return _Gemm(lambda c: ref.int_mm(a, b, c), lambda: ref.reference(a, b, torch.float64), torch.int32)


def _fp8(target: Target, case, x, w, config, api: str, params: dict) -> _Gemm:
    """e4m3 with fp32 per-tensor scales, bf16 out: torch._scaled_mm or Triton's tl.dot."""
    a, scale_a = quant.quantize_fp8(x)
    w8, scale_b = quant.quantize_fp8(w)
    b = w8.t()
    params.update(out_dtype="bf16", scales="fp32 per tensor", reference="fp32 of the dequantized inputs")
    if case.provider == "torch":
        call = lambda c: ref.scaled_mm_fp8(a, b, scale_a, scale_b, c, case.spec.fast_accum)  # noqa: E731
        params.update(api="torch._scaled_mm", fast_accum=case.spec.fast_accum)
    else:
        from ..kernels import matmul as km
        scale = float(scale_a * scale_b)
        call = lambda c: km.triton_matmul(a, b, c, config, scale)  # noqa: E731
        # Triton's default on sm_90 accumulates fp8 products like cuBLAS fast accumulation.
        params["fast_accum"] = target.is_cuda and capability(target) == (9, 0)
    want = lambda: ref.reference(a.float() * scale_a, b.float() * scale_b)  # noqa: E731
    return _Gemm(call, want, torch.bfloat16, scales_bytes=8)


def _fp4(target: Target, case, x, w, config, api: str, params: dict) -> _Gemm:
    """mxfp4 / nvfp4 (block-scaled e2m1, bf16 out): torch's scaled matmul on swizzled scales, or
    Triton's tl.dot_scaled (MXFP4) on row-major scales."""
    r = case.spec.recipe
    quantize, dequantize = ((quant.quantize_mx, quant.dequantize_mx) if r == "mxfp4"
                            else (quant.quantize_nv, quant.dequantize_nv))
    pa, sa = quantize(x)
    pb, sb = quantize(w)
    want = lambda: ref.reference(dequantize(pa, sa), dequantize(pb, sb).t())  # noqa: E731
    block = quant.MX_BLOCK if r == "mxfp4" else quant.NV_BLOCK
    params.update(out_dtype="bf16", block=block, reference="fp32 of the dequantized inputs",
                  scales="e8m0" if r == "mxfp4" else "e4m3")
    if case.provider == "torch":
        fp4 = torch.float4_e2m1fn_x2
        a, b = pa.view(fp4), pb.view(fp4).t()
        if r == "mxfp4":
            blocked_a, blocked_b = (quant.to_blocked(s).view(torch.float8_e8m0fnu) for s in (sa, sb))
        else:
            blocked_a, blocked_b = quant.to_blocked(sa), quant.to_blocked(sb)
        params.update(api="torch._scaled_mm" if api == "_scaled_mm" else "torch.nn.functional.scaled_mm",
                      scale_layout="swizzled 128x4 (cuBLAS)")
        call = lambda c: ref.scaled_mm_fp4(a, b, blocked_a, blocked_b, c, r, api)  # noqa: E731
        return _Gemm(call, want, torch.bfloat16, blocked_a.numel() + blocked_b.numel())
    from ..kernels import matmul as km
    params["scale_layout"] = "row-major (rows, K/32)"
    call = lambda c: km.triton_mxfp4_matmul(pa, sa, pb, sb, c, config)  # noqa: E731
    return _Gemm(call, want, torch.bfloat16, sa.numel() + sb.numel())


def _random_like(c: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    if c.dtype == torch.int32:
        return torch.randint(-2**20, 2**20, c.shape, dtype=c.dtype, device=c.device, generator=gen)
    return torch.randn(c.shape, device=c.device, generator=gen).to(c.dtype)


def check(built: Built) -> str | None:
    """Run once into a re-randomized output and compare with the reference; None when right."""
    if built.out is not None:
        built.out.copy_(built.out_rand)  # a kernel that writes nothing cannot pass
    got = built.run()
    want = built.want()
    if built.tolerance == 0:
        bad = int((got.to(want.dtype) != want).sum())
        return f"{bad} of {want.numel()} elements differ from the exact fp64 reference" if bad else None
    err = ref.relative_error(got, want)
    if not err <= built.tolerance:
        return (f"relative error {err:.3g} against the reference ({built.params.get('reference', 'fp32')}) "
                f"is above the tolerance {built.tolerance:g}")
    return None
