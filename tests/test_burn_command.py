"""`cardbench burn` end to end in CPU mode: the results CSV and its timeline, injected faults that the
checks must catch, bad input, and SIGINT / SIGTERM keeping what was measured."""
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from bench import cli
from bench.core import faults
from bench.core.results import read_results, results_files, timeline_path
from bench.core.timeline import read_timeline

ROOT = Path(__file__).resolve().parents[1]


def _burn(tmp_path, *extra, env=None):
    """Run `cardbench burn --device cpu` in a child process; (exit code, stdout, stderr, results)."""
    environ = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    environ.pop(faults.ENV, None)
    environ.update(env or {})
    proc = subprocess.run([sys.executable, "-m", "bench", "burn", "--device", "cpu", "--out", str(tmp_path), *extra],
                          capture_output=True, text=True, cwd=ROOT, env=environ, timeout=300)
    files = results_files(tmp_path)
    return proc.returncode, proc.stdout, proc.stderr, (read_results(files[0]) if files else None)


def _rows(res):
    return {(r["benchmark"], r["dtype"]): r for r in res.rows}


def test_cpu_burn_writes_a_valid_results_file_and_timeline_and_exits_0(tmp_path):
    code, out, err, res = _burn(tmp_path, "--duration", "4s")
    assert code == 0, err
    assert out.startswith("cardbench: CPU mode")
    assert res.complete and res.schema_version == 2
    rows = _rows(res)
    assert set(rows) == {("soak", "bf16"), ("soak", "fp8"), ("memtest", "uint32")}
    soak = rows[("soak", "bf16")]
    assert soak["status"] == "ok" and soak["unit"] == "GFLOP/s" and float(soak["value"]) > 0
    params = json.loads(soak["params"])
    assert params["iterations"] > 0 and params["mismatch_iterations"] == 0
    assert params["compared_with"] == "iteration 0, bit for bit"
    assert rows[("soak", "fp8")]["status"] in ("ok", "unsupported")
    memtest = rows[("memtest", "uint32")]
    assert memtest["status"] == "ok" and json.loads(memtest["params"])["errors"] == 0
    assert "not a test of the host's memory" in memtest["message"]
    line = read_timeline(timeline_path(res.path))
    assert line.complete and line.rows == []  # CPU mode: no NVML, so no samples
    assert f"timeline: {timeline_path(res.path)}" in out


def test_a_flipped_bit_fails_the_run_naming_the_device_and_iteration(tmp_path):
    code, out, err, res = _burn(tmp_path, "--duration", "3s", env={faults.ENV: "bitflip:4"})
    assert code == 1
    assert "FAULT INJECTION ON" in err
    soak = _rows(res)[("soak", "bf16")]
    assert soak["status"] == "wrong" and soak["value"] == ""
    assert "silent data corruption on cpu" in soak["message"] and "iteration 4 at" in soak["message"]
    assert "fault injected" in soak["message"]
    params = json.loads(soak["params"])
    assert params["mismatches"][0]["iteration"] == 4 and params["mismatches"][0]["elements"] == 1
    assert "cpu soak bf16" in err and "iteration 4" in err
    assert res.complete  # the run finished: the row is the finding
    assert _rows(res)[("memtest", "uint32")]["status"] == "ok"


def test_a_planted_memory_error_fails_the_run_with_its_address_range(tmp_path):
    code, out, err, res = _burn(tmp_path, "--duration", "3s", env={faults.ENV: "memtest"})
    assert code == 1
    memtest = _rows(res)[("memtest", "uint32")]
    assert memtest["status"] == "wrong" and "memory errors on cpu: 1 wrong word(s)" in memtest["message"]
    params = json.loads(memtest["params"])
    assert params["errors"] == 1 and params["ranges"][0]["pattern"] == "walking-ones"
    assert _rows(res)[("soak", "bf16")]["status"] == "ok"


@pytest.mark.parametrize("value, says", [("0", "above zero"), ("-5m", "is not a duration"), ("abc", "is not a duration"),
                                         ("10x", "is not a duration")])
def test_bad_durations_are_refused_with_exit_2(capsys, value, says):
    with pytest.raises(SystemExit) as info:
        cli.main(["burn", "--device", "cpu", "--duration", value])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert "argument --duration" in err and says in err


@pytest.mark.parametrize("env, says", [("bitfilp", "unknown fault 'bitfilp'"), ("bitflip:x", "whole number")])
def test_bad_fault_settings_are_refused_before_anything_runs(tmp_path, monkeypatch, capsys, env, says):
    monkeypatch.setenv(faults.ENV, env)
    assert cli.main(["burn", "--device", "cpu", "--duration", "1s", "--out", str(tmp_path)]) == 2
    assert says in capsys.readouterr().err and not list(tmp_path.iterdir())


def test_bad_device_and_prometheus_path_exit_2(tmp_path, capsys):
    assert cli.main(["burn", "--device", "cuda:7", "--duration", "1s", "--out", str(tmp_path)]) == 2
    assert "cuda:7" in capsys.readouterr().err
    assert cli.main(["burn", "--device", "cpu", "--duration", "1s", "--prometheus", str(tmp_path / "x.txt")]) == 2
    assert ".prom" in capsys.readouterr().err


@pytest.mark.parametrize("sig, code, name", [(signal.SIGINT, 130, "SIGINT"), (signal.SIGTERM, 143, "SIGTERM")])
def test_a_signal_stops_every_worker_and_keeps_the_rows_marked_incomplete(tmp_path, sig, code, name):
    environ = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    environ.pop(faults.ENV, None)
    proc = subprocess.Popen([sys.executable, "-m", "bench", "burn", "--device", "cpu", "--duration", "120s",
                             "--out", str(tmp_path)], cwd=ROOT, env=environ, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(iter(proc.stderr.readline, "")), daemon=True)
    reader.start()
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and not any("cpu soak bf16" in line for line in lines):
            time.sleep(0.2)
        time.sleep(2.5)  # a few seconds of soak
        proc.send_signal(sig)
        proc.wait(timeout=60)  # stderr is the reader's alone (communicate would take lines from it)
        reader.join(timeout=10)
        err = "".join(lines)
    finally:
        proc.kill()
    assert proc.returncode == code, err
    res = read_results(results_files(tmp_path)[0])
    assert not res.complete and name in res.end_message
    rows = _rows(res)
    soak = rows[("soak", "bf16")]
    assert soak["status"] == "ok" and "stopped after" in soak["message"] and name in soak["message"]
    assert rows[("memtest", "uint32")]["status"] == "error"  # never ran: the row says why
    line = read_timeline(timeline_path(res.path))
    assert not line.complete and name in line.end_message
    assert "keeping what was measured" in err
    assert not _workers_alive(proc.pid)


def _workers_alive(parent: int) -> bool:
    try:
        out = subprocess.run(["ps", "-eo", "ppid,args"], capture_output=True, text=True).stdout
    except OSError:
        return False
    return any(line.split(None, 1)[0] == str(parent) and "bench.core.launch" in line for line in out.splitlines()[1:])


def test_prometheus_gets_each_gpus_burn_counts(tmp_path):
    from prometheus_client.parser import text_string_to_metric_families

    from bench.commands import burn as burn_cmd
    from bench.core.results import COLUMNS

    def row(index, benchmark, **params):
        r = dict.fromkeys(COLUMNS, "")
        r.update(family="burn", benchmark=benchmark, device_index=str(index), device_uuid=f"GPU-{index}",
                 device_name="NVIDIA H200", host="node7", status="wrong", params=json.dumps(params),
                 timestamp_utc="2026-11-29T12:00:00+00:00")
        return r
    rows = [row(0, "soak", mismatch_iterations=2), row(0, "memtest", errors=0),
            row(1, "soak", mismatch_iterations=0, cross_differ=["cuda:0"]), row(1, "memtest", errors=5)]
    burn_cmd._prometheus(str(tmp_path / "cardbench.prom"), rows)
    samples = {(s.name, s.labels["uuid"]): s.value
               for fam in text_string_to_metric_families((tmp_path / "cardbench.prom").read_text())
               for s in fam.samples if s.name.startswith("cardbench_burn")}
    assert samples == {("cardbench_burn_mismatches", "GPU-0"): 2, ("cardbench_burn_memory_errors", "GPU-0"): 0,
                       ("cardbench_burn_mismatches", "GPU-1"): 1, ("cardbench_burn_memory_errors", "GPU-1"): 5}
