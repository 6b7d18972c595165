"""The burn in `cardbench report` (a timeline plot per node, the burn's findings, performance per watt),
and timelines beside results files never taken for results by report, history or compare."""
import json
import math

from bench import cli
from bench.core import timeline
from bench.core.results import ResultsWriter, read_results, results_files, timeline_path

ROW = {"device_name": "NVIDIA H200", "host": "node7", "provider": "torch", "status": "ok", "n_samples": 3,
       "timer": "cuda_events"}


def _run(folder, run_id="r1"):
    """A node of two H200s: a memory row with its energy, a burn soak per GPU and its timeline beside."""
    path = folder / f"NVIDIA-H200_{run_id}.csv"
    w = ResultsWriter(path, {"run_id": run_id, "host": "node7", "command": "cardbench burn"})
    w.write({**ROW, "device_index": 0, "device_uuid": "GPU-0", "family": "memory", "benchmark": "copy",
             "dtype": "fp32", "case": "plateau", "metric": "bandwidth", "unit": "GB/s", "value": 4200.0,
             "samples": "4100.0;4200.0;4300.0", "p10": 4120.0, "p90": 4280.0, "time_s": 0.001, "energy_j": 300.0,
             "energy_window_s": 0.5, "joules_per_call": 0.6, "value_per_watt": 7.0})
    for gpu, tflops in ((0, 720.0), (1, 705.0)):
        params = {"iterations": 50000, "mismatch_iterations": 0, "cross_check": "identical to 1 other device(s)",
                  "window_s": 60, "throughput_first_window": tflops + 5, "throughput_last_window": tflops,
                  "drop_pct": 0.7}
        w.write({**ROW, "device_index": gpu, "device_uuid": f"GPU-{gpu}", "family": "burn", "benchmark": "soak",
                 "dtype": "bf16", "case": "8192x8192x8192", "metric": "throughput", "unit": "TFLOP/s",
                 "value": tflops, "samples": f"{tflops};{tflops}", "p10": tflops, "p90": tflops,
                 "params": json.dumps(params), "energy_j": 4200.0, "energy_window_s": 6.0,
                 "joules_per_call": 1.1, "value_per_watt": tflops / 700})
    w.close()
    line = timeline.TimelineWriter(timeline_path(path), run_id)
    for k in range(30):
        for gpu in (0, 1):
            line.write({"kind": "sample", "time_s": k * 0.1, "device_index": gpu, "device_uuid": f"GPU-{gpu}",
                        "phase": "soak bf16", "sm_clock_mhz": 1980 - 5 * k, "mem_clock_mhz": 3201,
                        "power_w": 690 + gpu, "energy_j": 69.0 * k * 0.1, "temp_gpu_c": 40 + k, "temp_mem_c": 45 + k,
                        "clocks_event_reasons": "0x4", "clocks_event_reason_names": "sw_power_cap",
                        "throughput_tflops": 720 - gpu * 15 + math.sin(k)})
    line.close(True, "complete")
    return path


def test_report_plots_the_timeline_per_node_and_lists_burn_and_per_watt(tmp_path):
    _run(tmp_path / "runs")
    assert cli.main(["report", str(tmp_path / "runs"), "--out", str(tmp_path / "rep")]) == 0
    md = (tmp_path / "rep" / "report.md").read_text()
    assert "## Burn-in timelines" in md and "Burn timeline: node7 (run r1): 2 GPU(s), 60 samples (complete)." in md
    assert (tmp_path / "rep" / "burn_timeline_0.png").stat().st_size > 10_000
    assert "Performance per watt" in md and "7 GB/s/W" in md and "600 W" in md  # 300 J over 0.5 s
    assert "Burn-in (`cardbench burn`):" in md and "50000 iterations, 0 differing" in md
    assert "data:image/png;base64," in (tmp_path / "rep" / "report.html").read_text()


def test_a_damaged_timeline_is_bad_input(tmp_path, capsys):
    path = _run(tmp_path)
    timeline_path(path).write_text("schema_version,run_id\n1,x\n")
    assert cli.main(["report", str(tmp_path), "--out", str(tmp_path / "rep")]) == 2
    assert "not a cardbench timeline" in capsys.readouterr().err


def test_timelines_are_not_results_for_history_and_compare(tmp_path, capsys):
    first = _run(tmp_path, "r1")
    _run(tmp_path, "r2")
    assert [p.name for p in results_files(tmp_path)] == ["NVIDIA-H200_r1.csv", "NVIDIA-H200_r2.csv"]
    assert cli.main(["history", str(tmp_path)]) == 0
    assert "skipping" not in capsys.readouterr().err
    assert cli.main(["compare", str(tmp_path), str(tmp_path / "NVIDIA-H200_r2.csv")]) in (0, 1)
    assert "not a cardbench results file" not in capsys.readouterr().err
    assert read_results(first).complete


def test_timeline_reader_names_damage():
    import pytest

    from bench.core.results import ResultsFileError

    def bad(tmp, text):
        p = tmp / "x.timeline.csv"
        p.write_text(text)
        with pytest.raises(ResultsFileError) as info:
            timeline.read_timeline(p)
        return str(info.value)

    import tempfile
    from pathlib import Path

    tmp = Path(tempfile.mkdtemp())
    head = ",".join(timeline.COLUMNS)
    row = dict.fromkeys(timeline.COLUMNS, "")
    row.update(schema_version="1", run_id="r", kind="sample", time_s="0.1", power_w="hot")
    assert "column 'power_w'" in bad(tmp, head + "\n" + ",".join(row.values()) + "\n")
    row.update(power_w="700", kind="nonsense")
    assert "column 'kind'" in bad(tmp, head + "\n" + ",".join(row.values()) + "\n")
    row.update(kind="sample", schema_version="9")
    assert "unknown timeline schema" in bad(tmp, head + "\n" + ",".join(row.values()) + "\n")
    good = dict(row, schema_version="1")
    end = dict(good, kind="end", phase="complete", message="complete")
    p = tmp / "ok.timeline.csv"
    p.write_text(head + "\n" + ",".join(good.values()) + "\n" + ",".join(end.values()) + "\n")
    assert timeline.read_timeline(p).complete
    p.write_text(head + "\n" + ",".join(good.values()) + "\n" + ",".join(end.values())[:20])  # torn: dropped
    line = timeline.read_timeline(p)
    assert not line.complete and len(line.rows) == 1


def test_gpu_check_burns_60_seconds_and_summarizes_the_burn(tmp_path):
    import csv
    import io
    import os
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    script = (root / ".ci" / "gpu-check").read_text()
    assert 'step burn 85 "$PY" -m bench burn --duration 60s' in script
    assert "! -name '*.timeline.csv'" in script  # the merge takes results files, not timelines
    # A real CPU burn's rows relabelled as a GPU's: the summary lists them per device.
    text = (root / "tests" / "fixtures" / "results_schema_v2.csv").read_text()
    reader = csv.DictReader(io.StringIO(text, newline=""))
    rows = [dict(r, device_index="0", device_name="NVIDIA H200") for r in reader]
    (tmp_path / "results" / "burn").mkdir(parents=True)
    with open(tmp_path / "results" / "burn" / "b.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=reader.fieldnames, lineterminator="\n")
        w.writeheader()
        w.writerows(rows)
    (tmp_path / "steps.tsv").write_text("burn\t0\t68000\t85\n")
    env = dict(os.environ, PYTHONPATH=str(root))
    proc = subprocess.run([sys.executable, str(root / ".ci" / "gpu_summary.py"), "summary", str(tmp_path),
                           str(tmp_path / "s.json")], capture_output=True, text=True, env=env, cwd=root, timeout=120)
    assert proc.returncode == 0, proc.stderr
    burn = json.loads((tmp_path / "s.json").read_text())["burn"]
    assert [(b["benchmark"], b["dtype"], b["status"]) for b in burn] == [
        ("soak", "bf16", "ok"), ("soak", "fp8", "ok"), ("memtest", "uint32", "ok")]
    assert burn[0]["mismatch_iterations"] == 0 and burn[2]["errors"] == 0


def test_a_burn_is_reported_beside_the_cards_benchmark_run_not_instead(tmp_path):
    import shutil
    from pathlib import Path

    fixtures = Path(__file__).parent / "fixtures"
    shutil.copy(fixtures / "results_schema_v1.csv", tmp_path / "run.csv")  # a CPU memory run on host vm
    shutil.copy(fixtures / "results_schema_v2.csv", tmp_path / "burn.csv")  # a later CPU burn, same host
    assert cli.main(["report", str(tmp_path), "--out", str(tmp_path / "rep")]) == 0
    md = (tmp_path / "rep" / "report.md").read_text()
    assert "Reported run: run.csv" in md and "Burn-in: Reported run: burn.csv" in md
    assert "| memory copy" in md and "Burn-in (`cardbench burn`):" in md
