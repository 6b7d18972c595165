"""torch GEMM calls of the matmul family (its "torch" provider) and the references they are checked against.

No Triton import here, so the torch provider runs where Triton is not installed. Layout
everywhere: A row-major (M, K), B column-major (K, N), i.e. B = w.t() of a contiguous (N, K)
w -- the "TN" layout, the only one cuBLASLt's FP8 GEMM takes on Hopper (cublasLtMatmul's FP8
requirements, https://docs.nvidia.com/cuda/cublas/#cublasltmatmul); mamf-finder builds B the same
way (https://github.com/stas00/ml-engineering/blob/master/compute/accelerator/benchmarks/mamf-finder.py).
"""
from __future__ import annotations

from contextlib import contextmanager

import torch

# F.scaled_mm's block recipes (torch >= 2.10); looked up at call time so older torch imports this.
_F_RECIPE = {"mxfp4": "BlockWise1x32", "nvfp4": "BlockWise1x16"}


@contextmanager
def fp32_precision(tf32: bool):
    """TF32 on or off for fp32 matmuls, restored afterwards.

    torch.set_float32_matmul_precision is the one switch every torch since 1.12 honours;
    mixing the legacy allow_tf32 flag with the newer fp32_precision one raises in torch 2.9+.
    """
    before = torch.get_float32_matmul_precision()
    torch.set_float32_matmul_precision("high" if tf32 else "highest")
    try:
        yield
    finally:
        torch.set_float32_matmul_precision(before)


def mm(a: torch.Tensor, b: torch.Tensor, out: torch.Tensor, tf32: bool = False) -> torch.Tensor:
    """out = a @ b (fp32, tf32, bf16, fp16): torch.mm, cuBLAS on a GPU."""
    with fp32_precision(tf32):
        return torch.mm(a, b, out=out)


def int_mm(a: torch.Tensor, b: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
    """out (int32) = a (int8) @ b (int8): torch._int_mm, cuBLASLt's IMMA path on a GPU."""
    return torch._int_mm(a, b, out=out)


def scaled_mm_fp8(a, b, scale_a, scale_b, out: torch.Tensor | None, fast_accum: bool) -> torch.Tensor:
    """out (bf16) = (a * scale_a) @ (b * scale_b), e4m3 inputs with fp32 per-tensor scales."""
    if out is None:
        return torch._scaled_mm(a, b, scale_a, scale_b, out_dtype=torch.bfloat16, use_fast_accum=fast_accum)
    return torch._scaled_mm(a, b, scale_a, scale_b, out_dtype=torch.bfloat16, use_fast_accum=fast_accum, out=out)


def scaled_mm_fp4(a, b, scale_a, scale_b, out: torch.Tensor | None, recipe: str, api: str) -> torch.Tensor:
    """bf16 = block-scaled e2m1 a (M, K/2) @ b (K/2, N), with swizzled scales (kernels.quant.to_blocked).

    api "_scaled_mm": torch._scaled_mm infers the recipe from the dtypes (e8m0 scales: MXFP4,
    e4m3 scales: NVFP4), torch >= 2.8. api "F.scaled_mm": torch.nn.functional.scaled_mm with
    the recipe and swizzle spelled out (torch >= 2.10); it has no `out`.
    """
    if api == "_scaled_mm":
        if out is None:
            return torch._scaled_mm(a, b, scale_a, scale_b, out_dtype=torch.bfloat16)
        return torch._scaled_mm(a, b, scale_a, scale_b, out_dtype=torch.bfloat16, out=out)
    F = torch.nn.functional
    recipe_type = getattr(F.ScalingType, _F_RECIPE[recipe])
    swizzle = F.SwizzleType.SWIZZLE_32_4_4
    return F.scaled_mm(a, b, scale_a, recipe_type, scale_b, recipe_type, swizzle_a=swizzle, swizzle_b=swizzle,
                       output_dtype=torch.bfloat16)


def reference(a: torch.Tensor, b: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """a @ b in `dtype` (fp32 with TF32 off, or fp64): what the low-precision result is checked against."""
    with fp32_precision(False):
        return torch.mm(a.to(dtype), b.to(dtype))


def relative_error(got: torch.Tensor, want: torch.Tensor) -> float:
    """||got - want|| / ||want|| (Frobenius); inf when got has a NaN or infinity."""
    diff = float(torch.linalg.vector_norm(got.to(want.dtype) - want))
    norm = float(torch.linalg.vector_norm(want))
    if diff != diff or diff == float("inf"):
        return float("inf")
    return diff / norm if norm > 0 else diff
