"""One rank of the collective family's sweep: join the process group, verify each collective, time it.

bench/core/launch.py starts this in a worker process per rank (`worker`); rank 0's
records go back to the supervisor (bench/families/collective.py). Each size is verified
before it is timed (each rank sends rank+1: the sums are exact in fp32 and bf16), then
timed with bench/core/timing.py's per-rank timer; every rank's own median time per size goes
into rank 0's record (bench/families/collective_ranks.py names the rank the others waited for).
With `pairs` in the payload, all-reduce runs between every pair of ranks (or nodes) instead.
"""
from __future__ import annotations

import contextlib
import itertools
import json
import statistics
import time
from datetime import timedelta

import torch

from ..core import nvml, telemetry, timing, timing_multi
from ..core.devices import host_available_bytes
from .collective import CHECK_SLICE, DTYPES, ELEMENT_BYTES, EXACT_UP_TO, MEMORY_SHARE, START_VALUE, UNIT_ROUNDOFF, elements
from .collective_ranks import PAIR_BENCHMARK, SLOW_RANK_PAUSE_S, pair_members, slow_rank_fault


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
    """Small agreements among the ranks (one float64 all-reduce each), on the collective's own device;
    `group`: a pair's process group (None: every rank)."""

    def __init__(self, device: torch.device, group=None):
        self.device, self.group = device, group

    def reduce(self, values: list[float], op: str) -> list[float]:
        import torch.distributed as dist

        t = torch.tensor(values, dtype=torch.float64, device=self.device)
        dist.all_reduce(t, op={"sum": dist.ReduceOp.SUM, "max": dist.ReduceOp.MAX, "min": dist.ReduceOp.MIN}[op],
                        group=self.group)
        return t.tolist()

    def gather(self, value: float, index: int, n: int) -> list[float]:
        """Each rank's `value`, in rank order (`index`: this rank's place among the n)."""
        slots = [0.0] * n
        slots[index] = value
        return self.reduce(slots, "sum")

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
    ctx.store.set(f"device/{ctx.rank}", ctx.device)
    dist.init_process_group(payload["backend"], store=dist.PrefixStore("pg/", ctx.store), rank=ctx.rank,
                            world_size=ctx.world_size, timeout=timedelta(seconds=ctx.timeout_s))
    comm = _Comm(device)
    if device.type == "cuda":
        free = torch.cuda.mem_get_info(device)[0]
    else:
        free = host_available_bytes() // ctx.world_size  # the local ranks share the host's memory
    cap = comm.reduce([float(free)], "min")[0] * MEMORY_SHARE
    slow, _problem = slow_rank_fault(ctx.world_size)  # the supervisor checked the setting and warned
    pause = (lambda: time.sleep(SLOW_RANK_PAUSE_S)) if slow == ctx.rank else None
    # Who is who: the ranks that write records name them; in pairs mode every rank needs the hosts.
    names = rank_names(ctx) if ctx.result_path or payload.get("pairs") else []
    if payload.get("pairs"):
        _pairs(ctx, comm, device, payload, cap, pause, names)
    else:
        for benchmark, dtype, case, nbytes in payload["steps"]:
            ctx.progress(f"{benchmark} {dtype} {case}")
            rec = _step(ctx, comm, device, benchmark, dtype, case, nbytes, cap, payload["measure_s"], pause)
            ctx.emit({**rec, "rank_names": names})
    dist.destroy_process_group()


def rank_names(ctx) -> list[str]:
    """"host device" of every rank, from the job's store (each rank wrote its own before the rendezvous)."""
    keys = [f"{kind}/{r}" for r in range(ctx.world_size) for kind in ("host", "device")]
    try:
        values = ctx.store.multi_get(keys)  # one request (torch 2.4+)
    except (AttributeError, RuntimeError, NotImplementedError):
        values = [ctx.store.get(k) for k in keys]
    text = [v.decode() if isinstance(v, bytes) else str(v) for v in values]
    return [f"{text[2 * r]} {text[2 * r + 1]}" for r in range(ctx.world_size)]


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
          cap: float, measure_s: float, pause=None) -> dict:
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
    result, tele = _time_ops(ctx, comm, device, op, measure_s, pause)
    rec.update(status="ok", samples_s=result.samples_s, timer=result.method, ops=len(result.samples_s),
               warmup_ops=timing_multi.WARMUP_OPS, telemetry=tele, notes=result.notes,
               rank_time_median_s=comm.gather(statistics.median(result.own_samples_s), rank, n))
    del inp, out, op
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return rec


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _time_ops(ctx, comm: _Comm, device: torch.device, op, measure_s: float, pause=None, sample: bool = True):
    """Per-operation times (the slowest rank's, and this rank's own), the timer, the count, notes, and
    telemetry of the window (`sample`: on this device; a pair without rank 0 has none)."""
    cuda = device.type == "cuda"
    sampler = telemetry.Sampler(device.index if cuda and ctx.result_path and sample else None)
    clock = timing.sm_clock_hz({"sm_clock_max_mhz": telemetry.max_sm_clock_mhz(device.index)} if cuda else {},
                               nvml.torch_props(device.index) if cuda else None)
    result = timing_multi.time_ops(op, cuda, measure_s, lambda values: comm.reduce(values, "max"), comm.barrier, sampler,
                             clock, pause)
    if not sample:
        return result, {}
    tele = sampler.summary()
    tele.pop("compute_processes", None)  # the other ranks and the supervisor are not "other" work here
    if cuda and ctx.result_path:
        tele.update(telemetry.pcie_link(device.index))
    return result, {k: v for k, v in tele.items() if v != ""}


# ---------------------------------------------------------------- pairs


def _pairs(ctx, comm: _Comm, device: torch.device, payload: dict, cap: float, pause, names: list[str]) -> None:
    """All-reduce between every pair of ranks (or nodes), one pair at a time; rank 0 gets each pair's record."""
    import torch.distributed as dist

    spec = payload["pairs"]
    units = pair_members(spec["units"], [n.rsplit(" ", 1)[0] for n in names])
    if len(units) != spec["count"]:
        raise RuntimeError(f"expected {spec['count']} {spec['units']} in the job, found {len(units)} "
                           f"(hosts: {', '.join(dict.fromkeys(n.rsplit(' ', 1)[0] for n in names))})")
    for a, b in itertools.combinations(range(len(units)), 2):
        members = units[a] + units[b]
        case = f"{spec['units']}-{a}-{b}"
        ctx.progress(f"{PAIR_BENCHMARK} {case}")
        group = dist.new_group(members)  # every rank enters new_group, member or not
        if ctx.rank in members:
            rec = _pair(ctx, _Comm(device, group), device, members, spec, case, cap, payload["measure_s"], pause)
            if ctx.rank == members[0]:
                labels = [names[units[u][0]] if spec["units"] == "ranks" else names[units[u][0]].rsplit(" ", 1)[0]
                          for u in (a, b)]  # "host device" of a rank, the host of a node
                ctx.store.set(f"pair/{case}", json.dumps({**rec, "pair_names": labels, "pair_ranks": members}))
        comm.barrier()  # one pair at a time: no two pairs share a link while measured
        if ctx.result_path:
            ctx.emit(json.loads(ctx.store.get(f"pair/{case}")))
        if ctx.rank in members:
            with contextlib.suppress(Exception):  # frees the pair's communicator; the job's end frees it anyway
                dist.destroy_process_group(group)


def _pair(ctx, comm: _Comm, device: torch.device, members: list[int], spec: dict, case: str, cap: float,
          measure_s: float, pause) -> dict:
    """One pair's verified, timed all-reduce (this rank is one of `members`)."""
    import torch.distributed as dist

    m, index, dtype = len(members), members.index(ctx.rank), spec["dtype"]
    count = elements("all_reduce", spec["nbytes"], ELEMENT_BYTES[dtype], m)
    size = count * ELEMENT_BYTES[dtype]
    rec = {"key": [PAIR_BENCHMARK, dtype, case], "size_bytes": size, "elements": count, "pair_size": m}
    if size > cap:
        rec.update(status="skipped", message=f"needs {size / 2**20:,.0f} MiB per rank; half the smallest free "
                                             f"memory among the ranks is {cap / 2**20:,.0f} MiB")
        return rec
    x = torch.empty(count, dtype=DTYPES[dtype], device=device)

    def op():
        dist.all_reduce(x, group=comm.group)
    fill_inputs("all_reduce", x, index, m)
    op()
    wrong = comm.gather(float(count_wrong("all_reduce", x, index, m, dtype)), index, m)
    if any(wrong):
        at = next(i for i, w in enumerate(wrong) if w)
        rec.update(status="wrong", message=f"all_reduce {dtype} pair {case}: rank {members[at]}: {int(wrong[at])} of "
                                           f"{count} output elements differ from {expected_text('all_reduce', 0, m)}")
        return rec
    x.fill_(START_VALUE)
    result, _ = _time_ops(ctx, comm, device, op, measure_s, pause, sample=False)
    rec.update(status="ok", samples_s=result.samples_s, timer=result.method, ops=len(result.samples_s),
               warmup_ops=timing_multi.WARMUP_OPS, telemetry={}, notes=result.notes,
               rank_time_median_s=comm.gather(statistics.median(result.own_samples_s), index, m))
    return rec
