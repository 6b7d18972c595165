""".ci/gpu_summary.py, run as .ci/gpu-check runs it (a script, from the checkout, PYTHONPATH=.):
the summary of a CPU run says "not measured" for every GPU number, the numbers of GPU rows land
next to the expected ones, step exit codes and test counts come through, and merging the
per-family results gives one file the reader accepts."""
import csv
import io
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

from bench.core.results import read_results

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / ".ci" / "gpu_summary.py"
CPU_RUN = ROOT / "tests" / "fixtures" / "results_schema_v1.csv"  # a real CPU memory run

JUNIT = """<?xml version="1.0" encoding="utf-8"?><testsuites><testsuite name="pytest" errors="0" failures="1"
skipped="3" tests="10" time="1.0"></testsuite></testsuites>"""


def _script(*args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, env=env,
                          cwd=ROOT, timeout=120)


def _work(tmp_path: Path, csv_files: dict[str, Path]) -> Path:
    work = tmp_path / "work"
    for family, path in csv_files.items():
        (work / "results" / family).mkdir(parents=True)
        shutil.copy(path, work / "results" / family / path.name)
    (work / "steps.tsv").write_text("gpu-tests\t1\t61234\t100\nkernel-build-all\t124\t45002\t45\n"
                                    "run-memory\t0\t9411\t45\n")
    (work / "junit-gpu-tests.xml").write_text(JUNIT)
    return work


def _as_gpu_run(tmp_path: Path) -> Path:
    """The CPU fixture's rows relabelled as an H200's: a torch copy at 4.2 TB/s, a bf16 GEMM, a pinned H2D."""
    text = CPU_RUN.read_text()
    reader = csv.DictReader(io.StringIO(text, newline=""))
    rows = list(reader)
    for r in rows:
        r.update(device_index="0", device_name="NVIDIA H200", compute_capability="9.0")
    by = {(r["benchmark"], r["provider"]): r for r in rows}
    by[("copy", "torch")].update(value="4200.0", pct_of_spec="87.5")
    by[("read", "torch")].update(family="matmul", benchmark="bf16", dtype="bf16", case="8192x8192x8192",
                                 unit="TFLOP/s", value="781.0")
    by[("write", "torch")].update(family="transfer", benchmark="h2d", dtype="uint8", case="pinned-256MiB",
                                  value="53.9", size_bytes=str(256 * 2**20))
    out = tmp_path / "gpu.csv"
    with open(out, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=reader.fieldnames, lineterminator="\n")
        w.writeheader()
        w.writerows(rows)
    read_results(out)  # still a valid results file
    return out


def test_a_cpu_run_is_summarized_with_every_gpu_number_not_measured(tmp_path):
    work = _work(tmp_path, {"memory": CPU_RUN})
    got = _script("summary", str(work), str(tmp_path / "summary.json"))
    assert got.returncode == 0, got.stderr
    s = json.loads((tmp_path / "summary.json").read_text())
    assert s["mode"].startswith("cpu")
    assert s["device"]["device_name"] == "AMD EPYC" and s["device"]["torch_version"]
    assert set(s["numbers"]) == {"memory_copy_plateau_torch", "memory_copy_plateau_triton", "matmul_bf16_8192",
                                 "matmul_bf16_best", "matmul_fp8_8192", "matmul_fp8_best", "h2d_pinned", "d2h_pinned"}
    for name, n in s["numbers"].items():
        assert n["measured"] == "not measured", name
        assert n["expected"]["low"] < n["expected"]["high"] and n["expected"]["unit"] and n["expected"]["source"]
    assert s["steps"]["gpu-tests"] == {"exit_code": 1, "seconds": 61.234, "limit_s": 100.0, "timed_out": False}
    assert s["steps"]["kernel-build-all"]["timed_out"] is True
    assert s["family_seconds"] == {"memory": 9.411}
    assert s["tests"]["gpu-tests"] == {"file": "junit-gpu-tests.xml", "tests": 10, "failures": 1, "errors": 0,
                                       "skipped": 3, "passed": 6}
    assert "no JUnit file" in s["tests"]["accept"]["status"]
    assert s["results_files"][0]["rows"] == {"ok": 4, "skipped": 4} and s["results_files"][0]["complete"]
    assert "not measured" in got.stdout


def test_gpu_rows_land_next_to_the_expected_numbers(tmp_path):
    work = _work(tmp_path, {"memory": _as_gpu_run(tmp_path)})
    assert _script("summary", str(work), str(tmp_path / "summary.json")).returncode == 0
    s = json.loads((tmp_path / "summary.json").read_text())
    assert s["mode"] == "gpu" and s["device"]["compute_capability"] == "9.0"
    copy = s["numbers"]["memory_copy_plateau_torch"]
    assert copy["measured"] == {"value": 4200.0, "unit": "GB/s", "provider": "torch", "case": "plateau",
                                "pct_of_spec": 87.5}
    assert copy["in_range"] is True and copy["expected"]["unit"] == "GB/s"
    assert s["numbers"]["matmul_bf16_8192"]["measured"]["value"] == 781.0
    assert s["numbers"]["matmul_bf16_best"]["measured"]["case"] == "8192x8192x8192"
    assert s["numbers"]["h2d_pinned"]["measured"]["value"] == 53.9 and s["numbers"]["h2d_pinned"]["in_range"]
    assert s["numbers"]["memory_copy_plateau_triton"]["measured"] == "not measured"  # a skipped row is no number
    assert s["numbers"]["d2h_pinned"]["measured"] == "not measured"


def test_merge_gives_one_complete_file_of_every_runs_rows(tmp_path):
    gpu = _as_gpu_run(tmp_path)
    merged = tmp_path / "merged.csv"
    got = _script("merge", str(merged), str(CPU_RUN), str(gpu))
    assert got.returncode == 0, got.stderr
    res = read_results(merged)
    assert res.complete and len(res.rows) == 16
    torn = tmp_path / "torn.csv"
    torn.write_text(CPU_RUN.read_text().rsplit("\n", 2)[0] + "\n")  # the closing row lost: a killed run
    assert _script("merge", str(merged), str(CPU_RUN), str(torn)).returncode == 0
    res = read_results(merged)
    assert not res.complete and "torn.csv: incomplete" in res.end_message and len(res.rows) == 16
