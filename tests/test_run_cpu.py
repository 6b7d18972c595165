"""`cardbench run` end to end in CPU mode: a real run, its CSV, interruption and bad input."""
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bench.core.results import read_results
from bench.core import identity
from helpers import sigint_default

REPO = Path(__file__).resolve().parent.parent


def cardbench(*args, **kw) -> subprocess.Popen:
    env = dict(os.environ, CUDA_VISIBLE_DEVICES="")
    return subprocess.Popen([sys.executable, "-m", "bench", *args], cwd=REPO, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, preexec_fn=sigint_default, **kw)


@pytest.fixture(scope="module")
def cpu_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("runs")
    p = cardbench("run", "--out", str(out))
    stdout, stderr = p.communicate(timeout=300)
    return p.returncode, stdout, stderr, out


def test_cpu_run_says_so_first_and_exits_zero(cpu_run):
    code, stdout, stderr, _ = cpu_run
    assert code == 0, stderr
    assert stdout.splitlines()[0].startswith("cardbench: CPU mode")


def test_cpu_run_writes_one_valid_complete_csv(cpu_run):
    _, stdout, _, out = cpu_run
    files = list(out.glob("*.csv"))
    assert len(files) == 1
    assert f"results: {files[0]}" in stdout
    res = read_results(files[0])
    assert res.complete
    assert {r["family"] for r in res.rows} == {"memory", "matmul", "transfer", "collective", "llm"}  # default: all
    by = {(r["benchmark"], r["provider"]): r for r in res.rows if r["family"] == "memory"}
    assert set(by) == {(b, p) for b in ("read", "write", "copy", "triad") for p in ("triton", "torch")}
    transfer = [r for r in res.rows if r["family"] == "transfer"]
    assert transfer and all(r["status"] == "skipped" and "CPU mode" in r["message"] for r in transfer)
    for b in ("read", "write", "copy", "triad"):
        assert by[(b, "triton")]["status"] == "skipped" and "TRITON_INTERPRET" in by[(b, "triton")]["message"]
        assert by[(b, "torch")]["status"] == "ok"
    assert {r["run_id"] for r in res.rows} == {res.rows[0]["run_id"]}


def test_cpu_values_are_bytes_over_median_time(cpu_run):
    import numpy as np

    res = read_results(next(cpu_run[3].glob("*.csv")))
    df = res.frame()
    ok = df[(df["status"] == "ok") & (df["family"] == "memory")]
    for _, r in ok.iterrows():
        samples = [float(s) for s in r["samples"].split(";")]
        assert len(samples) == r["n_samples"] >= 5
        assert r["value"] == pytest.approx(r["work"] / r["time_s"] / 1e9, rel=1e-12)
        # the median time is the median of the sample times, which gives the value
        times = [r["work"] / (s * 1e9) for s in samples]
        assert r["time_s"] == pytest.approx(float(np.median(times)), rel=1e-9)
        assert r["p10"] <= r["value"] <= r["p90"]
        assert r["size_bytes"] >= 256 * 2**20  # plateau: far above any host LLC floor
    copy = ok[ok["benchmark"] == "copy"].iloc[0]
    assert copy["work"] == copy["size_bytes"]  # two arrays of n fp32 = 8n bytes = bytes moved


def test_cpu_table_lists_cases_and_path(cpu_run):
    stdout = cpu_run[1]
    assert "memory/copy" in stdout and "GB/s" in stdout and "skipped" in stdout


def _wait_for_rows(out: Path, rows: int, p: subprocess.Popen, timeout=120) -> Path:
    deadline = time.time() + timeout
    while time.time() < deadline:
        files = list(out.glob("*.csv"))
        if files and files[0].read_text().count("\n") >= rows + 1:
            return files[0]
        assert p.poll() is None, p.communicate()
        time.sleep(0.05)
    raise AssertionError("no rows written in time")


@pytest.mark.parametrize("sig, code, why", [(signal.SIGINT, 130, "SIGINT"), (signal.SIGTERM, 143, "SIGTERM")])
def test_interrupted_run_leaves_readable_file_marked_incomplete(tmp_path, sig, code, why):
    p = cardbench("run", "--families", "memory", "--out", str(tmp_path))
    path = _wait_for_rows(tmp_path, 2, p)
    p.send_signal(sig)
    _, stderr = p.communicate(timeout=120)
    assert p.returncode == code, stderr
    assert str(path) in stderr and "incomplete" in stderr
    res = read_results(path)
    assert not res.complete and why in res.end_message
    assert len(res.rows) >= 2


def test_killed_run_leaves_readable_file(tmp_path):
    p = cardbench("run", "--families", "memory", "--out", str(tmp_path))
    path = _wait_for_rows(tmp_path, 1, p)
    p.kill()
    p.communicate(timeout=60)
    res = read_results(path)
    assert not res.complete and "interrupted" not in res.end_message and len(res.rows) >= 1


def test_unknown_device_is_bad_input():
    p = cardbench("run", "--device", "cuda:7")
    _, stderr = p.communicate(timeout=120)
    assert p.returncode == 2 and "cuda:7" in stderr and "no visible GPU" in stderr


@pytest.mark.parametrize("under", ["", "sub"])
def test_out_at_a_file_is_bad_input_naming_the_file(tmp_path, under):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    out = blocker / under if under else blocker
    p = cardbench("run", "--families", "memory", "--out", str(out))
    _, stderr = p.communicate(timeout=120)
    assert p.returncode == 2, stderr
    assert stderr.endswith(f"cardbench: --out {out}: {blocker} is a file; --out names the folder the results "
                           "CSV goes in (made if missing)\n")
    assert blocker.read_text() == "not a directory"


def test_unwritable_out_is_bad_input(tmp_path, monkeypatch, capsys):
    import errno

    from bench.commands import run
    from bench.core.options import RunOptions

    def read_only(path, fields):
        raise OSError(errno.EROFS, "Read-only file system")

    monkeypatch.setattr(run, "ResultsWriter", read_only)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    code, path = run.execute(RunOptions(device="cpu", families=("memory",), out=str(tmp_path / "ro")))
    assert (code, path) == (2, None)
    assert f"cardbench: cannot write results to {tmp_path / 'ro'}: Read-only file system" in capsys.readouterr().err


def test_unknown_family_is_a_usage_error():
    p = cardbench("run", "--families", "memory,bogus")
    _, stderr = p.communicate(timeout=120)
    assert p.returncode == 2 and "bogus" in stderr and "memory" in stderr


def test_pytest_front_end_reports_device_timed_bandwidth_and_acceptance(tmp_path):
    import json

    env = dict(os.environ, CUDA_VISIBLE_DEVICES="")
    report = tmp_path / "bench.json"
    junit = tmp_path / "junit.xml"
    out = subprocess.run([sys.executable, "-m", "pytest", "bench/", "-q", "-p", "no:cacheprovider",
                          f"--benchmark-json={report}", f"--junitxml={junit}"], cwd=REPO, env=env,
                         capture_output=True, text=True, timeout=600)
    # The acceptance checks cannot pass on a CPU (no spec, no NVML): INCONCLUSIVE fails them.
    assert out.returncode == 1, out.stdout[-3000:]
    import xml.etree.ElementTree as ET

    cases = ET.parse(junit).getroot().iter("testcase")
    verdicts = {c.get("name"): c.find("failure") for c in cases}
    assert "INCONCLUSIVE: " in verdicts["test_accept[memory-copy]"].get("message")
    assert verdicts["test_memory[memory/copy/torch/plateau]"] is None
    data = json.loads(report.read_text())
    assert data["machine_info"]["cardbench_device"]["device"] == "cpu"
    assert data["machine_info"]["cardbench"]["torch_version"]
    ok = [b for b in data["benchmarks"] if b["extra_info"]["status"] == "ok" and b["name"].startswith("test_memory[")]
    assert {b["name"] for b in ok} == {f"test_memory[memory/{p}/torch/plateau]" for p in ("read", "write", "copy", "triad")}
    for b in ok:
        info = b["extra_info"]
        assert info["unit"] == "GB/s" and info["value"] > 0 and info["timer"] == "perf_counter"
        assert len(info["samples"].split(";")) == info["n_samples"]
    matmul_ok = [b for b in data["benchmarks"] if b["extra_info"]["status"] == "ok" and b["name"].startswith("test_matmul[")]
    assert "test_matmul[matmul/fp32/torch/1024x1024x1024]" in {b["name"] for b in matmul_ok}
    assert all(b["extra_info"]["unit"] in ("GFLOP/s", "GOPS") for b in matmul_ok)


def test_user_spec_entry_normalizes_a_cpu_run_and_a_broken_one_stops_it(tmp_path):
    """--specs adds an entry for this host's CPU: every memory row then carries % of that claim."""

    cpu = identity.cpu_identity()["device_name"]
    user = tmp_path / "host.toml"
    user.write_text(
        '[sources]\nLAB = "our lab\'s host memory figure (made up for this test)"\n\n'
        f'[[gpu]]\nname = "test host"\nnvml_names = ["{cpu}"]\n'
        'memory_bandwidth = { value = 0.05, unit = "TB/s", source = "LAB" }\n')
    p = cardbench("run", "--families", "memory", "--out", str(tmp_path / "runs"), "--specs", str(user))
    stdout, stderr = p.communicate(timeout=300)
    assert p.returncode == 0, stderr
    assert "spec entry 'test host'" in stdout and "% of spec" in stdout
    res = read_results(next((tmp_path / "runs").glob("*.csv")))
    ok = res.frame().query("status == 'ok'")
    assert (ok["spec_entry"] == "test host").all() and (ok["spec_value"] == 50.0).all()  # TB/s -> GB/s
    assert (ok["spec_source"].str.contains("our lab")).all()
    assert (abs(ok["pct_of_spec"] - 100 * ok["value"] / 50.0) < 1e-9).all()

    broken = tmp_path / "broken.toml"
    broken.write_text(user.read_text().replace("0.05", "-1"))
    p = cardbench("run", "--out", str(tmp_path / "runs2"), "--specs", str(broken))
    _, stderr = p.communicate(timeout=120)
    assert p.returncode == 2 and str(broken) in stderr and "memory_bandwidth" in stderr
    assert not (tmp_path / "runs2").exists()  # nothing measured, nothing written


def test_a_hung_case_ends_the_run_naming_it_and_keeps_the_file(tmp_path):
    """A case that outlives --case-timeout is taken as hung (a stuck kernel cannot be interrupted)."""
    p = cardbench("run", "--out", str(tmp_path), "--case-timeout", "0.3")
    _, stderr = p.communicate(timeout=120)
    assert p.returncode == 124, stderr
    assert "hung: cpu memory/read/torch/plateau did not finish within 0.3 s" in stderr
    res = read_results(next(tmp_path.glob("*.csv")))
    assert not res.complete and "hung: cpu memory/read/torch/plateau" in res.end_message


def test_a_second_run_on_the_same_device_warns(tmp_path):
    from bench.core import devices
    from bench.commands import run

    held = run.device_lock(devices.cpu_target())  # as if another cardbench run were measuring
    try:
        p = cardbench("run", "--out", str(tmp_path), "--families", "memory", "--case-timeout", "0.01")
        _, stderr = p.communicate(timeout=120)
    finally:
        held.close()
    assert "another cardbench run (pid" in stderr and "disturb each other" in stderr


def test_runs_of_this_suite_lock_the_device_in_the_suite_s_own_folder(tmp_path, own_lock_dir):
    """Another suite on the same machine (or a real run) never sees this suite's runs, nor they its."""
    p = cardbench("run", "--out", str(tmp_path), "--families", "memory", "--case-timeout", "0.01")
    p.communicate(timeout=120)
    holders = [lock.read_text() for lock in own_lock_dir.glob("cardbench-cpu-*.lock")]
    assert str(p.pid) in holders  # the run wrote its pid where only this session looks


def test_full_disk_never_leaves_a_file_claimed_complete(tmp_path, monkeypatch, capsys):
    import errno

    from bench.commands import run
    from bench.core import results
    from bench.core.options import RunOptions

    real_write = results.ResultsWriter._write

    def filling_disk(self, row):
        if self.rows_written >= 2:
            raise OSError(errno.ENOSPC, "No space left on device")
        real_write(self, row)

    monkeypatch.setattr(results.ResultsWriter, "_write", filling_disk)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    code, path = run.execute(RunOptions(device="cpu", families=("memory",), out=str(tmp_path), argv=("run",),
                                        case_timeout_s=600.0))
    assert code == 2 and "No space left on device" in capsys.readouterr().err
    res = read_results(path)
    assert not res.complete and len(res.rows) == 2
