"""Every device timer proven on the virtual CUDA device (tests/virtual_cuda.py, whose docstring states the model).

For each timer: the median sample equals the modelled work within 1% over the range
of kernel times, launch costs and SM clocks real cards have; the device time a case
spends stays within its budget plus a few calls (no backlog of queued work); Ctrl-C
is answered within about one call; flushed samples never time a warm call; both
directions of a transfer start together.
"""
import contextlib

import numpy as np
import pytest

from bench.core import timing, timing_multi
from virtual_cuda import install

KERNELS_S = (1.37e-6, 13.1e-6, 147e-6, 2.03e-3, 21.7e-3, 0.2)
LAUNCH_S = (5e-6, 30e-6)
CLOCKS_HZ = (1.4e9, 3.1e9)


@pytest.fixture
def vcuda(monkeypatch):
    def make(**kwargs):
        return install(monkeypatch, timing, timing_multi, **kwargs)
    return make


def _bound_s(budget: timing.Budget, per_call_s: float, calls: int) -> float:
    """Device time a case may spend on its work: warm-up, the samples, and a few calls (probe, first calls)."""
    sample_s = per_call_s * calls
    return budget.warmup_s + budget.samples(sample_s) * sample_s + 6 * per_call_s + 2 * timing.MIN_SAMPLE_S


@pytest.mark.parametrize("clock", CLOCKS_HZ)
@pytest.mark.parametrize("launch", LAUNCH_S)
@pytest.mark.parametrize("kernel", KERNELS_S)
def test_one_stream_median_is_the_kernel_time_and_the_budget_holds(vcuda, kernel, launch, clock):
    cuda = vcuda(launch_s=launch, sm_clock_hz=clock)
    t = timing.time_cuda(cuda.kernel(kernel), timing.QUICK, clock_hz=clock)
    assert t.median_s == pytest.approx(kernel, rel=0.01)
    assert t.notes == [] and t.method == timing.CUDA_TIMER
    assert len(t.samples_s) >= timing.QUICK.min_samples
    assert cuda.busy_s("work") <= _bound_s(timing.QUICK, kernel, t.calls_per_sample)
    host_s = len(cuda.commands("work")) * (launch + cuda.record_s)  # what the host must spend to enqueue it all
    assert cuda.now <= _bound_s(timing.QUICK, kernel, t.calls_per_sample) + 3 * timing.HOLD_MARGIN * host_s + 0.05


@pytest.mark.parametrize("budget", [timing.QUICK, timing.FULL, timing.TUNE])
def test_a_long_kernel_spends_its_budget_not_minutes(vcuda, budget):
    """A 176 ms GEMM (16384^3 fp32 on an H100): warm-up by time used to queue ~1000 calls, 3 minutes of GPU."""
    cuda = vcuda(launch_s=10e-6)
    t = timing.time_cuda(cuda.kernel(0.176), budget, clock_hz=cuda.sm_clock_hz)
    assert t.median_s == pytest.approx(0.176, rel=0.01)
    assert cuda.busy_s("work") <= _bound_s(budget, 0.176, 1)
    assert cuda.now <= _bound_s(budget, 0.176, 1) + 0.1


@pytest.mark.parametrize("kernel", [1.37e-6, 147e-6, 21.7e-3, 0.176])
@pytest.mark.parametrize("at_s", [0.001, 0.3, 1.1])
def test_ctrl_c_is_answered_within_about_one_call(vcuda, kernel, at_s):
    cuda = vcuda(launch_s=10e-6)
    cuda.interrupt_at(at_s)
    with pytest.raises(KeyboardInterrupt):
        for _ in range(100):  # several cases in a row, as a run measures them
            timing.time_cuda(cuda.kernel(kernel), timing.FULL, clock_hz=cuda.sm_clock_hz)
    assert cuda.interrupted_at - at_s <= max(kernel, timing.MAX_QUEUED_S) + 0.02


@pytest.mark.parametrize("clock", CLOCKS_HZ)
@pytest.mark.parametrize("kernel", [13.1e-6, 147e-6, 2.03e-3])
def test_flushed_samples_time_only_cold_calls(vcuda, kernel, clock):
    cuda = vcuda(launch_s=20e-6, sm_clock_hz=clock)
    cold = 2.5 * kernel  # A and B come from DRAM after a flush
    t = timing.time_cuda(cuda.kernel(kernel, cold_s=cold), timing.QUICK, flush=cuda.flush, clock_hz=clock)
    assert t.median_s == pytest.approx(cold, rel=0.01)
    assert max(t.samples_s) <= cold * 1.01  # no sample mixes in a warm call
    timed = cuda.commands("work")[-len(t.samples_s) * t.calls_per_sample:]
    assert all(c.cold for c in timed)


def test_a_hold_too_short_for_the_host_is_measured_again(vcuda, monkeypatch):
    """A host far slower than the estimate (a stalled thread): the batch is retried, then the row is told."""
    cuda = vcuda(launch_s=10e-6)
    monkeypatch.setattr(timing, "HOLD_MARGIN", 0.01)  # every hold far too short
    monkeypatch.setattr(timing, "HOLD_EXTRA_S", 0.0)
    t = timing.time_cuda(cuda.kernel(1.37e-6), timing.TUNE, clock_hz=cuda.sm_clock_hz)
    assert timing.LAUNCH_BOUND in t.notes
    assert t.median_s > 1.37e-6 * 2  # what a launch-bound sample looks like: the note is not decorative


def test_the_hold_follows_the_real_sm_clock(vcuda):
    """A card boosting to 3.1 GHz spins through a hold sized for 2 GHz in 65% of the time."""
    cuda = vcuda(launch_s=30e-6, sm_clock_hz=3.1e9)
    assert timing.hold_stream(0.01, clock_hz=3.1e9)
    assert cuda.commands("spin")[0].end - cuda.commands("spin")[0].start == pytest.approx(0.01)
    assert timing.sm_clock_hz({"sm_clock_max_mhz": "3090"}) == 3.09e9
    assert timing.sm_clock_hz({}, props=type("P", (), {"clock_rate": 1980000})()) == 1.98e9
    assert timing.sm_clock_hz({"sm_clock_max_mhz": ""}) == timing.FALLBACK_SM_CLOCK_HZ


# ---------------------------------------------------------------- two streams (both directions of a link)

def _on(cuda, stream, issue):
    def run():
        with cuda.stream(stream):
            issue()
    return run


@pytest.mark.parametrize("launch", LAUNCH_S)
@pytest.mark.parametrize("h2d_s, d2h_s", [(160e-6, 330e-6), (4.1e-3, 4.3e-3), (21e-3, 19e-3), (3.1e-6, 2.9e-6)])
def test_both_directions_start_together_and_each_rate_is_right(vcuda, h2d_s, d2h_s, launch):
    cuda = vcuda(launch_s=launch, sm_clock_hz=1.98e9)
    sa, sb = cuda.Stream(), cuda.Stream()
    pair = timing_multi.time_pair(_on(cuda, sa, cuda.copy("h2d", h2d_s)), sa, _on(cuda, sb, cuda.copy("d2h", d2h_s)), sb,
                            timing.QUICK, clock_hz=cuda.sm_clock_hz)
    assert np.median(pair.a_s) == pytest.approx(h2d_s, rel=0.01)
    assert np.median(pair.b_s) == pytest.approx(d2h_s, rel=0.01)
    assert pair.notes == []
    nbytes = 1e9
    both = [2 * nbytes / max(a, b) for a, b in zip(pair.a_s, pair.b_s)]  # bidir_total: both summed
    assert np.median(both) == pytest.approx(2 * nbytes / max(h2d_s, d2h_s), rel=0.01)
    if pair.calls_per_sample == 1:  # every timed sample's two copies start at the same moment
        n = len(pair.a_s)
        starts = zip(cuda.commands("h2d")[-n:], cuda.commands("d2h")[-n:])
        assert all(abs(a.start - b.start) <= 1e-6 for a, b in starts)
    busy = max(cuda.busy_s("h2d"), cuda.busy_s("d2h"))
    assert busy <= _bound_s(timing.QUICK, max(h2d_s, d2h_s), pair.calls_per_sample) + 0.01


def test_two_copies_of_one_direction_share_an_engine(vcuda):
    """The model, checked: the same direction on two streams serializes (one copy engine per direction)."""
    cuda = vcuda()
    sa, sb = cuda.Stream(), cuda.Stream()
    pair = timing_multi.time_pair(_on(cuda, sa, cuda.copy("h2d", 200e-6)), sa, _on(cuda, sb, cuda.copy("h2d", 200e-6)), sb,
                            timing.TUNE)
    assert max(np.median(pair.a_s), np.median(pair.b_s)) == pytest.approx(400e-6, rel=0.02)


def test_pair_warm_up_queues_no_backlog(vcuda):
    cuda = vcuda(launch_s=10e-6)
    sa, sb = cuda.Stream(), cuda.Stream()
    pair = timing_multi.time_pair(_on(cuda, sa, cuda.copy("h2d", 0.08)), sa, _on(cuda, sb, cuda.copy("d2h", 0.08)), sb,
                            timing.QUICK, clock_hz=cuda.sm_clock_hz)
    assert np.median(pair.a_s) == pytest.approx(0.08, rel=0.01)
    assert cuda.busy_s("h2d") <= _bound_s(timing.QUICK, 0.08, 1) + 0.08


# ---------------------------------------------------------------- one rank of a collective

@pytest.mark.parametrize("clock", CLOCKS_HZ)
@pytest.mark.parametrize("launch", LAUNCH_S)
@pytest.mark.parametrize("op_s", [51.3e-6, 1.07e-3, 33.3e-3])
def test_per_rank_timer_times_each_operation(vcuda, op_s, launch, clock):
    cuda = vcuda(launch_s=launch, sm_clock_hz=clock)
    seen = []

    def slowest(values):  # one rank: the maximum over the ranks is its own value
        seen.append(len(values))
        return list(values)
    t = timing_multi.time_ops(cuda.kernel(op_s), True, 0.2, slowest, lambda: None, contextlib.nullcontext(), clock)
    assert t.median_s == pytest.approx(op_s, rel=0.01)
    assert timing_multi.MIN_OPS <= len(t.samples_s) <= timing_multi.MAX_OPS and t.notes == []
    assert seen == [1, len(t.samples_s)]  # the batch size and the samples were agreed among the ranks
    assert cuda.busy_s("work") <= (timing_multi.WARMUP_OPS + 1 + max(timing_multi.MIN_OPS, 0.2 / op_s) + 1) * op_s


def test_per_rank_timer_tells_a_launch_bound_batch(vcuda, monkeypatch):
    cuda = vcuda(launch_s=30e-6)
    monkeypatch.setattr(timing_multi, "OP_ENQUEUE_S", 1e-7)
    monkeypatch.setattr(timing, "HOLD_EXTRA_S", 0.0)
    t = timing_multi.time_ops(cuda.kernel(2e-6), True, 0.01, list, lambda: None, contextlib.nullcontext(), 1.98e9)
    assert t.notes == [timing.LAUNCH_BOUND]
