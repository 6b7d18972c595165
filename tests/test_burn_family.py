"""The burn family's GPU path without a GPU: three H100s of a fake NVML, workers that make the records
a real GPU's worker makes (tests/burn_fake_workers.py), the rows the harness builds from them,
the comparison across devices, the ECC delta, and the timeline the supervisor writes."""
import copy
import json
import types

import pytest
import torch

from bench.core import harness, timeline
from bench.core.devices import Target
from bench.core.options import BurnOptions
from bench.core.results import ResultsWriter, read_results
from bench.families import burn, burn_run
from helpers import shipped_db
from test_telemetry import H100, fake_nvml, install

UUIDS = ["GPU-aaaaaaaa-0000-0000-0000-000000000000", "GPU-bbbbbbbb-0000-0000-0000-000000000000",
         "GPU-cccccccc-0000-0000-0000-000000000000"]


def _node(monkeypatch):
    """Three H100s in the fake NVML, with an energy counter, a memory sensor and temperature limits."""
    devices = []
    for i, uuid in enumerate(UUIDS):
        d = copy.deepcopy(H100)
        d.update(uuid=uuid, pci_bus_id=f"00000000:{0x19 + i:02X}:00.0", compute_processes=[])
        devices.append(d)
    nv = fake_nvml(devices)
    energy = {}

    def counter(h):
        energy[h.dev["uuid"]] = energy.get(h.dev["uuid"], 10**9) + 70_000  # 70 J per read
        return energy[h.dev["uuid"]]

    def fields(h, ids):
        return [types.SimpleNamespace(nvmlReturn=0, valueType=1, value=types.SimpleNamespace(uiVal=64))]
    nv.nvmlDeviceGetTotalEnergyConsumption = counter
    nv.nvmlDeviceGetFieldValues = fields
    nv.nvmlDeviceGetTemperatureThreshold = lambda h, kind: {1: 87, 3: 90, 2: 95}.get(kind, 92)
    install(monkeypatch, nv)
    db = shipped_db()
    targets = []
    for i, uuid in enumerate(UUIDS):
        ident = {"device_name": "NVIDIA H100 80GB HBM3", "device_uuid": uuid, "sm_count": "132",
                 "compute_capability": "9.0"}
        targets.append(Target(torch.device("cuda", i), i, ident, db.match(ident["device_name"], "")))
    return nv, devices, targets


def _burn(monkeypatch, tmp_path, worker):
    monkeypatch.setattr(burn_run, "WORKER", f"tests.burn_fake_workers:{worker}")
    nv, devices, targets = _node(monkeypatch)
    run = harness.RunState(targets, shipped_db(), "quick", BurnOptions(duration_s=1.0), len(targets))
    state = run.state(burn)
    writer = timeline.TimelineWriter(tmp_path / "t.timeline.csv", "run0")
    state.start(writer)
    return nv, devices, targets, run, state, writer


def _measure(run, targets, benchmark, dtype=None):
    out = {}
    for t in targets:
        case = next(c for c in burn.cases(t, run) if c.benchmark == benchmark and (dtype is None or c.dtype == dtype))
        out[burn_run.key(t)] = harness.run_case(burn, t, case, run)
    return out


def test_three_gpus_at_once_the_odd_one_out_is_named(monkeypatch, tmp_path):
    nv, devices, targets, run, state, writer = _burn(monkeypatch, tmp_path, "node_worker")
    bf16 = _measure(run, targets, "soak", "bf16")
    fp8 = _measure(run, targets, "soak", "fp8")
    nv.nvmlDeviceGetHandleByIndex(0).dev["ecc_errors"]["uncorrected_volatile"] = 2  # two new uncorrectable errors
    nv.nvmlDeviceGetHandleByIndex(1).dev["remapped_rows"] = [0, 0, 1, 0]  # a remap pending
    memtest = _measure(run, targets, "memtest")
    state.sampler.stop()
    writer.close(True, "complete")

    # The first bf16 result of cuda:2 differs from the two others': silent data corruption, named.
    assert bf16["cuda:2"]["status"] == "wrong"
    assert "differs from that of cuda:0, cuda:1" in bf16["cuda:2"]["message"]
    assert "in 3 of 64 output rows" in bf16["cuda:2"]["message"]
    for k in ("cuda:0", "cuda:1"):
        row = bf16[k]
        assert row["status"] == "ok", row["message"]
        assert json.loads(row["params"])["cross_check"] == "identical to 1 other device(s) of this model"
        assert row["value"] == pytest.approx(700.0 if k == "cuda:0" else 690.0)
        assert row["spec_figure"] == "bf16_dense" and float(row["pct_of_spec"]) > 0  # against the dense claim
        assert row["value_per_watt"] == pytest.approx(row["value"] / 700.0)  # 4200 J over 6 s
    assert all(r["status"] == "ok" for r in fp8.values())

    # gpu-fryer's rule: cuda:2 is at 80% of the node's best fp8 soak.
    rows = [dict(r, run_id="run0", host="h") for r in [*bf16.values(), *fp8.values()]]
    behind = burn.behind_lines(rows)
    assert behind == [next(line for line in behind if "cuda:2" in line)]
    assert "80% of the node's best (cuda:0" in behind[0]

    # ECC and remaps read before and after: new uncorrectable errors and a pending remap fail.
    assert memtest["cuda:0"]["status"] == "wrong" and "2 new uncorrectable ECC error(s)" in memtest["cuda:0"]["message"]
    assert memtest["cuda:1"]["status"] == "wrong" and "remap is pending" in memtest["cuda:1"]["message"]
    clean = memtest["cuda:2"]
    assert clean["status"] == "ok" and clean["unit"] == "GB/s"
    params = json.loads(clean["params"])
    assert params["ecc_new_uncorrectable"] == 0 and params["coverage"] == 0.97 and params["managed_memory"] is False
    assert params["temp_slowdown_c"] == 87 and params["temp_mem_limit_c"] == 95

    # The timeline: every GPU sampled, with its phase, energy from the counter, memory temperature.
    line = timeline.read_timeline(writer.path)
    assert line.complete
    by_device = {i: [r for r in line.rows if r["device_index"] == str(i)] for i in range(3)}
    assert all(len(rows) >= 2 for rows in by_device.values())
    assert {r["phase"] for r in line.rows} & {"soak bf16", "soak fp8", "memtest", "setup", "start", "done"}
    assert all(r["temp_mem_c"] == "64" and r["device_uuid"] in UUIDS for r in line.rows)
    energies = [float(r["energy_j"]) for r in by_device[0]]
    assert energies[0] == 0.0 and energies == sorted(energies)


def test_a_device_that_dies_ends_only_its_own_rows(monkeypatch, tmp_path):
    nv, devices, targets, run, state, writer = _burn(monkeypatch, tmp_path, "dying_worker")
    bf16 = _measure(run, targets, "soak", "bf16")
    memtest = _measure(run, targets, "memtest")
    state.sampler.stop()
    writer.close(True, "complete")
    assert bf16["cuda:1"]["status"] == "error"
    assert "not measured: cuda:1's worker: rank 0" in bf16["cuda:1"]["message"]
    assert "exited with code 3" in bf16["cuda:1"]["message"]
    assert memtest["cuda:1"]["status"] == "error"
    assert bf16["cuda:0"]["status"] == "ok" and memtest["cuda:0"]["status"] == "ok"
    assert bf16["cuda:2"]["status"] == "wrong"  # cuda:0 and cuda:1 agreed before cuda:1 died: a majority


def test_stability_compares_the_first_and_last_window():
    bins = [700e12] * 60 + [650e12] * 60 + [600e12] * 60
    s = burn.stability(bins, 1e12)
    assert s["window_s"] == 60 and s["throughput_first_window"] == pytest.approx(700.0)
    assert s["throughput_last_window"] == pytest.approx(600.0) and s["drop_pct"] == pytest.approx(100 / 7)
    assert burn.stability([1e12] * 2, 1e12) == {"window_s": 0}
    assert burn.stability([3e12, 2e12, 1e12], 1e12)["window_s"] == 1


def test_ecc_delta_without_readings_is_no_verdict():
    problems, params = burn.ecc_delta(None, None)
    assert problems == [] and "not read" in params["ecc"]
    before = {"ecc_mode": "on", "ecc_errors_uncorrected": "0", "ecc_errors_uncorrected_aggregate": "3",
              "ecc_errors_corrected": "10", "remapped_rows_pending": "no", "remapped_rows_failure": "no"}
    after = dict(before, ecc_errors_corrected="25")
    problems, params = burn.ecc_delta(before, after)
    assert problems == [] and params["ecc_new_correctable"] == 15 and params["ecc_new_uncorrectable"] == 0
    problems, _ = burn.ecc_delta(before, dict(after, ecc_errors_uncorrected_aggregate="4", remapped_rows_failure="yes"))
    assert problems == ["1 new uncorrectable ECC error(s) during the burn", "row remapping failed (the memory needs service)"]


def test_rows_written_by_the_harness_read_back(monkeypatch, tmp_path):
    nv, devices, targets, run, state, writer = _burn(monkeypatch, tmp_path, "node_worker")
    results = ResultsWriter(tmp_path / "r.csv", {"run_id": "run0", "host": "h"})
    for phase in ("bf16", "fp8", None):
        for row in _measure(run, targets, "soak" if phase else "memtest", phase).values():
            results.write(row)
    results.close()
    state.sampler.stop()
    writer.close(True, "complete")
    res = read_results(tmp_path / "r.csv")
    assert res.complete and len(res.rows) == 9
    assert sum(r["status"] == "wrong" for r in res.rows) == 1  # cuda:2's first bf16 result


def test_mismatches_found_before_a_worker_died_are_still_a_failure(monkeypatch, tmp_path):
    nv, devices, targets, run, state, writer = _burn(monkeypatch, tmp_path, "corrupting_then_dying_worker")
    bf16 = _measure(run, targets, "soak", "bf16")
    state.sampler.stop()
    writer.close(True, "complete")
    row = bf16["cuda:0"]
    assert row["status"] == "wrong"
    assert row["message"].startswith("silent data corruption on cuda:0: 2 bf16 iteration(s) differed")
    assert "exited with code 9" in row["message"]
