"""`cardbench report`: the summary per card, the roofline, one run per card, history, grouped non-ok rows."""
import json
import os
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from bench.cli import main
from bench.commands import report_plots, report_roofline as rl
from bench.commands.accept import CardVerdict, Result, write_junit
from bench.core.results import ResultsWriter, format_samples, read_results

H100 = "NVIDIA H100 PCIe"
UUID = "GPU-aaaaaaaa-0000-0000-0000-000000000001"
T0 = datetime(2026, 3, 1, 10, 0, tzinfo=timezone.utc)


def measured(value: float, unit: str, work: float, work_unit: str, claim: float | None = None, **row) -> dict:
    """An ok row whose time_s, samples and % of claim follow from its value, as the harness writes them."""
    scale = {"GB/s": 1e9, "TFLOP/s": 1e12, "GFLOP/s": 1e9, "TOPS": 1e12, "GOPS": 1e9}[unit]
    out = {"unit": unit, "status": "ok", "value": value, "samples": format_samples([value * f for f in
           (0.99, 1.0, 1.0, 1.01, 1.0)]), "p10": value * 0.99, "p90": value * 1.01, "n_samples": 5,
           "work": work, "work_unit": work_unit, "time_s": work / (value * scale)}
    if claim:
        out.update(spec_entry="H100 PCIe", spec_value=claim, spec_unit=unit, pct_of_spec=100 * value / claim,
                   spec_source="https://example.invalid/h100-datasheet.pdf")
    return {**out, **row}


def mem(bench: str, gbs: float, claim: float | None = 2000.0, provider: str = "triton") -> dict:
    nbytes = {"read": 1, "write": 1, "copy": 2, "triad": 3}[bench] * 2**30
    return measured(gbs, "GB/s", nbytes, "B", claim, family="memory", benchmark=bench, provider=provider,
                    dtype="fp32", case="plateau", metric="bandwidth", size_bytes=nbytes)


def gemm(dtype: str, mnk: tuple[int, int, int], value: float, unit: str = "TFLOP/s", claim: float | None = None,
         out_dtype: str | None = None, provider: str = "torch") -> dict:
    m, n, k = mnk
    params = {"m": m, "n": n, "k": k, "out_dtype": out_dtype or dtype}
    return measured(value, unit, 2.0 * m * n * k, "OP" if dtype == "int8" else "FLOP", claim, family="matmul",
                    benchmark=dtype, provider=provider, dtype=dtype, case=f"{m}x{n}x{k}", metric="throughput",
                    params=json.dumps(params))


def not_ok(family: str, bench: str, case: str, status: str, message: str, provider: str = "torch") -> dict:
    return {"family": family, "benchmark": bench, "provider": provider, "dtype": "uint8", "case": case,
            "metric": "bandwidth", "unit": "GB/s", "status": status, "message": message}


def write_run(path: Path, rows: list[dict], start: datetime = T0, name: str = H100, uuid: str = UUID,
              host: str = "node1", index: str = "0", close: tuple[str, str] | None = ("ok", "complete"),
              driver: str = "570.86.15") -> Path:
    w = ResultsWriter(path, {"run_id": f"{abs(hash((str(path), start))) % 16**12:012x}", "host": host,
                             "device_index": index, "device_name": name, "device_uuid": uuid,
                             "driver_version": driver, "torch_version": "2.13.0"})
    for i, r in enumerate(rows):
        w.write({**r, "timestamp_utc": (start + timedelta(seconds=i)).isoformat()})
    if close:
        w.close(*close)
    else:
        w._file.close()  # killed: no closing row
    return path


def gpu_rows(copy_gbs: float = 1800.0) -> list[dict]:
    return [mem("copy", copy_gbs), mem("triad", copy_gbs * 1.05), mem("read", copy_gbs * 1.02),
            gemm("bf16", (8192, 8192, 8192), 600.0, claim=756.0),
            gemm("bf16", (4096, 4096, 4096), 500.0, claim=756.0),
            gemm("fp8", (8192, 8192, 8192), 1100.0, claim=1513.0, out_dtype="bf16")]


def cpu_rows() -> list[dict]:
    return [mem("copy", 36.3, claim=None, provider="torch"),
            gemm("bf16", (1024, 1024, 1024), 442.6, unit="GFLOP/s"),
            gemm("fp32", (1024, 1024, 1024), 59.7, unit="GFLOP/s")]


def report(capsys, out: Path, *args):
    code = main(["report", *map(str, args), "--out", str(out)])
    err = capsys.readouterr().err
    md = (out / "report.md").read_text() if (out / "report.md").exists() else ""
    page = (out / "report.html").read_text() if (out / "report.html").exists() else ""
    return code, md, page, err


def cells(md: str, first: str) -> list[str]:
    """The cells of the first Markdown table row whose first cell is `first`."""
    for line in md.splitlines():
        row = [c.strip() for c in line.strip().strip("|").split("|")] if line.startswith("|") else []
        if row and row[0] == first:
            return row
    raise AssertionError(f"no table row {first!r}")


def section(md: str, title: str) -> str:
    """The Markdown from a heading to the next heading of the same or a higher level."""
    start = md.index(title)
    level = md[:start].rsplit("\n", 1)[-1].count("#") or title.count("#")
    rest = md[start + len(title):]
    ends = [i for i in (rest.find("\n" + "#" * n + " ") for n in range(1, level + 1)) if i >= 0]
    return rest[:min(ends)] if ends else rest


# ---------------------------------------------------------------------------------------
# Roofline arithmetic


def test_gemm_intensity_comes_from_m_n_k_and_the_element_sizes():
    square = gemm("bf16", (4096, 4096, 4096), 600.0)
    flops, nbytes = rl.flops_and_bytes(square)
    assert flops == 2 * 4096**3 and nbytes == 3 * 4096**2 * 2  # A, B, C in bf16
    assert flops / nbytes == pytest.approx(4096 / 3)
    fp8 = gemm("fp8", (8192, 1, 28672), 1.0, out_dtype="bf16")  # decode-shaped: one vector
    assert rl.flops_and_bytes(fp8) == (2 * 8192 * 28672, 8192 * 28672 + 28672 + 8192 * 2)
    int8 = gemm("int8", (1024, 2048, 512), 1.0, unit="TOPS", out_dtype="int32")
    assert rl.flops_and_bytes(int8)[1] == 1024 * 512 + 512 * 2048 + 1024 * 2048 * 4


def test_roof_is_the_lower_of_peak_and_bandwidth_times_intensity():
    assert rl.attainable(1.0, 1000e9, 100e9) == 100e9  # memory-bound below the ridge (10 FLOP/B)
    assert rl.attainable(100.0, 1000e9, 100e9) == 1000e9  # compute-bound above it
    assert rl.attainable(10.0, 1000e9, 100e9) == 1000e9


def test_llm_rows_are_placed_from_work_and_a_bytes_param_and_judged_against_the_roof(tmp_path, capsys):
    """A family the roofline does not know: placed from `work` (FLOP) and its `bytes` param, or from
    a `flops` param when its work is bytes; the roof there is min(peak, bandwidth x intensity)."""
    gemv = measured(50.0, "GFLOP/s", 2e9, "FLOP", family="llm", benchmark="decode_gemv", provider="torch",
                    dtype="bf16", case="batch-1", metric="throughput", params=json.dumps({"bytes": 2e9}))
    attn = measured(80.0, "GB/s", 4e9, "B", family="llm", benchmark="decode_attention", provider="torch",
                    dtype="bf16", case="kv-4k", metric="bandwidth", params=json.dumps({"flops": 1e9}))
    rows = [mem("copy", 100.0, claim=None, provider="torch"), gemm("bf16", (1024, 1024, 1024), 1000.0, "GFLOP/s"),
            gemv, attn]
    run = write_run(tmp_path / "cpu.csv", rows, index="", uuid="", name="AMD EPYC")
    roof = rl.roofline(read_results(run).rows)
    placed = {p.label.split()[1]: p for p in roof.points}
    assert placed["decode_gemv"].intensity == pytest.approx(1.0)
    assert placed["decode_gemv"].rate == pytest.approx(50e9)
    assert placed["decode_attention"].intensity == pytest.approx(0.25)  # 1e9 FLOP over 4e9 B
    assert placed["decode_attention"].rate == pytest.approx(1e9 / (4e9 / 80e9))
    code, md, _, _ = report(capsys, tmp_path / "r", run)
    assert cells(md, "llm decode_gemv batch-1 torch")[1:] == ["1.00", "50.0", "100.0", "50%", "memory"]  # roof 100 GB/s x 1 FLOP/B, not 1000
    assert "Roofline: memory roof 100.0 GB/s measured (copy torch, no claim); bf16 1,000.0 GFLOP/s" in md


def test_gpu_roofline_has_measured_and_claimed_roofs_and_every_gemm(tmp_path, capsys):
    run = write_run(tmp_path / "h100.csv", gpu_rows())
    roof = rl.roofline(read_results(run).rows)
    assert roof.bandwidth == pytest.approx(1800.0 * 1.05 * 1e9)  # the best plateau pattern (triad)
    assert roof.bandwidth_claim == pytest.approx(2000e9)
    assert roof.peaks == {"bf16": pytest.approx(600e12), "fp8": pytest.approx(1100e12)}
    assert roof.peak_claims == {"bf16": pytest.approx(756e12), "fp8": pytest.approx(1513e12)}
    assert sum(p.family == "matmul" for p in roof.points) == 3 and roof.scale == 1e12
    memory = [p for p in roof.points if p.family == "memory"]
    assert {p.intensity for p in memory} == {rl.MEMORY_INTENSITY}
    assert max(p.rate for p in memory) == pytest.approx(roof.bandwidth * rl.MEMORY_INTENSITY)
    code, md, page, _ = report(capsys, tmp_path / "r", run)
    assert code == 0 and (tmp_path / "r" / "roofline_0.png").stat().st_size > 10_000
    assert "ridge 317.5 FLOP/B" in md  # 600 TFLOP/s / 1890 GB/s


# ---------------------------------------------------------------------------------------
# Summary


def test_summary_opens_the_report_with_headlines_verdict_and_roofline(tmp_path, capsys):
    write_run(tmp_path / "h100.csv", gpu_rows() + [not_ok("transfer", "h2d", "pinned-1GiB", "error", "boom")])
    later = T0 + timedelta(hours=1)
    verdict = CardVerdict(UUID, H100, [Result("memory bandwidth", "PASS", "90%", ">= 85%", ""),
                                       Result("pcie link", "FAIL", "Gen4 x8", "Gen5 x16", "link trained down")])
    write_junit([verdict], tmp_path / "accept-node1.xml")
    os.utime(tmp_path / "accept-node1.xml", (later.timestamp(), later.timestamp()))
    code, md, _, _ = report(capsys, tmp_path / "r", tmp_path)
    assert code == 0
    summary = section(md, "## Summary")
    assert md.index("## Summary") < md.index("measured versus claimed") < md.index("Conditions:")
    rows = {l.split("|")[1].strip(): [c.strip() for c in l.strip("|").split("|")] for l in summary.splitlines()
            if l.startswith("| ")}
    assert rows["memory copy"][1:4] == ["1,800.0 GB/s", "2,000.0 GB/s", "90.0%"]  # copy, not the faster triad
    assert rows["matmul bf16"][1:4] == ["600.0 TFLOP/s", "756.0 TFLOP/s", "79.4%"]  # the largest shape
    assert rows["matmul fp8"][3] == "72.7%"
    assert rows["transfer h2d"][4] == "error (R1)"
    assert "accept: FAIL (1 PASS, 1 FAIL; accept-node1.xml" in summary and "pcie link: FAIL (link trained down)" in summary
    assert "earlier run" not in summary
    assert "![Roofline: NVIDIA H100 PCIe](roofline_0.png)" in summary
    assert "7 measurements: 6 ok, 1 not ok for 1 reason(s)" in summary


def test_an_accept_file_older_than_the_run_is_said_to_judge_an_earlier_run(tmp_path, capsys):
    write_run(tmp_path / "h100.csv", gpu_rows())
    write_junit([CardVerdict(UUID, H100, [Result("memory bandwidth", "PASS", "90%", ">= 85%", "")])],
                tmp_path / "accept.xml")
    before = (T0 - timedelta(days=1)).timestamp()
    os.utime(tmp_path / "accept.xml", (before, before))
    _, md, _, _ = report(capsys, tmp_path / "r", tmp_path)
    assert "accept: PASS" in md and "judged an earlier run" in md


def test_no_accept_file_says_so_and_a_foreign_xml_named_is_bad_input(tmp_path, capsys):
    run = write_run(tmp_path / "h100.csv", gpu_rows())
    (tmp_path / "pytest.xml").write_text('<testsuites name="pytest tests"><testsuite/></testsuites>')
    code, md, _, _ = report(capsys, tmp_path / "r", tmp_path)
    assert code == 0 and "accept: no verdict" in md
    code, _, _, err = report(capsys, tmp_path / "r2", run, tmp_path / "pytest.xml")
    assert code == 2 and "pytest.xml" in err and "cardbench accept" in err


def test_non_ok_rows_are_grouped_by_reason_with_count_and_cases(tmp_path, capsys):
    cpu_mode = "CPU mode: host<->device and peer-to-peer copies need a CUDA GPU"
    skipped = [not_ok("transfer", d, f"{m}-{s}", "skipped", cpu_mode) for d in ("h2d", "d2h")
               for m in ("pinned", "pageable") for s in ("256MiB", "1GiB")]
    skipped += [not_ok("transfer", "p2p", "no-peer", "skipped", cpu_mode)]
    triton = [dict(mem("copy", 1.0), status="skipped", value="", samples="", p10="", p90="",
                   message="Triton kernels are not timed on the CPU")]
    run = write_run(tmp_path / "cpu.csv", cpu_rows() + skipped + triton, index="", uuid="", name="AMD EPYC")
    code, md, _, _ = report(capsys, tmp_path / "r", run)
    assert code == 0
    assert md.count(cpu_mode) == 1 and md.count("Triton kernels are not timed on the CPU") == 1
    group = cells(md, "R1")
    assert group[:4] == ["R1", "skipped", "9", cpu_mode]
    assert "transfer h2d uint8 torch: pinned-256MiB, pinned-1GiB, pageable-256MiB, pageable-1GiB" in group[4]
    assert "transfer p2p uint8 torch: no-peer" in group[4]
    assert "| transfer d2h uint8 " in md and "skipped (R1)" in md  # the claim table points at the reason


# ---------------------------------------------------------------------------------------
# One run per card, --aggregate, fleet


def three_runs(d: Path) -> Path:
    """An old good run, a newer complete regression, and a newest run that was interrupted."""
    write_run(d / "old.csv", gpu_rows(1900.0), start=T0)
    write_run(d / "new.csv", gpu_rows(1500.0), start=T0 + timedelta(days=1))
    write_run(d / "newest.csv", gpu_rows(1950.0)[:2], start=T0 + timedelta(days=2),
              close=("error", "interrupted by SIGINT after 2 rows"))
    return d


def test_the_latest_complete_run_is_reported_not_an_older_better_one(tmp_path, capsys):
    code, md, _, _ = report(capsys, tmp_path / "r", three_runs(tmp_path / "results"))
    assert code == 0
    assert cells(md, "memory copy")[1] == "1,500.0 GB/s" and "1,900.0" not in md and "1,950.0" not in md
    assert "Reported run: new.csv (run " in md and "started 2026-03-02 10:00:00 UTC, complete)" in md
    assert "the latest complete of 3 runs" in md and "newest.csv" in md and "interrupted by SIGINT" in md


def test_aggregate_merges_a_cards_runs_and_says_so(tmp_path, capsys):
    d = three_runs(tmp_path / "results")
    code = main(["report", str(d), "--out", str(tmp_path / "r"), "--aggregate"])
    md = (tmp_path / "r" / "report.md").read_text()
    assert code == 0
    assert "Aggregated over 3 runs (--aggregate)" in md and "Aggregated (--aggregate)" in md
    assert cells(md, "memory copy")[1] == "1,950.0 GB/s"  # the best copy over the runs


def test_history_plot_is_added_when_a_card_has_several_runs(tmp_path, capsys):
    _, md, page, _ = report(capsys, tmp_path / "r", three_runs(tmp_path / "results"))
    assert "History: 3 runs of this card." in md and "![History of NVIDIA H100 PCIe](history_0.png)" in md
    assert (tmp_path / "r" / "history_0.png").stat().st_size > 10_000
    assert 'alt="History of NVIDIA H100 PCIe"' in page
    _, md, _, _ = report(capsys, tmp_path / "one", write_run(tmp_path / "single.csv", gpu_rows()))
    assert "History:" not in md and not (tmp_path / "one" / "history_0.png").exists()


def test_negative_fleet_margin_is_bad_input(tmp_path, capsys):
    run = write_run(tmp_path / "h100.csv", gpu_rows())
    code, md, _, err = report(capsys, tmp_path / "r", run, "--fleet-margin", "-5")
    assert code == 2 and "--fleet-margin -5" in err and ">= 0" in err and md == ""


def test_the_report_says_why_there_is_no_fleet_section(tmp_path, capsys):
    a = write_run(tmp_path / "a.csv", gpu_rows(), uuid="GPU-a", host="node1")
    b = write_run(tmp_path / "b.csv", gpu_rows(), uuid="GPU-b", host="node2")
    _, md, _, _ = report(capsys, tmp_path / "r", a, b)
    assert "No fleet section: it needs at least 3 cards of one model" in md and f"2 x {H100}" in md
    c = write_run(tmp_path / "c.csv", gpu_rows(), uuid="GPU-c", host="node3")
    _, md, _, _ = report(capsys, tmp_path / "r3", a, b, c)
    assert "No fleet section" not in md and "No card is more than 5% below its fleet median." in md


# ---------------------------------------------------------------------------------------
# Plot units


def test_matmul_plot_is_in_the_rows_unit_on_a_cpu_run(tmp_path, capsys, monkeypatch):
    from matplotlib.axes import Axes

    drawn = {}
    bar, ylabel = Axes.bar, Axes.set_ylabel
    monkeypatch.setattr(Axes, "bar", lambda self, x, h, *a, **k: (drawn.setdefault("bars", []).extend(h),
                                                                 bar(self, x, h, *a, **k))[1])
    monkeypatch.setattr(Axes, "set_ylabel", lambda self, t, *a, **k: (drawn.setdefault("labels", []).append(t),
                                                                     ylabel(self, t, *a, **k))[1])
    run = write_run(tmp_path / "cpu.csv", cpu_rows(), index="", uuid="", name="AMD EPYC")
    code, md, _, _ = report(capsys, tmp_path / "r", run)
    assert code == 0 and cells(md, "matmul bf16")[1] == "442.6 GFLOP/s"
    assert sorted(drawn["bars"]) == pytest.approx([59.7, 442.6])  # GFLOP/s as the table, not 0.44 TFLOP/s
    assert "GFLOP/s (GOPS for int8)" in drawn["labels"]
    assert "attainable GFLOP/s (GOPS for int8)" in drawn["labels"]  # the roofline too
    assert report_plots.matmul_value({"unit": "TFLOP/s", "value": "1.5"}, "value", "G") == pytest.approx(1500.0)
