"""Matmul tuning: the Triton configuration per recipe and shape, and the full profile's shape
search (bench/families/matmul_search.py searches; this module times its candidates), both by short
unchecked timings of the very GEMM the row measures (`measurement`).
"""
from __future__ import annotations

import time
from dataclasses import replace

import torch

from ..core import timing
from ..core.devices import Target
from ..core.harness import Case, Measurement, error_message
from . import matmul_search
from .matmul_gemm import FP4, Built, Shape, build, capability, check, flops, shape_name, unit_and_scale

SEARCH_S = {"cuda": 20.0, "cpu": 3.0}  # time budget of one recipe's shape search (full profile)
SEARCH_DIMS = {"cuda": (2048, 4096, 8192, 16384), "cpu": (256, 512, 1024)}
SEARCH_KS = {"cuda": (4096, 8192, 16384), "cpu": (256, 512, 1024)}
SEARCH_MAX = {"cuda": 32768, "cpu": 1024}

# ---------------------------------------------------------------------------------------
# One GEMM as a Measurement (bench/families/matmul_gemm.py builds it).


def measurement(target: Target, case: Case, built: Built, budget: timing.Budget) -> Measurement:
    flush = timing.L2Flush(target.device, target.l2_bytes) if target.is_cuda else None

    def before_call():
        # A fresh random output before each call, then an L2 flush so A and B come from DRAM
        # (a cold-cache GEMM, as nvbench and triton.testing.do_bench measure it).
        if built.out is not None:
            built.out.copy_(built.out_rand)
        if flush is not None:
            flush()

    measured = replace(case, work=built.work, size_bytes=built.size_bytes)
    return Measurement(fn=built.run, check=lambda: check(built), budget=budget, params=built.params,
                       flush=before_call, case=measured)


# ---------------------------------------------------------------------------------------
# Triton configuration, tuned per recipe and shape.


def tuned_config(target: Target, case: Case, shape: Shape, profile: str, tuned: dict):
    """Fastest Triton configuration for this recipe at this shape: (config, {label: throughput})."""
    key = ("matmul-config", str(target.device), case.spec.recipe, shape, profile)
    if key in tuned:
        return tuned[key], {}
    results: dict[str, float] = {}
    failures: list[str] = []
    configs, pruned = fitting_configs(target, case.spec.recipe, profile)
    for config in configs:
        try:
            results[config.label()] = _throughput(target, case, shape, config=config)
        except Exception as e:  # one that fails to compile or run here must not sink the others
            failures.append(f"{config.label()}: {error_message(e)}")
    if not results:
        raise RuntimeError("no Triton configuration ran: "
                           + "; ".join(failures + [f"{label}: {why}" for label, why in pruned.items()]))
    best = next(c for c in configs if c.label() == max(results, key=results.get))
    tuned[key] = best
    return best, results


def fitting_configs(target: Target, recipe: str, profile: str):
    """The Triton configurations that fit this card's shared memory and registers, and why the
    others were dropped, decided before anything is compiled (kernels/limits.py)."""
    from ..kernels import limits
    from ..kernels import matmul as km

    if not target.is_cuda:
        return km.configs(recipe, profile), {}
    return km.fitting(recipe, profile, limits.for_device(target.device, capability(target)))


def _throughput(target: Target, case: Case, shape: Shape, config=None, api: str = "") -> float:
    """A short timing (no check) for tuning and the search, in the row's unit."""
    built = build(target, case, shape, config=config, api=api)
    m = measurement(target, case, built, timing.TUNE)
    try:
        t = timing.time_fn(m.fn, target.device, m.budget, m.flush, target.sm_clock_hz)
    finally:
        del built, m
        if target.is_cuda:
            torch.cuda.empty_cache()
    return flops(shape) / t.median_s / unit_and_scale(target, case.spec.recipe)[1]


# ---------------------------------------------------------------------------------------
# Shape search (full profile); the search itself is bench/families/matmul_search.py.


def search_best(target: Target, case: Case, probe_api: str) -> tuple[Shape, dict]:
    where = "cuda" if target.is_cuda else "cpu"
    dims, ks = SEARCH_DIMS[where], SEARCH_KS[where]
    lo, hi = min(dims), SEARCH_MAX[where]
    free = target.free_bytes()
    out_bytes = 2 if case.spec.recipe in ("bf16", "fp16", "fp8", *FP4) else 4

    def fits(s: Shape) -> bool:
        m, n, k = s
        # inputs as fp32 while they are made, two outputs (result, random), the L2 flush buffer
        return 4 * (m + n) * k + 2 * out_bytes * m * n + 2**28 < free // 2

    seeds = matmul_search.coarse_shapes(dims, ks, target.sm_count if target.is_cuda else None, lo, hi)
    started = time.monotonic()
    best, tried = matmul_search.search(lambda s: _throughput(target, case, s, api=probe_api), seeds,
                                       SEARCH_S[where], lo, hi, fits, first_step=1024 if target.is_cuda else 256)
    top = sorted(tried.items(), key=lambda kv: -kv[1])[:10]
    info = {"budget_s": SEARCH_S[where], "seconds": time.monotonic() - started,
            "evaluated": len(tried), "coarse_candidates": len(seeds),
            "top": [[shape_name(s), v] for s, v in top]}
    return best, info
