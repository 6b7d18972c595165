"""`pytest bench/`: the statistics pytest-benchmark prints and writes are cardbench's device-timed
samples (seconds per call), not the wall time of the whole measurement."""
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

import pytest

from bench.frontend import REPLAYED

REPO = Path(__file__).resolve().parent.parent


def test_benchmark_statistics_are_the_device_timed_samples(tmp_path):
    report = tmp_path / "bench.json"
    env = dict(os.environ, CUDA_VISIBLE_DEVICES="")
    out = subprocess.run([sys.executable, "-m", "pytest", "bench/test_memory.py", "bench/test_matmul.py", "-p",
                          "no:cacheprovider", "--cardbench-device", "cpu", "-k", "copy or (fp32 and torch)",
                          f"--benchmark-json={report}"], cwd=REPO, env=env, capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-2000:]
    benchmarks = {b["name"]: b for b in json.loads(report.read_text())["benchmarks"]}
    # a skipped case (Triton on the CPU) is no benchmark: no statistics of a call that never ran
    assert set(benchmarks) == {"test_memory[memory/copy/torch/plateau]",
                               "test_matmul[matmul/fp32/torch/1024x1024x1024]"}
    for name, b in benchmarks.items():
        info, stats = b["extra_info"], b["stats"]
        assert info["statistics"] == REPLAYED
        scale = {"GB/s": 1e9, "GFLOP/s": 1e9}[info["unit"]]
        seconds = [info["work"] / (float(v) * scale) for v in info["samples"].split(";")]
        assert stats["rounds"] == info["n_samples"] == len(seconds) >= 5
        assert stats["min"] == pytest.approx(min(seconds), rel=1e-9)
        assert stats["max"] == pytest.approx(max(seconds), rel=1e-9)
        assert stats["median"] == pytest.approx(statistics.median(seconds), rel=1e-9)
        assert stats["mean"] == pytest.approx(statistics.fmean(seconds), rel=1e-9)
        assert stats["median"] == pytest.approx(info["time_s"], rel=1e-9)  # the row's median time
        assert info["value"] == pytest.approx(info["work"] / stats["median"] / scale, rel=1e-9)
        assert name in out.stdout  # the terminal table lists it
