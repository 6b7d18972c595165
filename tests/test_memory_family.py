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


@pytest.mark.parametrize("l2", [50 * MIB, 126 * MIB, 200 * MIB, 256 * MIB, 300 * MIB])
def test_plateau_is_the_smallest_power_of_two_at_least_8x_l2_and_1gib(l2):
    got = memory.plateau_array_bytes(gpu_like(l2))
    assert isinstance(got, int) and got >= 8 * l2 and got >= GIB and got & (got - 1) == 0
    assert got // 2 < max(8 * l2, GIB)  # no larger than it has to be


def test_host_plateau_is_at_least_256mib_and_8x_the_llc():
    host = Target(torch.device("cpu"), None, {"device_name": "cpu", "l2_cache_bytes": str(48 * MIB)})
    host.free_bytes = lambda: 64 * GIB
    assert memory.plateau_array_bytes(host) == 512 * MIB  # 8 x 48 MiB = 384 MiB, rounded up
    host.identity["l2_cache_bytes"] = str(MIB)
    assert memory.plateau_array_bytes(host) == 256 * MIB


def test_plateau_shrinks_to_fit_free_memory():
    t = gpu_like(50 * MIB, free_bytes=4 * GIB)
    assert memory.plateau_array_bytes(t) == 512 * MIB and isinstance(memory.plateau_array_bytes(t), int)  # 3 triad arrays + checks
    assert memory.plateau_array_bytes(gpu_like(50 * MIB, free_bytes=4 * MIB)) == MIB  # never below the sweep's start


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


def test_the_plateau_gets_the_profile_s_budget_and_the_sweep_a_short_one():
    from bench.core import timing

    plateau, sweep = (memory.make_case("copy", "torch", name, MIB) for name in ("plateau", "sweep-1MiB"))
    assert timing.QUICK != timing.FULL != timing.SWEEP
    assert memory.budget_for(plateau, "quick") == timing.QUICK and memory.budget_for(plateau, "full") == timing.FULL
    assert memory.budget_for(sweep, "quick") == memory.budget_for(sweep, "full") == timing.SWEEP


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


def _cpu():
    return Target(torch.device("cpu"), None, {"device_name": "cpu", "l2_cache_bytes": str(MIB)})


@pytest.mark.parametrize("pattern", memory.PATTERNS)
def test_row_work_is_the_bytes_the_timed_call_moves(pattern):
    """The work on the row, and so its GB/s, is what the timed call reads and writes, counted op by op."""
    from helpers import moved_bytes

    cpu = _cpu()
    case = memory.make_case(pattern, "torch", "sweep-1MiB", MIB)
    timed = memory.measure(cpu, case, memory.State(make_run([cpu])))
    result = 4 if pattern == "read" else 0  # the sum's one fp32 result is not an array access
    assert moved_bytes(timed.fn) - result == case.work
    assert case.size_bytes == MIB * memory.ARRAYS[pattern] and isinstance(case.size_bytes, int)  # "1048576" in the CSV
    row = run_case(memory, cpu, case)
    assert row["status"] == "ok" and row["work"] == case.work
    assert (row["family"], row["dtype"], row["metric"], row["unit"], row["work_unit"]) == (
        "memory", "fp32", "bandwidth", "GB/s", "B")
    assert row["value"] == pytest.approx(case.work / row["time_s"] / 1e9, rel=1e-12)


def _broken_ops():
    """A plausible one-line bug in each torch op: a tail the mask drops, a scalar rounded to fp16."""
    return {
        "read": lambda x: x[: x.numel() - 4096].sum(),
        "write": lambda out, value: out[:-1].fill_(value),
        "copy": lambda src, dst: dst[:-1].copy_(src[:-1]),
        "triad": lambda a, b, c, s: torch.add(b, c, alpha=float(torch.tensor(s).half()), out=a),
    }


@pytest.mark.parametrize("pattern", memory.PATTERNS)
def test_every_pattern_checks_its_result_before_timing(monkeypatch, pattern):
    from bench.kernels import reference

    monkeypatch.setattr(reference, f"torch_{pattern}", _broken_ops()[pattern])
    row = run_case(memory, _cpu(), memory.make_case(pattern, "torch", "sweep-1MiB", MIB))
    assert row["status"] == "wrong" and row["message"].startswith(f"{pattern}: ") and "value" not in row


# The checks at their tolerance: an error twice the bound is caught, half of it passes, so a
# check loosened (or tightened) by a factor of two or more fails here.

def test_read_check_bound_is_1e_5_of_the_absolute_sum():
    def f64(v):
        return torch.tensor(v, dtype=torch.float64)

    x = torch.randn(1000, generator=torch.Generator().manual_seed(3))
    want = float(torch.sum(x, dtype=torch.float64))
    bound = 1e-5 * float(x.abs().sum(dtype=torch.float64)) + 1e-6
    assert memory._check_read(lambda: f64(want + 0.5 * bound), x) is None
    assert memory._check_read(lambda: f64(want - 0.5 * bound), x) is None
    message = memory._check_read(lambda: f64(want + 2 * bound), x)
    assert message == (f"read: sum {want + 2 * bound!r} differs from the fp64 reference {want!r} "
                       f"by more than {bound:.3g}")
    assert memory._check_read(lambda: f64(want - 2 * bound), x) is not None
    assert memory._check_read(lambda: f64(float("nan")), x) is not None
    zeros = torch.zeros(1000)  # all zeros: only the 1e-6 floor is left
    assert memory._check_read(lambda: f64(0.5e-6), zeros) is None
    assert memory._check_read(lambda: f64(2e-6), zeros) is not None


def test_write_and_copy_checks_are_bit_exact_and_see_a_kernel_that_writes_nothing():
    value = 0.7071
    out = torch.full((1000,), value)  # already right: a kernel that writes nothing must still fail
    assert memory._check_write(lambda: None, out, value) == "write: 1000 of 1000 elements differ from 0.7071"
    assert memory._check_write(lambda: out.fill_(value), out, value) is None
    off = lambda: (out.fill_(value), out[7].copy_(torch.tensor(value).nextafter(torch.tensor(1.0))))  # noqa: E731
    assert memory._check_write(off, out, value) == "write: 1 of 1000 elements differ from 0.7071"
    src = torch.randn(1000)
    dst = src.clone()
    assert memory._check_copy(lambda: None, src, dst) == (
        "copy: 1000 of 1000 elements differ from the source (must be bit-exact)")
    assert memory._check_copy(lambda: dst.copy_(src), src, dst) is None
    assert memory._check_copy(lambda: (dst.copy_(src), dst[3].copy_(dst[3].nextafter(dst[3] + 1))), src, dst) == (
        "copy: 1 of 1000 elements differ from the source (must be bit-exact)")


def test_triad_check_bound_is_1e_6_relative_and_absolute():
    gen = torch.Generator().manual_seed(5)
    b, c = torch.randn(1000, generator=gen) + 10, torch.randn(1000, generator=gen)  # |b + s*c| near 10
    a, s = torch.empty(1000), 0.4142135

    def triad(relative_error):
        return lambda: a.copy_((b.double() + s * c.double()) * (1 + relative_error))

    assert memory._check_triad(triad(0.5e-6), a, b, c, s) is None
    assert memory._check_triad(triad(4e-6), a, b, c, s) == (
        "triad: 1000 of 1000 elements differ from b + s*c beyond rtol 1e-6")
    a.copy_(b + s * c)
    assert memory._check_triad(lambda: None, a, b, c, s) is not None  # writes nothing: caught
    zero_b, zero_c = torch.zeros(1000), torch.zeros(1000)  # the result is 0: only atol is left
    assert memory._check_triad(lambda: a.fill_(0.5e-6), a, zero_b, zero_c, s) is None
    assert memory._check_triad(lambda: a.fill_(4e-6), a, zero_b, zero_c, s) is not None


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
    assert (row["benchmark"], row["provider"], row["work"]) == ("copy", "torch", 2 * 2 * MIB)  # read + write of 2 MiB


def test_out_of_memory_retries_down_to_the_smallest_sweep_size_and_no_further():
    half = memory.smaller(memory.make_case("triad", "torch", "plateau", 2 * MIB))
    assert (half.spec, half.name, half.provider, half.work) == (MIB, "plateau", "torch", MIB // 4 * 12)
    assert memory.smaller(half) is None


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


def test_wrong_triton_kernels_are_caught_before_timing():
    rows = _interpreted_triton_rows("all")
    assert [(r["benchmark"], r["status"]) for r in rows] == [(b, "wrong") for b in ("read", "write", "copy", "triad")]
    for r in rows:
        assert r["message"].startswith(f"{r['benchmark']}: ") and "value" not in r


def _child(broken: str) -> None:
    from bench.kernels import memory as km

    if broken == "all":  # a one-line bug in each kernel
        read, write, copy, triad = km.triton_read, km.triton_write, km.triton_copy, km.triton_triad
        # the last program's partial sum lost
        km.triton_read = lambda x, partials, config, sm: (read(x, partials, config, sm), partials[-1:].zero_())
        km.triton_write = lambda out, value, config, sm: write(out[:-1], value, config, sm)  # a tail mask bug
        km.triton_copy = lambda src, dst, config, sm: copy(src[:-1], dst[:-1], config, sm)
        km.triton_triad = lambda a, b, c, s, config, sm: triad(a, b, c, float(torch.tensor(s).half()), config, sm)
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
