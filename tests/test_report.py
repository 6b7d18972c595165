"""`cardbench report`: one card, several models side by side, a fleet, and honesty about gaps."""
import csv
from pathlib import Path

from bench.cli import main
from bench.core import identity

REAL_RUN = Path(__file__).parent / "fixtures" / "results_schema_v1.csv"


def card_run(path: Path, name="NVIDIA H100 80GB HBM3", uuid="GPU-aaaa0001", host="node1", scale=1.0,
             claim=None, edit=None) -> Path:
    """The real CPU run dressed as another card: values scaled, a claim set when given."""
    with open(REAL_RUN, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        header, rows = reader.fieldnames, list(reader)
    for r in rows:
        r.update(device_name=name, device_uuid=uuid, host=host, device_index="0")
        if r["status"] == "ok" and r["family"] != "run":
            r["value"] = repr(float(r["value"]) * scale)
            if claim:
                r.update(spec_entry=name, spec_value=repr(claim), spec_unit="GB/s",
                         spec_source="https://example.invalid/datasheet.pdf",
                         pct_of_spec=repr(100 * float(r["value"]) / claim))
        if edit:
            edit(r)
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=header)
        w.writeheader()
        w.writerows(rows)
    return path


def report(capsys, out: Path, *paths):
    code = main(["report", *map(str, paths), "--out", str(out)])
    captured = capsys.readouterr()
    md = (out / "report.md").read_text() if (out / "report.md").exists() else ""
    page = (out / "report.html").read_text() if (out / "report.html").exists() else ""
    return code, md, page, captured.err


def test_single_cpu_run_shows_missing_claims_and_not_ok_rows(tmp_path, capsys):
    code, md, page, _ = report(capsys, tmp_path / "r", REAL_RUN)
    assert code == 0
    assert "| memory copy " in md and "missing" in md  # no claim for a CPU: shown as missing
    assert md.count("Triton kernels are not timed on the CPU") == 1 and "skipped" in md  # grouped
    assert "torch_version" in md and "2.13.0+cpu" in md  # conditions block
    assert page.startswith("<!doctype html>") and "<table>" in page


def test_claims_with_sources_plots_embedded_and_self_contained(tmp_path, capsys):
    run = card_run(tmp_path / "h100.csv", claim=3350.0, scale=100.0)
    code, md, page, _ = report(capsys, tmp_path / "r", run)
    assert code == 0 and "3,350.0 GB/s" in md and "https://example.invalid/datasheet.pdf" in md
    assert '<a href="https://example.invalid/datasheet.pdf">' in page
    assert page.count('src="data:image/png;base64,') >= 1 and "src=\"http" not in page
    assert (tmp_path / "r" / "pct_of_claim.png").stat().st_size > 1000


def test_two_models_side_by_side(tmp_path, capsys):
    a = card_run(tmp_path / "a.csv", name="NVIDIA H100 PCIe", uuid="GPU-a", claim=2000.0, scale=60)
    b = card_run(tmp_path / "b.csv", name="NVIDIA RTX PRO 6000 Blackwell Server Edition", uuid="GPU-b",
                 claim=1597.0, scale=50)
    code, md, _, _ = report(capsys, tmp_path / "r", a, b)
    assert code == 0 and "## Side by side" in md
    header = next(l for l in md.splitlines() if l.startswith("| metric") and "H100 PCIe" in l)
    assert "RTX PRO 6000 Blackwell Server Edition" in header
    assert "% of claim)" in md


def test_fleet_flags_the_card_below_the_median(tmp_path, capsys):
    runs = [card_run(tmp_path / f"n{i}.csv", uuid=f"GPU-{i:04d}", host=f"node{i}", claim=3350.0,
                     scale=100 * (0.85 if i == 3 else 1.0 + 0.001 * i)) for i in range(5)]
    code, md, _, _ = report(capsys, tmp_path / "r", *runs)
    assert code == 0 and "## Fleet" in md
    flagged = [l for l in md.splitlines() if "GPU-0003" in l and "node3" in l and "vs median" in l]
    assert len(flagged) == 4  # read, write, copy, triad
    assert not any("GPU-0001" in l and "vs median" in l for l in md.splitlines())


def test_a_failed_row_is_shown_with_its_reason_never_as_zero(tmp_path, capsys):
    def crash(r):
        if r["benchmark"] == "copy":
            r.update(status="error", value="", samples="", p10="", p90="", message="RuntimeError: CUDA error: boom")
    run = card_run(tmp_path / "x.csv", claim=3350.0, scale=100, edit=crash)
    code, md, _, _ = report(capsys, tmp_path / "r", run)
    copies = [l for l in md.splitlines() if l.startswith("| memory copy ")]  # summary and detail tables
    assert len(copies) == 2 and all("error (R2)" in l and "0.0" not in l for l in copies)
    reason = next(l for l in md.splitlines() if l.startswith("| R2 "))  # the reason, told once
    assert "error" in reason and "boom" in reason and "memory copy torch: plateau" in reason


def test_specs_file_renormalizes(tmp_path, capsys):

    spec = tmp_path / "s.toml"
    spec.write_text(f'[sources]\nX = "test claim"\n[[gpu]]\nname = "host"\nnvml_names = ["{identity.cpu_identity()["device_name"]}"]\n'
                    'memory_bandwidth = { value = 100, unit = "GB/s", source = "X" }\n')
    code = main(["report", str(REAL_RUN), "--out", str(tmp_path / "r"), "--specs", str(spec)])
    md = (tmp_path / "r" / "report.md").read_text()
    assert code == 0 and "100.0 GB/s" in md and "test claim" in md


def test_bad_input_exit_2(tmp_path, capsys):
    bad = tmp_path / "bad.csv"
    bad.write_text("hello\n")
    assert main(["report", str(bad), "--out", str(tmp_path / "r")]) == 2
    assert "bad.csv" in capsys.readouterr().err
    assert main(["report", str(tmp_path / "empty-dir-that-does-not-exist")]) == 2


def test_report_specs_renormalizes_transfer_and_collective_rows(tmp_path, capsys):
    """--specs reaches every family: the PCIe and NVLink claims come from the user's file too."""
    import json

    from bench.core.normalize import renormalize
    from bench.core.results import COLUMNS, ResultsWriter, read_results
    from bench.core.specs import load

    h100 = {"device_name": "NVIDIA H100 80GB HBM3", "device_uuid": "GPU-aaaa0001", "device_index": "0",
            "pcie_gen_max": "5", "pcie_width_max": "16", "compute_capability": "9.0"}
    w = ResultsWriter(tmp_path / "run.csv", {"host": "node1", "run_id": "r1"})
    base = {**dict.fromkeys(COLUMNS, ""), **h100, "status": "ok", "unit": "GB/s", "samples": "1;1", "n_samples": 2}
    w.write({**base, "family": "transfer", "benchmark": "h2d", "provider": "torch", "dtype": "uint8",
             "case": "pinned-1GiB", "metric": "bandwidth", "value": 50.0, "pcie_gen_current": "5",
             "pcie_width_current": "16", "size_bytes": 2**30})
    w.write({**base, "family": "collective", "benchmark": "all_reduce", "provider": "nccl", "dtype": "bf16",
             "case": "peak", "metric": "busbw", "value": 360.0,
             "params": json.dumps({"world_size": 8, "nodes": 1, "nvlinks_active": 18})})
    w.close()
    mine = tmp_path / "mine.toml"
    mine.write_text('[sources]\nME = "our own measurement of the slot: https://example.invalid/slot"\n'
                    '[[gpu]]\nname = "H100 SXM5 80GB"\npcie_gen = { value = 4, unit = "gen", source = "ME" }\n'
                    'nvlink_bidir = { value = 600, unit = "GB/s", source = "ME" }\n'
                    'nvlink_per_direction = { value = 300, unit = "GB/s", source = "ME" }\n')
    rows = read_results(tmp_path / "run.csv").rows
    renormalize(rows, load())
    assert [round(float(r["spec_value"]), 1) for r in rows] == [63.0, 450.0]  # shipped: Gen5 x16, NVLink 4
    renormalize(rows, load(mine))
    assert [round(float(r["spec_value"]), 1) for r in rows] == [31.5, 300.0]
    assert float(rows[0]["pct_of_spec"]) == 100 * 50.0 / float(rows[0]["spec_value"])
    assert float(rows[0]["pct_of_derived"]) == 100 * 50.0 / float(rows[0]["derived_peak"])  # Gen5 x16 under load
    code = main(["report", str(tmp_path / "run.csv"), "--out", str(tmp_path / "r"), "--specs", str(mine)])
    md = (tmp_path / "r" / "report.md").read_text()
    assert code == 0 and "31.5 GB/s" in md and "300.0 GB/s" in md and "our own measurement" in md
