"""Memory family: read, write, copy and triad bandwidth of device (or host) memory.

Headline: a working set far above the last-level cache ("plateau", each array
at least 8x L2 and at least 1 GiB on a GPU), so the number is DRAM bandwidth.
The full profile adds a sweep over sizes that shows the cache-to-DRAM step.
Bytes are the explicit reads plus writes (a copy moves 2x its size; no
write-allocate term, as BabelStream counts them: https://github.com/UoB-HPC/BabelStream),
in decimal GB/s.
"""
from __future__ import annotations

import math

import torch

from ..core import timing
from ..core.devices import Target
from ..core.harness import Case, Measurement, error_message
from ..core.units import human_bytes
from ..kernels.reference import ARRAYS, PATTERNS
from ..kernels.reference import BYTES_PER_ELEMENT_MOVED as MOVED_PER_ELEMENT

NAME = "memory"
PROVIDERS = ("triton", "torch")
ELEMENT_BYTES = 4  # float32

# A working set far above the last-level cache: 2^28 fp32 elements (1 GiB) is where
# BabelStream-style kernels reach their DRAM plateau on current GPUs.
GPU_PLATEAU_MIN = 2**30
CPU_PLATEAU_MIN = 256 * 2**20
L2_FACTOR = 8  # working set per array at least 8x the last-level cache
SWEEP_START = 2**20  # 1 MiB per array: inside every GPU's L2


class State:
    """Triton configurations tuned once per pattern and device, at the plateau size."""

    def __init__(self, run):
        self.run = run
        self.configs: dict[tuple, object] = {}


def plateau_array_bytes(target: Target) -> int:
    """Bytes per array for the headline: >= 8x L2 and the family minimum, within free memory."""
    floor = GPU_PLATEAU_MIN if target.is_cuda else CPU_PLATEAU_MIN
    wanted = max(L2_FACTOR * target.l2_bytes, floor)
    wanted = 2 ** math.ceil(math.log2(wanted))
    # Triad holds three arrays; leave room for the reference check and the allocator.
    budget = target.free_bytes() // 8
    while wanted > budget and wanted > SWEEP_START:
        wanted //= 2
    return wanted


def make_case(benchmark: str, provider: str, name: str, array_bytes: int) -> Case:
    n = array_bytes // ELEMENT_BYTES
    return Case(family=NAME, benchmark=benchmark, provider=provider, dtype="fp32", name=name, metric="bandwidth",
                unit="GB/s", scale=1e9, work=n * MOVED_PER_ELEMENT[benchmark], work_unit="B",
                size_bytes=n * ELEMENT_BYTES * ARRAYS[benchmark], spec=array_bytes)


def cases(target: Target, run) -> list[Case]:
    plateau = plateau_array_bytes(target)
    sizes = [("plateau", plateau)]
    if run.profile == "full":
        # Powers of two from inside L2 up to the plateau, which closes the curve.
        n = SWEEP_START
        while n < plateau:
            sizes.append((f"sweep-{human_bytes(n)}", n))
            n *= 2
    return [make_case(b, p, name, size) for name, size in sizes for b in PATTERNS for p in PROVIDERS]


def budget_for(case: Case, profile: str) -> timing.Budget:
    if case.name != "plateau":
        return timing.SWEEP
    return timing.QUICK if profile == "quick" else timing.FULL


def waive(target: Target, case: Case, state: State) -> tuple[str, str] | None:
    if case.provider != "triton":
        return None
    try:
        import triton  # noqa: F401
    except ImportError as e:
        return "unsupported", f"triton is not installed ({e})"
    return None


def smaller(case: Case) -> Case | None:
    """Out of memory (another process holds memory, a smaller card): half the arrays, down to SWEEP_START."""
    half = case.spec // 2
    return make_case(case.benchmark, case.provider, case.name, half) if half >= SWEEP_START else None


def size_text(case: Case) -> str:
    return f"{human_bytes(case.spec)} per array"


def measure(target: Target, case: Case, state: State) -> Measurement:
    """Allocate the arrays for `case`, pick the kernel, and describe the work."""
    n = case.spec // ELEMENT_BYTES
    profile = state.run.profile
    params: dict = {"elements": n, "arrays": ARRAYS[case.benchmark]}
    if case.provider == "triton":
        # Tune before allocating this case's arrays: the tuning buffers are freed by then.
        config, tuning = tuned_config(target, case, profile, state.configs)
        params.update(config=config.as_dict(), config_label=config.label(), sm_count=target.sm_count)
        if tuning:
            params["tuning_gb_per_s"] = tuning
        pruned = fitting_configs(target, case.benchmark, profile)[1]
        if pruned:  # dropped before compiling: over this card's registers or shared memory
            params["pruned_configs"] = pruned
    dev = target.device
    gen = torch.Generator(device=dev).manual_seed(1234)
    # Random normal data, never zeros: zero pages and compressible data can run faster than real data.
    arrays = [torch.randn(n, device=dev, generator=gen) for _ in range(ARRAYS[case.benchmark])]
    value = float(torch.randn(1, generator=torch.Generator().manual_seed(7)).item()) or 0.5
    if case.provider == "triton":
        fn, check = _triton_work(case.benchmark, arrays, value, config, target.sm_count)
    else:
        fn, check = _torch_work(case.benchmark, arrays, value)
    return Measurement(fn=fn, check=check, budget=budget_for(case, profile), params=params)


def tuned_config(target: Target, case: Case, profile: str, tuned: dict):
    """Best Triton configuration for this pattern on this device, tuned once at the plateau size.

    Returns (config, {label: GB/s} of every configuration tried, or {} when reused).
    """
    key = (str(target.device), case.benchmark, profile)
    if key in tuned:
        return tuned[key], {}
    n = plateau_array_bytes(target) // ELEMENT_BYTES
    gen = torch.Generator(device=target.device).manual_seed(99)
    arrays = [torch.randn(n, device=target.device, generator=gen) for _ in range(ARRAYS[case.benchmark])]
    results: dict[str, float] = {}
    failures: list[str] = []
    configs, pruned = fitting_configs(target, case.benchmark, profile)
    for config in configs:
        fn, _check = _triton_work(case.benchmark, arrays, 0.5, config, target.sm_count)
        try:
            t = timing.time_fn(fn, target.device, timing.TUNE, clock_hz=target.sm_clock_hz)
        except Exception as e:  # one configuration that does not compile here must not sink the others
            failures.append(f"{config.label()}: {error_message(e)}")
            continue
        results[config.label()] = n * MOVED_PER_ELEMENT[case.benchmark] / t.median_s / 1e9
    if not results:
        raise RuntimeError("no Triton configuration ran: "
                           + "; ".join(failures + [f"{label}: {why}" for label, why in pruned.items()]))
    best_label = max(results, key=results.get)
    best = next(c for c in configs if c.label() == best_label)
    del arrays, fn
    if target.is_cuda:
        torch.cuda.empty_cache()
    tuned[key] = best
    return best, results


def fitting_configs(target: Target, pattern: str, profile: str):
    """The Triton configurations that fit this card's registers and shared memory for `pattern`,
    and why the others were dropped, decided before anything is compiled (kernels/limits.py)."""
    from ..kernels import limits
    from ..kernels import memory as km

    if not target.is_cuda:
        return km.configs(profile), {}
    cc = limits.parse_capability(target.identity.get("compute_capability", ""))
    return km.fitting(pattern, profile, limits.for_device(target.device, cc))


def _triton_work(benchmark: str, arrays: list[torch.Tensor], value: float, config, sm_count: int):
    from ..kernels import memory as km

    if benchmark == "read":
        x = arrays[0]
        partials = torch.empty(km.read_partials_len(x.numel(), config, sm_count), device=x.device, dtype=torch.float32)
        return (lambda: km.triton_read(x, partials, config, sm_count),
                lambda: _check_read(lambda: (km.triton_read(x, partials, config, sm_count), partials.sum())[1], x))
    if benchmark == "write":
        out = arrays[0]
        return (lambda: km.triton_write(out, value, config, sm_count),
                lambda: _check_write(lambda: km.triton_write(out, value, config, sm_count), out, value))
    if benchmark == "copy":
        src, dst = arrays
        return (lambda: km.triton_copy(src, dst, config, sm_count),
                lambda: _check_copy(lambda: km.triton_copy(src, dst, config, sm_count), src, dst))
    a, b, c = arrays
    return (lambda: km.triton_triad(a, b, c, value, config, sm_count),
            lambda: _check_triad(lambda: km.triton_triad(a, b, c, value, config, sm_count), a, b, c, value))


def _torch_work(benchmark: str, arrays: list[torch.Tensor], value: float):
    from ..kernels import reference as ref

    if benchmark == "read":
        x = arrays[0]
        return (lambda: ref.torch_read(x), lambda: _check_read(lambda: ref.torch_read(x), x))
    if benchmark == "write":
        out = arrays[0]
        return (lambda: ref.torch_write(out, value),
                lambda: _check_write(lambda: ref.torch_write(out, value), out, value))
    if benchmark == "copy":
        src, dst = arrays
        return (lambda: ref.torch_copy(src, dst), lambda: _check_copy(lambda: ref.torch_copy(src, dst), src, dst))
    a, b, c = arrays
    return (lambda: ref.torch_triad(a, b, c, value),
            lambda: _check_triad(lambda: ref.torch_triad(a, b, c, value), a, b, c, value))


# Checks run once on the full buffers before timing; each returns None or what is wrong.

def _check_read(run, x: torch.Tensor) -> str | None:
    got = float(run())
    want = float(torch.sum(x, dtype=torch.float64))
    # fp32 partial sums in a different order than fp64: the error bound grows with n.
    tolerance = 1e-5 * float(torch.sum(x.abs(), dtype=torch.float64)) + 1e-6
    if not abs(got - want) <= tolerance:
        return f"read: sum {got!r} differs from the fp64 reference {want!r} by more than {tolerance:.3g}"
    return None


def _check_write(run, out: torch.Tensor, value: float) -> str | None:
    out.copy_(torch.randn_like(out))  # so a kernel that writes nothing cannot pass
    run()
    bad = int((out != value).sum())
    return f"write: {bad} of {out.numel()} elements differ from {value!r}" if bad else None


def _check_copy(run, src: torch.Tensor, dst: torch.Tensor) -> str | None:
    dst.copy_(torch.randn_like(dst))
    run()
    bad = int((dst != src).sum())
    return f"copy: {bad} of {src.numel()} elements differ from the source (must be bit-exact)" if bad else None


def _check_triad(run, a, b, c, value: float) -> str | None:
    a.copy_(torch.randn_like(a))
    run()
    want = b + value * c
    close = torch.isclose(a, want, rtol=1e-6, atol=1e-6)
    bad = int((~close).sum())
    return f"triad: {bad} of {a.numel()} elements differ from b + s*c beyond rtol 1e-6" if bad else None
