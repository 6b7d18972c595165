"""One device of `cardbench burn`: the compute soak (bf16, then fp8 where the device runs it), then
the memory test, every result checked, records back to the supervisor as they are made.

bench/core/launch.py starts one of these per device, all at once (bench/families/burn.py).
Records (JSON lines): `phase` as each phase starts; `reference` with the fingerprint of the
first result of each dtype (for the comparison across devices of one model); `second` for
each second of soak (its throughput, for the timeline); `soak` and `memtest` at the end of
each phase, with everything its row needs. A stop file (SIGINT or SIGTERM in the supervisor)
ends the current phase early; its record says so.

Determinism: inputs are drawn on the host from a fixed seed (the same on every device), cuBLAS
runs with a fixed workspace configuration (CUBLAS_WORKSPACE_CONFIG, required for reproducible
results: https://docs.nvidia.com/cuda/cublas/#results-reproducibility) and torch in its
deterministic mode, so every iteration must give the first iteration's bits, and every device
of one model and SM count the same bits (cuBLAS gives bit-wise equal results "on GPUs with the
same architecture and the same number of SMs", same page).
"""
from __future__ import annotations

import contextlib
import os
import time
from dataclasses import dataclass, field

import torch

from ..core import telemetry
from ..core.devices import host_available_bytes
from ..core.harness import error_message, is_out_of_memory
from ..kernels import matmul_ref, quant
from . import burn_memtest, burn_soak

SEED = 20261129  # the soak's inputs: fixed, the same on every device
DTYPES = ("bf16", "fp8")
# 8192^2 GEMMs are what gpu-burn and gpu-fryer run (https://github.com/huggingface/gpu-fryer):
# bf16 tensor-core work brings a data-center GPU to its power limit, FP32 does not (580-650 of
# 700 W on FP32: https://github.com/huggingface/gpu-fryer/issues/4).
GPU_SIZE, CPU_SIZE = 8192, 512
TOLERANCE = {"bf16": 1e-2, "fp8": 2e-2}  # the first result against fp32, as the matmul family checks
CHECK_ROWS = 256  # rows of the first result checked against the fp32 reference
FINGERPRINT_ROWS = 1024  # rows fingerprinted at once (bounds the int64 temporary)
FLIP_ELEMENT, FLIP_BIT = 777, 0  # CARDBENCH_INJECT_FAULT=bitflip: this bit of this output element
MIN_SOAK_S = 1.0
SAMPLE_S = 0.1  # telemetry interval of a phase's row (every 20 ms over minutes is needlessly many)


@dataclass
class Gemm:
    dtype: str
    size: int
    run: object  # callable: one GEMM into `out`
    out: torch.Tensor
    check: object  # callable: why the first result is wrong, or None
    params: dict = field(default_factory=dict)


def make_gemm(dtype: str, device: torch.device, size: int, seed: int = SEED) -> Gemm:
    """Inputs drawn on the host from `seed` (random normal: zeros draw less power), A row-major,
    B column-major (the layout cuBLASLt's fp8 GEMM takes), bf16 output."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(size, size, generator=gen)
    w = torch.randn(size, size, generator=gen)  # B = w.t()
    out = torch.empty(size, size, dtype=torch.bfloat16, device=device)
    params = {"m": size, "n": size, "k": size, "inputs": f"randn, seed {seed}, drawn on the host",
              "layout": "A row-major (M,K), B column-major (K,N)", "out_dtype": "bf16"}
    if dtype == "bf16":
        a, b = x.to(torch.bfloat16).to(device), w.to(torch.bfloat16).to(device).t()
        run = lambda: matmul_ref.mm(a, b, out)  # noqa: E731
        want = lambda: matmul_ref.reference(a[:CHECK_ROWS], b)  # noqa: E731
        params["api"] = "torch.mm"
    elif dtype == "fp8":
        qa, sa = quant.quantize_fp8(x)
        qw, sb = quant.quantize_fp8(w)
        a, b, sa, sb = qa.to(device), qw.to(device).t(), sa.to(device), sb.to(device)
        run = lambda: matmul_ref.scaled_mm_fp8(a, b, sa, sb, out, False)  # noqa: E731
        want = lambda: matmul_ref.reference(a[:CHECK_ROWS].float() * sa, b.float() * sb)  # noqa: E731
        params.update(api="torch._scaled_mm", fast_accum=False, scales="fp32 per tensor")
    else:
        raise ValueError(f"unknown burn dtype {dtype!r}")

    def check() -> str | None:
        err = matmul_ref.relative_error(out[:CHECK_ROWS], want())
        if not err <= TOLERANCE[dtype]:
            return (f"the first {dtype} result is wrong: relative error {err:.3g} against fp32 "
                    f"(first {CHECK_ROWS} rows) above {TOLERANCE[dtype]:g}")
        return None
    return Gemm(dtype, size, run, out, check, params)


def fingerprint(t: torch.Tensor) -> list[list[int]]:
    """Per output row, the sum of its elements' bits and a position-weighted sum: equal rows give
    equal pairs, and any single changed element changes both (weights are odd, below 2**31)."""
    bits = t.view(torch.int16)
    gen = torch.Generator().manual_seed(SEED)
    weights = (torch.randint(0, 2**30, (bits.shape[1],), generator=gen, dtype=torch.int64) * 2 + 1).to(t.device)
    out = []
    for start in range(0, bits.shape[0], FINGERPRINT_ROWS):
        rows = bits[start:start + FINGERPRINT_ROWS].to(torch.int64)
        out += torch.stack([rows.sum(dim=1), (rows * weights).sum(dim=1)], dim=1).tolist()
    return out


class Compare:
    """The soak's step and readback (bench/families/burn_soak.py) for one GEMM, with its counts buffers."""

    def __init__(self, gemm: Gemm, flip_at: int | None = None):
        self.gemm, self.flip_at = gemm, flip_at
        dev = gemm.out.device
        self.ref = gemm.out.clone().view(torch.int16)
        self.bits = gemm.out.view(torch.int16)
        self.differ = torch.empty_like(self.bits, dtype=torch.bool)
        self.counts = torch.zeros(burn_soak.SLOTS, burn_soak.MAX_BATCH, dtype=torch.int64, device=dev)
        self.cuda = dev.type == "cuda"
        self.host = self.counts.cpu().pin_memory() if self.cuda else self.counts
        self.side = torch.cuda.Stream(dev) if self.cuda else None

    def step(self, i: int, slot: int, j: int) -> None:
        self.gemm.run()
        if i == self.flip_at:  # fault injection: one bit of this iteration's output
            self.bits.view(-1)[FLIP_ELEMENT:FLIP_ELEMENT + 1].bitwise_xor_(1 << FLIP_BIT)
        torch.ne(self.bits, self.ref, out=self.differ)
        torch.sum(self.differ, dim=(0, 1), out=self.counts[slot, j])

    def readback(self, slot: int, end, n: int):
        if not self.cuda:
            values = self.counts[slot, :n].tolist()
            return lambda: values
        # On a side stream, after the batch's end: the GEMM stream keeps its next batch running.
        self.side.wait_event(end)
        with torch.cuda.stream(self.side):
            self.host[slot, :n].copy_(self.counts[slot, :n], non_blocking=True)
            done = torch.cuda.Event()
            done.record(self.side)

        def wait() -> list[int]:
            done.synchronize()
            return self.host[slot, :n].tolist()
        return wait


def _stop(path: str):
    def stop() -> str:
        try:
            with open(path) as f:
                return f.read().strip() or "stopped"
        except OSError:
            return ""
    return stop


def deterministic() -> None:
    """cuBLAS with a fixed workspace and torch's deterministic mode; call before the process's first
    GEMM (cuBLAS reads CUBLAS_WORKSPACE_CONFIG when it makes its handle)."""
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(True)


def worker(ctx, payload: dict) -> None:
    """One device's burn (bench/core/launch.py calls it): soak each dtype, then the memory test."""
    deterministic()
    device = torch.device(ctx.device)
    cuda = device.type == "cuda"
    if cuda:
        torch.cuda.set_device(device)
    deadline = time.monotonic() + payload["duration_s"]
    stop = _stop(payload["stop_path"])
    injected = payload.get("faults", {})
    index = device.index if cuda else None
    clock = burn_soak.Clock(cuda)
    size = GPU_SIZE if cuda else CPU_SIZE
    ops = _memtest_ops(cuda)

    ctx.progress("setup")
    ctx.emit({"kind": "phase", "phase": "setup"})
    gemms = {}
    for dtype in DTYPES:
        try:  # a trial call decides: fp8 needs compute capability 8.9 and a torch with _scaled_mm
            gemms[dtype] = make_gemm(dtype, device, size)
            gemms[dtype].run()
        except Exception as e:
            gemms.pop(dtype, None)
            status = "error" if is_out_of_memory(e) else "unsupported"
            ctx.emit({"kind": "soak", "dtype": dtype, "status": status,
                      "message": f"{dtype} GEMM does not run here: {error_message(e)}"})
    probe = _probe(device, ops, clock, ctx)
    ctx.emit({"kind": "probe", **{k: v for k, v in probe.items() if k != "region_bytes"}})
    planned = burn_memtest.estimate_s(probe["seconds"], probe["bytes"], probe["region_bytes"])
    share = max(MIN_SOAK_S, (deadline - time.monotonic() - planned) / max(1, len(gemms)))
    flip = int(injected["bitflip"] or 3) if "bitflip" in injected else None
    for n, dtype in enumerate(list(gemms)):
        if not stop():
            _soak(ctx, gemms[dtype], index, clock, share, stop, flip if n == 0 else None)
        del gemms[dtype]  # its buffers go back before the memory test
    if not stop():
        _memtest(ctx, device, ops, clock, probe, stop, "memtest" in injected)
    ctx.emit({"kind": "phase", "phase": "done"})


def _memtest_ops(cuda: bool):
    if cuda:
        from ..kernels import memtest
        return memtest
    from ..kernels import memtest_ref
    return memtest_ref


class _OneThread:
    """Host memory-test passes on one thread: its small tensors gain nothing from more, and on a busy
    host the thread pool's hand-offs cost more than the work."""

    def __enter__(self):
        self.before = torch.get_num_threads()
        torch.set_num_threads(1)

    def __exit__(self, *exc):
        torch.set_num_threads(self.before)
        return False


def _probe(device, ops, clock, ctx) -> dict:
    """Every pass over a small buffer with one planted wrong word: the test must find exactly it
    (a test that cannot find an error proves nothing); its time sizes the whole test's."""
    ctx.progress("memtest self-check")
    small = burn_memtest.PROBE_BYTES[device.type]
    region = burn_memtest.allocate(device, small, small, small)
    with _OneThread() if device.type == "cpu" else contextlib.nullcontext():
        result = burn_memtest.run(region, ops, SEED, clock, plant=True)
    found = result.errors
    if device.type == "cuda":
        torch.cuda.empty_cache()
        free = torch.cuda.mem_get_info(device)[0]
        total = burn_memtest.wanted(free)
    else:
        total = burn_memtest.HOST_BYTES
    return {"seconds": result.seconds, "bytes": region.bytes, "region_bytes": total, "found": found,
            "self_check": "" if found == 1 else f"planted 1 wrong word in a {small / 2**20:g} MiB buffer, the "
                                                 f"test found {found}: the memory test does not work here"}


def _soak(ctx, gemm: Gemm, index, clock, seconds: float, stop, flip_at) -> None:
    dtype = gemm.dtype
    ctx.progress(f"soak {dtype}")
    ctx.emit({"kind": "phase", "phase": f"soak {dtype}"})
    try:
        gemm.out.zero_()
        gemm.run()  # iteration 0: the reference every later iteration must equal
        wrong = gemm.check()
        if wrong:
            ctx.emit({"kind": "soak", "dtype": dtype, "status": "wrong", "message": wrong, "params": gemm.params})
            return
        ctx.emit({"kind": "reference", "dtype": dtype, "fingerprint": fingerprint(gemm.out)})
        compare = Compare(gemm, flip_at)

        def second(k: int, work: float, mismatching: int) -> None:
            ctx.progress(f"soak {dtype} second {k + 1}")
            ctx.emit({"kind": "second", "dtype": dtype, "second": k, "flop_per_s": work, "mismatching": mismatching})

        flop = 2.0 * gemm.size ** 3
        with telemetry.Sampler(index, interval_s=SAMPLE_S) as sampler:
            soak = burn_soak.run(compare.step, compare.readback, flop, seconds, clock, stop=stop, on_second=second)
        ctx.emit({"kind": "soak", "dtype": dtype, "status": "ok", "flop": flop, "bins": soak.throughput(flop),
                  "iterations": soak.iterations, "seconds": soak.seconds, "planned_s": seconds,
                  "mismatches": soak.mismatches, "mismatch_iterations": soak.mismatch_iterations,
                  "mismatch_elements": soak.mismatch_elements, "elements": gemm.out.numel(),
                  "stopped": soak.stopped, "timer": clock.method, "injected": flip_at is not None,
                  "telemetry": sampler.summary(), "params": gemm.params})
    except Exception as e:  # this phase is an error row; the memory test still runs
        ctx.emit({"kind": "soak", "dtype": dtype, "status": "error", "message": error_message(e)})
    finally:
        if clock.cuda:
            torch.cuda.synchronize()


def _memtest(ctx, device, ops, clock, probe: dict, stop, plant: bool) -> None:
    ctx.progress("memtest allocate")
    ctx.emit({"kind": "phase", "phase": "memtest"})
    try:
        if device.type == "cuda":
            torch.cuda.empty_cache()  # the soak's buffers go back to the device
            free = torch.cuda.mem_get_info(device)[0]
            region = burn_memtest.allocate(device, free, burn_memtest.wanted(free), burn_memtest.CHUNK_BYTES)
        else:
            region = burn_memtest.allocate(device, host_available_bytes(), burn_memtest.HOST_BYTES,
                                           burn_memtest.HOST_CHUNK_BYTES)
        base = {"free_bytes": region.free_bytes, "bytes_tested": region.bytes, "coverage": region.coverage,
                "chunks": len(region.chunks), "allocation": region.failure, "self_check": probe["self_check"],
                "injected": plant}
        index = device.index if device.type == "cuda" else None
        with telemetry.Sampler(index, interval_s=SAMPLE_S) as sampler, \
                (_OneThread() if device.type == "cpu" else contextlib.nullcontext()):
            result = burn_memtest.run(region, ops, SEED, clock, ctx.progress, stop, plant=plant)
        ctx.emit({"kind": "memtest", "status": "ok", **base, "passes": result.passes, "patterns": result.patterns,
                  "errors": result.errors, "ranges": result.ranges, "stopped": result.stopped,
                  "timer": clock.method, "telemetry": sampler.summary()})
    except Exception as e:
        ctx.emit({"kind": "memtest", "status": "error", "message": error_message(e)})
