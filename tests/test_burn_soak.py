"""The burn's compute soak (bench/families/burn_soak.py): its GPU path on the virtual CUDA device
(tests/virtual_cuda.py), its host path with real GEMMs, and the determinism the comparison with
the first iteration relies on."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from bench.families import burn_soak, burn_worker
from virtual_cuda import install

ROOT = Path(__file__).resolve().parents[1]
GEMM_S, COMPARE_S = 1.6e-3, 0.1e-3  # an 8192^3 bf16 GEMM on an H100 and the comparison of its output
FLOP = 2.0 * 8192**3


def _virtual_soak(monkeypatch, faults=None, duration_s=10.0, stop_at=None, launch_s=10e-6, host_s=5e-3):
    """The soak on the virtual device: each iteration a GEMM and a comparison kernel; the counts of
    differing elements come back by a copy on a side stream, as burn_worker.Compare does it. The
    host then spends `host_s` on them (Python, a busy CPU) before it queues more."""
    cuda = install(monkeypatch, burn_soak, launch_s=launch_s)
    side = cuda.Stream()
    written = [[0] * burn_soak.MAX_BATCH for _ in range(burn_soak.SLOTS)]
    faults = faults or {}

    def step(i, slot, j):
        cuda.kernel(GEMM_S, label="gemm")()
        cuda.kernel(COMPARE_S, label="compare")()
        written[slot][j] = faults.get(i, 0)

    def readback(slot, end, n):
        side.wait_event(end)
        with cuda.stream(side):
            cuda.copy("d2h", 2e-6, label="counts")()
            done = cuda.Event()
            done.record(side)
        values = list(written[slot][:n])

        def wait():
            done.synchronize()
            cuda.now += host_s
            return values
        return wait

    stop = (lambda: "SIGTERM" if cuda.now >= stop_at else "") if stop_at is not None else (lambda: "")
    soak = burn_soak.run(step, readback, FLOP, duration_s, burn_soak.Clock(cuda=True), stop=stop)
    return cuda, soak


def test_on_the_device_every_second_is_counted_and_the_gpu_never_idles(monkeypatch):
    cuda, soak = _virtual_soak(monkeypatch)
    per_iteration = GEMM_S + COMPARE_S
    assert 10.0 <= soak.seconds <= 10.0 + 3 * burn_soak.BATCH_S
    assert len(soak.bins) == 10
    for work in soak.bins:  # each whole second: the work of the iterations that ran in it
        assert work == pytest.approx(FLOP / per_iteration, rel=0.01)
    assert soak.iterations == pytest.approx(soak.seconds / per_iteration, rel=0.01)
    busy = cuda.busy_s("gemm") + cuda.busy_s("compare")
    assert busy / soak.seconds > 0.99  # batches queued ahead: no gap while the host reads counts
    assert soak.mismatches == [] and soak.stopped == ""


def test_a_mismatch_is_reported_with_its_iteration_time_and_elements(monkeypatch):
    _, soak = _virtual_soak(monkeypatch, faults={137: 3, 4000: 1})
    assert soak.mismatch_iterations == 2 and soak.mismatch_elements == 4
    first, second = soak.mismatches
    assert first["iteration"] == 137 and first["elements"] == 3
    # placed within its batch: iteration 137 ends 137 iterations after the soak's start
    assert first["time_s"] == pytest.approx(137 * (GEMM_S + COMPARE_S), abs=burn_soak.BATCH_S)
    assert second["iteration"] == 4000


def test_a_stop_is_answered_within_about_two_batches(monkeypatch):
    _, soak = _virtual_soak(monkeypatch, stop_at=3.2)
    assert soak.stopped == "SIGTERM"
    assert 3.2 - burn_soak.BATCH_S <= soak.seconds <= 3.2 + 3 * burn_soak.BATCH_S


def test_slow_launches_still_keep_the_batches_queued(monkeypatch):
    """30 us per launch: the host queues a batch far faster than the device runs it."""
    cuda, soak = _virtual_soak(monkeypatch, duration_s=5.0, launch_s=30e-6)
    assert (cuda.busy_s("gemm") + cuda.busy_s("compare")) / soak.seconds > 0.98


def test_each_second_reports_the_mismatches_found_so_far(monkeypatch):
    cuda, seen = install(monkeypatch, burn_soak, launch_s=10e-6), []
    side = cuda.Stream()

    flipped = {1000}  # an iteration about 1.6 s in

    def step(i, slot, j):
        cuda.kernel(GEMM_S, label="gemm")()

    def counted(slot, end, n, first=[1]):
        side.wait_event(end)
        values = [1 if first[0] + j in flipped else 0 for j in range(n)]
        first[0] += n
        return lambda: values
    burn_soak.run(step, counted, FLOP, 3.0, burn_soak.Clock(cuda=True),
                  on_second=lambda k, work, mismatching: seen.append((k, mismatching)))
    assert seen[0] == (0, 0) and seen[-1][1] == 1 and [m for _, m in seen] == sorted(m for _, m in seen)


def test_bins_spread_a_batch_over_the_seconds_it_ran_in():
    seen = []
    bins = burn_soak._Bins(lambda k, work: seen.append((k, work)))
    bins.add(0.0, 0.5, 10.0)
    bins.add(0.5, 1.5, 20.0)  # half in second 0, half in second 1
    bins.add(1.5, 2.0, 10.0)
    assert bins.whole(2.0) == [20.0, 20.0]
    assert seen == [(0, 20.0), (1, 20.0)]


# ---------------------------------------------------------------- the host path, with real GEMMs


@pytest.mark.parametrize("dtype", ["bf16", "fp8"])
def test_host_soak_compares_every_iteration_and_catches_a_flipped_bit(dtype):
    gemm = burn_worker.make_gemm(dtype, torch.device("cpu"), 64)
    gemm.run()
    assert gemm.check() is None
    compare = burn_worker.Compare(gemm, flip_at=5)
    soak = burn_soak.run(compare.step, compare.readback, 2.0 * 64**3, 0.3, burn_soak.Clock(cuda=False))
    assert soak.iterations >= 5
    assert soak.mismatch_iterations == 1 and soak.mismatch_elements == 1
    assert soak.mismatches[0]["iteration"] == 5


def test_a_wrong_first_result_is_caught_before_it_becomes_the_reference():
    gemm = burn_worker.make_gemm("bf16", torch.device("cpu"), 64)
    gemm.run()
    gemm.out[:8].mul_(1.5)
    assert "relative error" in gemm.check()


# ---------------------------------------------------------------- determinism: bit for bit


def _digest(dtype: str, size: int) -> str:
    import hashlib

    gemm = burn_worker.make_gemm(dtype, torch.device("cpu"), size)
    outs = []
    for _ in range(3):
        gemm.out.zero_()
        gemm.run()
        outs.append(hashlib.sha256(gemm.out.view(torch.int16).numpy().tobytes()).hexdigest())
    assert len(set(outs)) == 1, f"{dtype}: iterations differ"
    return outs[0]


@pytest.mark.parametrize("dtype", ["bf16", "fp8"])
def test_the_soak_is_deterministic_across_iterations_and_processes(dtype):
    """Inputs from the fixed seed, the same GEMM: every iteration, and a fresh process with another
    thread count, give the same bits (unseeded inputs or a non-deterministic kernel fail this)."""
    here = _digest(dtype, 256)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    code = (f"import torch; torch.set_num_threads(1); import sys; sys.path.insert(0, 'tests'); "
            f"from bench.families import burn_worker; burn_worker.deterministic(); "
            f"from test_burn_soak import _digest; print(_digest({dtype!r}, 256))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, env=env, timeout=300)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == here


def test_fingerprints_tell_rows_apart():
    gemm = burn_worker.make_gemm("bf16", torch.device("cpu"), 64)
    gemm.run()
    a = burn_worker.fingerprint(gemm.out)
    assert burn_worker.fingerprint(gemm.out.clone()) == a
    changed = gemm.out.clone()
    changed.view(torch.int16)[10, 3] ^= 1
    b = burn_worker.fingerprint(changed)
    assert [i for i, (x, y) in enumerate(zip(a, b)) if x != y] == [10]
    swapped = gemm.out.clone()
    swapped[20, 1], swapped[20, 2] = gemm.out[20, 2], gemm.out[20, 1]  # same row sum, other order
    c = burn_worker.fingerprint(swapped)
    assert c[20] != a[20] or gemm.out[20, 1] == gemm.out[20, 2]


GPU_SOAK = """
import json, torch
from bench.families import burn_worker as w, burn_soak as s
w.deterministic()
out = {}
for dtype in ("bf16", "fp8"):
    g = w.make_gemm(dtype, torch.device("cuda", 0), 4096)
    try:
        g.run()
    except RuntimeError as e:  # fp8 before compute capability 8.9
        out[dtype] = str(e)[:200]
        continue
    assert g.check() is None
    flipped = w.Compare(g, flip_at=7)
    r = s.run(flipped.step, flipped.readback, 2.0 * 4096**3, 2.2, s.Clock(True))
    out[dtype] = [r.iterations, r.mismatch_iterations, [m["iteration"] for m in r.mismatches], len(r.bins)]
print(json.dumps(out))
"""


@pytest.mark.gpu
def test_gpu_soak_is_bit_exact_over_iterations_and_catches_a_flipped_bit():
    """On a real GPU, in a process of its own (cuBLAS reads CUBLAS_WORKSPACE_CONFIG once): every
    iteration gives the first's bits, except the one whose output had a bit flipped."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    out = subprocess.run([sys.executable, "-c", GPU_SOAK], capture_output=True, text=True, cwd=ROOT, env=env,
                         timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    results = json.loads(out.stdout.strip().splitlines()[-1])
    assert isinstance(results["bf16"], list), results
    for dtype, got in results.items():
        if isinstance(got, str):
            assert dtype == "fp8" and torch.cuda.get_device_capability(0) < (8, 9), got
            continue
        iterations, mismatching, which, seconds = got
        assert iterations > 100 and mismatching == 1 and which == [7] and seconds >= 2, (dtype, got)
