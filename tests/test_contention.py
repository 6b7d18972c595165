"""Numbers from a busy host are said to be so: the thread count is set and on every CPU row,
another cardbench run on the device and a load average above the CPUs are noted on the rows,
and a matmul `best` row is never below a fixed shape measured in the same run."""
import json
import os

import pytest
import torch

from bench.commands import run
from bench.commands.run_guard import device_lock
from bench.core import devices, harness
from bench.core.devices import Target
from bench.core.options import RunOptions
from bench.families import matmul, matmul_tune, memory
from helpers import make_run, measure

MIB = 2**20


def cpu() -> Target:
    return Target(torch.device("cpu"), None, {"device_name": "cpu", "l2_cache_bytes": str(MIB)})


@pytest.fixture
def threads():
    """Put torch's thread count back after a test that lets `cardbench run` set it."""
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


def test_cpu_mode_sets_the_thread_count_and_every_row_records_it(monkeypatch, threads):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    state = run.setup(RunOptions(device="cpu"))
    assert devices.host_threads() == 1 and torch.get_num_threads() == 1
    row = measure(memory, state.targets[0], memory.make_case("copy", "torch", "sweep-1MiB", MIB), state)
    assert json.loads(row["params"])["host_threads"] == 1
    monkeypatch.delenv("OMP_NUM_THREADS")
    assert devices.host_threads() == len(os.sched_getaffinity(0))  # every CPU this process may run on
    monkeypatch.setenv("OMP_NUM_THREADS", "lots")  # not a count: ignored
    assert devices.host_threads() == len(os.sched_getaffinity(0))
    assert devices.rank_threads(4 * devices.host_threads()) == 1 and devices.rank_threads(1) == devices.host_threads()


def test_a_load_average_above_the_cpus_is_noted_on_cpu_rows(monkeypatch):
    monkeypatch.setattr(os, "cpu_count", lambda: 2)
    case = memory.make_case("triad", "torch", "sweep-1MiB", MIB)
    monkeypatch.setattr(os, "getloadavg", lambda: (6.5, 4.0, 2.0))
    assert "busy host: load 6.5 on 2 CPUs" in measure(memory, cpu(), case)["message"].split("; ")
    monkeypatch.setattr(os, "getloadavg", lambda: (2.0, 4.0, 4.0))  # exactly busy, not above
    assert "busy host" not in measure(memory, cpu(), case)["message"]
    gpu = Target(torch.device("cuda", 0), 0, {"device_name": "test"})
    monkeypatch.setattr(os, "getloadavg", lambda: (6.5, 4.0, 2.0))
    assert harness.busy_host(gpu) == ""  # the card's numbers are timed on the card


def test_another_cardbench_run_on_the_device_is_noted_on_its_rows(tmp_path, capsys):
    target = cpu()
    mine = device_lock(target, str(tmp_path))
    assert capsys.readouterr().err == ""  # alone: no warning
    target.lock = mine
    case = memory.make_case("copy", "torch", "sweep-1MiB", MIB)
    assert "another cardbench run" not in measure(memory, target, case)["message"]
    other = device_lock(cpu(), str(tmp_path))  # a second run starts on the same device
    assert f"another cardbench run (pid {os.getpid()}) is measuring cpu now" in capsys.readouterr().err
    note = f"disturbed: another cardbench run (pid {os.getpid()})"
    assert note in measure(memory, target, case)["message"].split("; ")  # the first run sees it too
    assert mine.others() == other.others() == [str(os.getpid())]
    other.close()  # it ended
    assert "another cardbench run" not in measure(memory, target, case)["message"]
    mine.close()


# ---------------------------------------------------------------------------------------
# matmul: `best` against the fixed shapes


def _slow_at(monkeypatch, *slow_shapes):
    """GEMMs at `slow_shapes` take 20 ms more per call: shapes measured while the host was busy."""
    import time

    real = matmul.build

    def build(target, case, shape, **kw):
        built = real(target, case, shape, **kw)
        if shape in slow_shapes:
            launch = built.launch
            built.launch = lambda: (time.sleep(0.02), launch())[1]
        return built
    monkeypatch.setattr(matmul, "build", build)


def _fixed_then_best(monkeypatch, fixed_shapes, searched_shape):
    """The rows of fp32 at each fixed shape, then the `best` row of a search that can only try `searched_shape`."""
    monkeypatch.setattr(matmul_tune, "SEARCH_S", {"cuda": 1.0, "cpu": 0.5})
    monkeypatch.setattr(matmul_tune, "SEARCH_DIMS", {"cuda": (2048,), "cpu": (searched_shape[0],)})
    monkeypatch.setattr(matmul_tune, "SEARCH_KS", {"cuda": (4096,), "cpu": (searched_shape[2],)})
    monkeypatch.setattr(matmul_tune, "SEARCH_MAX", {"cuda": 2048, "cpu": searched_shape[0]})
    target, run_state = cpu(), make_run([cpu()], "full")
    cases = [matmul.make_case(target, "fp32", "torch", matmul.shape_name(s), s) for s in fixed_shapes]
    cases.append(matmul.make_case(target, "fp32", "torch", "best", None))
    return [measure(matmul, target, c, run_state) for c in cases]


def test_a_best_row_below_a_fixed_shape_reports_the_fastest_fixed_shape_and_says_so(monkeypatch):
    _slow_at(monkeypatch, (256, 256, 256), (256, 256, 128))  # the one shape the search may try, and a fixed one
    slow, fixed, best = _fixed_then_best(monkeypatch, [(256, 256, 128), (512, 512, 256)], (256, 256, 256))
    assert {slow["status"], fixed["status"], best["status"]} == {"ok"}, (fixed["message"], best["message"])
    assert best["case"] == "best" and best["value"] == fixed["value"] and best["samples"] == fixed["samples"]
    params = json.loads(best["params"])
    assert (params["m"], params["n"], params["k"]) == (512, 512, 256) and best["work"] == fixed["work"]
    assert params["searched_shape"] == "256x256x256" and params["searched_value"] < best["value"]
    assert params["search"]["evaluated"] == 1
    assert (f"the searched shape 256x256x256 measured {params['searched_value']:.4g} GFLOP/s, below the fixed shape "
            f"512x512x256 ({best['value']:.4g} GFLOP/s): this row is the fixed shape's measurement") in best["message"]


def test_a_best_row_above_the_fixed_shapes_is_the_searched_shape(monkeypatch):
    _slow_at(monkeypatch, (256, 256, 128))  # now the fixed shape is the slow one
    fixed, best = _fixed_then_best(monkeypatch, [(256, 256, 128)], (512, 512, 256))
    params = json.loads(best["params"])
    assert matmul.shape_name((params["m"], params["n"], params["k"])) == params["search"]["top"][0][0]
    assert params["m"] == 512 and best["value"] > fixed["value"]
    assert "searched_shape" not in params and "fixed shape" not in best["message"]
