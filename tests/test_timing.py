"""Timing core and the row it produces: statistics from the samples, verification first."""
import dataclasses
import time

import pytest
import torch

from bench.core import harness, timing
from bench.core.devices import Target


def test_cpu_timing_keeps_every_sample_within_the_budget_bounds():
    calls = []
    budget = timing.Budget(warmup_s=0.0, measure_s=0.0, min_samples=5, max_samples=50)
    t = timing.time_cpu(lambda: calls.append(1) or time.sleep(0.002), budget)
    assert t.method == "perf_counter"
    assert len(t.samples_s) == 5  # min_samples when the time budget is already spent
    assert len(calls) == 6  # one warm-up call + five samples
    assert all(s >= 0.002 for s in t.samples_s)


def test_cpu_timing_stops_at_max_samples():
    budget = timing.Budget(warmup_s=0.0, measure_s=10.0, min_samples=1, max_samples=7)
    assert len(timing.time_cpu(lambda: None, budget).samples_s) == 7


def test_statistics_come_from_the_samples():
    t = timing.Timing([4.0, 1.0, 3.0, 2.0, 5.0], "perf_counter")
    assert t.median_s == 3.0
    assert t.percentile_s(10) == pytest.approx(1.4)


def test_throughput_fields_are_work_over_median_time():
    t = timing.Timing([0.5, 0.25, 1.0], "perf_counter")
    f = harness.value_fields(t, CASE)
    assert f["value"] == 2.0  # 1e9 bytes / 0.5 s median = 2 GB/s
    assert [float(s) for s in f["samples"].split(";")] == [2.0, 4.0, 1.0]
    assert f["p10"] == pytest.approx(1.2) and f["p90"] == pytest.approx(3.6)
    assert f["time_s"] == 0.5 and f["n_samples"] == 3


CASE = harness.Case(family="memory", benchmark="copy", provider="torch", dtype="fp32", name="plateau",
                    metric="bandwidth", unit="GB/s", scale=1e9, work=1e9, work_unit="B", size_bytes=2_000_000_000)


def _measurement(check, fn=lambda: None):
    return harness.Measurement(fn=fn, check=check, budget=timing.TUNE)


def _timed_row(m, target):
    return harness.timed_row(m, target, dataclasses.replace(CASE, work=8e6, size_bytes=8_000_000))


def test_failed_check_gives_wrong_and_no_value_and_is_never_timed():
    timed = []
    cpu = Target(torch.device("cpu"), None, {"device_name": "test cpu"})
    row = _timed_row(_measurement(lambda: "copy: 3 of 10 elements differ", lambda: timed.append(1)), cpu)
    assert row["status"] == "wrong" and "3 of 10" in row["message"]
    assert "value" not in row and not timed


def test_ok_row_carries_identity_and_consistent_value():
    src, dst = torch.randn(1_000_000), torch.empty(1_000_000)
    cpu = Target(torch.device("cpu"), None, {"device_name": "test cpu"})
    row = _timed_row(_measurement(lambda: None, lambda: dst.copy_(src)), cpu)
    assert row["status"] == "ok" and row["device_name"] == "test cpu" and row["device_index"] == ""
    assert row["value"] == pytest.approx(8e6 / row["time_s"] / 1e9, rel=1e-12)
    assert row["timer"] == "perf_counter"


@pytest.mark.gpu
def test_cuda_timing_uses_events_and_hold():
    x = torch.randn(2**24, device="cuda")
    y = torch.empty_like(x)
    t = timing.time_cuda(lambda: y.copy_(x), timing.TUNE)
    assert t.method in ("cuda_events+hold", "cuda_events")
    assert len(t.samples_s) >= timing.TUNE.min_samples and min(t.samples_s) > 0
    flush = timing.L2Flush(torch.device("cuda"), getattr(torch.cuda.get_device_properties(0), "L2_cache_size", 0))
    assert flush.buffer.numel() >= 256 * 2**20
    flush()
