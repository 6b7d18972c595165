"""One rank of the collective family's sweep: join the process group, verify each collective, time it.

bench/core/launch.py starts this in a worker process per rank (`worker`); rank 0's
records go back to the supervisor (bench/families/collective.py). Each size is verified
before it is timed (each rank sends rank+1: the sums are exact in fp32 and bf16), then
timed with bench/core/timing.py's per-rank timer.
"""
from __future__ import annotations

import os
from datetime import timedelta

import torch

from ..core import nvml, telemetry, timing
from ..core.devices import host_available_bytes
from .collective import CHECK_SLICE, DTYPES, ELEMENT_BYTES, EXACT_UP_TO, MEMORY_SHARE, START_VALUE, UNIT_ROUNDOFF, elements


def fill_inputs(benchmark: str, inp: torch.Tensor, rank: int, n: int) -> None:
    """Inputs whose results are exact: all-reduce and all-gather send rank+1; reduce-scatter sends
    rank+1 + (chunk mod 2) to each chunk, so a chunk delivered to the wrong rank shows."""
    if benchmark == "reduce_scatter":
        per_chunk = (rank + 1 + torch.arange(n, device=inp.device) % 2).to(inp.dtype)
        inp.view(n, -1).copy_(per_chunk.unsqueeze(1).expand(n, inp.numel() // n))
    else:
        inp.fill_(rank + 1)


def expected_text(benchmark: str, rank: int, n: int) -> str:
    if benchmark == "all_reduce":
        return f"the sum {n * (n + 1) // 2} (rank r sends r+1)"
    if benchmark == "all_gather":
        return "chunk q = q+1 (what rank q sent)"
    return f"{n * (n + 1) // 2 + n * (rank % 2)} (the sum over ranks of rank+1 + (chunk mod 2))"


def count_wrong(benchmark: str, out: torch.Tensor, rank: int, n: int, dtype: str) -> int:
    """Elements of this rank's output that differ from what the collective must produce."""
    top = {"all_reduce": n * (n + 1) // 2, "all_gather": n, "reduce_scatter": n * (n + 1) // 2 + n}[benchmark]
    # Ring and tree orders add in different sequences: exact while every partial sum is an exact integer.
    rtol = 0.0 if top <= EXACT_UP_TO[dtype] else n * UNIT_ROUNDOFF[dtype]
    if benchmark == "all_gather":
        return sum(_mismatches(chunk, q + 1, rtol) for q, chunk in enumerate(out.view(n, -1)))
    value = n * (n + 1) // 2 + (n * (rank % 2) if benchmark == "reduce_scatter" else 0)
    return _mismatches(out, value, rtol)


def _mismatches(t: torch.Tensor, value: float, rtol: float) -> int:
    bad = 0
    for start in range(0, t.numel(), CHECK_SLICE):
        part = t[start:start + CHECK_SLICE]
        wrong = part != value if rtol == 0 else (part.float() - value).abs() > rtol * abs(value)
        bad += int(wrong.sum())
    return bad


class _Comm:
    """Small agreements among the ranks (one float64 all-reduce each), on the collective's own device."""

    def __init__(self, device: torch.device):
        self.device = device

    def reduce(self, values: list[float], op: str) -> list[float]:
        import torch.distributed as dist

        t = torch.tensor(values, dtype=torch.float64, device=self.device)
        dist.all_reduce(t, op={"sum": dist.ReduceOp.SUM, "max": dist.ReduceOp.MAX, "min": dist.ReduceOp.MIN}[op])
        return t.tolist()

    def barrier(self) -> None:
        self.reduce([0.0], "sum")


def worker(ctx, payload: dict) -> None:
    """One rank (bench/launch.py starts it): join the process group, run every step, rank 0 emits records."""
    import torch.distributed as dist

    device = torch.device(ctx.device)
    if device.type == "cuda":
        # No device_id to init_process_group: with it NCCL can hang at random
        # (https://github.com/pytorch/pytorch/issues/153960).
        torch.cuda.set_device(device)
    else:
        from ..core.devices import rank_threads

        torch.set_num_threads(rank_threads(ctx.world_size))  # the ranks share the host's CPUs
    dist.init_process_group(payload["backend"], store=dist.PrefixStore("pg/", ctx.store), rank=ctx.rank,
                            world_size=ctx.world_size, timeout=timedelta(seconds=ctx.timeout_s))
    comm = _Comm(device)
    if device.type == "cuda":
        free = torch.cuda.mem_get_info(device)[0]
    else:
        free = host_available_bytes() // ctx.world_size  # the local ranks share the host's memory
    cap = comm.reduce([float(free)], "min")[0] * MEMORY_SHARE
    for benchmark, dtype, case, nbytes in payload["steps"]:
        ctx.progress(f"{benchmark} {dtype} {case}")
        ctx.emit(_step(ctx, comm, device, benchmark, dtype, case, nbytes, cap, payload["measure_s"]))
    dist.destroy_process_group()


def _buffers(benchmark: str, count: int, n: int, dtype: torch.dtype, device: torch.device):
    """(input, output, the operation) for a message of `count` elements."""
    import torch.distributed as dist

    if benchmark == "all_reduce":
        x = torch.empty(count, dtype=dtype, device=device)
        return x, x, lambda: dist.all_reduce(x)
    big = torch.empty(count, dtype=dtype, device=device)
    small = torch.empty(count // n, dtype=dtype, device=device)
    if benchmark == "all_gather":  # all_gather_single: torch 2.13's name; all_gather_into_tensor before
        gather = getattr(dist, "all_gather_single", None) or dist.all_gather_into_tensor
        return small, big, lambda: gather(big, small)
    scatter = getattr(dist, "reduce_scatter_single", None) or dist.reduce_scatter_tensor
    return big, small, lambda: scatter(small, big)


def _step(ctx, comm: _Comm, device: torch.device, benchmark: str, dtype: str, case: str, nbytes: int,
          cap: float, measure_s: float) -> dict:
    n, rank = ctx.world_size, ctx.rank
    count = elements(benchmark, nbytes, ELEMENT_BYTES[dtype], n)
    size = count * ELEMENT_BYTES[dtype]
    rec = {"key": [benchmark, dtype, case], "size_bytes": size, "elements": count}
    need = size + (0 if benchmark == "all_reduce" else size // n)
    if need > cap:
        rec.update(status="skipped", message=f"needs {need / 2**20:,.0f} MiB per rank; half the smallest free "
                                             f"memory among the ranks is {cap / 2**20:,.0f} MiB")
        return rec
    inp, out, op = _buffers(benchmark, count, n, DTYPES[dtype], device)
    # Verified before timed: one operation on known inputs, every rank checks its output.
    fill_inputs(benchmark, inp, rank, n)
    if out is not inp:
        out.fill_(-1)
    op()
    wrong = [0.0] * n
    wrong[rank] = float(count_wrong(benchmark, out, rank, n, dtype))
    wrong = comm.reduce(wrong, "sum")
    if any(wrong):
        r = next(i for i, w in enumerate(wrong) if w)
        rec.update(status="wrong", message=f"{benchmark} {dtype}: rank {r}: {int(wrong[r])} of {out.numel()} "
                                           f"output elements differ from {expected_text(benchmark, r, n)}")
        return rec
    if benchmark == "all_reduce":
        inp.fill_(START_VALUE)
    result, tele = _time_ops(ctx, comm, device, op, measure_s)
    rec.update(status="ok", samples_s=result.samples_s, timer=result.method, ops=len(result.samples_s),
               warmup_ops=timing.WARMUP_OPS, telemetry=tele, notes=result.notes)
    del inp, out, op
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return rec


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _time_ops(ctx, comm: _Comm, device: torch.device, op, measure_s: float):
    """Per-operation times (the slowest rank's), the timer, the count, notes, and telemetry of the window."""
    cuda = device.type == "cuda"
    sampler = telemetry.Sampler(device.index if cuda and ctx.result_path else None)
    clock = timing.sm_clock_hz({"sm_clock_max_mhz": telemetry.max_sm_clock_mhz(device.index)} if cuda else {},
                               nvml.torch_props(device.index) if cuda else None)
    result = timing.time_ops(op, cuda, measure_s, lambda values: comm.reduce(values, "max"), comm.barrier, sampler,
                             clock)
    tele = sampler.summary()
    tele.pop("compute_processes", None)  # the other ranks and the supervisor are not "other" work here
    if cuda and ctx.result_path:
        tele.update(telemetry.pcie_link(device.index))
    return result, {k: v for k, v in tele.items() if v != ""}
