"""Matmul family: dense GEMM throughput per dtype, torch (cuBLAS) and Triton, against the DENSE spec figure.

Recipes (the `benchmark` column): fp32 (TF32 off), tf32, bf16, fp16, int8 (`torch._int_mm`),
fp8 e4m3 (`torch._scaled_mm`, per-tensor fp32 scales, bf16 out; with and without fast
accumulation), mxfp4 and nvfp4 (block-scaled e2m1, swizzled scales). Triton runs bf16, fp16
and fp8 through `tl.dot` and MXFP4 through `tl.dot_scaled` (kernels/matmul.py).

Method (ml-engineering's mamf-finder, https://github.com/stas00/ml-engineering/tree/master/compute/accelerator/benchmarks):
each GEMM (bench/families/matmul_gemm.py) is checked against a reference of its very inputs
before it is timed; the output is re-randomized and the L2 flushed before every timed call.
FLOPs = 2*M*N*K.

Whether a recipe runs is decided at run time: static facts (torch dtypes, compute
capability) first, then a tiny trial call checked against its reference, cached per device
and software versions in the family's run state. Quick profile: fixed shapes that fill the
chip. Full profile adds, per torch recipe, a time-bounded coarse-to-fine shape search (the
MAMF answer in seconds) reported as case `best`. Beside it: matmul_gemm.py (one GEMM, built and
checked), matmul_tune.py (Triton configurations, the search's timings), matmul_search.py (the
search), matmul_ladder.py (the dtype ladder and the emulation note).
"""
from __future__ import annotations

import math
import re
import time
from dataclasses import dataclass, replace

import torch

from ..core import timing
from ..core.devices import Target
from ..core.harness import Case, Status, Timed, error_message
from .matmul_ladder import claimed_ratio, emulation_note, summary_lines, value_key  # noqa: F401
from .matmul_gemm import FP4, RECIPES, Shape, build, capability, check, flops, shape_name, unit_and_scale
from .matmul_tune import fitting_configs, measurement, search_best, tuned_config

NAME = "matmul"

# Quick shapes that fill an H100-class chip: the classic 8192^3, a long-K one (MAMF's best
# shapes are long in K), and a wide one. With cuBLAS's 128x256 tiles on 132 SMs they run
# 15.5, 3.9 and 62 waves at 97-99% wave efficiency.
GPU_SHAPES: tuple[Shape, ...] = ((8192, 8192, 8192), (4096, 4096, 16384), (16384, 16384, 4096))
# CPU mode checks the pipeline, it does not rate the host: one small shape, so the whole CPU
# quick run stays well under a minute on 2 cores.
CPU_SHAPES: tuple[Shape, ...] = ((1024, 1024, 1024),)
# Host GEMMs of the slow dtypes take up to CPU_MAX_CALL_S per call: five samples, no warm-up
# beyond the first call (there are no clocks to ramp on the host).
CPU_BUDGET = timing.Budget(warmup_s=0.0, measure_s=0.2, min_samples=5, max_samples=50)


TRIAL_SHAPE = {"torch": (128, 128, 128), "triton": (256, 256, 256)}  # Triton: same JIT specialization as big shapes
CPU_MAX_CALL_S = 1.0  # CPU mode skips a dtype whose call at the CPU shapes would take longer...
CPU_ALWAYS = ("fp32", "bf16")  # ...except these, which CPU mode always times, however slow the host


@dataclass(frozen=True)
class Gemm:
    """What one matmul case measures (the harness Case's `spec`)."""

    recipe: str  # fp32 / tf32 / bf16 / fp16 / int8 / fp8 / mxfp4 / nvfp4
    shape: Shape | None  # None: found by the search
    fast_accum: bool = False


class State:
    """What the family learns during a run: capability verdicts, tuned Triton configurations, the
    best value per recipe and shape (the fp8/fp4 rows compare with bf16), the host's fp32 rate."""

    def __init__(self, run=None):
        self.run = run
        self.profile = getattr(run, "profile", "quick")
        self.probes: dict[tuple, "Probe"] = {}
        self.configs: dict[tuple, object] = {}
        self.values: dict[tuple, float] = {}
        self.fixed: dict[tuple, Timed] = {}  # the fastest fixed-shape measurement per recipe (`best` >= it)
        self.cpu_fp32_gflops: float | None = None


def make_case(target: Target, recipe: str, provider: str, name: str, shape: Shape | None,
              fast_accum: bool = False) -> Case:
    unit, scale, work_unit = unit_and_scale(target, recipe)
    return Case(family=NAME, benchmark=recipe, provider=provider, dtype=recipe, name=name, metric="throughput",
                unit=unit, scale=scale, work=flops(shape) if shape else 0, work_unit=work_unit, size_bytes=0,
                spec=Gemm(recipe, shape, fast_accum),
                params={"m": shape[0], "n": shape[1], "k": shape[2]} if shape else {})


@dataclass(frozen=True)
class Probe:
    """What the capability check decided for a (recipe, provider) on a device."""

    status: str  # ok / unsupported / skipped / wrong
    message: str = ""
    api: str = ""  # for torch FP4: "_scaled_mm" or "F.scaled_mm", whichever the trial ran
    note: str = ""  # said on every ok row (Triton FP4 compiled without block-scaled MMA)


def cases(target: Target, run) -> list[Case]:
    """Recipe by recipe (bf16 first: the fp8/fp4 rows compare with it), shape by shape."""
    profile = run.profile
    if profile not in ("quick", "full"):
        raise ValueError(f"unknown profile {profile!r}; expected 'quick' or 'full'")
    shapes = GPU_SHAPES if target.is_cuda else CPU_SHAPES
    out: list[Case] = []
    for r in RECIPES.values():
        providers = ("torch", "triton") if r.triton else ("torch",)
        for shape in shapes:
            for p in providers:
                out.append(make_case(target, r.name, p, shape_name(shape), shape))
                if r.name == "fp8" and p == "torch":
                    out.append(make_case(target, r.name, p, shape_name(shape) + "-fastacc", shape, fast_accum=True))
        if profile == "full":  # the search: torch only (a Triton search would re-tune every shape)
            fast = r.name == "fp8"  # the peak is the fast-accumulating one (cuBLAS's fastest fp8 mode)
            out.append(make_case(target, r.name, "torch", "best-fastacc" if fast else "best", None, fast_accum=fast))
    return out


# ---------------------------------------------------------------------------------------
# Capability: static facts first, then a trial call checked against its reference.


def _triton_version() -> str:
    try:
        import triton
    except ImportError:
        return ""
    return triton.__version__


def static_reason(target: Target, case: Case) -> str | None:
    """Why `case` cannot run here, from what this torch/triton has and the card's compute capability."""
    r = RECIPES[case.spec.recipe]
    if case.provider == "triton":
        try:
            import triton  # noqa: F401
        except ImportError as e:
            return f"triton is not installed ({e})"
        from ..kernels import matmul as km

        if case.spec.recipe == "mxfp4" and not km.has_dot_scaled():
            return f"this triton ({_triton_version()}) has no tl.dot_scaled"
    missing = [n for n in (r.torch_needs if case.provider == "torch" else r.triton_needs) if not hasattr(torch, n)]
    if case.provider == "torch" and case.spec.recipe in FP4 and not _fp4_apis():
        missing.append("_scaled_mm or torch.nn.functional.scaled_mm")
    if missing:
        return f"this torch ({torch.__version__}) has no {missing[0]}"
    if not target.is_cuda:  # (Triton rows are skipped on the CPU before they get here)
        if case.spec.recipe == "tf32":
            return "TF32 is a tensor-core format of NVIDIA GPUs (compute capability 8.0+); the CPU has none"
        if case.spec.recipe in FP4 and case.provider == "torch":
            return ("FP4 matmul needs FP4 tensor cores (a GPU of compute capability 10.0 or 12.0); "
                    "torch has no CPU kernel for it")
        return None
    cc = capability(target)
    if cc < r.min_cc:
        return f"{r.cc_reason}; this card is {cc[0]}.{cc[1]}"
    return None


def probe(target: Target, case: Case, state: State) -> Probe:
    """The capability verdict for this case's recipe and provider, cached for the run."""
    key = ("matmul-probe", target.name, str(target.device), torch.__version__, _triton_version(),
           case.spec.recipe, case.provider, case.spec.fast_accum)
    if key not in state.probes:
        reason = static_reason(target, case)
        state.probes[key] = Probe("unsupported", reason) if reason else trial(target, case, state)
    return state.probes[key]


def _fp4_apis() -> list[str]:
    """torch's block-scaled GEMM entry points present here, the longest-standing first."""
    return [api for api, present in (("_scaled_mm", hasattr(torch, "_scaled_mm")),
                                     ("F.scaled_mm", hasattr(torch.nn.functional, "scaled_mm"))) if present]


def trial(target: Target, case: Case, state: State) -> Probe:
    """Run the GEMM once at a tiny shape and check it; a call that raises means unsupported.

    Variants are tried in turn (torch FP4: each API; Triton: each quick configuration, since a
    big one may not fit a small card's shared memory); the first that runs decides.
    """
    shape = TRIAL_SHAPE[case.provider]
    variants: list[tuple[object, str]] = [(None, "")]
    if case.provider == "torch" and case.spec.recipe in FP4:
        variants = [(None, api) for api in _fp4_apis()]
    elif case.provider == "triton":
        kept, pruned = fitting_configs(target, case.spec.recipe, "quick")
        if not kept:
            return Probe("unsupported", "no Triton configuration fits this card: "
                         + "; ".join(f"{label}: {why}" for label, why in pruned.items()))
        variants = [(config, "") for config in kept]
    failures = []
    for config, api in variants:
        try:
            built = build(target, case, shape, config=config, api=api)
            handle = built.launch()
            problem = check(built)
            if target.is_cuda:
                torch.cuda.synchronize(target.device)
        except Exception as e:  # the trial's whole point: this software or card cannot run it
            label = api or (config.label() if config is not None else "")
            failures.append(f"{label + ': ' if label else ''}{error_message(e)}")
            continue
        if problem:
            return Probe("wrong", f"the trial call at {shape_name(shape)} gives wrong results: {problem}")
        if not target.is_cuda and case.provider == "torch" and case.spec.recipe not in CPU_ALWAYS:
            slow = _cpu_slow_reason(target, case, api, state)
            if slow:
                return Probe("skipped", slow)
        return Probe("ok", api=api, note=_emulation_in_ptx(case, handle))
    return Probe("unsupported", f"the trial call at {shape_name(shape)} raised: " + "; ".join(failures))


def _emulation_in_ptx(case: Case, handle) -> str:
    """Triton FP4 compiled without a block-scaled MMA instruction: upcast to bf16.

    Block-scaled MMA is `tcgen05.mma.cta_group::1.kind::mxf4.block_scale` on 10.x and
    `mma.sync.aligned.m16n8k64.row.col.kind::mxf4nvf4.block_scale` on 12.x (PTX ISA,
    https://docs.nvidia.com/cuda/parallel-thread-execution/); tests/test_kernel_build.py checks
    this against the kernels compiled for 9.0, 10.0 and 12.0.
    """
    ptx = getattr(handle, "asm", {}).get("ptx", "") if handle is not None else ""
    if case.provider != "triton" or case.spec.recipe != "mxfp4" or not ptx:
        return ""
    if re.search(r"block_scale|kind::mxf", ptx):
        return ""
    return "emulated: the compiled tl.dot_scaled kernel has no block-scaled MMA instruction (Triton upcasts to bf16)"


CPU_RATE_SHAPE = (512, 512, 512)  # 1.5 ms in fp32 on two cores: long enough not to time thread wake-ups


def _cpu_rate(target: Target, case: Case, api: str) -> float:
    """GFLOP/s at CPU_RATE_SHAPE, best of three calls (a probe, not a measurement); one call
    when that one alone shows the dtype is far too slow to time."""
    built = build(target, case, CPU_RATE_SHAPE, api=api)
    built.launch()
    best = math.inf
    for _ in range(3):
        t0 = time.perf_counter()
        built.launch()
        best = min(best, time.perf_counter() - t0)
        if best > 0.1:
            break
    return flops(CPU_RATE_SHAPE) / best / 1e9


def _cpu_slow_reason(target: Target, case: Case, api: str, state: State) -> str | None:
    """CPU mode: a dtype without a fast CPU kernel (fp16 on many hosts runs ~1000x slower than
    bf16) would take minutes at the CPU shapes: skip it, with the numbers."""
    if state.cpu_fp32_gflops is None:
        state.cpu_fp32_gflops = _cpu_rate(target, make_case(target, "fp32", "torch", "probe", None), "")
    rate = _cpu_rate(target, case, api)
    biggest = max(CPU_SHAPES, key=flops)
    call_s = flops(biggest) / (rate * 1e9)
    if call_s <= CPU_MAX_CALL_S:
        return None
    unit = unit_and_scale(target, case.spec.recipe)[0]
    return (f"{case.spec.recipe} matmul on this CPU runs at {rate:.2f} {unit} (fp32: {state.cpu_fp32_gflops:.1f} GFLOP/s): one "
            f"{shape_name(biggest)} call would take {call_s:.1f} s; this torch build has no fast CPU kernel "
            "for it; not timed in CPU mode")


# ---------------------------------------------------------------------------------------
# One case, end to end.


def budget_for(target: Target, profile: str) -> timing.Budget:
    if not target.is_cuda:
        return CPU_BUDGET
    return timing.QUICK if profile == "quick" else timing.FULL


def waive(target: Target, case: Case, state: State) -> tuple[str, str] | None:
    """Unsupported or skipped here: static facts first, then a trial call (cached per device and versions)."""
    verdict = probe(target, case, state)
    return None if verdict.status == "ok" else (verdict.status, verdict.message)


def smaller(case: Case) -> Case | None:
    """Out of memory at a fixed shape (a smaller card, another process): M and N halved, down to 1024."""
    shape = case.spec.shape
    if shape is None or min(shape[:2]) // 2 < 1024:
        return None
    half = (shape[0] // 2, shape[1] // 2, shape[2])
    return replace(case, work=flops(half), spec=replace(case.spec, shape=half))


def size_text(case: Case) -> str:
    return shape_name(case.spec.shape) if case.spec.shape else case.name


def measure(target: Target, case: Case, state: State):
    """Search (case `best`), tune (Triton), build; the harness verifies and times it."""
    verdict = probe(target, case, state)
    if verdict.status != "ok":  # a `wrong` trial: the same verdict for every shape
        return Status(verdict.status, verdict.message)
    shape, extra = case.spec.shape, {}
    if shape is None:
        shape, extra["search"] = search_best(target, case, verdict.api)
    config = None
    if case.provider == "triton":
        config, tuning = tuned_config(target, case, shape, state.profile, state.configs)
        extra["sm_count"] = target.sm_count
        if tuning:  # every configuration tried, in the row's unit
            extra["tuning"] = tuning
        pruned = fitting_configs(target, case.spec.recipe, state.profile)[1]
        if pruned:  # dropped before compiling: over this card's shared memory or registers
            extra["pruned_configs"] = pruned
    built = build(target, case, shape, config=config, api=verdict.api)
    built.params.update(extra)
    m = measurement(target, case, built, budget_for(target, state.profile))

    def after(value: float) -> list[str]:
        key = value_key(target, case.provider, case.spec.recipe, case.name)
        state.values[key] = max(value, state.values.get(key, 0.0))
        return [verdict.note, emulation_note(target, case, value, state.values)]
    m.after = after
    m.review = _review(target, case, state, shape)
    return m


def _review(target: Target, case: Case, state: State, shape: Shape):
    """Fixed shapes: keep the fastest measurement per recipe, provider and accumulation. `best`:
    when the searched shape measured slower than that one (a busy host, a search too short to
    find it), report that measurement instead and say so; a `best` row is never below a fixed shape."""
    key = (str(target.device), case.provider, case.spec.recipe, case.spec.fast_accum)

    def rate(t: Timed) -> float:
        return t.case.work / t.timing.median_s / t.case.scale

    def review(mine: Timed) -> Timed | None:
        fixed = state.fixed.get(key)
        if case.spec.shape is not None:
            if fixed is None or rate(mine) > rate(fixed):
                state.fixed[key] = mine
            return None
        if fixed is None or rate(fixed) <= rate(mine):
            return None
        fixed_shape = shape_name((fixed.params["m"], fixed.params["n"], fixed.params["k"]))
        note = (f"the searched shape {shape_name(shape)} measured {rate(mine):.4g} {case.unit}, below the fixed shape "
                f"{fixed_shape} ({rate(fixed):.4g} {case.unit}): this row is the fixed shape's measurement")
        params = {**fixed.params, "search": mine.params.get("search"), "searched_shape": shape_name(shape),
                  "searched_value": rate(mine)}
        return Timed(fixed.timing, params, fixed.telemetry, [*fixed.notes, note], replace(fixed.case, name=case.name))
    return review
