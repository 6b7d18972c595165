"""Pruning the Triton tuning space from a target's limits, before anything is compiled
(kernels/limits.py; the estimates beside each kernel). Whether the estimates match what the
compiler really allocates is tests/test_kernel_build.py's job."""
from types import SimpleNamespace

import pytest
import torch

from bench.core.devices import Target
from bench.families import matmul, matmul_tune, memory
from bench.kernels import limits
from bench.kernels import matmul as km
from bench.kernels import memory as kmem


def Case(recipe, provider, name, shape, fast_accum=False):
    return matmul.make_case(gpu_like("9.0"), recipe, provider, name, shape, fast_accum)


def gpu_like(cc):
    return Target(torch.device("cuda", 0), 0, {"device_name": "test GPU", "compute_capability": cc,
                                                "sm_count": "132", "l2_cache_bytes": str(50 * 2**20)})


@pytest.fixture(autouse=True)
def no_cuda(monkeypatch):
    """Limits come from the table here, also on a machine that has a GPU."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)


def test_the_table_has_the_programming_guides_shared_memory_per_block():
    assert limits.offline((12, 0)).shared_per_block == 101376  # 99 KiB: RTX 50, RTX PRO 6000
    assert limits.offline((9, 0)).shared_per_block == limits.offline((10, 0)).shared_per_block == 232448
    unknown = limits.offline((13, 7))
    assert unknown.shared_per_block is None and "unknown" in unknown.source
    big = km.Config(128, 128, 256, 8, 8, 8)  # 8 x 128 KiB of shared memory
    assert limits.prune([big], unknown, lambda c: km.need(c, "bf16", (13, 7))) == ([big], {})
    assert limits.parse_capability("12.0") == (12, 0) and limits.parse_capability("") is None


def test_the_devices_own_limit_is_used_where_torch_reports_it():
    props = SimpleNamespace(major=12, minor=0, shared_memory_per_block_optin=80 * 1024)
    got = limits.from_properties(props)
    assert got.shared_per_block == 80 * 1024 and "shared_memory_per_block_optin" in got.source
    older_torch = SimpleNamespace(major=12, minor=0)  # the field detected by presence, not by version
    assert limits.from_properties(older_torch) == limits.offline((12, 0))
    assert limits.for_device(torch.device("cuda", 0), (9, 0)) == limits.offline((9, 0))  # no CUDA here
    with pytest.raises(ValueError, match="no compute capability"):
        limits.for_device(torch.device("cuda", 0))


def test_sm120_drops_the_configs_over_99_kib_and_hopper_keeps_every_one():
    dropped = {}
    for recipe in ("bf16", "fp16", "fp8", "mxfp4"):
        kept, pruned = km.fitting(recipe, "full", limits.offline((12, 0)))
        assert [c for c in km.configs(recipe, "full") if c.label() not in pruned] == kept  # order kept
        dropped[recipe] = len(pruned)
        for cc in ((9, 0), (10, 0)):
            assert km.fitting(recipe, "full", limits.offline(cc)) == (km.configs(recipe, "full"), {})
        assert all("shared memory" in why and "101376" in why for why in pruned.values())
    assert dropped == {"bf16": 3, "fp16": 3, "fp8": 3, "mxfp4": 0}
    # the quick profile keeps all three everywhere: 128x256x64 in 3 stages is 2 x 48 KiB on 12.0
    assert km.fitting("bf16", "quick", limits.offline((12, 0)))[1] == {}


def test_the_shared_memory_estimate_follows_the_mma_path():
    c = km.Config(128, 256, 64, 8, 8, 3)  # 48 KiB of A and B per stage in bf16
    assert km.need(c, "bf16", (9, 0)).shared_bytes == 3 * 48 * 1024  # wgmma: every stage in flight
    assert km.need(c, "bf16", (12, 0)).shared_bytes == 2 * 48 * 1024  # mma.sync: one less
    assert km.need(c, "fp8", (10, 0)).shared_bytes == 3 * 24 * 1024
    assert km.need(c, "bf16", (9, 0)).regs_per_thread == 128 * 256 // 256  # the fp32 accumulator
    assert km.need(c, "bf16", (10, 0)).regs_per_thread == 0  # tcgen05: in tensor memory
    fp4 = km.Config(128, 256, 256, 8, 8, 4)  # the tutorial's, replaced: 3 x 48 KiB + scales on 12.0
    assert km.need(fp4, "mxfp4", (12, 0)).shared_bytes == 3 * 48 * 1024 + 256 * 8
    assert limits.why_not(km.need(fp4, "mxfp4", (12, 0)), limits.offline((12, 0)))


def test_mxfp4_configs_keep_the_tiles_block_scaled_mma_takes():
    for c in km.configs("mxfp4", "full"):
        assert c.block_m >= 128 and c.block_k % 64 == 0, c.label()  # 64-row tiles are upcast on 10.x


def test_registers_prune_a_tile_whose_live_values_exceed_what_a_thread_may_hold():
    nine = limits.offline((9, 0))
    assert nine.regs_for(256) == 255 and nine.regs_for(512) == 128
    triad = kmem.Config(32768, 8, 0, True)
    assert kmem.need(triad, "triad").regs_per_thread == 256
    assert "spill" in limits.why_not(kmem.need(triad, "triad"), nine)
    assert limits.why_not(kmem.need(triad, "copy"), nine) is None  # one tile: 128 values
    assert limits.why_not(kmem.need(triad, "read"), nine) is None  # summed as they arrive
    for pattern in ("read", "write", "copy", "triad"):
        for cc in ((9, 0), (10, 0), (12, 0)):
            assert kmem.fitting(pattern, "full", limits.offline(cc)) == (kmem.configs("full"), {})


def test_the_tuners_try_only_what_fits(monkeypatch):
    tried = []
    monkeypatch.setattr(matmul_tune, "_throughput", lambda target, case, shape, config=None, api="": tried.append(config)
                        or float(config.block_m))
    case = Case("bf16", "triton", "8192x8192x8192", (8192,) * 3)
    best, tuning = matmul.tuned_config(gpu_like("12.0"), case, case.spec.shape, "full", {})
    kept, pruned = matmul.fitting_configs(gpu_like("12.0"), "bf16", "full")
    assert tried == kept and len(pruned) == 3 and set(tuning) == {c.label() for c in kept}
    assert not set(pruned) & set(tuning)
    assert memory.fitting_configs(gpu_like("12.0"), "triad", "full") == (kmem.configs("full"), {})


def test_a_card_that_fits_no_configuration_is_unsupported_with_the_reasons(monkeypatch):
    monkeypatch.setitem(limits.SHARED_PER_BLOCK, (12, 0), 16 * 1024)
    verdict = matmul.trial(gpu_like("12.0"), Case("fp8", "triton", "x", (256,) * 3), matmul.State())
    assert verdict.status == "unsupported"
    assert verdict.message.startswith("no Triton configuration fits this card: 128x256x128")
    assert "16384 B per block" in verdict.message
