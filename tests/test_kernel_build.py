"""Every Triton kernel built for compute capability 9.0, 10.0 and 12.0 on this machine, without a GPU
(tests/kernel_build.py says how), and what a row claims checked against the PTX and cubin.

- tl.dot: wgmma on 9.0, tcgen05.mma on 10.0, mma.sync on 12.0, on the recipe's own operand
  type (e4m3 for fp8: no upcast). tl.dot_scaled: block-scaled MMA on 10.0 and 12.0, none on 9.0,
  and the row's `emulated` label (bench/families/matmul.py, _emulation_in_ptx) says exactly that.
- Memory kernels: every global load and store is 16 bytes wide (v4), and the cache hints are
  in the PTX exactly when the configuration asks for them.
- Every configuration kept for a target fits: dynamic shared memory within the target's limit
  and within 1 KiB above the estimate the pruning used (kernels/*.need), no stack frame (no
  spills); every configuration pruned really exceeds its limit.

The default run builds one configuration per kernel and target (plus the two pruning
witnesses); `pytest -m kernel_build_all tests/test_kernel_build.py` builds every configuration the
tuners can pick, in both profiles (.ci/gpu-check runs it too).
"""
import os

import pytest
import torch

import kernel_build as kb
from bench.core.devices import Target
from bench.families import matmul as bench_matmul
from bench.families.matmul_gemm import RECIPES
from bench.kernels import limits
from bench.kernels import matmul as km
from bench.kernels import memory as kmem
from bench.kernels.reference import ARRAYS

_H100 = Target(torch.device("cuda", 0), 0, {"device_name": "a GPU", "compute_capability": "10.0"})

MISSING = kb.missing()
pytestmark = pytest.mark.skipif(MISSING is not None, reason=MISSING or "")

CAPS = kb.CAPABILITIES
DOT_TYPES = {  # (major, recipe): what the MMA instruction must name for the operands
    (9, "bf16"): ".bf16.bf16", (9, "fp16"): ".f16.f16", (9, "fp8"): ".e4m3.e4m3",
    (10, "bf16"): "kind::f16", (10, "fp16"): "kind::f16", (10, "fp8"): "kind::f8f6f4",
    (12, "bf16"): ".bf16.bf16", (12, "fp16"): ".f16.f16", (12, "fp8"): ".e4m3.e4m3",
}
ESTIMATE_SLACK = 1024  # bytes Triton adds beyond the operand tiles (mbarriers: 16 B on 10.0)


@pytest.fixture(scope="module", autouse=True)
def fresh_compile_cache(tmp_path_factory):
    """Compile for real, into a throwaway cache (not the user's ~/.triton)."""
    before = os.environ.get("TRITON_CACHE_DIR")
    os.environ["TRITON_CACHE_DIR"] = str(tmp_path_factory.mktemp("triton-cache"))
    yield
    if before is None:
        os.environ.pop("TRITON_CACHE_DIR", None)
    else:
        os.environ["TRITON_CACHE_DIR"] = before


def _target(cc):
    reason = kb.unavailable(cc)
    if reason:
        pytest.skip(reason)
    return limits.offline(cc)


def _cc_id(cc):
    return f"{cc[0]}.{cc[1]}"


# ---------------------------------------------------------------------------------------
# What each build must show


def assert_fits(b: kb.Build, need: limits.Need, target: limits.Limits, modelled: bool = True):
    where = f"{b.kernel} {b.label} on {_cc_id(b.capability)}"
    assert b.shared <= target.shared_per_block, f"{where}: {b.shared} B of shared memory, over the limit"
    assert b.stack == 0, f"{where}: {b.stack} B stack frame with {b.regs} registers: it spills"
    if modelled:
        assert need.shared_bytes <= b.shared <= need.shared_bytes + ESTIMATE_SLACK, \
            f"{where}: compiled to {b.shared} B of shared memory, the estimate says {need.shared_bytes}"


def assert_exceeds(b: kb.Build, target: limits.Limits):
    where = f"{b.kernel} {b.label} on {_cc_id(b.capability)}"
    assert b.shared > target.shared_per_block or b.stack > 0, \
        f"{where} was pruned, but compiled to {b.shared} B shared, {b.regs} registers, no spills"


def check_dot(b: kb.Build, recipe: str):
    ops = kb.mma_instructions(b.ptx)
    major = b.capability[0]
    assert ops and all(op.startswith(kb.DOT_MMA[major]) for op in ops), f"{recipe} on {major}: {dict(ops)}"
    assert all(DOT_TYPES[(major, recipe)] in op for op in ops), f"{recipe} on {major} is not native: {dict(ops)}"


def check_dot_scaled(b: kb.Build):
    ops = kb.mma_instructions(b.ptx)
    note = bench_matmul._emulation_in_ptx(bench_matmul.make_case(_H100, "mxfp4", "triton", "x", None), b.compiled)
    if b.capability[0] in (10, 12):
        assert ops and all("kind::mxf4" in op and "block_scale" in op for op in ops), dict(ops)
        assert note == "", note
    else:  # 9.0: the bf16 upcast, and the row says so
        assert ops and not any("block_scale" in op for op in ops), dict(ops)
        assert note.startswith("emulated"), note


def check_memory(b: kb.Build, pattern: str, config):
    accesses = kb.global_accesses(b.ptx)
    vectors = config.block // (32 * config.num_warps) // 4  # 16-byte accesses per thread and array
    reads = {"read": 1, "write": 0, "copy": 1, "triad": 2}[pattern]
    want = {("ld", "v4"): reads * vectors, ("st", "v4"): (ARRAYS[pattern] - reads) * vectors}
    if pattern == "read":  # one partial sum per program
        want = {("ld", "v4"): vectors, ("st", "scalar"): 1}
    got = kb.access_widths(accesses)
    assert dict(got) == {k: v for k, v in want.items() if v}, f"{pattern} {config.label()}: {dict(got)}"
    # Hints: loads evict-first (L1 and an L2 cache policy), streaming stores (.cs); none without.
    for a in accesses:
        if a.startswith("ld."):
            assert ("evict_first" in a) == config.hints, f"{pattern} {config.label()}: {a}"
        elif ".v4." in a:
            assert (".cs." in a) == config.hints, f"{pattern} {config.label()}: {a}"


# ---------------------------------------------------------------------------------------
# Default run: one configuration per kernel and target


@pytest.mark.parametrize("recipe", ["bf16", "fp16", "fp8"])
@pytest.mark.parametrize("cc", CAPS, ids=_cc_id)
def test_tl_dot_builds_to_the_targets_tensor_core_instruction(cc, recipe):
    target = _target(cc)
    config = km.fitting(recipe, "quick", target)[0][0]
    b = kb.build(f"matmul/{recipe}", config, cc)
    check_dot(b, recipe)
    assert_fits(b, km.need(config, recipe, cc), target)


@pytest.mark.parametrize("cc", CAPS, ids=_cc_id)
def test_tl_dot_scaled_is_block_scaled_on_10_and_12_and_labelled_emulated_on_9(cc):
    target = _target(cc)
    config = km.fitting("mxfp4", "quick", target)[0][0]
    b = kb.build("matmul/mxfp4", config, cc)
    check_dot_scaled(b)
    if cc >= RECIPES["mxfp4"].min_cc:  # below, the benchmark never runs it: only the label matters
        assert_fits(b, km.need(config, "mxfp4", cc), target)


MEMORY_FORMS = {  # both code paths and both hint settings, one build each
    "one-tile, hints": kmem.Config(8192, 8, 0, True),
    "persistent, no hints": kmem.Config(8192, 8, 4, False),
}


@pytest.mark.parametrize("form", MEMORY_FORMS)
@pytest.mark.parametrize("pattern", ["read", "write", "copy", "triad"])
@pytest.mark.parametrize("cc", CAPS, ids=_cc_id)
def test_memory_kernels_move_16_bytes_per_access(cc, pattern, form):
    target = _target(cc)
    config = MEMORY_FORMS[form]
    assert config in kmem.configs("full")
    b = kb.build(f"memory/{pattern}", config, cc)
    check_memory(b, pattern, config)
    assert_fits(b, kmem.need(config, pattern), target)


def test_a_config_over_12_0_shared_memory_is_pruned_there_kept_on_9_0_and_really_exceeds():
    config = km.Config(128, 256, 64, 8, 8, 4)  # a full-profile bf16 configuration
    assert config in km.configs("bf16", "full")
    on_12, on_9 = _target((12, 0)), _target((9, 0))
    kept_12, pruned_12 = km.fitting("bf16", "full", on_12)
    kept_9, _ = km.fitting("bf16", "full", on_9)
    assert config not in kept_12 and "shared memory" in pruned_12[config.label()] and config in kept_9
    assert_exceeds(kb.build("matmul/bf16", config, (12, 0)), on_12)
    assert_fits(kb.build("matmul/bf16", config, (9, 0)), km.need(config, "bf16", (9, 0)), on_9)


def test_a_triad_over_the_register_file_is_pruned_and_really_spills():
    config = kmem.Config(32768, 8, 0, True)  # 128 values of b and c each per thread, 255 registers allowed
    target = _target((9, 0))
    reason = limits.why_not(kmem.need(config, "triad"), target)
    assert reason and "spill" in reason
    assert_exceeds(kb.build("memory/triad", config, (9, 0)), target)


# ---------------------------------------------------------------------------------------
# Every configuration the tuners can pick: `pytest -m kernel_build_all`


def _memory_variants(pattern):
    """One configuration per compiled variant: grid_per_sm is a run-time argument."""
    seen, out = set(), []
    for c in kmem.configs("full"):
        key = (c.block, c.num_warps, c.grid_per_sm > 0, c.hints)
        if key not in seen:
            seen.add(key)
            out.append(c)
    return out


@pytest.mark.kernel_build_all
@pytest.mark.parametrize("kernel", ["matmul/bf16", "matmul/fp16", "matmul/fp8", "matmul/mxfp4",
                                    "memory/read", "memory/write", "memory/copy", "memory/triad"])
@pytest.mark.parametrize("cc", CAPS, ids=_cc_id)
def test_every_config_the_tuners_can_pick_fits_and_every_pruned_one_exceeds(cc, kernel):
    target = _target(cc)
    family, what = kernel.split("/")
    if family == "matmul":
        if cc < RECIPES[what].min_cc:
            pytest.skip(f"the benchmark does not run {what} on {_cc_id(cc)} (unsupported there)")
        kept, pruned = km.fitting(what, "full", target)  # full = quick + more: every one the tuner tries
        need = lambda c: km.need(c, what, cc)  # noqa: E731
        every = km.configs(what, "full")
    else:
        kept, pruned = limits.prune(_memory_variants(what), target, lambda c: kmem.need(c, what))
        need = lambda c: kmem.need(c, what)  # noqa: E731
        every = _memory_variants(what)
    failures = []
    for config in every:
        b = kb.build(kernel, config, cc)
        try:
            if config in kept:
                if family == "matmul":
                    (check_dot_scaled(b) if what == "mxfp4" else check_dot(b, what))
                else:
                    check_memory(b, what, config)
                assert_fits(b, need(config), target)
            else:
                assert config.label() in pruned
                assert_exceeds(b, target)
        except AssertionError as e:
            failures.append(str(e))
    assert not failures, "\n".join(failures)
