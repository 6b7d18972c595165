"""Energy over a timed window (NVML's total-energy counter) and what every row derives from it:
J per call and value per watt."""
import pytest
import torch

from bench.core import harness, telemetry, timing
from bench.core.devices import Target
from test_telemetry import fake_nvml, install


def _counting(nv, mj_per_read: int):
    """Give the fake binding an energy counter that rises by `mj_per_read` at every read."""
    reads = []

    def energy(handle):
        reads.append(handle)
        return 1_000_000 + mj_per_read * (len(reads) - 1)
    nv.nvmlDeviceGetTotalEnergyConsumption = energy
    return reads


def test_sampler_reads_the_energy_counter_at_the_window_edges(monkeypatch):
    nv = fake_nvml()
    reads = _counting(nv, 350_000)  # 350 J between the two reads
    install(monkeypatch, nv)
    with telemetry.Sampler(0, interval_s=60) as s:
        pass
    summary = s.summary()
    assert len(reads) == 2
    assert float(summary["energy_j"]) == 350.0
    assert 0 < float(summary["energy_window_s"]) < 5


def test_no_energy_counter_leaves_the_columns_empty(monkeypatch):
    install(monkeypatch, fake_nvml())  # pre-Volta boards: the call is not supported
    with telemetry.Sampler(0, interval_s=60) as s:
        pass
    assert s.summary()["energy_j"] == "" and s.summary()["energy_window_s"] == ""


def _row(metric="throughput", **kw):
    row = {"metric": metric, "value": 700.0, "time_s": 0.0016, "energy_j": 350.0, "energy_window_s": 0.5}
    row.update(kw)
    return row


def test_efficiency_is_value_over_mean_power_and_power_times_call_time():
    out = harness.efficiency(_row())
    assert out["value_per_watt"] == pytest.approx(700.0 / 700.0)  # 350 J over 0.5 s = 700 W
    assert out["joules_per_call"] == pytest.approx(700.0 * 0.0016)
    latency = harness.efficiency(_row(metric="latency"))
    assert "value_per_watt" not in latency and latency["joules_per_call"] == pytest.approx(1.12)
    for missing in ({"energy_j": ""}, {"energy_window_s": ""}, {"energy_j": 0.0}, {"energy_window_s": 0.0}):
        assert harness.efficiency(_row(**missing)) == {}


def test_every_measured_row_carries_its_energy_and_per_watt_value():
    case = harness.Case("memory", "copy", "torch", "fp32", "plateau", "bandwidth", "GB/s", 1e9, 8e9, "B", 8e9)
    target = Target(torch.device("cpu"), None, {"device_name": "cpu"})
    result = timing.Timing([2.0, 2.0, 2.0], "perf_counter")  # 8e9 B in 2 s: 4 GB/s
    row = harness.measured_row(case, target, result, {}, {"energy_j": "100.0", "energy_window_s": "10.0"}, [])
    assert row["value"] == pytest.approx(4.0)
    assert row["value_per_watt"] == pytest.approx(0.4)  # 10 W
    assert row["joules_per_call"] == pytest.approx(20.0)


def test_a_schema_1_file_reads_with_the_energy_columns_empty():
    from pathlib import Path

    from bench.core.results import COLUMNS, ENERGY_COLUMNS, read_results

    res = read_results(Path(__file__).parent / "fixtures" / "results_schema_v1.csv")
    assert res.schema_version == 1
    assert all(list(r) == COLUMNS and all(r[c] == "" for c in ENERGY_COLUMNS) for r in res.rows)
    assert list(res.frame().columns) == COLUMNS
