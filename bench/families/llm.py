"""LLM family: the kernels a language model spends its time in, measured as the model runs them.

Benchmarks (the `benchmark` column; `provider` is the SDPA backend or `torch`):

- `attention_fwd`, `attention_bwd`: torch's scaled_dot_product_attention, causal, head dim 128,
  sequence 4k / 16k / 32k, bf16 (and fp8 forward where a backend takes it), one row per SDPA
  backend (flash, cudnn, efficient; the math backend in CPU mode). TFLOP/s by FlashAttention-2's
  count (bench/families/llm_attention.py), against the card's dense claim of the dtype.
- `decode_attention`: one query token against a KV cache of 4k-128k tokens, Llama 3.1 70B's
  grouped heads (64 query, 8 KV, head dim 128), bf16, one row per backend.
- `decode_gemm`: Llama 3.1 70B's 8192 -> 28672 MLP weight times 1-64 token vectors, bf16 and fp8
  (bench/families/llm_decode.py).

The decode rows are effective GB/s of the bytes that must be read (weights or KV cache, plus
the activations), against the memory claim: the number that bounds tokens per second. Every row
carries `flops` and `bytes` in its params for the roofline. Each backend is verified against the
math backend in fp64 on a small shape before it is timed.
"""
from __future__ import annotations

import math
import warnings
from dataclasses import replace

from ..core import timing
from ..core.devices import Target
from ..core.harness import Case, Measurement, Status
from . import llm_attention as att
from . import llm_decode as dec

NAME = "llm"
GPU_BACKENDS = ("flash", "cudnn", "efficient")
CPU_BACKENDS = ("math",)  # CPU mode checks the pipeline through SDPA's reference backend

# Training attention. Starting point: FlashAttention-2's benchmark (Dao 2023, section 4.1; its
# benchmark_flash_attention.py): batch x sequence = 16k tokens, hidden 2048 = 16 heads of 128.
# Then the batch doubles until the forward grid -- batch x heads x (sequence / 128) query tiles,
# 128 rows being FlashAttention-2's tile at head dim 128 -- runs MIN_WAVES waves on the card's SMs,
# and halves (then the heads) until the backward's footprint fits a quarter of the free memory.
SEQUENCES = (4096, 16384, 32768)
FA2_TOKENS, FA2_HEADS, QUERY_TILE, MIN_WAVES = 16384, 16, 128, 8
HEAD_DIM = 128
CPU_SEQUENCES = (512,)
CPU_HEADS = 2

# Decode attention: one sequence (batch 1: the single-stream tokens/s), Llama 3.1 70B's heads
# (num_attention_heads 64, num_key_value_heads 8, head_dim 128 in its config.json).
KV_LENGTHS = (4096, 32768, 131072)
CPU_KV_LENGTHS = (1024,)  # the math backend takes ~50 ms per call on two cores even here
DECODE_HEADS, DECODE_KV_HEADS = 64, 8
MIN_KV = 4096  # out-of-memory retries halve the cache down to this

# The host's GEMMs and math-backend attention take 1-100 ms: five samples, no warm-up beyond the
# first call (no clocks to ramp on the host), so the whole family runs in seconds.
CPU_BUDGET = timing.Budget(warmup_s=0.0, measure_s=0.2, min_samples=5, max_samples=50)
GQA_EXPANDED = ("KV heads expanded to the query heads (this torch's SDPA has no enable_gqa): the kernel reads "
                "8x the KV bytes; GB/s counts the grouped cache's bytes, which a GQA kernel reads")


class State:
    """Trial verdicts per device, backend, kind and dtype: one trial call each per run."""

    def __init__(self, run=None):
        self.run = run
        self.profile = getattr(run, "profile", "quick")
        self.trials: dict[tuple, str | None] = {}


# ---------------------------------------------------------------- planning

def flops_unit(target: Target) -> tuple[str, float]:
    return ("TFLOP/s", 1e12) if target.is_cuda else ("GFLOP/s", 1e9)


def attention_shape(target: Target, seq: int) -> tuple[int, int]:
    """(batch, heads) for causal training attention at `seq` on this card (the rule above)."""
    heads, batch = FA2_HEADS, max(1, FA2_TOKENS // seq)
    while batch * heads * math.ceil(seq / QUERY_TILE) < MIN_WAVES * target.sm_count:
        batch *= 2
    budget = target.free_bytes() // 4

    def fits(b, h):
        return att.footprint(att.Attn("bwd", "flash", "bf16", b, h, h, seq, seq, HEAD_DIM)) <= budget
    while batch > 1 and not fits(batch, heads):
        batch //= 2
    while heads > 1 and not fits(batch, heads):
        heads //= 2
    return batch, heads


def attention_case(target: Target, a: att.Attn) -> Case:
    if a.kind == "decode":
        return Case(family=NAME, benchmark="decode_attention", provider=a.backend, dtype=a.dtype,
                    name=f"kv{a.seq_kv}", metric="bandwidth", unit="GB/s", scale=1e9, work=att.bytes_moved(a),
                    work_unit="B", size_bytes=att.footprint(a), spec=a, id_dtype=True, params=att.params(a))
    unit, scale = flops_unit(target)
    return Case(family=NAME, benchmark=f"attention_{a.kind}", provider=a.backend, dtype=a.dtype,
                name=f"seq{a.seq_q}", metric="throughput", unit=unit, scale=scale, work=att.flops(a),
                work_unit="FLOP", size_bytes=att.footprint(a), spec=a, id_dtype=True, params=att.params(a))


def gemm_case(g: dec.Gemv) -> Case:
    return Case(family=NAME, benchmark="decode_gemm", provider="torch", dtype=g.dtype, name=dec.shape_name(g),
                metric="bandwidth", unit="GB/s", scale=1e9, work=dec.bytes_moved(g), work_unit="B",
                size_bytes=dec.bytes_moved(g), spec=g, id_dtype=True, params=dec.params(g))


def cases(target: Target, run) -> list[Case]:
    """Attention (forward, backward; bf16, then fp8 forward), decode attention, decode GEMMs."""
    if run.profile not in ("quick", "full"):
        raise ValueError(f"unknown profile {run.profile!r}; expected 'quick' or 'full'")
    gpu = target.is_cuda
    backends = GPU_BACKENDS if gpu else CPU_BACKENDS
    out: list[Case] = []
    # fp8 forward only: the FP8 attention kernels published so far (FlashAttention-3,
    # https://arxiv.org/abs/2407.08608) are forward kernels.
    for kind, dtype in (("fwd", "bf16"), ("bwd", "bf16"), ("fwd", "fp8")):
        for seq in SEQUENCES if gpu else CPU_SEQUENCES:
            batch, heads = attention_shape(target, seq) if gpu else (1, CPU_HEADS)
            for backend in backends:
                out.append(attention_case(target, att.Attn(kind, backend, dtype, batch, heads, heads, seq, seq,
                                                           HEAD_DIM)))
    for kv in KV_LENGTHS if gpu else CPU_KV_LENGTHS:
        for backend in backends:
            out.append(attention_case(target, att.Attn("decode", backend, "bf16", 1, DECODE_HEADS,
                                                       DECODE_KV_HEADS, 1, kv, HEAD_DIM, causal=False)))
    n, k = dec.WEIGHT if gpu else dec.CPU_WEIGHT
    for dtype in ("bf16", "fp8"):
        out += [gemm_case(dec.Gemv(dtype, m, n, k)) for m in (dec.BATCHES if gpu else dec.CPU_BATCHES)]
    return out


# ---------------------------------------------------------------- can it run here

def fp8_card_reason(target: Target) -> str | None:
    if not target.is_cuda:
        return None
    cc = dec.capability(target)
    if cc >= dec.FP8_MIN_CC:
        return None
    return f"FP8 tensor cores need compute capability 8.9 or newer; this card is {cc[0]}.{cc[1]}"


def waive(target: Target, case: Case, state: State) -> tuple[str, str] | None:
    """Static facts (this torch's backends and dtypes, the card's compute capability), then one trial call."""
    spec = case.spec
    if isinstance(spec, dec.Gemv):
        reason = dec.static_reason(target, spec)
        key = ("gemm", str(target.device), spec.dtype, spec.m)
        trial = lambda: dec.trial(target.device, spec)  # noqa: E731
    else:
        reason = att.static_reason(spec) or (fp8_card_reason(target) if spec.dtype == "fp8" else None)
        key = ("sdpa", str(target.device), spec.kind, spec.backend, spec.dtype)
        trial = lambda: att.trial(target.device, spec)  # noqa: E731
    if reason:
        return "unsupported", reason
    if key not in state.trials:
        state.trials[key] = trial()
    problem = state.trials[key]
    if problem is None:
        return None
    what = f"the {case.provider} backend" if not isinstance(spec, dec.Gemv) else "the GEMM"
    return "unsupported", f"{what} refused a trial call: {problem}"


def smaller(case: Case) -> Case | None:
    """Out of memory: training attention halves its batch, then its heads; decode attention its cache."""
    a = case.spec
    if isinstance(a, dec.Gemv):
        return None  # the weight is the point of the row; nothing smaller means the same
    if a.kind == "decode":
        b = replace(a, seq_kv=a.seq_kv // 2) if a.seq_kv // 2 >= MIN_KV else None
    elif a.batch > 1:
        b = replace(a, batch=a.batch // 2)
    else:
        b = replace(a, heads=a.heads // 2, kv_heads=a.kv_heads // 2) if a.heads > 1 else None
    if b is None:
        return None
    work = att.bytes_moved(b) if b.kind == "decode" else att.flops(b)
    return replace(case, spec=b, work=work, size_bytes=att.footprint(b), params=att.params(b))


def size_text(case: Case) -> str:
    s = case.spec
    return dec.shape_name(s) if isinstance(s, dec.Gemv) else att.size_text(s)


# ---------------------------------------------------------------- measuring

def budget_for(target: Target, profile: str) -> timing.Budget:
    if not target.is_cuda:
        return CPU_BUDGET
    return timing.QUICK if profile == "quick" else timing.FULL


def make_flush(target: Target):
    """Decode reads data no earlier call left in L2 (each layer its own weights and cache): flush before each call.

    On the host there is no L2 to flush for the pipeline check CPU mode is.
    """
    return timing.L2Flush(target.device, target.l2_bytes) if target.is_cuda else None


def measure(target: Target, case: Case, state: State):
    if isinstance(case.spec, dec.Gemv):
        built = dec.build(target.device, case.spec)
        return Measurement(fn=built.launch, check=lambda: dec.check(built), budget=budget_for(target, state.profile),
                           params=dict(case.params), flush=make_flush(target))
    return _measure_attention(target, case, state)


def _measure_attention(target: Target, case: Case, state: State):
    """Build the full shape and call it once (a backend may refuse a shape its trial took), then hand it over."""
    a = case.spec
    gqa = a.gqa and att.has_enable_gqa()
    expand = a.gqa and not gqa
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            q, k, v = att.make_inputs(target.device, a, 7, expand_kv=expand)
            out, dout = att.call(a, q, k, v, gqa)
            if dout is not None:
                att.grads(out, (q, k, v), dout)
        except RuntimeError as e:
            if not att.refused(e):
                raise  # out of memory: the harness retries smaller; anything else is an error row
            return Status("unsupported", f"the {a.backend} backend refused {att.size_text(a)}: "
                          + att.with_reasons(str(e), caught), dict(case.params))
    if dout is not None:
        fn = lambda: att.grads(out, (q, k, v), dout)  # noqa: E731
    else:
        fn = lambda: att.sdpa(q, k, v, a.causal, gqa, a.backend)  # noqa: E731
    # Training attention is compute-bound and re-reads every K/V tile from L2 by design: no flush.
    flush = make_flush(target) if a.kind == "decode" else None
    p = dict(case.params, enable_gqa=gqa) if a.gqa else dict(case.params)
    return Measurement(fn=fn, check=lambda: att.verify(target.device, a), budget=budget_for(target, state.profile),
                       params=p, flush=flush, notes=[GQA_EXPANDED] if expand else [])
