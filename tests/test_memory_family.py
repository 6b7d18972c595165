"""Memory family planning and glue: sizes against L2, the Triton path end to end
under the interpreter, and `wrong` when a kernel computes the wrong thing.

Run as a script (with TRITON_INTERPRET=1 set by the test) it measures the
Triton provider on the CPU through the same code the GPU path uses.
"""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from bench.core import harness
from bench.core.devices import Target
from bench.core.units import human_bytes
from bench.families import memory
from helpers import make_run
from helpers import measure as run_case

GIB, MIB = 2**30, 2**20


def gpu_like(l2_bytes, free_bytes=80 * GIB):
    """A Target that looks like a GPU to the planner (nothing is allocated)."""
    t = Target(torch.device("cuda", 0), 0, {"device_name": "test", "l2_cache_bytes": str(l2_bytes), "sm_count": "132"})
    t.free_bytes = lambda: free_bytes
    return t


@pytest.mark.parametrize("l2, per_array", [(50 * MIB, GIB), (126 * MIB, GIB), (256 * MIB, 2 * GIB)])
def test_plateau_is_at_least_8x_l2_and_1gib(l2, per_array):
    t = gpu_like(l2)
    assert memory.plateau_array_bytes(t) == per_array
    assert per_array >= 8 * l2


def test_plateau_shrinks_to_fit_free_memory():
    t = gpu_like(50 * MIB, free_bytes=4 * GIB)
    assert memory.plateau_array_bytes(t) == 512 * MIB  # 3 triad arrays + checks must fit


def test_quick_plans_plateau_only_full_adds_sweep_below_it():
    t = gpu_like(50 * MIB)
    quick = memory.cases(t, make_run([t]))
    assert {c.name for c in quick} == {"plateau"}
    assert {(c.benchmark, c.provider) for c in quick} == {
        (b, p) for b in ("read", "write", "copy", "triad") for p in ("triton", "torch")}
    full = memory.cases(t, make_run([t], "full"))
    sweep = sorted({c.spec for c in full if c.name.startswith("sweep-")})
    assert sweep[0] == MIB and sweep[-1] == GIB // 2 and len(sweep) == 10
    assert [c.name for c in full if c.spec == 64 * MIB][0] == "sweep-64MiB"
    assert sweep[0] < t.l2_bytes < sweep[-1]  # the sweep crosses the L2 size


def test_human_bytes_is_exact():
    assert human_bytes(MIB) == "1MiB"
    assert human_bytes(1536 * MIB) == "1536MiB"
    assert human_bytes(GIB) == "1GiB"
    assert human_bytes(1000) == "1000B"


def test_triton_rows_are_skipped_on_the_cpu_with_the_reason():
    cpu = Target(torch.device("cpu"), None, {"device_name": "cpu", "l2_cache_bytes": str(MIB)})
    row = run_case(memory, cpu, memory.make_case("copy", "triton", "plateau", MIB))
    assert row["status"] == "skipped" and "TRITON_INTERPRET" in row["message"] and "value" not in row


def test_broken_torch_op_gives_wrong_not_a_number(monkeypatch):
    from bench.kernels import reference

    monkeypatch.setattr(reference, "torch_copy", lambda src, dst: dst.copy_(src * 1.0000001))
    cpu = Target(torch.device("cpu"), None, {"device_name": "cpu", "l2_cache_bytes": str(MIB)})
    row = run_case(memory, cpu, memory.make_case("copy", "torch", "sweep-1MiB", MIB))
    assert row["status"] == "wrong" and "bit-exact" in row["message"] and "value" not in row


def test_crashing_op_gives_error_row_and_the_run_goes_on(monkeypatch):
    from bench.kernels import reference

    def boom(x):
        raise RuntimeError("kernel exploded")

    monkeypatch.setattr(reference, "torch_read", boom)
    cpu = Target(torch.device("cpu"), None, {"device_name": "cpu", "l2_cache_bytes": str(MIB)})
    row = run_case(memory, cpu, memory.make_case("read", "torch", "sweep-1MiB", MIB))
    assert row["status"] == "error" and "kernel exploded" in row["message"]


def test_out_of_memory_retries_smaller_and_says_so(monkeypatch):
    """A controlled allocation failure: arrays above 2 MiB cannot be allocated."""
    real_randn = torch.randn

    def scarce_randn(n, *args, **kw):
        if isinstance(n, int) and n * 4 > 2 * MIB:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 4.00 MiB")
        return real_randn(n, *args, **kw)

    monkeypatch.setattr(torch, "randn", scarce_randn)
    cpu = Target(torch.device("cpu"), None, {"device_name": "cpu", "l2_cache_bytes": str(MIB)})
    row = run_case(memory, cpu, memory.make_case("copy", "torch", "plateau", 8 * MIB))
    assert row["status"] == "ok"
    assert row["message"].startswith("out of memory at 8MiB per array: measured at 2MiB")
    assert row["size_bytes"] == 2 * 2 * MIB and row["case"] == "plateau"


def test_out_of_memory_below_the_floor_is_an_error_and_the_run_goes_on(monkeypatch):
    def no_memory(*args, **kw):
        raise RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried to allocate 4194304 bytes")

    monkeypatch.setattr(torch, "randn", no_memory)
    cpu = Target(torch.device("cpu"), None, {"device_name": "cpu", "l2_cache_bytes": str(MIB)})
    row = run_case(memory, cpu, memory.make_case("triad", "torch", "plateau", 4 * MIB))
    assert row["status"] == "error" and "can't allocate memory" in row["message"]


def _interpreted_triton_rows(broken: str) -> list[dict]:
    """Run the Triton provider through bench.families.memory on the CPU under the interpreter (in a child)."""
    root = str(Path(__file__).resolve().parent.parent)
    env = dict(os.environ, TRITON_INTERPRET="1", CUDA_VISIBLE_DEVICES="",
               PYTHONPATH=os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")])))
    out = subprocess.run([sys.executable, __file__, broken], env=env, capture_output=True, text=True,
                         timeout=600, cwd=Path(__file__).resolve().parent.parent)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_triton_provider_end_to_end_under_the_interpreter():
    rows = _interpreted_triton_rows("none")
    assert [r["benchmark"] for r in rows] == ["read", "write", "copy", "triad"]
    for r in rows:
        assert r["status"] == "ok", r
        params = json.loads(r["params"])
        assert params["config_label"] in params["tuning_gb_per_s"]  # the winner was among those tried
        assert len(params["tuning_gb_per_s"]) == 4  # every quick configuration was tried
        assert r["value"] == pytest.approx(r["work"] / r["time_s"] / 1e9, rel=1e-12)


def test_wrong_triton_kernel_is_caught_before_timing():
    rows = _interpreted_triton_rows("copy")
    by = {r["benchmark"]: r for r in rows}
    assert by["copy"]["status"] == "wrong" and "differ" in by["copy"]["message"]
    assert by["triad"]["status"] == "ok"


def _child(broken: str) -> None:
    from bench.kernels import memory as km

    if broken == "copy":  # drop the last element: a classic mask bug
        real = km.triton_copy
        km.triton_copy = lambda src, dst, config, sm: real(src[:-1], dst[:-1], config, sm)
    # Tiny arrays: the interpreter runs every program in Python.
    memory.plateau_array_bytes = lambda target: 64 * 1024
    cpu = Target(torch.device("cpu"), None, {"device_name": "cpu", "sm_count": "2"})
    harness.waiver = lambda target, case: None  # time the Triton provider on the CPU, here only
    run = make_run([cpu])
    rows = [harness.run_case(memory, cpu, memory.make_case(b, "triton", "plateau", 64 * 1024), run)
            for b in ("read", "write", "copy", "triad")]
    print(json.dumps([{k: v for k, v in r.items() if k in
                       ("benchmark", "status", "message", "value", "work", "time_s", "params")} for r in rows]))


if __name__ == "__main__":
    _child(sys.argv[1])
