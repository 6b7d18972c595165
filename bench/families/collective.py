"""Collective family: all-reduce (sum), all-gather and reduce-scatter across ranks, as nccl-tests counts them.

algbw = S / t and busbw = algbw x 2(n-1)/n for all-reduce, x (n-1)/n for all-gather
and reduce-scatter, where S is the bytes of the whole message (all-gather: the
gathered output; reduce-scatter: the input) and n the number of ranks
(nccl-tests doc/PERFORMANCE.md; METHOD.md 4). busbw is nccl-tests' normalization
for a ring over point-to-point links: it is the number users compare with the
unidirectional link rate, and it can exceed that rate when NCCL reduces inside
NVSwitches (NVLS). Decimal GB/s.

Where it runs (bench/launch.py): one node, every GPU of the run -> one rank per
GPU, NCCL, in worker processes started here; the CPU -> gloo across `--ranks`
local processes (default 2); already inside torchrun or srun -> this process is
one rank of that job. The whole sweep runs once, on the first case of the run;
the other cases read its records from `tuned`.

Per size: verify (each rank sends rank+1: the sums are exact in fp32 and bf16),
warm up, then back-to-back operations after a barrier, each one between two
CUDA events (perf_counter on the CPU); a sample is the slowest rank's time of
one operation. Per collective and dtype a "peak" row adds the peak busbw, the
smallest size that reaches 80% of it (knee) and the small-message latency.
"""
from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass, field
from datetime import timedelta

import torch

from ..core import launch, measure, specs, telemetry, timing, topology
from ..core.devices import Target
from ..core.measure import Measurement
from .memory import human_bytes

FAMILY = "collective"
BENCHMARKS = ("all_reduce", "all_gather", "reduce_scatter")
DTYPES = {"bf16": torch.bfloat16, "fp32": torch.float32}
ELEMENT_BYTES = {"bf16": 2, "fp32": 4}
# Largest integer every partial sum may reach and stay exact: bf16 keeps 8 significant bits, fp32 24.
EXACT_UP_TO = {"bf16": 256, "fp32": 2**24}
UNIT_ROUNDOFF = {"bf16": 2.0**-8, "fp32": 2.0**-24}
KIB, MIB, GIB = 2**10, 2**20, 2**30

# nccl-tests sweeps 8 B .. 8 GiB; all-reduce on 8x H100 is still short of its peak at
# 256 MiB (nccl-tests #212), so both GPU profiles go to 4 GiB (fewer where memory is short).
GPU_SIZES = {"quick": (8, MIB, 32 * MIB, 256 * MIB, GIB, 4 * GIB), "full": tuple(2**k for k in range(3, 33))}
# gloo moves host memory: small sizes keep the CPU profile of the whole tool fast.
CPU_SIZES = {"quick": (KIB, 64 * KIB, MIB), "full": tuple(4**k * KIB for k in range(7))}  # 1 KiB .. 4 MiB
KNEE_FRACTION = 0.8
MEASURE_S = {"quick": 0.2, "full": 0.4}  # device time of one size's timed operations
CPU_MEASURE_S = 0.05
MEMORY_SHARE = 0.5  # a size runs when its buffers fit in half the smallest free memory among the ranks
START_VALUE = 2.0**-60  # timed all-reduce input: summing in place multiplies it by n per operation
CHECK_SLICE = 2**26  # elements compared at once (bounds the temporary of the check)
WORKER = f"{__name__}:worker"  # "module:function" each worker process runs (tests swap it)
NVLS_NOTE = ("NVLS may be in use: busbw can exceed the link rate (nccl-tests #153); "
             "NCCL_ALGO=Ring gives wire-comparable busbw")
SKIP_ONE_RANK = "collectives need two or more ranks"
SWEEP_KEY = "collective-sweep"


def busbw_factor(benchmark: str, n: int) -> float:
    """nccl-tests' bus factor: all-reduce moves 2(n-1)/n of the message per rank, the others (n-1)/n."""
    return 2 * (n - 1) / n if benchmark == "all_reduce" else (n - 1) / n


def elements(benchmark: str, nbytes: int, element_bytes: int, n: int) -> int:
    """Elements of the whole message; all-gather and reduce-scatter need a multiple of n (one chunk per rank)."""
    count = max(1, nbytes // element_bytes)
    return count if benchmark == "all_reduce" else max(n, count // n * n)


@dataclass(frozen=True)
class Case:
    benchmark: str
    dtype: str  # "bf16" / "fp32"; "" for the rows that point at the group's rows
    case: str  # "size-<S>", "peak" (the summary), or "group" (rows are on another GPU)
    nbytes: int  # nominal message size; 0 for summary and pointer rows
    provider: str  # "nccl" / "gloo"

    @property
    def id(self) -> str:
        return f"{FAMILY}/{self.benchmark}/{self.provider}/{self.dtype or '-'}/{self.case}"


# ---------------------------------------------------------------- the group


@dataclass
class Group:
    """Which ranks run the collectives of this run, and which target carries their rows."""

    provider: str
    world_size: int
    nodes: int
    devices: list[str]  # per local rank started here ("cuda:3", "cpu"); one entry when joined
    job: launch.Job | None  # the torchrun / srun job this process joined
    lead_index: int | None  # CUDA index of the target that carries the rows (None: the CPU)
    skip: str = ""  # why no collective runs here

    def describe(self) -> str:
        where = f"{self.job.source} job, {self.nodes} node(s)" if self.job else "local worker processes"
        return f"{self.world_size} {self.provider} rank(s) ({where})"


_settings: dict = {"targets": None, "ranks": 2, "timeout_s": launch.DEFAULT_TIMEOUT_S}


def prepare(targets: list[Target], args) -> None:
    """Called by `cardbench run` before the plan: the run's devices form the group; --ranks, --collective-timeout."""
    _settings.update(targets=list(targets), ranks=getattr(args, "ranks", None) or 2,
                     timeout_s=float(getattr(args, "collective_timeout", None) or launch.DEFAULT_TIMEOUT_S))


def group_for(target: Target) -> Group:
    provider = "nccl" if target.is_cuda else "gloo"
    job = launch.joined_job()
    if job is not None:
        if not target.is_cuda:
            return Group(provider, job.world_size, job.nodes, ["cpu"], job, None)
        targets = [t.index for t in _settings["targets"] or [target] if t.is_cuda]
        try:
            bound = launch.local_device(job.local_rank, torch.cuda.device_count())
        except launch.LaunchError as e:
            return Group(provider, job.world_size, job.nodes, [], job, targets[0], skip=str(e))
        return Group(provider, job.world_size, job.nodes, [f"cuda:{bound}"], job,
                     bound if bound in targets else targets[0])
    if not target.is_cuda:
        n = int(_settings["ranks"])
        return Group(provider, n, 1, ["cpu"] * n, None, None,
                     skip="" if n >= 2 else f"{SKIP_ONE_RANK}: --ranks {n}")
    known = _settings["targets"]
    indices = [t.index for t in known if t.is_cuda] if known else list(range(torch.cuda.device_count()))
    skip = "" if len(indices) >= 2 else f"{SKIP_ONE_RANK}: one GPU in this run ({target.device})"
    return Group(provider, len(indices), 1, [f"cuda:{i}" for i in indices], None, indices[0], skip)


def sizes(provider: str, profile: str) -> tuple[int, ...]:
    return (GPU_SIZES if provider == "nccl" else CPU_SIZES)[profile]


def steps(provider: str, profile: str) -> list[list]:
    """The sweep, the same on every rank: [benchmark, dtype, case, nominal bytes] in run order."""
    return [[b, d, f"size-{human_bytes(s)}", s] for b in BENCHMARKS for d in DTYPES for s in sizes(provider, profile)]


def cases(target: Target, profile: str) -> list[Case]:
    g = group_for(target)
    if target.is_cuda and target.index != g.lead_index:
        return [Case(b, "", "group", 0, g.provider) for b in BENCHMARKS]
    if g.skip:
        return [Case(b, d, "peak", 0, g.provider) for b in BENCHMARKS for d in DTYPES]
    out = []
    for b in BENCHMARKS:
        for d in DTYPES:
            out += [Case(b, d, f"size-{human_bytes(s)}", s, g.provider) for s in sizes(g.provider, profile)]
            out.append(Case(b, d, "peak", 0, g.provider))
    return out


# ---------------------------------------------------------------- the sweep (this process supervises)


@dataclass
class Outcome:
    records: dict[tuple, dict]  # (benchmark, dtype, case) -> the record rank 0 emitted
    failure: str  # "" when every rank finished
    info: dict = field(default_factory=dict)  # params every row carries
    link: dict = field(default_factory=dict)  # spec columns (NVLink per direction) or {}
    nvls: bool = False


def payload_for(g: Group, profile: str) -> dict:
    return {"backend": g.provider, "steps": steps(g.provider, profile),
            "measure_s": MEASURE_S[profile] if g.provider == "nccl" else CPU_MEASURE_S}


def sweep(target: Target, g: Group, profile: str) -> Outcome:
    """Run every size of every collective once, in worker processes; never raises for a failing rank."""
    outcome = Outcome({}, "", _info(g))
    if g.provider == "nccl":
        outcome.link, outcome.nvls = _link_facts(target, g)
    payload = payload_for(g, profile)
    timeout_s = _settings["timeout_s"]
    print(f"collective: {g.describe()}, {len(payload['steps'])} measurements", file=sys.stderr, flush=True)
    try:
        if g.job is not None:
            job = g.job
            records = launch.run(WORKER, payload, job, [{"rank": job.rank, "local_rank": job.local_rank,
                                                         "device": g.devices[0]}], timeout_s,
                                 result_rank=job.rank, host_store=job.rank == 0 and not job.agent_store)
        else:
            job = launch.local_job(g.world_size)
            ranks = [{"rank": r, "local_rank": r, "device": d} for r, d in enumerate(g.devices)]
            records = launch.run(WORKER, payload, job, ranks, timeout_s, result_rank=0, host_store=True)
    except launch.WorkerFailure as e:
        records, outcome.failure = getattr(e, "records", []), str(e)
    except Exception as e:  # a worker that cannot even start (no Python, no disk for its log)
        records, outcome.failure = [], measure.error_message(e)
    outcome.records = {tuple(r["key"]): r for r in records if "key" in r}
    return outcome


def _info(g: Group) -> dict:
    info = {"world_size": g.world_size, "nodes": g.nodes, "ranks_per_node": g.world_size // max(1, g.nodes),
            "launch": g.job.source if g.job else "local"}
    if g.provider == "nccl":
        info["nccl_version"] = _nccl_version_text()
        info["nccl_env"] = {k: v for k, v in sorted(os.environ.items()) if k.startswith("NCCL_")}
    return info


def _nccl_version() -> tuple:
    try:
        import torch.cuda.nccl

        v = torch.cuda.nccl.version()
        return tuple(v) if isinstance(v, tuple) else (int(v) // 1000, int(v) % 1000 // 100, int(v) % 100)
    except Exception:  # CPU-only torch has no NCCL
        return ()


def _nccl_version_text() -> str:
    return ".".join(map(str, _nccl_version()[:3]))


def _link_facts(target: Target, g: Group) -> tuple[dict, bool]:
    """Spec columns against the card's per-direction NVLink (one node, NVLink up), and whether NVLS may run."""
    links, switch = nvlink_state(target.index)
    link = {}
    per_direction = specs.nvlink_per_direction_bytes_per_s(target.spec)
    if per_direction and links and g.nodes == 1:
        figs = target.spec.figures
        fig = figs.get("nvlink_per_direction") or figs["nvlink_bidir"]
        source = fig.source if fig.key == "nvlink_per_direction" else f"half of nvlink_bidir: {fig.source}"
        link = {"spec_figure": "nvlink_per_direction", "spec_value": per_direction / 1e9, "spec_unit": "GB/s",
                "spec_source": source}
    major = int((target.identity.get("compute_capability") or "0").split(".")[0] or 0)
    algo = os.environ.get("NCCL_ALGO", "").lower()
    # NVLink SHARP: Hopper and later behind NVSwitches, NCCL 2.17+, unless turned off.
    nvls = (major >= 9 and bool(switch) and _nccl_version()[:2] >= (2, 17)
            and os.environ.get("NCCL_NVLS_ENABLE", "1") != "0" and (not algo or "nvls" in algo))
    return link, nvls


def nvlink_state(index: int | None) -> tuple[int | None, bool | None]:
    """(active NVLinks, whether a link ends at an NVSwitch) of CUDA device `index`; None where NVML cannot tell."""
    handle = telemetry.nvml_handle(index)
    if handle is None:
        return None, None
    active = [link for link in topology.read_nvlinks(telemetry.nvml(), handle) if link.active]
    kinds = [link.remote_type for link in active if link.remote_type]
    # Bindings without the remote-type call: 18 links (all of an SXM board's) mean switches.
    switch = "switch" in kinds if kinds else len(active) >= 18
    return len(active), switch


# ---------------------------------------------------------------- rows


def describe(case: Case, g: Group, size_bytes: int | None = None) -> Measurement:
    n = max(g.world_size, 1)
    size = size_bytes if size_bytes is not None else (
        elements(case.benchmark, case.nbytes, ELEMENT_BYTES[case.dtype], n) * ELEMENT_BYTES[case.dtype]
        if case.nbytes else 0)
    return Measurement(
        family=FAMILY, benchmark=case.benchmark, provider=case.provider, dtype=case.dtype, case=case.case,
        metric="busbw", unit="GB/s", scale=1e9, work=size * busbw_factor(case.benchmark, n), work_unit="B",
        size_bytes=size or "", fn=lambda: None, check=lambda: None,
    )


def run_case(target: Target, case: Case, profile: str, tuned: dict) -> dict[str, object]:
    """The row of one case; the first case of the run measures the whole sweep. Never raises for a failing case."""
    g = None
    try:
        g = group_for(target)
        if case.case == "group":
            lead = f"cuda:{g.lead_index}"
            return measure.status_row(describe(case, g), target, "skipped",
                                      f"measured as one group of {g.world_size} ranks; the rows are on {lead}")
        if g.skip:
            return measure.status_row(describe(case, g), target, "skipped", g.skip)
        if g.provider == "nccl" and not _nccl_available():
            return measure.status_row(describe(case, g), target, "unsupported", "this torch build has no NCCL")
        if SWEEP_KEY not in tuned:
            tuned[SWEEP_KEY] = sweep(target, g, profile)
        outcome = tuned[SWEEP_KEY]
        row = peak_row(target, case, g, outcome, profile) if case.case == "peak" else \
            size_row(target, case, g, outcome)
        row.update(_spec_columns(row, outcome))
        return row
    except Exception as e:
        fallback = g or Group("nccl" if target.is_cuda else "gloo", 2, 1, [], None, target.index)
        return measure.status_row(describe(case, fallback), target, "error", measure.error_message(e))


def _nccl_available() -> bool:
    import torch.distributed as dist

    return dist.is_available() and dist.is_nccl_available()


def _spec_columns(row: dict, outcome: Outcome) -> dict:
    if not outcome.link:
        return {}
    out = dict(outcome.link)
    if row["status"] == "ok":
        out["pct_of_spec"] = 100.0 * float(row["value"]) / outcome.link["spec_value"]
    return out


def size_row(target: Target, case: Case, g: Group, outcome: Outcome) -> dict:
    rec = outcome.records.get((case.benchmark, case.dtype, case.case))
    if rec is None:
        why = outcome.failure or "the workers ended without measuring it"
        return measure.status_row(describe(case, g), target, "error", f"not measured: {why}")
    m = describe(case, g, rec["size_bytes"])
    m.params = {**outcome.info, "elements": rec["elements"]}
    if rec["status"] != "ok":
        return measure.status_row(m, target, rec["status"], rec["message"])
    return _measured_row(target, m, rec, g, outcome)


def _measured_row(target: Target, m: Measurement, rec: dict, g: Group, outcome: Outcome) -> dict:
    result = timing.Timing(rec["samples_s"], rec["timer"])
    size, factor = rec["size_bytes"], busbw_factor(m.benchmark, g.world_size)
    mean_s = sum(rec["samples_s"]) / len(rec["samples_s"])
    m.params.update(
        algbw_gb_per_s=size / result.median_s / 1e9,  # algbw = S / t (nccl-tests)
        busbw_factor=factor,
        time_mean_s=mean_s,  # nccl-tests prints the mean time: compare its busbw with busbw_mean_gb_per_s
        busbw_mean_gb_per_s=size * factor / mean_s / 1e9,
        ops=rec["ops"], warmup_ops=rec["warmup_ops"],
    )
    row = measure.base_row(m, target)
    row.update(rec.get("telemetry", {}))
    row.update(measure.throughput_fields(result, m.work, m.scale))  # value = busbw = S * factor / median time
    notes = [measure.spread_note(row), NVLS_NOTE if outcome.nvls and m.benchmark == "all_reduce" else "",
             *rec.get("notes", [])]
    row.update(status="ok", message="; ".join(n for n in notes if n))
    return row


def peak_row(target: Target, case: Case, g: Group, outcome: Outcome, profile: str) -> dict:
    """Peak busbw of one collective and dtype, with the knee (smallest size at 80% of it) and the latency."""
    wanted = [tuple(s[:3]) for s in steps(g.provider, profile) if tuple(s[:2]) == (case.benchmark, case.dtype)]
    recs = [outcome.records[k] for k in wanted if k in outcome.records]
    ok = sorted((r for r in recs if r["status"] == "ok"), key=lambda r: r["size_bytes"])
    if len(recs) < len(wanted) or not ok:
        bad = next((r for r in recs if r["status"] == "wrong"), None)
        status, why = ("error", f"sweep incomplete: {outcome.failure or 'a size is missing'}") \
            if len(recs) < len(wanted) else \
            ("wrong", bad["message"]) if bad else ("skipped", next((r["message"] for r in recs), "no size ran"))
        return measure.status_row(describe(case, g), target, status, why)
    factor = busbw_factor(case.benchmark, g.world_size)

    def busbw(r: dict) -> float:
        return r["size_bytes"] * factor / timing.Timing(r["samples_s"], r["timer"]).median_s / 1e9

    best = max(ok, key=busbw)
    knee = next(r for r in ok if busbw(r) >= KNEE_FRACTION * busbw(best))
    smallest = ok[0]
    m = describe(case, g, best["size_bytes"])
    m.params = {**outcome.info, "elements": best["elements"], "peak_case": best["key"][2],
                "peak_size_bytes": best["size_bytes"], "knee_fraction": KNEE_FRACTION,
                "knee_case": knee["key"][2], "knee_size_bytes": knee["size_bytes"],
                "knee_busbw_gb_per_s": busbw(knee), "latency_case": smallest["key"][2],
                "latency_size_bytes": smallest["size_bytes"],
                "latency_us": timing.Timing(smallest["samples_s"], smallest["timer"]).median_s * 1e6}
    row = _measured_row(target, m, best, g, outcome)
    row["size_bytes"] = ""  # a summary, not a point of the size curve (the report plots size_bytes)
    return row


def summary_lines(rows: list[dict]) -> list[str]:
    """One line per collective and dtype: peak busbw (and % of the link), knee, latency."""
    lines = []
    for r in rows:
        if r["family"] != FAMILY or r["case"] != "peak" or r["status"] != "ok":
            continue
        p = json.loads(r["params"])
        pct = f" = {float(r['pct_of_spec']):.0f}% of NVLink {float(r['spec_value']):g} GB/s per direction" \
            if r.get("pct_of_spec") not in (None, "") else ""
        lines.append(f"{r['benchmark']} {r['dtype']}, {p['world_size']} ranks ({r['provider']}): peak busbw "
                     f"{float(r['value']):,.1f} GB/s at {p['peak_case'][5:]}{pct}; {KNEE_FRACTION:.0%} of peak from "
                     f"{p['knee_case'][5:]}; latency {p['latency_us']:,.1f} us at {p['latency_case'][5:]}")
    if any(NVLS_NOTE in r.get("message", "") for r in rows if r["family"] == FAMILY):
        lines.append(f"collective: {NVLS_NOTE}")
    return lines


# ---------------------------------------------------------------- joined ranks other than local rank 0


def follow(job: launch.Job, args) -> int:
    """A rank of a torchrun / srun job other than local rank 0: take part in the collectives, write nothing.

    Exits 0 even when the family failed: local rank 0's CSV records why, and a non-zero
    exit would make torchrun stop local rank 0 before its other families ran.
    """
    if FAMILY not in (getattr(args, "families", None) or []):
        print(f"cardbench: rank {job.rank} of a {job.source} job: local rank 0 measures this node")
        return 0
    cpu = getattr(args, "device", "all") == "cpu" or not torch.cuda.is_available()
    prepare([], args)
    try:
        device = "cpu" if cpu else f"cuda:{launch.local_device(job.local_rank, torch.cuda.device_count())}"
    except launch.LaunchError as e:
        print(f"cardbench: rank {job.rank}: {e}", file=sys.stderr)
        return 0
    g = Group("gloo" if cpu else "nccl", job.world_size, job.nodes, [device], job, None)
    import signal

    previous = signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    try:
        launch.run(WORKER, payload_for(g, getattr(args, "profile", "quick")), job,
                   [{"rank": job.rank, "local_rank": job.local_rank, "device": device}],
                   _settings["timeout_s"], result_rank=None, host_store=False)
    except launch.WorkerFailure as e:
        print(f"cardbench: rank {job.rank}: the collective family ended: {e}", file=sys.stderr)
    finally:
        signal.signal(signal.SIGTERM, previous)
    return 0


# ---------------------------------------------------------------- the worker (one per rank)


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
        # No device_id to init_process_group: it hangs in 2.6 < torch < 2.7.1 (METHOD.md 4).
        torch.cuda.set_device(device)
    else:
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // ctx.world_size))
    dist.init_process_group(payload["backend"], store=dist.PrefixStore("pg/", ctx.store), rank=ctx.rank,
                            world_size=ctx.world_size, timeout=timedelta(seconds=ctx.timeout_s))
    comm = _Comm(device)
    if device.type == "cuda":
        free = torch.cuda.mem_get_info(device)[0]
    else:
        from ..core.devices import _host_available_bytes

        free = _host_available_bytes() // ctx.world_size  # the local ranks share the host's memory
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
                               telemetry.torch_props(device.index) if cuda else None)
    result = timing.time_ops(op, cuda, measure_s, lambda values: comm.reduce(values, "max"), comm.barrier, sampler,
                             clock)
    tele = sampler.summary()
    tele.pop("compute_processes", None)  # the other ranks and the supervisor are not "other" work here
    if cuda and ctx.result_path:
        tele.update(telemetry.pcie_link(device.index))
    return result, {k: v for k, v in tele.items() if v != ""}
