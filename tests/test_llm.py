"""llm family: the work formulas, shape planning for an H100-like card and for CPU mode, the claim
each row is compared with, backend detection and its waivers, verification against the math
backend, and real CPU rows through the harness and `cardbench run`.

GPU code paths run here on a stand-in card (a Target whose tensors live on the host); their
timing on the virtual CUDA device is tests/test_llm_virtual.py."""
import json
import os
import subprocess
import sys
import types
import warnings
from pathlib import Path

import pytest
import torch

from bench.core import harness, normalize, specs
from bench.core.devices import Target
from bench.core.results import read_results
from bench.families import llm
from bench.families import llm_attention as att
from bench.families import llm_decode as dec
from helpers import make_run
from test_telemetry import H100_IDENTITY

GIB = 2**30
REPO = Path(__file__).resolve().parent.parent
H100_SXM = specs.load().find("H100 SXM5 80GB")


class SimGpu(Target):
    """A card to the family's planning and checks; its tensors live on the host."""

    @property
    def is_cuda(self) -> bool:
        return True


def h100(free=80 * GIB, cc="9.0", sm_count=132) -> SimGpu:
    ident = dict(H100_IDENTITY, sm_count=str(sm_count), l2_cache_bytes=str(50 * 2**20), compute_capability=cc)
    t = SimGpu(torch.device("cpu"), 0, ident, H100_SXM, host_memory_bytes=256 * GIB)
    t.free_bytes = lambda: free
    return t


def cpu() -> Target:
    return Target(torch.device("cpu"), None, {"device_name": "test CPU", "sm_count": "2"})


def by_id(cases):
    return {c.id: c for c in cases}


def run_case(target, case, state=None):
    run = make_run([target])
    if state is not None:
        run.family_states["llm"] = state
    return harness.run_case(llm, target, case, run)


def small_case(target, kind="fwd", backend="math", dtype="bf16", causal=True):
    a = (att.Attn(kind, backend, dtype, 1, 2, 2, 256, 256) if kind != "decode"
         else att.Attn("decode", backend, dtype, 1, 8, 2, 1, 512, causal=False))
    return llm.attention_case(target, a)


# ---------------------------------------------------------------- work formulas

def test_attention_flops_are_flash_attention_2s_count():
    a = att.Attn("fwd", "flash", "bf16", 4, 16, 16, 4096, 4096)
    assert att.flops(a) == 4 * 4 * 16 * 4096**2 * 128 / 2 == 274_877_906_944  # causal: half the scores
    assert att.flops(att.Attn("fwd", "flash", "bf16", 4, 16, 16, 4096, 4096, causal=False)) == 2 * att.flops(a)
    assert att.flops(att.Attn("bwd", "flash", "bf16", 4, 16, 16, 4096, 4096)) == 2.5 * att.flops(a)
    decode = att.Attn("decode", "flash", "bf16", 1, 64, 8, 1, 131072, causal=False)
    assert att.flops(decode) == 4 * 64 * 131072 * 128  # every query head sees the whole cache


def test_decode_bytes_are_the_cache_and_the_activations_once():
    decode = att.Attn("decode", "flash", "bf16", 1, 64, 8, 1, 131072, causal=False)
    kv = 2 * 8 * 131072 * 128 * 2  # K and V at the 8 KV heads, bf16: 512 MiB
    assert att.bytes_moved(decode) == kv + 64 * 128 * 2 + 64 * 128 * 2 == 512 * 2**20 + 32768
    fwd = att.Attn("fwd", "flash", "bf16", 1, 16, 16, 4096, 4096)
    one = 16 * 4096 * 128 * 2
    assert att.bytes_moved(fwd) == 4 * one  # q, k, v read, o written
    assert att.bytes_moved(att.Attn("bwd", "flash", "bf16", 1, 16, 16, 4096, 4096)) == 8 * one  # + dO, dq, dk, dv
    assert dec.bytes_moved(dec.Gemv("bf16", 1, 28672, 8192)) == 28672 * 8192 * 2 + 8192 * 2 + 28672 * 2
    assert dec.bytes_moved(dec.Gemv("fp8", 64, 28672, 8192)) == 28672 * 8192 + 64 * 8192 + 64 * 28672 * 2 + 8
    assert dec.flops(dec.Gemv("fp8", 64, 28672, 8192)) == 2 * 64 * 28672 * 8192


def test_rows_carry_flops_and_bytes_for_the_roofline():
    from bench.commands.report_roofline import flops_and_bytes

    for case in llm.cases(h100(), make_run([])):
        row = harness.base_row(case, h100(), case.params)
        p = json.loads(row["params"])
        assert flops_and_bytes(row) == (p["flops"], p["bytes"]), case.id
        assert (case.work == p["bytes"]) if case.work_unit == "B" else (case.work == p["flops"])


# ---------------------------------------------------------------- planning

def test_h100_plan():
    cases = llm.cases(h100(), make_run([]))
    assert len(by_id(cases)) == len(cases)
    attn = [c for c in cases if c.benchmark.startswith("attention")]
    assert {(c.benchmark, c.dtype) for c in attn} == {("attention_fwd", "bf16"), ("attention_bwd", "bf16"),
                                                      ("attention_fwd", "fp8")}
    assert {c.provider for c in cases if c.benchmark != "decode_gemm"} == {"flash", "cudnn", "efficient"}
    # FlashAttention-2's 16k tokens of 16 heads fill 132 SMs at least 8 waves of 128-row query tiles
    shapes = {c.spec.seq_q: (c.spec.batch, c.spec.heads) for c in attn}
    assert shapes == {4096: (4, 16), 16384: (1, 16), 32768: (1, 16)}
    assert all(c.spec.causal and c.spec.head_dim == 128 and c.unit == "TFLOP/s" for c in attn)
    decode = [c for c in cases if c.benchmark == "decode_attention"]
    assert sorted({c.spec.seq_kv for c in decode}) == [4096, 32768, 131072]
    assert {(c.spec.heads, c.spec.kv_heads, c.spec.seq_q, c.spec.causal, c.unit) for c in decode} == {
        (64, 8, 1, False, "GB/s")}
    gemms = {c.id for c in cases if c.benchmark == "decode_gemm"}
    assert gemms == {f"llm/decode_gemm/torch/{d}/{m}x28672x8192" for d in ("bf16", "fp8") for m in (1, 4, 16, 64)}


def test_planning_fills_a_bigger_chip_and_shrinks_to_the_free_memory():
    # 4 x 16 x 32 = 2048 query tiles are under 8 waves of 264 SMs (2112): the batch doubles once
    assert llm.attention_shape(h100(sm_count=264), 4096) == (8, 16)
    batch, heads = llm.attention_shape(h100(free=2 * GIB), 4096)
    assert (batch, heads) == (2, 16)
    assert att.footprint(att.Attn("bwd", "flash", "bf16", batch, heads, heads, 4096, 4096)) <= 2 * GIB // 4
    assert llm.attention_shape(h100(free=64 * 2**20), 32768)[0] == 1  # then the heads halve
    assert llm.attention_shape(h100(free=64 * 2**20), 32768)[1] < 16


def test_cpu_plan_is_small_and_math_only():
    cases = llm.cases(cpu(), make_run([]))
    assert {c.provider for c in cases} == {"math", "torch"}
    assert all(c.unit in ("GFLOP/s", "GB/s") for c in cases)
    assert max(c.spec.seq_kv for c in cases if not isinstance(c.spec, dec.Gemv)) <= 4096
    assert {(c.spec.n, c.spec.k) for c in cases if isinstance(c.spec, dec.Gemv)} == {dec.CPU_WEIGHT}
    with pytest.raises(ValueError):
        llm.cases(cpu(), make_run([], "fast"))


def test_out_of_memory_retries_are_smaller():
    c = by_id(llm.cases(h100(), make_run([])))
    fwd = c["llm/attention_fwd/flash/bf16/seq4096"]
    half = llm.smaller(fwd)
    assert (half.spec.batch, half.work, half.params["batch"]) == (2, fwd.work / 2, 2)
    one = llm.smaller(c["llm/attention_fwd/flash/bf16/seq32768"])
    assert (one.spec.batch, one.spec.heads) == (1, 8)
    kv = llm.smaller(c["llm/decode_attention/flash/bf16/kv131072"])
    assert kv.spec.seq_kv == 65536 and kv.work == att.bytes_moved(kv.spec) == kv.params["bytes"]
    assert kv.params["bytes_counted"] == c["llm/decode_attention/flash/bf16/kv131072"].params["bytes_counted"]
    assert llm.smaller(c["llm/decode_attention/flash/bf16/kv4096"]) is None
    assert llm.smaller(c["llm/decode_gemm/torch/bf16/1x28672x8192"]) is None


# ---------------------------------------------------------------- what each row is compared with

def test_attention_against_the_dense_claim_decode_against_memory_bandwidth():
    assert normalize.claim_key("llm", "attention_fwd", "bf16") == "bf16_dense"
    assert normalize.claim_key("llm", "attention_bwd", "bf16") == "bf16_dense"
    assert normalize.claim_key("llm", "attention_fwd", "fp8") == "fp8_dense"
    assert normalize.claim_key("llm", "decode_attention", "bf16") == "memory_bandwidth"
    assert normalize.claim_key("llm", "decode_gemm", "fp8") == "memory_bandwidth"
    decode = {"family": "llm", "benchmark": "decode_gemm", "dtype": "fp8", "unit": "GB/s", "status": "ok",
              "value": 1675.0}
    cols = normalize.columns(decode, H100_SXM, None)
    assert cols["spec_figure"] == "memory_bandwidth" and cols["pct_of_spec"] == pytest.approx(50.0)
    attn = dict(decode, benchmark="attention_fwd", dtype="bf16", unit="TFLOP/s", value=494.75)
    cols = normalize.columns(attn, H100_SXM, None)
    assert cols["spec_figure"] == "bf16_dense" and cols["pct_of_spec"] == pytest.approx(50.0)


# ---------------------------------------------------------------- backends: detection and waivers

def test_a_torch_without_a_backend_or_sdpa_kernel_is_named(monkeypatch):
    c = by_id(llm.cases(h100(), make_run([])))["llm/attention_fwd/cudnn/bf16/seq4096"]
    monkeypatch.setattr(att, "SDPBackend", types.SimpleNamespace(FLASH_ATTENTION=1, MATH=0))
    row = run_case(h100(), c)
    assert row["status"] == "unsupported" and row["message"].endswith("has no SDPBackend.CUDNN_ATTENTION")
    monkeypatch.setattr(att, "sdpa_kernel", None)
    assert "has no torch.nn.attention.sdpa_kernel" in run_case(h100(), c)["message"]


def test_fp8_needs_a_card_of_8_9_and_a_backend_that_takes_it(monkeypatch):
    c = by_id(llm.cases(h100(cc="8.0"), make_run([])))
    for name in ("llm/attention_fwd/flash/fp8/seq4096", "llm/decode_gemm/torch/fp8/1x28672x8192"):
        row = run_case(h100(cc="8.0"), c[name])
        assert row["status"] == "unsupported"
        assert row["message"] == "FP8 tensor cores need compute capability 8.9 or newer; this card is 8.0"
    # On an H100 the trial call decides: here the real torch on the host refuses e4m3 in SDPA.
    row = run_case(h100(), c["llm/attention_fwd/flash/fp8/seq4096"])
    assert row["status"] == "unsupported" and row["message"].startswith("the flash backend refused a trial call: ")
    assert "Float8_e4m3fn" in row["message"] or "No available kernel" in row["message"]


def refusing(backends, real=att.sdpa, calls=None):
    """An SDPA that refuses some backends as torch does: reasons as warnings, then the error."""
    def sdpa(q, k, v, causal, gqa, backend):
        if calls is not None:
            calls.append((backend, tuple(q.shape)))
        if backend in backends and backends[backend](q):
            warnings.warn(f"{backend} attention does not support this input (Triggered internally at sdp_utils.cpp)")
            raise RuntimeError("No available kernel. Aborting execution.")
        return real(q, k, v, causal, gqa, "math")
    return sdpa


def test_a_backend_that_refuses_the_trial_is_unsupported_with_torchs_reasons(monkeypatch):
    calls = []
    monkeypatch.setattr(att, "sdpa", refusing({"cudnn": lambda q: True}, calls=calls))
    c = by_id(llm.cases(h100(), make_run([])))
    state = llm.State(make_run([h100()]))
    rows = [run_case(h100(), c[f"llm/attention_bwd/cudnn/bf16/seq{s}"], state) for s in (4096, 16384, 32768)]
    for row in rows:
        assert row["status"] == "unsupported"
        assert row["message"] == ("the cudnn backend refused a trial call: RuntimeError: No available kernel. "
                                  "Aborting execution.; cudnn attention does not support this input")
    assert len(calls) == 1 and calls[0][1][2] == att.CHECK_SEQ  # one trial, at the check shape, for all three


def test_a_backend_that_refuses_the_full_shape_is_unsupported_with_its_error(monkeypatch):
    big = lambda q: q.shape[2] > att.CHECK_SEQ  # noqa: E731
    monkeypatch.setattr(att, "sdpa", refusing({"efficient": big}))
    case = llm.attention_case(h100(), att.Attn("fwd", "efficient", "bf16", 1, 2, 2, 1024, 1024))
    row = run_case(h100(), case)
    assert row["status"] == "unsupported" and not row.get("value")
    assert row["message"].startswith("the efficient backend refused batch 1, 2 heads (2 KV), q 1024 x kv 1024")
    assert "does not support this input" in row["message"]


def test_a_crash_is_an_error_and_out_of_memory_retries_smaller(monkeypatch):
    real = att.sdpa

    def crash(q, k, v, causal, gqa, backend):
        if q.shape[2] > att.CHECK_SEQ:
            raise RuntimeError("CUDA error: an illegal memory access was encountered")
        return real(q, k, v, causal, gqa, "math")
    monkeypatch.setattr(att, "sdpa", crash)
    case = llm.attention_case(h100(), att.Attn("fwd", "flash", "bf16", 1, 2, 2, 1024, 1024))
    row = run_case(h100(), case)
    assert row["status"] == "error" and "illegal memory access" in row["message"]

    def oom(q, k, v, causal, gqa, backend):
        if q.shape[0] > 1:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return real(q, k, v, causal, gqa, "math")
    monkeypatch.setattr(att, "sdpa", oom)
    row = run_case(cpu(), llm.attention_case(cpu(), att.Attn("fwd", "math", "bf16", 2, 2, 2, 256, 256)))
    assert row["status"] == "ok" and json.loads(row["params"])["batch"] == 1
    assert row["message"].startswith("out of memory at batch 2, 2 heads (2 KV), q 256 x kv 256, head dim 128: "
                                     "measured at batch 1,")


# ---------------------------------------------------------------- verification against the math backend

@pytest.mark.parametrize("kind", ["fwd", "decode"])
def test_a_broken_attention_is_wrong_not_timed(monkeypatch, kind):
    real = att.sdpa

    def perturbed(*args):
        out = real(*args)
        return out + 0.05 * out.abs().max()  # a shifted output: every element off by a few percent
    monkeypatch.setattr(att, "sdpa", perturbed)
    row = run_case(cpu(), small_case(cpu(), kind))
    assert row["status"] == "wrong" and not row.get("value") and not row.get("samples")
    assert row["message"].startswith("output: relative error ") and "against the math backend in fp64" in row["message"]


def test_a_broken_backward_is_wrong_and_names_the_gradient(monkeypatch):
    real = att.grads

    def bad(out, inputs, dout):
        dq, dk, dv = real(out, inputs, dout)
        return dq, dk, dv * 1.1
    monkeypatch.setattr(att, "grads", bad)
    row = run_case(cpu(), small_case(cpu(), "bwd"))
    assert row["status"] == "wrong" and row["message"].startswith("dv: relative error")


def test_a_broken_decode_gemm_is_wrong(monkeypatch):
    from bench.kernels import matmul_ref

    real = matmul_ref.mm
    monkeypatch.setattr(matmul_ref, "mm", lambda a, b, out, tf32=False: real(a, b, out).mul_(1.05))
    case = llm.gemm_case(dec.Gemv("bf16", 4, 512, 256))
    row = run_case(cpu(), case)
    assert row["status"] == "wrong" and "against the fp32 product of the same inputs" in row["message"]


def test_a_decode_gemm_that_writes_nothing_cannot_pass_on_a_stale_right_answer():
    built = dec.build(torch.device("cpu"), dec.Gemv("bf16", 4, 512, 256))
    assert dec.check(built) is None  # the output now holds the right product
    built.launch = lambda: None
    assert "relative error" in dec.check(built)


def test_a_torch_without_enable_gqa_expands_the_kv_heads_and_says_so(monkeypatch):
    monkeypatch.setattr(att, "has_enable_gqa", lambda: False)
    seen = []
    real = att.sdpa

    def sdpa(q, k, v, causal, gqa, backend):
        seen.append((k.shape[1], gqa))
        return real(q, k, v, causal, gqa, backend)
    monkeypatch.setattr(att, "sdpa", sdpa)
    row = run_case(cpu(), small_case(cpu(), "decode"))
    assert row["status"] == "ok" and "KV heads expanded" in row["message"]
    assert set(seen) == {(8, False)}  # 2 KV heads expanded to the 8 query heads, no enable_gqa passed
    assert row["work"] == att.bytes_moved(att.Attn("decode", "math", "bf16", 1, 8, 2, 1, 512, causal=False))


# ---------------------------------------------------------------- CPU mode end to end

def test_cpu_rows_through_the_harness():
    target = cpu()
    run = make_run([target])
    rows = [harness.run_case(llm, target, c, run) for c in llm.cases(target, run)]
    status = {(r["benchmark"], r["dtype"]): r["status"] for r in rows}
    assert status.pop(("attention_fwd", "fp8")) == "unsupported"  # no SDPA kernel on the host takes e4m3
    assert set(status.values()) == {"ok"}, [(r["benchmark"], r["message"]) for r in rows if r["status"] != "ok"]
    for r in rows:
        if r["status"] != "ok":
            continue
        assert r["value"] > 0 and r["value"] == pytest.approx(r["work"] / r["time_s"] / (1e9))
        p = json.loads(r["params"])
        assert p["flops"] > 0 and p["bytes"] > 0
        assert r["unit"] == ("GB/s" if r["benchmark"].startswith("decode") else "GFLOP/s")


def test_cardbench_run_llm_on_the_cpu(tmp_path):
    env = dict(os.environ, CUDA_VISIBLE_DEVICES="", PYTHONPATH=str(REPO))
    p = subprocess.run([sys.executable, "-m", "bench", "run", "--families", "llm", "--device", "cpu",
                        "--out", str(tmp_path)], cwd=REPO, env=env, text=True, capture_output=True, timeout=300)
    assert p.returncode == 0, p.stderr
    res = read_results(next(tmp_path.glob("*.csv")))
    assert res.complete and {r["family"] for r in res.rows} == {"llm"}
    assert {r["benchmark"] for r in res.rows} == {"attention_fwd", "attention_bwd", "decode_attention", "decode_gemm"}
    assert {r["status"] for r in res.rows} == {"ok", "unsupported"}
    assert "llm/decode_gemm fp8" in p.stdout and "llm/attention_bwd bf16" in p.stdout


def test_an_unknown_family_is_refused_with_the_list(tmp_path):
    env = dict(os.environ, CUDA_VISIBLE_DEVICES="", PYTHONPATH=str(REPO))
    p = subprocess.run([sys.executable, "-m", "bench", "run", "--families", "llms", "--device", "cpu",
                        "--out", str(tmp_path)], cwd=REPO, env=env, text=True, capture_output=True, timeout=120)
    assert p.returncode != 0 and "llm" in p.stderr and not list(tmp_path.glob("*.csv"))


# ---------------------------------------------------------------- a real GPU

@pytest.mark.gpu
def test_llm_on_a_real_gpu():
    from bench.core import devices

    target = devices.cuda_target(0)
    target.spec = specs.load().match(target.name, target.identity.get("pci_device_id", ""))
    run = make_run([target])
    wanted = ("attention_fwd/flash/bf16/seq4096", "attention_bwd/flash/bf16/seq4096",
              "decode_attention/flash/bf16/kv32768", "decode_gemm/torch/bf16/1x28672x8192",
              "decode_gemm/torch/fp8/16x28672x8192", "attention_fwd/cudnn/fp8/seq4096")
    cases = [c for c in llm.cases(target, run) if c.id.removeprefix("llm/") in wanted]
    rows = {r["case"] + "/" + r["benchmark"] + "/" + r["provider"] + "/" + r["dtype"]: r
            for r in (harness.run_case(llm, target, c, run) for c in cases)}
    assert len(rows) == len(wanted)
    for key, r in rows.items():
        assert r["status"] in ("ok", "unsupported"), (key, r["status"], r["message"])  # never wrong, never error
        if r["status"] == "ok":
            assert r["value"] > 0 and r["timer"].startswith("cuda_events")
    assert rows["seq4096/attention_fwd/flash/bf16"]["status"] == "ok"
    assert rows["1x28672x8192/decode_gemm/torch/bf16"]["status"] == "ok"
