"""The llm family's GPU timing path on the virtual CUDA device (tests/virtual_cuda.py).

A stand-in H100 whose tensors live on the host: every measured call (SDPA forward, its
backward, the decode GEMM) also enqueues one virtual kernel of a known duration, and the
harness times the case with the CUDA timer. The row's value must be the family's work formula
over that duration, and decode rows, which flush the L2 before every call, must time the cold
kernel only. What this cannot show (real kernels, real clocks): the gpu-marked test in
tests/test_llm.py.
"""
import json

import pytest
import torch

from bench.core import harness, timing
from bench.families import llm
from bench.families import llm_attention as att
from bench.families import llm_decode as dec
from bench.kernels import matmul_ref
from helpers import make_run
from test_llm import h100
from virtual_cuda import install


@pytest.fixture
def vcuda(monkeypatch):
    cuda = install(monkeypatch, timing)
    # The stand-in card's tensors are on the host, so time_fn would pick the host timer: send it
    # to the CUDA timer, as a cuda device does.
    monkeypatch.setattr(timing, "time_fn", lambda fn, device, budget, flush=None, clock_hz=timing.FALLBACK_SM_CLOCK_HZ:
                        timing.time_cuda(fn, budget, flush, clock_hz))
    monkeypatch.setattr(llm, "make_flush", lambda target: cuda.flush if target.is_cuda else None)
    return cuda


def on_device(cuda, seconds, real, cold_s=None):
    """`real` (computed on the host once per set of inputs), plus one virtual kernel of `seconds`
    (`cold_s` right after a flush) per call."""
    kernel = cuda.kernel(seconds, cold_s=cold_s)
    done = {}

    def call(*args, **kwargs):
        kernel()
        key = tuple(id(a) for a in args)  # the timed closure holds its inputs: their ids stay theirs
        if key not in done:
            done[key] = (args, real(*args, **kwargs))
        return done[key][1]
    return call


REAL_SDPA = att.sdpa


def math_sdpa(q, k, v, causal, gqa, backend):
    return REAL_SDPA(q, k, v, causal, gqa, "math")


def measure(case):
    target = h100()
    return harness.run_case(llm, target, case, make_run([target]))


@pytest.mark.parametrize("kernel_s", [0.35e-3, 4.1e-3])
def test_attention_forward_is_flash_attention_2s_flops_over_the_kernel_time(vcuda, monkeypatch, kernel_s):
    monkeypatch.setattr(att, "sdpa", on_device(vcuda, kernel_s, math_sdpa))
    a = att.Attn("fwd", "flash", "bf16", 1, 2, 2, 512, 512)
    row = measure(llm.attention_case(h100(), a))
    assert row["status"] == "ok", row["message"]
    assert row["timer"] == timing.CUDA_TIMER and row["unit"] == "TFLOP/s"
    assert row["value"] == pytest.approx(4 * 2 * 512**2 * 128 / 2 / kernel_s / 1e12, rel=0.01)
    assert row["spec_figure"] == "bf16_dense" and row["pct_of_spec"] == pytest.approx(100 * row["value"] / 989.5)
    assert vcuda.commands("l2_flush") == []  # compute-bound training attention: no flush


def test_attention_backward_times_the_gradients_only(vcuda, monkeypatch):
    monkeypatch.setattr(att, "sdpa", on_device(vcuda, 1e-3, math_sdpa))  # the forward, not timed
    monkeypatch.setattr(att, "grads", on_device(vcuda, 2.5e-3, att.grads))
    a = att.Attn("bwd", "cudnn", "bf16", 1, 2, 2, 512, 512)
    row = measure(llm.attention_case(h100(), a))
    assert row["status"] == "ok", row["message"]
    assert row["value"] == pytest.approx(2.5 * 4 * 2 * 512**2 * 128 / 2 / 2.5e-3 / 1e12, rel=0.01)
    assert json.loads(row["params"])["backend"] == "SDPBackend.CUDNN_ATTENTION"


def test_decode_attention_flushes_before_every_call_and_counts_the_cache(vcuda, monkeypatch):
    warm_s, cold_s = 20e-6, 180e-6  # a cache that fits L2 would read 9x faster warm
    monkeypatch.setattr(att, "sdpa", on_device(vcuda, warm_s, math_sdpa, cold_s=cold_s))
    a = att.Attn("decode", "flash", "bf16", 1, 64, 8, 1, 4096, causal=False)
    row = measure(llm.attention_case(h100(), a))
    assert row["status"] == "ok", row["message"]
    nbytes = 2 * 8 * 4096 * 128 * 2 + 2 * 64 * 128 * 2
    assert row["work"] == nbytes and row["unit"] == "GB/s"
    assert row["value"] == pytest.approx(nbytes / cold_s / 1e9, rel=0.01)
    assert row["spec_figure"] == "memory_bandwidth" and row["pct_of_spec"] == pytest.approx(100 * row["value"] / 3350)
    assert json.loads(row["params"])["enable_gqa"] is True


@pytest.mark.parametrize("dtype, api", [("bf16", "mm"), ("fp8", "scaled_mm_fp8")])
def test_decode_gemm_is_the_bytes_it_must_read_over_the_cold_kernel_time(vcuda, monkeypatch, dtype, api):
    monkeypatch.setattr(matmul_ref, api, on_device(vcuda, 30e-6, getattr(matmul_ref, api), cold_s=240e-6))
    g = dec.Gemv(dtype, 16, 1024, 512)  # the family's 28672 x 8192 weight, scaled down for the host
    row = measure(llm.gemm_case(g))
    assert row["status"] == "ok", row["message"]
    assert row["value"] == pytest.approx(dec.bytes_moved(g) / 240e-6 / 1e9, rel=0.01)
    assert row["pct_of_spec"] == pytest.approx(100 * row["value"] / 3350)
    assert json.loads(row["params"])["flops"] == 2 * 16 * 1024 * 512
    cold = [c for c in vcuda.commands("work") if c.cold]
    assert len(cold) >= row["n_samples"] * row["calls_per_sample"]  # every timed call ran right after a flush


def test_an_fp8_attention_a_backend_takes_is_verified_and_timed(vcuda, monkeypatch):
    """Where a backend runs e4m3 SDPA, the fp8 row is checked against the math backend on the upcast inputs."""
    def fp8_sdpa(q, k, v, causal, gqa, backend):
        return math_sdpa(*(t.to(torch.bfloat16) for t in (q, k, v)), causal, gqa, backend)
    monkeypatch.setattr(att, "sdpa", on_device(vcuda, 1e-3, fp8_sdpa))
    a = att.Attn("fwd", "cudnn", "fp8", 1, 2, 2, 512, 512)
    row = measure(llm.attention_case(h100(), a))
    assert row["status"] == "ok", row["message"]
    assert row["spec_figure"] == "fp8_dense" and row["pct_of_spec"] == pytest.approx(100 * row["value"] / 1979.0)
