"""Attention of the llm family through torch's scaled_dot_product_attention (SDPA), one backend at a time.

What one call is, what it must read and compute, the measured call, and the reference it is
checked against (bench/families/llm.py plans the cases and hands them to the harness).

- Training attention: causal, head dim 128, layout (batch, heads, sequence, head dim), forward
  (`attention_fwd`) and backward (`attention_bwd`, the gradients of q, k and v).
- Decode attention: one query token per sequence against a KV cache of `seq_kv` tokens, grouped
  query attention (more query heads than KV heads, as Llama 3.1 70B: 64 and 8).

FLOP count (FlashAttention-2, Dao 2023, https://arxiv.org/abs/2307.08691, and its benchmark
script https://github.com/Dao-AILab/flash-attention/blob/main/benchmarks/benchmark_flash_attention.py):
QK^T and PV are 2*sq*skv*d each per head, so forward = 4*b*h*sq*skv*d, halved for causal
(half the scores are masked), and backward = 2.5x forward (five matmuls instead of two).

Backends are selected with torch.nn.attention.sdpa_kernel; which ones this torch has, and
whether `enable_gqa` exists, is detected at run time, never from the version string.
"""
from __future__ import annotations

import functools
import warnings
from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F

from ..kernels import matmul_ref as ref

try:  # torch >= 2.3; older torch has only torch.backends.cuda.sdp_kernel
    from torch.nn.attention import SDPBackend, sdpa_kernel
except ImportError:  # pragma: no cover - the GPU image and the CPU venv both have it
    SDPBackend = sdpa_kernel = None

# provider name -> SDPBackend member
BACKENDS = {"flash": "FLASH_ATTENTION", "cudnn": "CUDNN_ATTENTION", "efficient": "EFFICIENT_ATTENTION",
            "math": "MATH"}
ELEMENT_BYTES = {"bf16": 2, "fp8": 1}
# What SDPA says when the forced backend cannot take the call (sdp_utils.cpp), as opposed to a crash.
REFUSALS = ("No available kernel", "No viable backend")

# Relative Frobenius error against the math backend in fp64 on the same (rounded) inputs. What is
# left is accumulation order and rounding: bf16 outputs ~2^-9 per element; the gradients also
# round P and dS to bf16 inside the kernel (about 2-3e-3 measured for the math backend in bf16);
# a broken kernel is off by order 1. fp8: P itself is rounded to e4m3 (2^-4) inside an fp8 kernel.
TOLERANCE = {("bf16", "out"): 1e-2, ("bf16", "grad"): 2e-2, ("fp8", "out"): 1e-1, ("fp8", "grad"): 1e-1}

# The small shape every backend is verified at before a case is timed: several 128-row tiles,
# so the causal mask crosses tile borders; decode keeps its head grouping.
CHECK_SEQ = 512
CHECK_HEADS = 2


@dataclass(frozen=True)
class Attn:
    """One SDPA call: the harness Case's `spec` for the attention rows."""

    kind: str  # "fwd", "bwd" or "decode"
    backend: str  # a key of BACKENDS
    dtype: str  # "bf16" or "fp8" (e4m3)
    batch: int
    heads: int  # query heads
    kv_heads: int
    seq_q: int
    seq_kv: int
    head_dim: int = 128
    causal: bool = True

    @property
    def gqa(self) -> bool:
        return self.kv_heads != self.heads


def flops(a: Attn) -> float:
    """4*b*h*sq*skv*d forward, halved for causal, x2.5 for the backward (FlashAttention-2's count)."""
    f = 4 * a.batch * a.heads * a.seq_q * a.seq_kv * a.head_dim
    if a.causal:
        f /= 2
    return 2.5 * f if a.kind == "bwd" else float(f)


def bytes_moved(a: Attn) -> int:
    """Compulsory traffic: every input read once, every output written once (bf16 outputs for fp8 inputs).

    Forward and decode: q, K, V read, o written; K and V at the KV heads (a GQA cache is not
    expanded). Backward: q, K, V, o and dO read, dq, dK, dV written. The fp32 log-sum-exp
    per query row (4 bytes against 256 of o at head dim 128 in bf16) is left out.
    """
    e = ELEMENT_BYTES[a.dtype]
    q = a.batch * a.heads * a.seq_q * a.head_dim
    kv = 2 * a.batch * a.kv_heads * a.seq_kv * a.head_dim
    o = q * 2  # bf16 out
    if a.kind == "bwd":
        return 2 * (q + kv) * e + 2 * o
    return (q + kv) * e + o


def footprint(a: Attn) -> int:
    """Device bytes a case holds: inputs, outputs, gradients, flash's fp32 dq accumulator, the fp32 randn temporary."""
    q = a.batch * a.heads * a.seq_q * a.head_dim
    kv = 2 * a.batch * a.kv_heads * a.seq_kv * a.head_dim
    held = bytes_moved(a) + (q * 4 if a.kind == "bwd" else 0)
    return held + 4 * max(q, kv // 2)


def size_text(a: Attn) -> str:
    return f"batch {a.batch}, {a.heads} heads ({a.kv_heads} KV), q {a.seq_q} x kv {a.seq_kv}, head dim {a.head_dim}"


def params(a: Attn) -> dict:
    """The shape and the counts, on the row: `flops` and `bytes` place it on the roofline."""
    return {"batch": a.batch, "heads": a.heads, "kv_heads": a.kv_heads, "seq_q": a.seq_q, "seq_kv": a.seq_kv,
            "head_dim": a.head_dim, "causal": a.causal, "backend": f"SDPBackend.{BACKENDS[a.backend]}",
            "layout": "(batch, heads, seq, head_dim)", "flops": flops(a), "bytes": bytes_moved(a),
            "bytes_counted": ("q, K, V, o, dO read and dq, dK, dV written, each once" if a.kind == "bwd" else
                              "q, K, V read and o written, each once; K and V at the KV heads")}


# ---------------------------------------------------------------- what this torch has

def static_reason(a: Attn) -> str | None:
    """Why this torch cannot select the backend or make the dtype, without calling anything."""
    if sdpa_kernel is None:
        return f"this torch ({torch.__version__}) has no torch.nn.attention.sdpa_kernel to select a backend"
    if getattr(SDPBackend, BACKENDS[a.backend], None) is None:
        return f"this torch ({torch.__version__}) has no SDPBackend.{BACKENDS[a.backend]}"
    if a.dtype == "fp8" and not hasattr(torch, "float8_e4m3fn"):
        return f"this torch ({torch.__version__}) has no float8_e4m3fn"
    return None


@functools.cache  # asked once per process: what this torch's SDPA takes does not change
def has_enable_gqa() -> bool:
    """Whether this torch's SDPA takes enable_gqa (torch >= 2.5), by a tiny call on the host."""
    q, kv = torch.zeros(1, 2, 1, 8), torch.zeros(1, 1, 4, 8)
    try:
        F.scaled_dot_product_attention(q, kv, kv, enable_gqa=True)
    except TypeError:
        return False
    return True


# ---------------------------------------------------------------- the calls

def sdpa(q, k, v, causal: bool, gqa: bool, backend: str) -> torch.Tensor:
    """The measured call: SDPA restricted to one backend."""
    extra = {"enable_gqa": True} if gqa else {}
    with sdpa_kernel(getattr(SDPBackend, BACKENDS[backend])):
        return F.scaled_dot_product_attention(q, k, v, is_causal=causal, **extra)


def grads(out, inputs, dout):
    """The measured backward: dq, dk, dv of one forward, which is kept (as flash-attn's benchmark_backward)."""
    return torch.autograd.grad(out, inputs, dout, retain_graph=True)


def reference(q, k, v, causal: bool) -> torch.Tensor:
    """SDPA's math backend in fp64 with the KV heads expanded: the definition every backend must match."""
    group = q.shape[1] // k.shape[1]
    k64, v64 = (t.double().repeat_interleave(group, dim=1) for t in (k, v))
    with sdpa_kernel(SDPBackend.MATH):
        return F.scaled_dot_product_attention(q.double(), k64, v64, is_causal=causal)


def refused(exc: BaseException) -> bool:
    return isinstance(exc, RuntimeError) and any(r in str(exc) for r in REFUSALS)


def make_inputs(device, a: Attn, seed: int, expand_kv: bool = False):
    """q, k, v of random normal values (never zeros) in the case's dtype; e4m3 holds N(0,1) without scaling.

    expand_kv: the KV heads repeated to the query heads (a torch without enable_gqa).
    """
    gen = torch.Generator(device=device).manual_seed(seed)
    dtype = torch.bfloat16 if a.dtype == "bf16" else torch.float8_e4m3fn

    def randn(*shape):
        return torch.randn(*shape, device=device, generator=gen).to(dtype)
    q = randn(a.batch, a.heads, a.seq_q, a.head_dim)
    k = randn(a.batch, a.kv_heads, a.seq_kv, a.head_dim)
    v = randn(a.batch, a.kv_heads, a.seq_kv, a.head_dim)
    if expand_kv and a.gqa:
        group = a.heads // a.kv_heads
        k, v = k.repeat_interleave(group, dim=1), v.repeat_interleave(group, dim=1)
    return q, k, v


def call(a: Attn, q, k, v, gqa: bool):
    """Forward once, and for the backward rows its gradient inputs: (out, dout or None)."""
    if a.kind == "bwd":
        q, k, v = (t.requires_grad_(True) for t in (q, k, v))
    out = sdpa(q, k, v, a.causal, gqa, a.backend)
    if a.kind != "bwd":
        return out, None
    # empty_like keeps the output's strides: cuDNN's backward wants dO laid out as o.
    dout = torch.empty_like(out).normal_(generator=torch.Generator(device=out.device).manual_seed(5))
    return out, dout


def trial(device, a: Attn) -> str | None:
    """Run the backend once at the check shape; None when it runs, else its refusal with SDPA's reasons."""
    small = check_shape(a)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            q, k, v = make_inputs(device, small, 11, expand_kv=not has_enable_gqa())
            out, dout = call(small, q, k, v, small.gqa and has_enable_gqa())
            if dout is not None:
                grads(out, (q, k, v), dout)
        except Exception as e:  # the trial's point: this backend or torch cannot run it
            return with_reasons(f"{type(e).__name__}: {e}", caught)
    return None


def with_reasons(text: str, caught) -> str:
    """An SDPA error and the reasons torch gave as warnings for not using the forced backend."""
    reasons = [str(w.message).split(" (Triggered internally")[0] for w in caught]
    reasons = [r for r in dict.fromkeys(reasons) if r]
    return " ".join("; ".join([text.strip(), *reasons]).split())[:500]


# ---------------------------------------------------------------- verification

def check_shape(a: Attn) -> Attn:
    """The case at a small size: decode keeps its head grouping, training attention keeps causality."""
    if a.kind == "decode":
        return replace(a, batch=1, seq_kv=CHECK_SEQ)
    return replace(a, batch=1, heads=CHECK_HEADS, kv_heads=CHECK_HEADS, seq_q=CHECK_SEQ, seq_kv=CHECK_SEQ)


def verify(device, a: Attn) -> str | None:
    """The backend against the math backend in fp64 at the check shape; None when within tolerance."""
    small = check_shape(a)
    gqa = has_enable_gqa()
    q, k, v = make_inputs(device, small, 23, expand_kv=not gqa)
    out, dout = call(small, q, k, v, small.gqa and gqa)
    where = f"at {size_text(small)}"
    if dout is None:
        return _compare("output", out, reference(q, k, v, small.causal), (small.dtype, "out"), where)
    got = grads(out, (q, k, v), dout)
    leaves = [t.detach().double().requires_grad_(True) for t in (q, k, v)]
    want_out = reference(*leaves, small.causal)
    want = torch.autograd.grad(want_out, leaves, dout.double())
    problems = [_compare("output", out, want_out.detach(), (small.dtype, "out"), where)]
    problems += [_compare(name, g, w, (small.dtype, "grad"), where)
                 for name, g, w in zip(("dq", "dk", "dv"), got, want)]
    return "; ".join(p for p in problems if p) or None


def _compare(what: str, got, want, key, where: str) -> str | None:
    err = ref.relative_error(got.detach(), want)
    tol = TOLERANCE[key]
    if not err <= tol:
        return f"{what}: relative error {err:.3g} against the math backend in fp64 {where} is above {tol:g}"
    return None
