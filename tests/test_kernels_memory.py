"""Each Triton memory kernel against its torch reference, on CPU (interpreter) and on CUDA.

The kernel checks run in a child process (this file run as a script). TRITON_INTERPRET
is read when @triton.jit decorates a kernel, i.e. when kernels.memory is first imported,
so setting it inside pytest would depend on which test module imported that first and
would leak into every later module. A child gets exactly the environment it needs: the
interpreter for the CPU checks, compiled kernels for the GPU checks. The child reports
per case whether the kernels really ran interpreted, and each case is its own test.
"""

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.kernels import memory  # noqa: E402
from bench.kernels.memory import Config  # noqa: E402

GUARD = 64  # elements after each output that a correct tail mask never touches
SCALAR = 0.4142135  # triad scalar, not 1 so a dropped multiply shows


@dataclass(frozen=True)
class Case:
    pattern: str
    config: Config
    n: int
    sm_count: int | None  # None: the device's SM count

    @property
    def id(self) -> str:
        c = self.config
        hints = "h" if c.hints else "p"
        sm = "dev" if self.sm_count is None else self.sm_count
        return f"{self.pattern}-b{c.block}w{c.num_warps}g{c.grid_per_sm}{hints}-n{self.n}-sm{sm}"


def _compile_key(c: Config) -> tuple:
    return (c.block, c.num_warps, c.grid_per_sm > 0, c.hints)


def _configs_under_test() -> list[Config]:
    """Every quick config, plus the first full config of each compiled variant quick lacks."""
    chosen = list(memory.configs("quick"))
    for c in memory.configs("full"):
        if _compile_key(c) not in {_compile_key(q) for q in chosen}:
            chosen.append(c)
    return chosen


def _cases() -> list[Case]:
    """Sizes on and off the block, and persistent grids smaller than the tile count."""
    cases = []
    for c in _configs_under_test():
        sizes = [1, c.block - 1, 2 * c.block, 3 * c.block + 5]
        for n in sizes:
            cases += [Case(p, c, n, 2) for p in memory.PATTERNS]
        if c.grid_per_sm:
            # sm_count=1: grid = grid_per_sm programs over 2*grid_per_sm+2 tiles, so
            # every program runs the stride loop two or three times.
            n = c.block * (2 * c.grid_per_sm + 1) + 7
            cases += [Case(p, c, n, 1) for p in memory.PATTERNS]
    # Tiny blocks: many loop trips per program at sizes the interpreter runs quickly.
    for c in (Config(64, 1, 1, True), Config(64, 1, 3, False)):
        cases += [Case(p, c, 64 * 20 + 3, 2) for p in memory.PATTERNS]
    return cases


def _gpu_cases() -> list[Case]:
    """The CPU cases plus plateau-sized buffers and buffers past 2**31 elements."""
    cases = _cases()
    for c in memory.configs("full"):
        cases += [Case(p, c, (1 << 24) + 3, None) for p in memory.PATTERNS]
    for c in (Config(8192, 8, 0, True), Config(8192, 8, 4, True)):
        cases += [Case(p, c, (1 << 31) + 4099, None) for p in ("write", "copy")]
    return cases


CPU_CASES = _cases()
GPU_CASES = _gpu_cases()


# ---------------------------------------------------------------------------------------
# The checks; these run in the child process.


def _check(case: Case, device: str) -> None:
    """Run one kernel and its torch reference on random normal data and compare them."""
    n, config = case.n, case.config
    sm_count = case.sm_count or torch.cuda.get_device_properties(device).multi_processor_count
    # Random normal data, never zeros: a kernel that writes nothing must not pass.
    gen = torch.Generator(device=device).manual_seed(n)

    def randn(size):
        return torch.randn(size, generator=gen, device=device)

    def guarded():
        """An n-element output followed by GUARD sentinel elements in the same storage."""
        buf = randn(n + GUARD)
        return buf, buf[:n], buf[n:].clone()

    if case.pattern == "read":
        x = randn(n)
        exact = x.double().sum()
        tol = 1e-5 * x.double().abs().sum()
        # NaN-filled: a program that never stores its partial poisons the sum.
        partials = torch.full((memory.read_partials_len(n, config, sm_count),), float("nan"), device=device)
        memory.triton_read(x, partials, config, sm_count)
        got = partials.double().sum()
        assert abs(got - exact) <= tol, f"triton sum {got.item()} vs exact {exact.item()}"
        ref = memory.torch_read(x).double()
        assert abs(ref - exact) <= tol, f"torch sum {ref.item()} vs exact {exact.item()}"
        return

    buf, out, sentinel = guarded()
    ref = torch.empty(n, device=device)
    if case.pattern == "write":
        value = randn(1).item()
        memory.triton_write(out, value, config, sm_count)
        memory.torch_write(ref, value)
        assert torch.equal(ref, torch.full_like(ref, value)), "torch_write"
        assert torch.equal(out, ref), "triton_write differs from fill_"
    elif case.pattern == "copy":
        src = randn(n)
        memory.triton_copy(src, out, config, sm_count)
        memory.torch_copy(src, ref)
        assert torch.equal(ref, src), "torch_copy"
        assert torch.equal(out, src), "triton_copy is not bit-exact"
    elif case.pattern == "triad":
        b, c = randn(n), randn(n)
        memory.triton_triad(out, b, c, SCALAR, config, sm_count)
        memory.torch_triad(ref, b, c, SCALAR)
        exact = b.double() + SCALAR * c.double()
        assert torch.allclose(ref.double(), exact, rtol=1e-6, atol=1e-6), "torch_triad"
        assert torch.allclose(out, ref, rtol=1e-6, atol=1e-6), "triton_triad differs from torch.add"
    else:
        raise ValueError(case.pattern)
    assert torch.equal(buf[n:], sentinel), "kernel wrote past the end of its output"


def _child_main(device: str, out_path: str) -> None:
    """Run the cases named on stdin; write {"interpreted": bool, "results": {id: text}}."""
    wanted = set(json.load(sys.stdin))
    results = {}
    for case in CPU_CASES if device == "cpu" else GPU_CASES:
        if case.id not in wanted:
            continue
        if device != "cpu":
            need = 3 * 4 * (case.n + GUARD)  # the largest case holds three fp32 buffers
            if need > torch.cuda.mem_get_info()[0]:
                results[case.id] = f"skip: needs {need / 2**30:.1f} GiB free"
                continue
        try:
            _check(case, device)
            results[case.id] = "ok"
        except Exception as e:  # noqa: BLE001 - report every failure, keep checking
            results[case.id] = f"{type(e).__name__}: {e}"
        if device != "cpu":
            torch.cuda.empty_cache()
    # Ground truth of what ran, not of what the environment asked for.
    interpreted = type(memory._copy_kernel).__name__ == "InterpretedFunction"
    Path(out_path).write_text(json.dumps({"interpreted": interpreted, "results": results}))


# ---------------------------------------------------------------------------------------
# The parent side: one child per device, one pytest test per case.


def _run_child(cases: list[Case], device: str, tmp_path: Path) -> dict:
    env = dict(os.environ)
    env.pop("TRITON_INTERPRET", None)
    if device == "cpu":
        env["TRITON_INTERPRET"] = "1"
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])
    out_path = tmp_path / f"results-{device}.json"
    proc = subprocess.run(
        [sys.executable, __file__, device, str(out_path)],
        input=json.dumps([c.id for c in cases]), capture_output=True, text=True, cwd=ROOT, env=env,
        timeout=600,
    )
    assert proc.returncode == 0 and out_path.exists(), f"child failed:\n{proc.stdout}\n{proc.stderr}"
    report = json.loads(out_path.read_text())
    assert report["interpreted"] == (device == "cpu"), f"interpreted={report['interpreted']} on {device}"
    return report["results"]


@pytest.fixture(scope="module")
def cpu_results(tmp_path_factory):
    return _run_child(CPU_CASES, "cpu", tmp_path_factory.mktemp("cpu"))


@pytest.fixture(scope="module")
def gpu_results(tmp_path_factory):
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    return _run_child(GPU_CASES, "cuda", tmp_path_factory.mktemp("gpu"))


@pytest.mark.parametrize("case_id", [c.id for c in CPU_CASES])
def test_kernel_matches_torch_in_interpreter(cpu_results, case_id):
    assert cpu_results[case_id] == "ok", cpu_results[case_id]


@pytest.mark.gpu
@pytest.mark.parametrize("case_id", [c.id for c in GPU_CASES])
def test_kernel_matches_torch_on_cuda(gpu_results, case_id):
    if gpu_results[case_id].startswith("skip:"):
        pytest.skip(gpu_results[case_id])
    assert gpu_results[case_id] == "ok", gpu_results[case_id]


# ---------------------------------------------------------------------------------------
# Host-side behaviour the caller relies on (no kernel launch).


def test_cases_cover_persistent_loops_and_tails():
    tiles = {c.id: -(-c.n // c.config.block) for c in CPU_CASES}
    loops = [c for c in CPU_CASES if c.config.grid_per_sm
             and tiles[c.id] >= 2 * memory.read_partials_len(c.n, c.config, c.sm_count)]
    assert {c.config for c in loops} >= {c for c in _configs_under_test() if c.grid_per_sm}
    assert any(c.n % c.config.block for c in CPU_CASES) and any(c.n % c.config.block == 0 for c in CPU_CASES)


def test_configs_are_small_distinct_and_cheap_to_compile():
    quick, full = memory.configs("quick"), memory.configs("full")
    assert 3 <= len(quick) <= 6 and 10 <= len(full) <= 16
    for profile in (quick, full):
        assert len({c.label() for c in profile}) == len(profile)
        assert all(c.block % 1024 == 0 and c.num_warps in (4, 8, 16) for c in profile)
    assert len({_compile_key(c) for c in quick}) <= 4 and len({_compile_key(c) for c in full}) <= 8
    assert quick[1].label() == "block=8192 warps=8 grid=4xSM hints=on"
    assert quick[1].as_dict() == {"block": 8192, "num_warps": 8, "grid_per_sm": 4, "hints": True}
    with pytest.raises(ValueError):
        memory.configs("fast")


def test_read_partials_len_is_one_per_program():
    one_tile, persistent = Config(1024, 4, 0, True), Config(1024, 4, 4, True)
    assert memory.read_partials_len(10 * 1024 + 1, one_tile, sm_count=132) == 11
    assert memory.read_partials_len(10_000 * 1024, persistent, sm_count=132) == 4 * 132
    assert memory.read_partials_len(3 * 1024, persistent, sm_count=132) == 3  # never more than tiles
    assert memory.read_partials_len(0, persistent, sm_count=132) == 0


@pytest.mark.parametrize("pattern", memory.PATTERNS)
def test_byte_counts_are_what_the_reference_op_reads_and_writes(pattern):
    """BYTES_PER_ELEMENT_MOVED against the bytes the torch op touches, counted op by op."""
    from helpers import moved_bytes

    from bench.kernels import reference as ref

    n = 4096
    a = [torch.randn(n) for _ in range(memory.ARRAYS[pattern])]
    call = {"read": lambda: ref.torch_read(a[0]), "write": lambda: ref.torch_write(a[0], SCALAR),
            "copy": lambda: ref.torch_copy(a[0], a[1]), "triad": lambda: ref.torch_triad(*a, SCALAR)}[pattern]
    result = 4 if pattern == "read" else 0  # the sum's one fp32 result is not an array access
    assert moved_bytes(call) - result == n * memory.BYTES_PER_ELEMENT_MOVED[pattern]


def test_launchers_reject_what_they_cannot_stream():
    config = memory.configs("quick")[0]
    with pytest.raises(ValueError):
        memory.triton_copy(torch.zeros(16, dtype=torch.float64), torch.zeros(16, dtype=torch.float64), config, 1)
    with pytest.raises(ValueError):
        memory.triton_write(torch.zeros(8, 2).t(), 1.0, config, 1)  # not contiguous
    with pytest.raises(ValueError):
        memory.triton_triad(torch.zeros(16), torch.zeros(16), torch.zeros(15), 2.0, config, 1)
    with pytest.raises(ValueError):
        memory.triton_read(torch.zeros(8192 * 3), torch.zeros(2), config, 1)  # needs 3 partials


if __name__ == "__main__":
    _child_main(sys.argv[1], sys.argv[2])
