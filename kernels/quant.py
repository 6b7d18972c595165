"""Low-precision formats for the matmul family: FP8 per-tensor scaling, FP4 (e2m1) packing,
MXFP4 and NVFP4 block quantization, and the scale layout cuBLAS reads.

Plain torch, no Triton, so the formats can be checked on any machine. Conventions follow
PyTorch's scaled-matmul tests
(https://github.com/pytorch/pytorch/blob/main/torch/testing/_internal/common_quantized.py):

- e2m1: 1 sign, 2 exponent, 1 mantissa bit; codes 0..7 are 0, 0.5, 1, 1.5, 2, 3, 4, 6 and
  code | 8 is the negative. Two codes per byte, the FIRST element in the LOW nibble
  (`pack_uint4`; Triton's `tl.dot_scaled` reads the same order).
- MXFP4 (OCP MX): blocks of 32 along K share an e8m0 scale (a biased power of two, stored as
  uint8 exponent + 127). The exponent is ceil(log2(amax / 6)) ("RCEIL", as torchao's to_mx),
  so no element of a block saturates.
- NVFP4: blocks of 16 along K share an e4m3 scale, amax / 6 rounded to float8_e4m3fn.
- cuBLAS wants the (rows, K/block) scale matrix "swizzled" into 128x4 tiles, each stored as
  32 rows of 16 bytes (`to_blocked`; cuBLAS docs "1D block scaling factors layout").
"""
from __future__ import annotations

import torch

E2M1_MAX = 6.0
E2M1_VALUES = (0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0)  # magnitude of codes 0..7
E4M3_MAX = 448.0
E8M0_BIAS = 127
MX_BLOCK, NV_BLOCK = 32, 16

# Rounding to the nearest e2m1 value, ties to the even code (even mantissa bit), as IEEE.
# Each midpoint counts when |x| is above it; (midpoint, tie goes up) -- up when the code
# below the midpoint is odd.
_MIDPOINTS = ((0.25, False), (0.75, True), (1.25, False), (1.75, True), (2.5, False), (3.5, True), (5.0, False))


def e2m1_encode(x: torch.Tensor) -> torch.Tensor:
    """float -> e2m1 codes (uint8 0..15): round to nearest even, saturate at +-6."""
    ax = x.float().abs()
    code = torch.zeros(x.shape, dtype=torch.uint8, device=x.device)
    for mid, tie_up in _MIDPOINTS:
        code += (ax >= mid if tie_up else ax > mid).to(torch.uint8)
    return code | (torch.signbit(x).to(torch.uint8) << 3)


def e2m1_decode(codes: torch.Tensor) -> torch.Tensor:
    """e2m1 codes (uint8 0..15) -> float32."""
    table = torch.tensor(E2M1_VALUES + tuple(-v for v in E2M1_VALUES), dtype=torch.float32, device=codes.device)
    return table[codes.long()]


def pack_fp4(codes: torch.Tensor) -> torch.Tensor:
    """(..., K) codes -> (..., K/2) bytes; element 2i in the low nibble, 2i+1 in the high one."""
    if codes.shape[-1] % 2:
        raise ValueError(f"FP4 packs two values per byte: the last dimension ({codes.shape[-1]}) must be even")
    return codes[..., 0::2] | (codes[..., 1::2] << 4)


def unpack_fp4(packed: torch.Tensor) -> torch.Tensor:
    """(..., K/2) bytes -> (..., K) codes."""
    low, high = packed & 0xF, packed >> 4
    return torch.stack((low, high), dim=-1).flatten(-2)


def _blocks(x: torch.Tensor, block: int) -> torch.Tensor:
    rows, k = x.shape
    if k % block:
        raise ValueError(f"K ({k}) must be a multiple of the scale block ({block})")
    return x.float().reshape(rows, k // block, block)


def quantize_mx(x: torch.Tensor, block: int = MX_BLOCK) -> tuple[torch.Tensor, torch.Tensor]:
    """(rows, K) float -> (packed e2m1 (rows, K/2) uint8, e8m0 scales (rows, K/block) uint8)."""
    xb = _blocks(x, block)
    amax = xb.abs().amax(dim=-1)
    # RCEIL: the smallest power of two with amax / scale <= 6; amax 0 gives the smallest scale.
    exponent = torch.ceil(torch.log2(amax / E2M1_MAX)).clamp(-E8M0_BIAS, E8M0_BIAS)
    scale_u8 = (exponent + E8M0_BIAS).to(torch.uint8)
    codes = e2m1_encode(xb / e8m0_to_float(scale_u8).unsqueeze(-1))
    return pack_fp4(codes.reshape(x.shape)), scale_u8


def quantize_nv(x: torch.Tensor, block: int = NV_BLOCK) -> tuple[torch.Tensor, torch.Tensor]:
    """(rows, K) float -> (packed e2m1 (rows, K/2) uint8, e4m3 scales (rows, K/block) float8_e4m3fn)."""
    xb = _blocks(x, block)
    amax = xb.abs().amax(dim=-1)
    # float8_e4m3fn has no infinity: out-of-range casts give NaN, so clamp first.
    scale = (amax / E2M1_MAX).clamp(max=E4M3_MAX).to(torch.float8_e4m3fn)
    s = scale.float().unsqueeze(-1)
    # Rounding the scale down can push |x|/s just above 6: e2m1_encode saturates it.
    q = torch.where(s > 0, xb / torch.where(s > 0, s, 1.0), 0.0)
    return pack_fp4(e2m1_encode(q).reshape(x.shape)), scale


def e8m0_to_float(scale_u8: torch.Tensor) -> torch.Tensor:
    """Biased e8m0 exponents (uint8) -> float32 powers of two."""
    return torch.exp2(scale_u8.float() - E8M0_BIAS)


def dequantize_fp4(packed: torch.Tensor, scale: torch.Tensor, block: int) -> torch.Tensor:
    """(rows, K/2) packed e2m1 with float32 scales (rows, K/block) -> float32 (rows, K)."""
    values = e2m1_decode(unpack_fp4(packed))
    return values * scale.float().repeat_interleave(block, dim=-1)


def dequantize_mx(packed: torch.Tensor, scale_u8: torch.Tensor, block: int = MX_BLOCK) -> torch.Tensor:
    return dequantize_fp4(packed, e8m0_to_float(scale_u8), block)


def dequantize_nv(packed: torch.Tensor, scale_e4m3: torch.Tensor, block: int = NV_BLOCK) -> torch.Tensor:
    return dequantize_fp4(packed, scale_e4m3.float(), block)


def to_blocked(scales: torch.Tensor) -> torch.Tensor:
    """(rows, cols) scales -> the flat layout cuBLAS reads for block-scaled GEMMs.

    Rows are padded to 128 and columns to 4 with zeros; each 128x4 tile becomes 512
    consecutive bytes in which (r, c) sits at (r % 32) * 16 + (r // 32) * 4 + c, tiles in
    row-major order (the formula of `to_blocked` in torch's scaled-matmul tests).
    """
    rows, cols = scales.shape
    row_tiles, col_tiles = -(-rows // 128), -(-cols // 4)
    padded = scales
    if (rows, cols) != (row_tiles * 128, col_tiles * 4):
        # zeros + slice assignment: torch.nn.functional.pad does not take the float8 dtypes.
        padded = torch.zeros((row_tiles * 128, col_tiles * 4), dtype=scales.dtype, device=scales.device)
        padded[:rows, :cols] = scales
    tiles = padded.view(row_tiles, 128, col_tiles, 4).permute(0, 2, 1, 3)
    return tiles.reshape(-1, 4, 32, 4).transpose(1, 2).reshape(-1, 32, 16).flatten()


def quantize_fp8(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """float -> (float8_e4m3fn, fp32 per-tensor scale) with x ~= q.float() * scale."""
    # Map amax onto the top of e4m3's range; a non-1 scale also exercises the scale path.
    scale = (x.abs().amax().float() / E4M3_MAX).clamp(min=1e-12)
    return (x.float() / scale).clamp(-E4M3_MAX, E4M3_MAX).to(torch.float8_e4m3fn), scale
