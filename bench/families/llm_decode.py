"""Decode-shaped GEMMs of the llm family: one layer's weight times the few token vectors of a decode step.

Generating one token reads every weight of the model once and does 2 FLOP per weight per
sequence, so at small batches the rate that decides tokens per second is how fast the weights
stream from memory, not the tensor-core peak. The row is the effective bandwidth of the bytes
that must move: the weight, the input vectors and the output vectors, each once.

Layout as the matmul family's (kernels/matmul_ref.py): x row-major (M, K), the weight an
nn.Linear (N, K) matrix used as w.t(), random normal values, never zeros.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Callable

import torch

from ..kernels import matmul_ref as ref
from ..kernels import quant

# Llama 3.1 70B's MLP gate and up projections: hidden_size 8192 -> intermediate_size 28672
# (https://huggingface.co/meta-llama/Llama-3.1-70B/blob/main/config.json), as nn.Linear (N, K).
WEIGHT = (28672, 8192)
# CPU mode checks the pipeline: the same aspect at 1/8 per side (7 MiB of bf16 weights, not 470).
CPU_WEIGHT = (3584, 1024)
BATCHES = (1, 4, 16, 64)
CPU_BATCHES = (1, 64)
ELEMENT_BYTES = {"bf16": 2, "fp8": 1}
OUT_BYTES = 2  # bf16 outputs for both
# As the matmul family's recipes: relative Frobenius error against an fp32 product of the very
# inputs (dequantized for fp8); what is left is accumulation order and the bf16 output rounding.
TOLERANCE = {"bf16": 1e-2, "fp8": 2e-2}
FP8_MIN_CC = (8, 9)


@dataclass(frozen=True)
class Gemv:
    """out (M, N) = x (M, K) @ w.t() with w (N, K): the harness Case's `spec` for decode_gemm rows."""

    dtype: str
    m: int
    n: int
    k: int


def shape_name(g: Gemv) -> str:
    return f"{g.m}x{g.n}x{g.k}"


def flops(g: Gemv) -> int:
    return 2 * g.m * g.n * g.k


def bytes_moved(g: Gemv) -> int:
    """Weight + input vectors (in the GEMM's dtype) + bf16 outputs, each once; fp8 adds its two fp32 scales."""
    e = ELEMENT_BYTES[g.dtype]
    return g.n * g.k * e + g.m * g.k * e + g.m * g.n * OUT_BYTES + (8 if g.dtype == "fp8" else 0)


def params(g: Gemv) -> dict:
    return {"m": g.m, "n": g.n, "k": g.k, "out_dtype": "bf16", "flops": flops(g), "bytes": bytes_moved(g),
            "bytes_counted": "weight (N x K) + input vectors (M x K) + bf16 outputs (M x N), each once",
            "layout": "x row-major (M, K), weight (N, K) used as w.t()", "inputs": "randn",
            **({"api": "torch._scaled_mm", "scales": "fp32 per tensor", "fast_accum": False}
               if g.dtype == "fp8" else {"api": "torch.mm"})}


def capability(target) -> tuple[int, int]:
    text = target.identity.get("compute_capability", "")
    if re.fullmatch(r"\d+\.\d+", text):
        major, minor = text.split(".")
        return int(major), int(minor)
    return torch.cuda.get_device_capability(target.device)


def static_reason(target, g: Gemv) -> str | None:
    """fp8: the torch dtype and GEMM, then the card's compute capability (FP8 tensor cores: 8.9+)."""
    if g.dtype != "fp8":
        return None
    missing = [n for n in ("float8_e4m3fn", "_scaled_mm") if not hasattr(torch, n)]
    if missing:
        return f"this torch ({torch.__version__}) has no {missing[0]}"
    if target.is_cuda and capability(target) < FP8_MIN_CC:
        cc = capability(target)
        return f"FP8 tensor cores need compute capability 8.9 or newer; this card is {cc[0]}.{cc[1]}"
    return None


@dataclass
class Built:
    launch: Callable[[], object]
    out: torch.Tensor
    out_rand: torch.Tensor
    want: Callable[[], torch.Tensor]
    tolerance: float


def build(device, g: Gemv, seed: int = 3) -> Built:
    gen = torch.Generator(device=device).manual_seed(seed)
    x = torch.randn(g.m, g.k, device=device, generator=gen)
    w = torch.randn(g.n, g.k, device=device, generator=gen)
    out = torch.empty(g.m, g.n, dtype=torch.bfloat16, device=device)
    if g.dtype == "bf16":
        a, b = x.to(torch.bfloat16), w.to(torch.bfloat16).t()
        launch = lambda: ref.mm(a, b, out)  # noqa: E731
        want = lambda: ref.reference(a, b)  # noqa: E731
    else:
        a, scale_a = quant.quantize_fp8(x)
        w8, scale_b = quant.quantize_fp8(w)
        b = w8.t()
        launch = lambda: ref.scaled_mm_fp8(a, b, scale_a, scale_b, out, False)  # noqa: E731
        want = lambda: ref.reference(a.float() * scale_a, b.float() * scale_b)  # noqa: E731
    del x, w
    out_rand = torch.randn(out.shape, device=device, generator=gen).to(out.dtype)
    return Built(launch, out, out_rand, want, TOLERANCE[g.dtype])


def check(built: Built) -> str | None:
    """Once into a re-randomized output (a kernel that writes nothing cannot pass), against the reference."""
    built.out.copy_(built.out_rand)
    built.launch()
    err = ref.relative_error(built.out, built.want())
    if not err <= built.tolerance:
        return f"relative error {err:.3g} against the fp32 product of the same inputs is above {built.tolerance:g}"
    return None


def trial(device, g: Gemv) -> str | None:
    """The GEMM once at the case's M with a small weight (256 x 256): None when it runs, else its error."""
    try:
        build(device, Gemv(g.dtype, g.m, 256, 256)).launch()
    except Exception as e:  # the trial's point: this torch or card cannot run it
        return " ".join(f"{type(e).__name__}: {e}".split())[:500]
    return None
