"""FP4 packing, MX / NV block quantization and the cuBLAS scale swizzle (kernels/quant.py),
each against a reference written here from the format's definition, element by element."""
import math

import pytest
import torch

from bench.kernels import quant

E2M1 = [0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0]


def nearest_e2m1_code(v: float) -> int:
    """The e2m1 code of v: nearest representable magnitude, a tie to the even code, saturating at 6."""
    mag = min(abs(v), 6.0)
    dists = [abs(mag - e) for e in E2M1]
    best = min(dists)
    ties = [c for c, d in enumerate(dists) if d == best]
    code = next((c for c in ties if c % 2 == 0), ties[0])  # even code = mantissa bit 0
    return code | (8 if math.copysign(1.0, v) < 0 else 0)


def test_e2m1_encode_rounds_to_nearest_even_and_saturates():
    # every representable value, every midpoint (the ties), and values past the top
    values = [s * v for s in (1, -1) for v in (E2M1 + [0.25, 0.75, 1.25, 1.75, 2.5, 3.5, 5.0, 7.0, 100.0, 0.1, 4.9])]
    values += torch.randn(2000, generator=torch.Generator().manual_seed(0)).mul(3).tolist()
    got = quant.e2m1_encode(torch.tensor(values)).tolist()
    assert got == [nearest_e2m1_code(v) for v in values]
    assert quant.e2m1_encode(torch.tensor([0.25, 0.75, 2.5, 3.5, 5.0])).tolist() == [0, 2, 4, 6, 6]


def test_e2m1_decode_is_the_table():
    codes = torch.arange(16, dtype=torch.uint8)
    assert quant.e2m1_decode(codes).tolist() == E2M1 + [-v for v in E2M1]


def test_two_codes_per_byte_first_in_the_low_nibble():
    # torch's pack_uint4 and Triton's dot_scaled: element 2i in bits 0-3, element 2i+1 in bits 4-7
    codes = torch.tensor([[1, 2, 15, 7, 0, 8]], dtype=torch.uint8)
    packed = quant.pack_fp4(codes)
    assert packed.tolist() == [[0x21, 0x7F, 0x80]]
    assert torch.equal(quant.unpack_fp4(packed), codes)
    with pytest.raises(ValueError, match="even"):
        quant.pack_fp4(torch.zeros(2, 3, dtype=torch.uint8))
    if hasattr(torch, "float4_e2m1fn_x2"):  # the storage dtype torch's scaled GEMMs take
        assert packed.view(torch.float4_e2m1fn_x2).shape == (1, 3)


def _mx_reference(x: torch.Tensor, block: int):
    """OCP MX with RCEIL, one block at a time in Python floats."""
    rows, k = x.shape
    codes, scales = [], []
    for r in range(rows):
        row_codes, row_scales = [], []
        for j in range(k // block):
            vals = x[r, j * block:(j + 1) * block].tolist()
            amax = max(abs(v) for v in vals)
            e = -127 if amax == 0 else max(-127, min(127, math.ceil(math.log2(amax / 6.0))))
            row_scales.append(e + 127)
            row_codes += [nearest_e2m1_code(v / 2.0**e) for v in vals]
        codes.append(row_codes)
        scales.append(row_scales)
    return torch.tensor(codes, dtype=torch.uint8), torch.tensor(scales, dtype=torch.uint8)


def test_mx_quantization_matches_the_definition():
    block_sizes = torch.tensor([1e-3, 1.0, 40.0]).repeat_interleave(32)  # tiny, unit and large blocks
    x = torch.randn(5, 96, generator=torch.Generator().manual_seed(1)) * block_sizes
    x[2, :32] = 0.0  # an all-zero block
    packed, scales = quant.quantize_mx(x)
    want_codes, want_scales = _mx_reference(x, 32)
    assert torch.equal(scales, want_scales)
    assert torch.equal(quant.unpack_fp4(packed), want_codes)
    # RCEIL never saturates: every element of a block is within 6 * scale
    deq = quant.dequantize_mx(packed, scales)
    assert bool((deq.abs() <= 6 * quant.e8m0_to_float(scales).repeat_interleave(32, dim=1)).all())
    assert float((deq - x).norm() / x.norm()) < 0.2  # 1 mantissa bit: coarse, but the data


def test_nv_quantization_matches_the_definition():
    if not hasattr(torch, "float8_e4m3fn"):
        pytest.skip("this torch has no float8_e4m3fn")
    x = torch.randn(3, 64, generator=torch.Generator().manual_seed(2)) * 3
    x[1, 16:32] = 0.0
    packed, scales = quant.quantize_nv(x)
    assert scales.dtype == torch.float8_e4m3fn and scales.shape == (3, 4)
    codes = quant.unpack_fp4(packed)
    for r in range(3):
        for j in range(4):
            vals = x[r, 16 * j:16 * (j + 1)].tolist()
            s = float(torch.tensor(max(abs(v) for v in vals) / 6.0).to(torch.float8_e4m3fn).float())
            assert float(scales[r, j].float()) == s
            want = [nearest_e2m1_code(v / s) if s > 0 else 0 for v in vals]
            assert codes[r, 16 * j:16 * (j + 1)].tolist() == want
    deq = quant.dequantize_nv(packed, scales)
    assert torch.equal(deq[1, 16:32], torch.zeros(16))
    assert float((deq - x).norm() / x.norm()) < 0.2


def test_quantizers_reject_k_off_the_block():
    with pytest.raises(ValueError, match="multiple of the scale block"):
        quant.quantize_mx(torch.randn(2, 48))
    with pytest.raises(ValueError, match="multiple of the scale block"):
        quant.quantize_nv(torch.randn(2, 40))


def blocked_offset(r: int, c: int, cols: int) -> int:
    """cuBLAS "1D block scaling factors layout": 128x4 tiles of 512 bytes in row-major tile order;
    inside a tile, row r sits in 32-row group r // 32, at byte (r % 32) * 16 + (r // 32) * 4 + c."""
    col_tiles = -(-cols // 4)
    tile = (r // 128) * col_tiles + c // 4
    rr, cc = r % 128, c % 4
    return tile * 512 + (rr % 32) * 16 + (rr // 32) * 4 + cc


@pytest.mark.parametrize("rows, cols", [(128, 4), (256, 8), (130, 5), (1, 1), (300, 9)])
def test_scale_swizzle_matches_the_cublas_layout(rows, cols):
    scales = torch.randint(1, 255, (rows, cols), dtype=torch.uint8, generator=torch.Generator().manual_seed(rows))
    flat = quant.to_blocked(scales)
    assert flat.numel() == (-(-rows // 128) * 128) * (-(-cols // 4) * 4)
    want = torch.zeros_like(flat)
    for r in range(rows):
        for c in range(cols):
            want[blocked_offset(r, c, cols)] = scales[r, c]
    assert torch.equal(flat, want)  # padding is zero, every scale where cuBLAS reads it


def test_swizzle_takes_the_float8_scale_dtypes():
    for name in ("float8_e4m3fn", "float8_e8m0fnu"):
        if not hasattr(torch, name):
            continue
        s = torch.randint(100, 130, (130, 6), dtype=torch.uint8).view(getattr(torch, name))
        assert torch.equal(quant.to_blocked(s).view(torch.uint8), quant.to_blocked(s.view(torch.uint8)))


def test_fp8_quantization_uses_the_top_of_e4m3_and_round_trips():
    if not hasattr(torch, "float8_e4m3fn"):
        pytest.skip("this torch has no float8_e4m3fn")
    x = torch.randn(64, 64, generator=torch.Generator().manual_seed(3))
    q, scale = quant.quantize_fp8(x)
    assert q.dtype == torch.float8_e4m3fn and scale.dtype == torch.float32 and scale.dim() == 0
    assert float(q.float().abs().max()) == 448.0
    assert float((q.float() * scale - x).norm() / x.norm()) < 0.05  # 3 mantissa bits
