"""Matmul kernels: a tiled `tl.dot` GEMM (bf16, fp16, fp8 e4m3) and a `tl.dot_scaled` GEMM (MXFP4).

Device code only. The GEMM is Triton's tutorial 03 design: one program per BLOCK_M x BLOCK_N
output tile, programs grouped GROUP_M tiles down a column so neighbouring programs share
A and B tiles in L2, fp32 accumulation, a K loop whose last step is masked (K need not be a
multiple of BLOCK_K). Rows and columns past the edge are wrapped back into the matrix for the
loads (in bounds without a mask) and masked at the store. Triton lowers `tl.dot` to wgmma on
compute capability 9.0, tcgen05.mma on 10.0 and mma.sync on 12.0 (the consumer Blackwell parts
have no wgmma or tcgen05), fp8 included (e4m3 operands in each); fp8 accumulates like cuBLAS's
fast accumulation on sm_90 (Triton's default max_num_imprecise_acc there).

`tl.dot_scaled` takes e2m1 packed two per byte along K (first element in the low nibble,
kernels/quant.py) and e8m0 scales per 32 elements, unswizzled (rows, K/32) uint8. Where the
target has block-scaled MMA Triton emits it: `tcgen05.mma ... kind::mxf4 ... block_scale` on
10.x, `mma.sync ... kind::mxf4nvf4.block_scale` on 12.x (PTX ISA, "Warp-level matrix multiply
with block scaling", https://docs.nvidia.com/cuda/parallel-thread-execution/); elsewhere
(9.0) it upcasts to bf16 -- bench/matmul.py looks for that in the PTX. On 10.x the
block-scaled tcgen05 MMA needs BLOCK_M >= 128: a 64-row tile compiles to the bf16 upcast too.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
import triton
import triton.language as tl

from . import limits


@dataclass(frozen=True)
class Config:
    """One point of the tuning space; every field is compile-time (one JIT compile each)."""

    block_m: int
    block_n: int
    block_k: int  # elements of K per step (unpacked: FP4 loads block_k / 2 bytes)
    group_m: int
    num_warps: int
    num_stages: int

    def label(self) -> str:
        return (f"{self.block_m}x{self.block_n}x{self.block_k} group={self.group_m} "
                f"warps={self.num_warps} stages={self.num_stages}")

    def as_dict(self) -> dict:
        return asdict(self)


# Starting points are the tutorial's top CUDA configurations (03-matrix-multiplication.py,
# 10-block-scaled-matmul.py). Not every one fits every card: `need` says what each takes, and
# the tuners drop those over the target's limits before compiling (kernels/limits.py).
# MXFP4 keeps K steps of 128-256 values with 8 warps: the tutorial's 128x256x256 (and the 4-warp
# 128x128x256) spill registers on 12.0 -- an fp32 accumulator, fp4 operand fragments and scales
# in mma.sync registers -- so each is replaced by the same output tile over a shorter K step.
_CONFIGS = {
    "16bit": {
        "quick": [Config(128, 256, 64, 8, 8, 3), Config(256, 128, 64, 8, 8, 3), Config(128, 128, 64, 8, 4, 4)],
        "full": [Config(64, 256, 64, 8, 4, 4), Config(128, 256, 64, 8, 8, 4), Config(128, 128, 128, 8, 8, 3),
                 Config(128, 64, 64, 8, 4, 4)],
    },
    "fp8": {
        "quick": [Config(128, 256, 128, 8, 8, 3), Config(256, 128, 128, 8, 8, 3), Config(128, 128, 128, 8, 4, 4)],
        "full": [Config(64, 256, 128, 8, 4, 4), Config(128, 256, 128, 8, 8, 4), Config(128, 128, 256, 8, 8, 3)],
    },
    "mxfp4": {
        "quick": [Config(128, 256, 128, 8, 8, 3), Config(128, 128, 256, 8, 8, 3), Config(128, 128, 128, 8, 8, 4)],
        "full": [Config(256, 128, 128, 8, 8, 3), Config(128, 256, 128, 8, 8, 4)],
    },
}
RECIPE_SPACE = {"bf16": "16bit", "fp16": "16bit", "fp8": "fp8", "mxfp4": "mxfp4"}


def configs(recipe: str, profile: str) -> list[Config]:
    """Tuning space for a recipe: "quick" (3 configs) or "full" (quick plus 2-4 more)."""
    space = _CONFIGS[RECIPE_SPACE[recipe]]
    if profile == "quick":
        return list(space["quick"])
    if profile == "full":
        return space["quick"] + space["full"]
    raise ValueError(f"unknown profile {profile!r}; expected 'quick' or 'full'")


OPERAND_BYTES = {"bf16": 2, "fp16": 2, "fp8": 1, "mxfp4": 0.5}


def need(config: Config, recipe: str, capability: tuple[int, int]) -> limits.Need:
    """Shared memory Triton allocates for `config` on `capability`, and a floor for its registers.

    Pipelining keeps num_stages A+B tiles in shared memory where the MMA reads its operands
    there while the next tiles load (wgmma on 9.x, tcgen05 on 10.x), num_stages - 1 where they
    pass through registers (mma.sync on 8.x and 12.x) -- and for tl.dot_scaled on 10.x, whose
    MMA waits; block-scaled MMA adds one tile of scales. That is what Triton 3.6 and 3.9
    allocate (tests/test_kernel_build.py checks each configuration against the compiler).
    tl.dot_scaled below 10.0 (upcast to bf16) is not modelled: the benchmark does not run it.
    The fp32 accumulator takes one register per element and thread, except under tcgen05,
    which keeps it in tensor memory.
    """
    c = config
    stage = int((c.block_m + c.block_n) * c.block_k * OPERAND_BYTES[recipe])
    async_mma = capability[0] in (9, 10) and recipe != "mxfp4"
    shared = (c.num_stages if async_mma else c.num_stages - 1) * stage
    if recipe == "mxfp4":
        shared += max(c.block_m, c.block_n) * c.block_k // 32
    threads = 32 * c.num_warps
    accumulator = 0 if capability[0] == 10 else c.block_m * c.block_n // threads
    return limits.Need(shared, accumulator, threads)


def fitting(recipe: str, profile: str, target: limits.Limits) -> tuple[list[Config], dict[str, str]]:
    """The recipe's configurations that fit `target`, and why each other one does not."""
    return limits.prune(configs(recipe, profile), target, lambda c: need(c, recipe, target.capability))


@triton.jit
def _tile_ids(M, N, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, GROUP_M: tl.constexpr):
    """(pid_m, pid_n) of this program, GROUP_M tiles down a column before moving right."""
    pid = tl.program_id(0)
    num_pid_m = tl.cdiv(M, BLOCK_M)
    num_pid_n = tl.cdiv(N, BLOCK_N)
    in_group = GROUP_M * num_pid_n
    first_m = (pid // in_group) * GROUP_M
    group_size = min(num_pid_m - first_m, GROUP_M)
    return first_m + (pid % in_group) % group_size, (pid % in_group) // group_size


@triton.jit
def _store_tile(c_ptr, acc, M, N, stride_cm, stride_cn, pid_m, pid_n,
                BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr):
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    c_ptrs = c_ptr + offs_m[:, None] * stride_cm + offs_n[None, :] * stride_cn
    tl.store(c_ptrs, acc.to(c_ptr.dtype.element_ty), mask=(offs_m[:, None] < M) & (offs_n[None, :] < N))


@triton.jit
def _matmul_kernel(a_ptr, b_ptr, c_ptr, M, N, K, stride_am, stride_ak, stride_bk, stride_bn, stride_cm, stride_cn,
                   scale, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
                   GROUP_M: tl.constexpr, SCALED: tl.constexpr):
    pid_m, pid_n = _tile_ids(M, N, BLOCK_M, BLOCK_N, GROUP_M)
    offs_am = (pid_m * BLOCK_M + tl.arange(0, BLOCK_M)) % M
    offs_bn = (pid_n * BLOCK_N + tl.arange(0, BLOCK_N)) % N
    offs_k = tl.arange(0, BLOCK_K)
    a_ptrs = a_ptr + offs_am[:, None] * stride_am + offs_k[None, :] * stride_ak
    b_ptrs = b_ptr + offs_k[:, None] * stride_bk + offs_bn[None, :] * stride_bn
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    for k in range(0, tl.cdiv(K, BLOCK_K)):
        k_left = K - k * BLOCK_K
        a = tl.load(a_ptrs, mask=offs_k[None, :] < k_left, other=0.0)
        b = tl.load(b_ptrs, mask=offs_k[:, None] < k_left, other=0.0)
        acc = tl.dot(a, b, acc)
        a_ptrs += BLOCK_K * stride_ak
        b_ptrs += BLOCK_K * stride_bk
    if SCALED:  # fp8: the per-tensor scales, applied once to the fp32 accumulator as cuBLAS does
        acc = acc * scale
    _store_tile(c_ptr, acc, M, N, stride_cm, stride_cn, pid_m, pid_n, BLOCK_M, BLOCK_N)


@triton.jit
def _mxfp4_kernel(a_ptr, as_ptr, b_ptr, bs_ptr, c_ptr, M, N, K,
                  stride_am, stride_ak, stride_bn, stride_bk, stride_asm, stride_ask, stride_bsn, stride_bsk,
                  stride_cm, stride_cn, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
                  GROUP_M: tl.constexpr):
    pid_m, pid_n = _tile_ids(M, N, BLOCK_M, BLOCK_N, GROUP_M)
    offs_am = (pid_m * BLOCK_M + tl.arange(0, BLOCK_M)) % M
    offs_bn = (pid_n * BLOCK_N + tl.arange(0, BLOCK_N)) % N
    offs_kp = tl.arange(0, BLOCK_K // 2)  # bytes: two e2m1 values each
    offs_ks = tl.arange(0, BLOCK_K // 32)  # one e8m0 scale per 32 values
    a_ptrs = a_ptr + offs_am[:, None] * stride_am + offs_kp[None, :] * stride_ak
    b_ptrs = b_ptr + offs_kp[:, None] * stride_bk + offs_bn[None, :] * stride_bn
    as_ptrs = as_ptr + offs_am[:, None] * stride_asm + offs_ks[None, :] * stride_ask
    bs_ptrs = bs_ptr + offs_bn[:, None] * stride_bsn + offs_ks[None, :] * stride_bsk
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    for k in range(0, tl.cdiv(K, BLOCK_K)):
        k_left = K - k * BLOCK_K  # a multiple of 32: masked values are 0 with scale 2^0
        a = tl.load(a_ptrs, mask=offs_kp[None, :] < k_left // 2, other=0)
        b = tl.load(b_ptrs, mask=offs_kp[:, None] < k_left // 2, other=0)
        a_scale = tl.load(as_ptrs, mask=offs_ks[None, :] < k_left // 32, other=127)
        b_scale = tl.load(bs_ptrs, mask=offs_ks[None, :] < k_left // 32, other=127)
        acc = tl.dot_scaled(a, a_scale, "e2m1", b, b_scale, "e2m1", acc)
        a_ptrs += (BLOCK_K // 2) * stride_ak
        b_ptrs += (BLOCK_K // 2) * stride_bk
        as_ptrs += (BLOCK_K // 32) * stride_ask
        bs_ptrs += (BLOCK_K // 32) * stride_bsk
    _store_tile(c_ptr, acc, M, N, stride_cm, stride_cn, pid_m, pid_n, BLOCK_M, BLOCK_N)


def _grid(m: int, n: int, config: Config) -> tuple[int]:
    return (triton.cdiv(m, config.block_m) * triton.cdiv(n, config.block_n),)


def _check_32bit(*tensors: torch.Tensor) -> None:
    # Offsets are 32-bit element indices (Triton's default): keep every operand below 2**31.
    for t in tensors:
        if t.numel() >= 2**31:
            raise ValueError(f"operand of {t.numel()} elements: the kernels index with 32-bit offsets")


def triton_matmul(a: torch.Tensor, b: torch.Tensor, c: torch.Tensor, config: Config, scale: float | None = None):
    """c = a @ b (times `scale` when given): a (M, K), b (K, N) in any strides; c (M, N).

    bf16/fp16 or float8_e4m3fn inputs, fp32 accumulation, c's dtype on output. Returns what
    the launch returns (the compiled kernel, whose .asm holds the PTX; None when interpreted).
    """
    (m, k), (k2, n) = a.shape, b.shape
    if k != k2 or c.shape != (m, n) or a.dtype != b.dtype:
        raise ValueError(f"shapes/dtypes do not chain: a {tuple(a.shape)} {a.dtype}, b {tuple(b.shape)} {b.dtype}, "
                         f"c {tuple(c.shape)}")
    _check_32bit(a, b, c)
    if m == 0 or n == 0:
        return None
    return _matmul_kernel[_grid(m, n, config)](
        a, b, c, m, n, k, a.stride(0), a.stride(1), b.stride(0), b.stride(1), c.stride(0), c.stride(1),
        1.0 if scale is None else float(scale),
        BLOCK_M=config.block_m, BLOCK_N=config.block_n, BLOCK_K=config.block_k, GROUP_M=config.group_m,
        SCALED=scale is not None, num_warps=config.num_warps, num_stages=config.num_stages,
    )


def triton_mxfp4_matmul(a: torch.Tensor, a_scale: torch.Tensor, b: torch.Tensor, b_scale: torch.Tensor,
                        c: torch.Tensor, config: Config):
    """c = dequant(a) @ dequant(b).T for MXFP4 operands.

    a (M, K/2) and b (N, K/2): uint8, two e2m1 per byte along K; a_scale (M, K/32) and
    b_scale (N, K/32): uint8 e8m0, unswizzled. K must be a multiple of 32.
    """
    m, n, k = a.shape[0], b.shape[0], 2 * a.shape[1]
    if (a.dtype, b.dtype, a_scale.dtype, b_scale.dtype) != (torch.uint8,) * 4:
        raise ValueError("MXFP4 operands and scales are uint8 (packed e2m1, biased e8m0)")
    if b.shape[1] * 2 != k or k % 32 or a_scale.shape != (m, k // 32) or b_scale.shape != (n, k // 32):
        raise ValueError(f"MXFP4 shapes do not fit: a {tuple(a.shape)}, b {tuple(b.shape)}, scales "
                         f"{tuple(a_scale.shape)} {tuple(b_scale.shape)} (K={k} must be a multiple of 32)")
    if c.shape != (m, n):
        raise ValueError(f"c must be ({m}, {n}), got {tuple(c.shape)}")
    if config.block_k % 64:
        raise ValueError("block_k must be a multiple of 64 for e2m1 (32-element scale blocks, packed pairs)")
    _check_32bit(a, b, c)
    if m == 0 or n == 0:
        return None
    return _mxfp4_kernel[_grid(m, n, config)](
        a, a_scale, b, b_scale, c, m, n, k, a.stride(0), a.stride(1), b.stride(0), b.stride(1),
        a_scale.stride(0), a_scale.stride(1), b_scale.stride(0), b_scale.stride(1), c.stride(0), c.stride(1),
        BLOCK_M=config.block_m, BLOCK_N=config.block_n, BLOCK_K=config.block_k, GROUP_M=config.group_m,
        num_warps=config.num_warps, num_stages=config.num_stages,
    )


def has_dot_scaled() -> bool:
    return hasattr(tl, "dot_scaled")
