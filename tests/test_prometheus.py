"""Prometheus textfile export: parsed back with prometheus_client's own parser, written atomically."""
import os

import pytest
from prometheus_client.parser import text_string_to_metric_families

from bench.commands import accept
from bench.core import prometheus
from bench.core.results import ResultsWriter, read_results

UUID = "GPU-11111111-2222-3333-4444-555555555555"
RUN = {"run_id": "abc123def456", "host": "gpu07", "device_index": "3", "device_name": "NVIDIA H100 80GB HBM3",
       "device_uuid": UUID, "driver_version": "570.86.15", "ecc_mode": "on", "compute_processes": "0"}


def row(family, benchmark, provider, dtype, case, value, unit, status="ok", pct="", **extra):
    r = {"family": family, "benchmark": benchmark, "provider": provider, "dtype": dtype, "case": case,
         "metric": "bandwidth", "unit": unit, "status": status, "message": "" if status == "ok" else "it broke",
         "value": repr(value) if status == "ok" else "", "pct_of_spec": pct,
         "timestamp_utc": "2026-03-01T10:00:00+00:00"}
    r.update(extra)
    return r


def h100_run(tmp_path, memory_status="ok"):
    w = ResultsWriter(tmp_path / "run.csv", RUN)
    rows = [
        row("memory", "copy", "triton", "fp32", "plateau", 2900.0, "GB/s", memory_status, "86.6"),
        row("memory", "copy", "torch", "fp32", "plateau", 2700.0, "GB/s", pct="80.6"),
        row("memory", "copy", "triton", "fp32", "sweep-64MiB", 3900.0, "GB/s"),  # a sweep point is never the headline
        row("matmul", "bf16", "torch", "bf16", "8192x8192x8192", 700.0, "TFLOP/s", pct="70.7", work="1099511627776"),
        row("matmul", "bf16", "torch", "bf16", "16384x16384x4096", 720.0, "TFLOP/s", pct="72.8", work="2199023255552"),
        row("matmul", "bf16", "triton", "bf16", "16384x16384x4096", 690.0, "TFLOP/s", work="2199023255552"),
        row("matmul", "fp8", "torch", "fp8", "16384x16384x4096-fastacc", 1500.0, "TFLOP/s", work="2199023255552"),
        row("matmul", "fp8", "torch", "fp8", "16384x16384x4096", 1200.0, "TFLOP/s", work="2199023255552"),
        row("transfer", "h2d", "torch", "uint8", "pinned-256MiB", 50.0, "GB/s", size_bytes="268435456"),
        row("transfer", "h2d", "torch", "uint8", "pinned-1GiB", 55.4, "GB/s", size_bytes="1073741824", pct="87.9"),
        row("transfer", "h2d", "torch", "uint8", "pageable-1GiB", 20.0, "GB/s", size_bytes="1073741824"),
        row("collective", "all_reduce", "nccl", "bf16", "size-1GiB", 350.0, "GB/s", size_bytes="1073741824"),
        row("collective", "all_reduce", "nccl", "bf16", "peak", 368.0, "GB/s", pct="81.8"),
    ]
    for r in rows:
        w.write(r)
    w.close()
    return read_results(tmp_path / "run.csv").rows


def families(path):
    return {f.name: f for f in text_string_to_metric_families(open(path).read())}


def sample(fams, name, **labels):
    found = [s for s in fams[name].samples if all(s.labels.get(k) == v for k, v in labels.items())]
    assert len(found) == 1, (name, labels, fams[name].samples)
    return found[0]


def test_headlines_in_base_units_with_card_labels(tmp_path):
    rows = h100_run(tmp_path)
    out = prometheus.write_textfile(tmp_path / "cardbench.prom", rows)
    fams = families(out)
    mem = sample(fams, "cardbench_memory_bandwidth_bytes_per_second")
    assert mem.value == 2900.0e9  # GB/s -> bytes per second, Triton's plateau copy
    assert mem.labels == {"uuid": UUID, "model": "NVIDIA H100 80GB HBM3", "host": "gpu07", "device": "3",
                          "benchmark": "copy", "dtype": "fp32", "provider": "triton", "case": "plateau"}
    bf16 = sample(fams, "cardbench_matmul_operations_per_second", dtype="bf16")
    assert bf16.value == 720.0e12 and bf16.labels["case"] == "16384x16384x4096" and bf16.labels["provider"] == "torch"
    fp8 = sample(fams, "cardbench_matmul_operations_per_second", dtype="fp8")
    assert fp8.value == 1200.0e12  # fast accumulation is not the fixed-shape headline
    h2d = sample(fams, "cardbench_transfer_bandwidth_bytes_per_second", benchmark="h2d")
    assert h2d.value == pytest.approx(55.4e9) and h2d.labels["case"] == "pinned-1GiB"
    assert sample(fams, "cardbench_collective_busbw_bytes_per_second").value == 368.0e9
    assert sample(fams, "cardbench_spec_ratio", family="memory").value == pytest.approx(0.866)
    assert sample(fams, "cardbench_spec_ratio", family="collective").value == pytest.approx(0.818)
    assert {s.labels["family"] for s in fams["cardbench_spec_ratio"].samples} == {"memory", "matmul", "transfer",
                                                                                   "collective"}
    stamp = sample(fams, "cardbench_run_timestamp_seconds")
    assert stamp.value == 1772359200.0  # 2026-03-01T10:00:00Z


def test_a_failed_headline_falls_back_and_a_failed_family_exports_no_value(tmp_path):
    rows = h100_run(tmp_path, memory_status="error")
    fams = families(prometheus.write_textfile(tmp_path / "cardbench.prom", rows))
    assert sample(fams, "cardbench_memory_bandwidth_bytes_per_second").labels["provider"] == "torch"
    only_errors = [r for r in rows if r["family"] != "memory" or r["status"] != "ok"]
    fams = families(prometheus.write_textfile(tmp_path / "cardbench.prom", only_errors))
    assert fams["cardbench_memory_bandwidth_bytes_per_second"].samples == []


def test_accept_verdicts_and_burn_counts(tmp_path):
    rows = h100_run(tmp_path)
    verdicts = accept.judge(rows, accept.load_policy())
    burn = {UUID: {"mismatches": 2, "memory_errors": 0}, "GPU-other": {"mismatches": 0, "memory_errors": 5}}
    fams = families(prometheus.write_textfile(tmp_path / "cardbench.prom", rows, verdicts, burn))
    checks = {s.labels["check"]: s.value for s in fams["cardbench_accept_check_verdict"].samples}
    assert checks["memory-copy"] == 1.0  # 86.6% >= 80%
    assert checks["matmul-bf16"] == 1.0  # 72.8% >= 65%
    assert checks["matmul-fp8"] == -1.0  # no claim on the fp8 rows: INCONCLUSIVE
    assert checks["pcie-link"] == -1.0  # no link readings
    assert "p2p" not in checks or checks["p2p"] == -1.0  # N/A checks are left out, never 1
    card = sample(fams, "cardbench_accept_verdict")
    assert card.value == -1.0 and card.labels["uuid"] == UUID and card.labels["host"] == "gpu07"
    assert sample(fams, "cardbench_burn_mismatches", uuid=UUID).value == 2
    other = sample(fams, "cardbench_burn_memory_errors", uuid="GPU-other")
    assert other.value == 5 and other.labels["host"] == ""


def test_a_failing_check_reads_zero(tmp_path):
    rows = h100_run(tmp_path)
    for r in rows:
        if r["family"] == "memory" and r["pct_of_spec"]:
            r["pct_of_spec"] = "50.0"
    verdicts = accept.judge(rows, accept.load_policy())
    fams = families(prometheus.write_textfile(tmp_path / "cardbench.prom", rows, verdicts))
    assert sample(fams, "cardbench_accept_check_verdict", check="memory-copy").value == 0.0
    assert sample(fams, "cardbench_accept_verdict").value == 0.0


def test_the_file_is_replaced_never_rewritten_in_place(tmp_path):
    rows = h100_run(tmp_path)
    target = tmp_path / "cardbench.prom"
    prometheus.write_textfile(target, rows)
    held = open(target)  # a reader (node_exporter) holding the old file keeps a whole file
    first_inode = os.stat(target).st_ino
    prometheus.write_textfile(target, rows[:1])
    assert os.stat(target).st_ino != first_inode  # a new file renamed over the old one
    assert "cardbench_collective_busbw_bytes_per_second{" in held.read()
    held.close()
    assert "cardbench_collective_busbw_bytes_per_second{" not in target.read_text()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cardbench.prom", "run.csv"]  # no temporary left


def test_a_failed_write_leaves_the_previous_file(tmp_path, monkeypatch):
    rows = h100_run(tmp_path)
    target = tmp_path / "cardbench.prom"
    prometheus.write_textfile(target, rows)
    before = target.read_text()
    import prometheus_client.exposition as exposition

    def broken(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(exposition, "generate_latest", broken)
    with pytest.raises(OSError):
        prometheus.write_textfile(target, rows[:1])
    assert target.read_text() == before


def test_paths_node_exporter_would_not_read_are_refused(tmp_path):
    rows = h100_run(tmp_path)
    with pytest.raises(ValueError, match="ending in .prom"):
        prometheus.write_textfile(tmp_path / "cardbench.txt", rows)
    with pytest.raises(ValueError, match="does not exist"):
        prometheus.write_textfile(tmp_path / "missing" / "cardbench.prom", rows)


def test_a_real_cpu_run_exports_the_host_memory_with_device_cpu(tmp_path):
    from pathlib import Path

    rows = read_results(Path(__file__).parent / "fixtures" / "results_schema_v1.csv").rows
    fams = families(prometheus.write_textfile(tmp_path / "cardbench.prom", rows))
    mem = sample(fams, "cardbench_memory_bandwidth_bytes_per_second")
    assert mem.labels["device"] == "cpu" and mem.labels["uuid"] == "" and mem.labels["provider"] == "torch"
    assert mem.value == pytest.approx(25.64e9, rel=1e-3)
    assert fams["cardbench_spec_ratio"].samples == []  # no claim for a CPU: no ratio, never 0
