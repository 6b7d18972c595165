"""`cardbench history`: each card's headline numbers over time, version changes and steps beyond the noise."""
import json
import shutil

import numpy as np

from bench.commands import history
from bench.cli import main
from bench.core.results import ResultsWriter, format_samples

UUID_A = "GPU-aaaaaaaa-0000-0000-0000-000000000001"
UUID_B = "GPU-bbbbbbbb-0000-0000-0000-000000000002"
OLD, NEW = "550.54.15", "570.86.15"


def write_run(directory, name, uuid, day, driver, copy_gbs, bf16_tflops=700.0, close=True, seed=0, torch="2.11.0"):
    """One run of one card: memory copy and bf16 matmul rows with 30 raw samples each, 0.2% noise."""
    rng = np.random.default_rng(seed)
    w = ResultsWriter(directory / name, {
        "run_id": f"{name[:6]:0>6}{seed:06d}", "host": "node1", "device_index": "0",
        "device_name": "NVIDIA H100 80GB HBM3", "device_uuid": uuid, "driver_version": driver,
        "cuda_driver_version": "12.8", "cuda_runtime_version": "12.8", "torch_version": torch})
    for family, bench, provider, dtype, case, centre, unit in (
            ("memory", "copy", "triton", "fp32", "plateau", copy_gbs, "GB/s"),
            ("matmul", "bf16", "torch", "bf16", "8192x8192x8192", bf16_tflops, "TFLOP/s")):
        samples = list(rng.normal(centre, centre * 0.002, 30))
        w.write({"family": family, "benchmark": bench, "provider": provider, "dtype": dtype, "case": case,
                 "metric": "bandwidth" if family == "memory" else "throughput", "unit": unit, "status": "ok",
                 "value": float(np.median(samples)), "samples": format_samples(samples),
                 "p10": float(np.percentile(samples, 10)), "p90": float(np.percentile(samples, 90)),
                 "size_bytes": 4 * 2**30, "work": 8 * 2**30, "n_samples": 30,
                 "timestamp_utc": f"2026-03-{day:02d}T10:00:00+00:00"})
    if close:
        w.close()
    return directory / name


def fleet_dir(tmp_path):
    """Card A: two runs on the old driver, a 7% drop with the new driver, one more on it (incomplete).
    Card B: two runs, no change."""
    d = tmp_path / "results"
    write_run(d, "a1.csv", UUID_A, 1, OLD, 3000.0, seed=1)
    write_run(d, "a2.csv", UUID_A, 2, OLD, 3003.0, seed=2)
    write_run(d, "a3.csv", UUID_A, 3, NEW, 2790.0, seed=3)
    write_run(d, "a4.csv", UUID_A, 4, NEW, 2791.0, seed=4, close=False)
    write_run(d, "b1.csv", UUID_B, 1, OLD, 3010.0, seed=5)
    write_run(d, "b2.csv", UUID_B, 5, OLD, 3008.0, seed=6)
    return d


def run_json(capsys, *args):
    code = main(["history", *map(str, args), "--json"])
    out = capsys.readouterr()
    return code, (json.loads(out.out) if out.out.strip() else None), out.err


def series(doc, uuid, metric):
    return next(s for s in doc["series"] if s["card"] == uuid and s["metric"] == metric)


def test_points_in_time_order_with_versions_and_the_step_at_the_driver_change(tmp_path, capsys):
    code, doc, _ = run_json(capsys, fleet_dir(tmp_path))
    assert code == 0
    copy = series(doc, UUID_A, "memory copy")
    pts = copy["points"]
    assert [p["when"][:10] for p in pts] == ["2026-03-01", "2026-03-02", "2026-03-03", "2026-03-04"]
    assert [p["versions"]["driver_version"] for p in pts] == [OLD, OLD, NEW, NEW]
    assert pts[2]["changes"] == [f"driver_version {OLD} -> {NEW}"] and pts[1]["changes"] == []
    assert pts[0]["p10"] < pts[0]["value"] < pts[0]["p90"] and pts[0]["n_samples"] == 30
    # 0.1% between the first two runs is noise; -7% with the new driver is a step; then flat again.
    assert pts[1]["step"] is None and pts[3]["step"] is None
    step = pts[2]["step"]
    assert step["verdict"] == "slower" and -8 < step["change_pct"] < -6 and step["changes"] == pts[2]["changes"]
    assert not any(p["step"] for p in series(doc, UUID_A, "matmul bf16")["points"])  # bf16 did not move
    assert not any(p["step"] for p in series(doc, UUID_B, "memory copy")["points"])
    assert len(doc["steps"]) == 1 and "at a version change" in doc["steps"][0] and UUID_A in doc["steps"][0]


def test_incomplete_runs_are_shown_and_marked(tmp_path, capsys):
    _, doc, _ = run_json(capsys, fleet_dir(tmp_path))
    last = series(doc, UUID_A, "memory copy")["points"][-1]
    assert last["complete"] is False and "incomplete run" in last["note"] and last["value"] > 2700


def test_table_marks_the_version_change_and_points_out_the_step(tmp_path, capsys):
    code = main(["history", str(fleet_dir(tmp_path)), "--card", "aaaaaaaa"])
    out = capsys.readouterr().out
    assert code == 0 and UUID_B not in out
    row = next(l for l in out.splitlines() if l.startswith("2026-03-03 10:00:00") and "2,79" in l)
    assert f"driver_version {OLD} -> {NEW}" in row and "slower -7." in row
    assert "steps beyond the run-to-run noise:" in out
    assert "memory copy: slower -7." in out and "at a version change (driver_version" in out


def test_a_step_without_a_version_change_is_told_apart(tmp_path, capsys):
    d = tmp_path / "results"
    write_run(d, "x1.csv", UUID_A, 1, NEW, 3000.0, seed=1)
    write_run(d, "x2.csv", UUID_A, 2, NEW, 2700.0, seed=2)
    _, doc, _ = run_json(capsys, d, "--metric", "memory")
    assert [s["metric"] for s in doc["series"]] == ["memory copy"]
    assert doc["steps"] and "with no version change" in doc["steps"][0]


def test_plot_is_written(tmp_path, capsys):
    png = tmp_path / "history.png"
    code = main(["history", str(fleet_dir(tmp_path)), "--plot", str(png)])
    assert code == 0 and f"plot: {png}" in capsys.readouterr().out
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000


def test_plot_function_for_report(tmp_path):
    runs, skipped = history.load([str(fleet_dir(tmp_path))])
    assert skipped == []
    out = history.plot(history.build(runs, metric="matmul"), tmp_path / "h.png")
    assert out == tmp_path / "h.png" and out.exists()


def test_damaged_files_are_named_and_skipped_and_copies_counted_once(tmp_path, capsys):
    d = fleet_dir(tmp_path)
    (d / "broken.csv").write_text("schema_version,run_id\n1,x,y\n")
    (d / "baselines").mkdir()
    shutil.copyfile(d / "a1.csv", d / "baselines" / f"{UUID_A}.csv")  # accept's birth certificate
    write_run(d / "node2", "a1.csv", UUID_B, 3, OLD, 3009.0, seed=1)  # the same run id on another card: kept
    code, doc, err = run_json(capsys, d)
    assert code == 0 and "warning: skipping" in err and "broken.csv" in err
    assert any("broken.csv" in s for s in doc["skipped"])
    assert len(series(doc, UUID_A, "memory copy")["points"]) == 4
    assert len(series(doc, UUID_B, "memory copy")["points"]) == 3


def test_no_results_or_no_match_exits_2_with_a_message(tmp_path, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    code, doc, err = run_json(capsys, empty)
    assert code == 2 and doc is None and "no results" in err
    code, _, err = run_json(capsys, tmp_path / "nowhere")
    assert code == 2 and "no such file or directory" in err
    code, _, err = run_json(capsys, fleet_dir(tmp_path), "--card", "GPU-zzzz")
    assert code == 2 and "nothing matches" in err and UUID_A in err and "memory copy" in err


def test_a_headline_measured_differently_is_not_compared(tmp_path, capsys):
    """Triton's copy failed in the second run: the torch copy stands in, marked, never a 'step'."""
    d = tmp_path / "results"
    write_run(d, "x1.csv", UUID_A, 1, OLD, 3000.0, seed=1)
    w = ResultsWriter(d / "x2.csv", {"run_id": "x2x2x2x2x2x2", "host": "node1", "device_index": "0",
                                     "device_name": "NVIDIA H100 80GB HBM3", "device_uuid": UUID_A,
                                     "driver_version": OLD})
    stamp = "2026-03-02T10:00:00+00:00"
    w.write({"family": "memory", "benchmark": "copy", "provider": "triton", "dtype": "fp32", "case": "plateau",
             "unit": "GB/s", "status": "error", "message": "Triton compile failed", "timestamp_utc": stamp})
    w.write({"family": "memory", "benchmark": "copy", "provider": "torch", "dtype": "fp32", "case": "plateau",
             "unit": "GB/s", "status": "ok", "value": 2500.0, "samples": "2500.0;2501.0;2499.0",
             "timestamp_utc": stamp})
    w.close()
    _, doc, _ = run_json(capsys, d, "--metric", "memory copy")
    last = doc["series"][0]["points"][-1]
    assert last["provider"] == "torch" and last["value"] == 2500.0 and last["step"] is None
    assert "before as triton plateau: not compared" in last["note"] and doc["steps"] == []
