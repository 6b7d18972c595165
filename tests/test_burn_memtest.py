"""The burn's memory test: the Triton kernels against the torch patterns (interpreter, CUDA, offline
builds for real GPUs), the patterns against an independent definition, and the test itself
against memories with real kinds of faults."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from bench.families import burn_memtest as mt
from bench.families.burn_soak import Clock
from bench.kernels import memtest_ref as ref

ROOT = Path(__file__).resolve().parents[1]
SEED = 99
BASES = (0, 12345, (1 << 33) + 7)  # a chunk far into a region over 16 GiB: the index's high half matters


def _lowbias32(x: int) -> int:
    """The hash, written out in plain Python integers (https://github.com/skeeto/hash-prospector)."""
    x ^= x >> 16
    x = (x * 0x7FEB352D) & 0xFFFFFFFF
    x ^= x >> 15
    x = (x * 0x846CA68B) & 0xFFFFFFFF
    return x ^ (x >> 16)


def test_patterns_match_their_definition_in_plain_integers():
    for index in (0, 1, 4095, (1 << 32) - 1, 1 << 32, (1 << 40) + 12345):
        folded = (index & 0xFFFFFFFF) ^ (((index >> 32) * 0x9E3779B1) & 0xFFFFFFFF)
        t = torch.tensor([index])
        assert int(ref.expected(t, ref.ADDRESS, 0, SEED)) == folded
        assert int(ref.expected(t, ref.ADDRESS, 0xFFFFFFFF, SEED)) == folded ^ 0xFFFFFFFF
        assert int(ref.expected(t, ref.RANDOM, 0, SEED)) == _lowbias32(folded ^ SEED)
        assert int(ref.expected(t, ref.CONST, 1 << 31, SEED)) == 1 << 31
    assert ref.signed32(0xFFFFFFFF) == -1 and ref.signed32(5) == 5


def test_reference_fill_and_check_count_wrong_words_per_block():
    n = 3 * ref.BLOCK + 100
    for mode in (ref.CONST, ref.ADDRESS, ref.RANDOM):
        buf, counts = torch.empty(n, dtype=torch.int32), torch.full((ref.blocks(n),), -1, dtype=torch.int32)
        ref.fill(buf, 77, mode, 0x12345678, SEED)
        buf[5] ^= 1
        buf[3 * ref.BLOCK + 50] ^= 1 << 31  # in the tail block
        ref.check(buf, counts, 77, mode, 0x12345678, SEED, rewrite=True)
        assert counts.tolist() == [1, 0, 0, 1]
        ref.check(buf, counts, 77, mode, 0x12345678 ^ 0xFFFFFFFF, SEED)  # the complement was written back
        assert counts.tolist() == [0, 0, 0, 0]


# ---------------------------------------------------------------- the Triton kernels (child processes)


def _kernel_cases():
    out = []
    for mode in (ref.CONST, ref.ADDRESS, ref.RANDOM):
        for base in BASES:
            for n in (1, ref.BLOCK, 2 * ref.BLOCK + 17):
                out.append({"mode": mode, "base": base, "n": n})
    return out  # the same on CUDA: the compiled variants are per mode and check kind, not per size


def _child(device: str) -> dict:
    """Each case: fill with the kernel and the reference, plant wrong words, check with both (plain,
    rewriting ascending, rewriting descending): buffers and counts must be equal."""
    from bench.kernels import memtest as km

    results = {}
    for case in _kernel_cases():
        mode, base, n = case["mode"], case["base"], case["n"]
        name = f"mode{mode}-base{base}-n{n}"
        try:
            a = torch.empty(n + 64, dtype=torch.int32, device=device)
            a[n:] = 7  # a guard after the buffer: nothing may write there
            b = torch.empty(n, dtype=torch.int32, device=device)
            km.fill(a[:n], base, mode, 0xA5A5F00F, SEED)
            ref.fill(b, base, mode, 0xA5A5F00F, SEED)
            assert torch.equal(a[:n], b), "fill differs"
            planted = {0, n - 1, n // 2}
            for rewrite, descending in ((False, False), (True, False), (True, True)):
                value = 0xA5A5F00F if not descending else 0xA5A5F00F ^ 0xFFFFFFFF
                ref.fill(a[:n], base, mode, value, SEED)
                ref.fill(b, base, mode, value, SEED)
                for w in planted:
                    a[w] ^= 1 << (w % 32)
                    b[w] ^= 1 << (w % 32)
                ca = torch.full((ref.blocks(n),), -1, dtype=torch.int32, device=device)
                cb = ca.clone()
                km.check(a[:n], ca, base, mode, value, SEED, rewrite, descending)
                ref.check(b, cb, base, mode, value, SEED, rewrite, descending)
                assert torch.equal(ca, cb), f"counts {ca.tolist()} != {cb.tolist()}"
                assert int(ca.sum()) == len(planted), f"found {int(ca.sum())} of {len(planted)} wrong words"
                assert torch.equal(a[:n], b), "rewrite differs"
            assert torch.all(a[n:] == 7), "wrote past the end"
            results[name] = "ok"
        except Exception as e:  # noqa: BLE001 - report every failure
            results[name] = f"{type(e).__name__}: {e}"
    results["interpreted"] = type(km._fill_kernel).__name__ == "InterpretedFunction"
    return results


def _run_child(device: str, tmp_path: Path) -> dict:
    env = dict(os.environ)
    env.pop("TRITON_INTERPRET", None)
    if device == "cpu":
        env["TRITON_INTERPRET"] = "1"
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])
    out = tmp_path / "results.json"
    code = (f"import json, sys; sys.path.insert(0, 'tests'); import test_burn_memtest as t; "
            f"open({str(out)!r}, 'w').write(json.dumps(t._child({device!r})))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(out.read_text())


def test_triton_kernels_match_the_patterns_in_the_interpreter(tmp_path):
    results = _run_child("cpu", tmp_path)
    assert results.pop("interpreted") is True
    bad = {k: v for k, v in results.items() if v != "ok"}
    assert not bad and len(results) == len(_kernel_cases())


@pytest.mark.gpu
def test_triton_kernels_match_the_patterns_on_cuda(tmp_path):
    results = _run_child("cuda", tmp_path)
    assert results.pop("interpreted") is False
    assert {k: v for k, v in results.items() if v != "ok"} == {}


def test_kernels_build_for_real_gpus_with_16_byte_accesses_and_no_spills(monkeypatch, tmp_path):
    import kernel_build as kb

    monkeypatch.setenv("TRITON_CACHE_DIR", str(tmp_path))  # compile for real, not from the user's cache
    if kb.missing():
        pytest.skip(kb.missing())
    from bench.kernels import memtest as km

    n = 1 << 28  # a 1 GiB chunk
    buf, counts = torch.empty(n, dtype=torch.int32, device="meta"), torch.empty(ref.blocks(n), dtype=torch.int32,
                                                                                device="meta")
    launches = {"_fill_kernel": lambda: km.fill(buf, 1 << 33, ref.RANDOM, 1, SEED),
                "_check_kernel": lambda: km.check(buf, counts, 0, ref.ADDRESS, 1, SEED, True, True)}
    for cc in kb.CAPABILITIES:
        if kb.unavailable(cc):
            continue
        for name, launch in launches.items():
            with kb.offline_target(cc), kb._compiling(km, name) as built:
                launch()
            regs, stack = kb.resource_usage(built[-1].asm["cubin"])
            widths = kb.access_widths(kb.global_accesses(built[-1].asm["ptx"]))
            assert stack == 0, f"{name} on {cc}: spills ({regs} registers)"
            words_per_thread = ref.BLOCK // (32 * km.NUM_WARPS)
            assert widths[("st", "v4")] == words_per_thread // 4, f"{name} on {cc}: {dict(widths)}"
            if name == "_check_kernel":
                assert widths[("ld", "v4")] == words_per_thread // 4, f"{name} on {cc}: {dict(widths)}"


# ---------------------------------------------------------------- the test against faulty memories


def _region(words_per_chunk=2 * ref.BLOCK, chunks=3) -> mt.Region:
    region = mt.Region(free_bytes=4 * words_per_chunk * chunks, wanted_bytes=4 * words_per_chunk * chunks)
    for k in range(chunks):
        region.chunks.append(torch.empty(words_per_chunk, dtype=torch.int32))
        region.counts.append(torch.empty(ref.blocks(words_per_chunk), dtype=torch.int32))
        region.bases.append(k * words_per_chunk)
    return region


class Faulty:
    """The host patterns over a memory with a fault: after every write, `fault(chunks)` corrupts it."""

    def __init__(self, region, fault):
        self.region, self.fault = region, fault

    def fill(self, buf, base, mode, value, seed):
        ref.fill(buf, base, mode, value, seed)
        self.fault(self.region.chunks)

    def check(self, buf, counts, base, mode, value, seed, rewrite=False, descending=False):
        ref.check(buf, counts, base, mode, value, seed, rewrite, descending)
        if rewrite:
            self.fault(self.region.chunks)


def test_good_memory_passes_every_pattern():
    region = _region()
    result = mt.run(region, ref, SEED, Clock(False))
    assert result.errors == 0 and result.ranges == [] and set(result.patterns) == set(mt.PATTERNS)
    assert len(result.passes) == len(mt.steps(SEED))
    assert result.bytes_moved == sum(mt.step_bytes(s, 6 * ref.BLOCK) for s in mt.steps(SEED))


def test_a_stuck_bit_is_found_by_the_walking_patterns_with_its_address_range():
    region = _region()

    def stuck(chunks):  # bit 5 of one word of chunk 1 always reads 0
        chunks[1][ref.BLOCK + 9] &= ~(1 << 5)
    result = mt.run(region, Faulty(region, stuck), SEED, Clock(False))
    assert result.patterns["walking-ones"]["errors"] == 1  # only bit 5's pattern sets it
    assert result.patterns["walking-zeros"]["errors"] == 31  # every pattern but bit 5's sets it
    first = result.ranges[0]
    assert first["chunk"] == 1 and first["words"] == 1
    start = region.chunks[1].data_ptr() + ref.BLOCK * 4
    assert first["address"] == f"{start:#x}-{start + ref.BLOCK * 4 - 1:#x}"
    assert first["offset"] == f"{(2 * ref.BLOCK + ref.BLOCK) * 4:#x}-{(4 * ref.BLOCK) * 4 - 1:#x}"


def test_an_address_fault_is_found_by_the_address_pattern_only():
    """A word that aliases another (a faulty address line): it holds what was written to the other."""
    region = _region()

    def alias(chunks):
        chunks[2][100] = chunks[0][100]
    result = mt.run(region, Faulty(region, alias), SEED, Clock(False))
    assert result.patterns["address"]["errors"] == 2  # the pattern and its complement
    assert result.patterns["walking-ones"]["errors"] == 0  # every word holds the same: blind to it
    assert result.patterns["random"]["errors"] == 2


def test_the_planted_word_is_the_one_error():
    region = _region()
    result = mt.run(region, ref, SEED, Clock(False), plant=True)
    assert result.errors == 1 and result.patterns["walking-ones"]["errors"] == 1
    word = mt.PLANTED_WORD % region.chunks[0].numel()
    lo = region.chunks[0].data_ptr() + word // ref.BLOCK * ref.BLOCK * 4
    assert result.ranges[0]["address"].startswith(f"{lo:#x}-")


def test_adjacent_blocks_with_errors_are_one_range():
    region = _region()

    def smear(chunks):
        chunks[0][ref.BLOCK - 1] ^= 1
        chunks[0][ref.BLOCK] ^= 1
    result = mt.run(region, Faulty(region, smear), SEED, Clock(False))
    assert result.ranges[0]["words"] == 2
    lo = region.chunks[0].data_ptr()
    assert result.ranges[0]["address"] == f"{lo:#x}-{lo + 2 * ref.BLOCK * 4 - 1:#x}"
    assert "wrong word(s)" in mt.describe(result.ranges, result.errors)


def test_a_failed_allocation_ends_the_region_and_says_so(monkeypatch):
    real, made = torch.empty, []

    def empty(*shape, **kw):
        if len(made) >= 5:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 1.00 GiB")
        made.append(shape)
        return real(*shape, **kw)
    monkeypatch.setattr(mt.torch, "empty", empty)
    region = mt.allocate(torch.device("cpu"), 10 * 2**20, 10 * 2**20, 2**20)
    assert len(region.chunks) == 2 and region.bytes == 2 * 2**20  # counts, chunk, counts, chunk, counts: fails
    assert "out of memory" in region.failure.lower() and region.coverage == pytest.approx(0.2)


def test_the_region_leaves_a_reserve_and_the_estimate_scales():
    assert mt.wanted(100 * 2**30) == 98 * 2**30
    assert mt.wanted(10 * 2**30) == 10 * 2**30 - 512 * 2**20
    assert mt.estimate_s(0.5, 2**20, 2**30) == pytest.approx(512.0)
    kinds = [(s.pattern, s.kind) for s in mt.steps(SEED)]
    assert all((p, "fill") in kinds and (p, "check") in kinds for p in mt.PATTERNS)
    moving = [s for s in mt.steps(SEED) if s.pattern == "moving-inversions"]
    assert [(s.kind, s.rewrite, s.descending) for s in moving[:4]] == [
        ("fill", False, False), ("check", True, False), ("check", True, True), ("check", False, False)]
