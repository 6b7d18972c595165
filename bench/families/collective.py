"""Collective family: all-reduce (sum), all-gather and reduce-scatter across ranks, as nccl-tests counts them.

algbw = S / t and busbw = algbw x 2(n-1)/n for all-reduce, x (n-1)/n for all-gather
and reduce-scatter, where S is the bytes of the whole message (all-gather: the
gathered output; reduce-scatter: the input) and n the number of ranks
(https://github.com/NVIDIA/nccl-tests/blob/master/doc/PERFORMANCE.md). busbw is
nccl-tests' normalization for a ring over point-to-point links: it is the number users
compare with the unidirectional link rate, and it can exceed that rate when NCCL
reduces inside NVSwitches (NVLS). Decimal GB/s.

Where it runs (bench/core/launch.py): one node, every GPU of the run -> one rank per
GPU, NCCL, in worker processes started here; the CPU -> gloo across `--ranks` local
processes (default 2); already inside torchrun or srun -> this process is one rank of
that job. The first case of the run starts the whole sweep in the background; each
case's row is written as soon as its size is measured, so an interrupted run keeps
the sizes it measured. The workers are bench/families/collective_worker.py.

Per collective and dtype a "peak" row adds the peak busbw, the smallest size that
reaches 80% of it (knee) and the small-message latency. Every size's row keeps each
rank's own median time; the rank the others consistently waited for is named, and
`--pairs` measures all-reduce between every pair of ranks or nodes instead of the sweep
(bench/families/collective_ranks.py).
"""
from __future__ import annotations

import os
import sys
import threading
from dataclasses import dataclass, replace

import torch

from ..core import faults, launch, nvml, timing, topology
from ..core.devices import Target, rank_threads
from ..core.harness import Case, Status, Timed, error_message
from ..core.units import human_bytes
from . import collective_ranks as ranks

NAME = "collective"
BENCHMARKS = ("all_reduce", "all_gather", "reduce_scatter")
DTYPES = {"bf16": torch.bfloat16, "fp32": torch.float32}
ELEMENT_BYTES = {"bf16": 2, "fp32": 4}
# Largest integer every partial sum may reach and stay exact: bf16 keeps 8 significant bits, fp32 24.
EXACT_UP_TO = {"bf16": 256, "fp32": 2**24}
UNIT_ROUNDOFF = {"bf16": 2.0**-8, "fp32": 2.0**-24}
KIB, MIB, GIB = 2**10, 2**20, 2**30

# nccl-tests sweeps 8 B .. 8 GiB; all-reduce on 8x H100 is still short of its peak at 256 MiB
# (https://github.com/NVIDIA/nccl-tests/issues/212), so both GPU profiles go to 4 GiB
# (fewer where memory is short).
GPU_SIZES = {"quick": (8, MIB, 32 * MIB, 256 * MIB, GIB, 4 * GIB), "full": tuple(2**k for k in range(3, 33))}
# gloo moves host memory: small sizes keep the CPU profile of the whole tool fast.
CPU_SIZES = {"quick": (KIB, 64 * KIB, MIB), "full": tuple(4**k * KIB for k in range(7))}  # 1 KiB .. 4 MiB
KNEE_FRACTION = 0.8
MEASURE_S = {"quick": 0.2, "full": 0.4}  # device time of one size's timed operations
CPU_MEASURE_S = 0.05
MEMORY_SHARE = 0.5  # a size runs when its buffers fit in half the smallest free memory among the ranks
START_VALUE = 2.0**-60  # timed all-reduce input: summing in place multiplies it by n per operation
CHECK_SLICE = 2**26  # elements compared at once (bounds the temporary of the check)
WORKER = f"{__package__}.collective_worker:worker"  # "module:function" each worker process runs (tests swap it)
NVLS_NOTE = ("NVLS may be in use: busbw can exceed the link rate (https://github.com/NVIDIA/nccl-tests/issues/153); "
             "NCCL_ALGO=Ring gives wire-comparable busbw")
SKIP_ONE_RANK = "collectives need two or more ranks"


def busbw_factor(benchmark: str, n: int) -> float:
    """nccl-tests' bus factor: all-reduce (a pair's too) moves 2(n-1)/n of the message per rank, others (n-1)/n."""
    return 2 * (n - 1) / n if benchmark in ("all_reduce", ranks.PAIR_BENCHMARK) else (n - 1) / n


def elements(benchmark: str, nbytes: int, element_bytes: int, n: int) -> int:
    """Elements of the whole message; all-gather and reduce-scatter need a multiple of n (one chunk per rank)."""
    count = max(1, nbytes // element_bytes)
    return count if benchmark in ("all_reduce", ranks.PAIR_BENCHMARK) else max(n, count // n * n)


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


def group_for(target: Target, run) -> Group:
    """The group of a run: its GPUs (one node), --ranks gloo processes (CPU), or the joined job."""
    provider = "nccl" if target.is_cuda else "gloo"
    targets = [t.index for t in run.targets if t.is_cuda] or [target.index]
    job = launch.joined_job()
    if job is not None:
        if not target.is_cuda:
            return Group(provider, job.world_size, job.nodes, ["cpu"], job, None)
        try:
            bound = launch.local_device(job.local_rank, run.visible_gpus)
        except launch.LaunchError as e:
            return Group(provider, job.world_size, job.nodes, [], job, targets[0], skip=str(e))
        return Group(provider, job.world_size, job.nodes, [f"cuda:{bound}"], job,
                     bound if bound in targets else targets[0])
    if not target.is_cuda:
        n = int(getattr(run.options, "ranks", 2) or 2)
        return Group(provider, n, 1, ["cpu"] * n, None, None, skip="" if n >= 2 else f"{SKIP_ONE_RANK}: --ranks {n}")
    skip = "" if len(targets) >= 2 else f"{SKIP_ONE_RANK}: one GPU in this run ({target.device})"
    return Group(provider, len(targets), 1, [f"cuda:{i}" for i in targets], None, targets[0], skip)


def sizes(provider: str, profile: str) -> tuple[int, ...]:
    return (GPU_SIZES if provider == "nccl" else CPU_SIZES)[profile]


def steps(provider: str, profile: str) -> list[list]:
    """The sweep, the same on every rank: [benchmark, dtype, case, nominal bytes] in run order."""
    return [[b, d, f"size-{human_bytes(s)}", s] for b in BENCHMARKS for d in DTYPES for s in sizes(provider, profile)]


@dataclass(frozen=True)
class Step:
    """What one collective case is (the harness Case's `spec`)."""

    nbytes: int  # nominal message size; 0 for the peak and pointer rows
    world_size: int


def make_case(benchmark: str, dtype: str, name: str, nbytes: int, g: Group, n: int | None = None) -> Case:
    n = max(n or g.world_size, 1)  # n: ranks in the operation (a pair's group is smaller than the job)
    size = elements(benchmark, nbytes, ELEMENT_BYTES[dtype], n) * ELEMENT_BYTES[dtype] if nbytes else 0
    return Case(family=NAME, benchmark=benchmark, provider=g.provider, dtype=dtype, name=name, metric="busbw",
                unit="GB/s", scale=1e9, work=size * busbw_factor(benchmark, n), work_unit="B", size_bytes=size or "",
                spec=Step(nbytes, g.world_size), id_dtype=True)


def cases(target: Target, run) -> list[Case]:
    g = group_for(target, run)
    if target.is_cuda and target.index != g.lead_index:
        return [Case(NAME, b, g.provider, "", "group", "busbw", "GB/s", 1e9, 0, "B", "", Step(0, g.world_size), True)
                for b in BENCHMARKS]
    if g.skip:
        return [make_case(b, d, "peak", 0, g) for b in BENCHMARKS for d in DTYPES]
    if ranks.pairs_mode(run):
        return [make_case(ranks.PAIR_BENCHMARK, ranks.PAIR_DTYPE, name, ranks.PAIR_BYTES[g.provider], g,
                          ranks.pair_size(g.world_size, g.nodes)) for name in ranks.pair_names(g.world_size, g.nodes)]
    out = []
    for b in BENCHMARKS:
        for d in DTYPES:
            out += [make_case(b, d, f"size-{human_bytes(s)}", s, g) for s in sizes(g.provider, run.profile)]
            out.append(make_case(b, d, "peak", 0, g))
    return out


# ---------------------------------------------------------------- the sweep, in the background


class Sweep:
    """Every size of every collective, measured once by the worker processes while the run writes rows.

    A supervisor thread starts the ranks (bench/core/launch.py); each record rank 0 emits
    arrives here as it is measured, and the case waiting for it gets its row at once.
    """

    def __init__(self, info: dict, nvls: bool = False, records: dict | None = None, failure: str = "",
                 done: bool = False):
        self.info, self.nvls = info, nvls
        self.records: dict[tuple, dict] = dict(records or {})
        self.failure = failure
        self.done = threading.Event()
        self.changed = threading.Condition()
        if done:
            self.done.set()

    def start(self, g: Group, profile: str, timeout_s: float, pairs: bool = False) -> None:
        payload = payload_for(g, profile, pairs)
        _slow, problem = ranks.slow_rank_fault(g.world_size)
        if problem:
            self.failure = problem
            self.done.set()
            return
        faults.warn()
        what = f"{len(ranks.pair_names(g.world_size, g.nodes))} pairs" if pairs else \
            f"{len(payload['steps'])} measurements"
        print(f"collective: {g.describe()}, {what}", file=sys.stderr, flush=True)
        threading.Thread(target=self._run, args=(g, payload, timeout_s), name="cardbench-collective",
                         daemon=True).start()

    def _run(self, g: Group, payload: dict, timeout_s: float) -> None:
        try:
            if g.job is not None:
                job = g.job
                launch.run(WORKER, payload, job, [{"rank": job.rank, "local_rank": job.local_rank,
                                                   "device": g.devices[0]}], timeout_s, result_rank=job.rank,
                           host_store=job.rank == 0 and not job.agent_store, on_record=self.add)
            else:
                ranks = [{"rank": r, "local_rank": r, "device": d} for r, d in enumerate(g.devices)]
                launch.run(WORKER, payload, launch.local_job(g.world_size), ranks, timeout_s, result_rank=0,
                           host_store=True, on_record=self.add)
        except launch.WorkerFailure as e:
            self.failure = str(e)
        except Exception as e:  # a worker that cannot even start (no Python, no disk for its log)
            self.failure = error_message(e)
        finally:
            with self.changed:
                self.done.set()
                self.changed.notify_all()

    def add(self, record: dict) -> None:
        if "key" in record:
            with self.changed:
                self.records[tuple(record["key"])] = record
                self.changed.notify_all()

    def wait(self, keys: list[tuple]) -> list[dict | None]:
        """The records of `keys` once they are all in (or the sweep has ended without some)."""
        with self.changed:
            while not self.done.is_set() and any(k not in self.records for k in keys):
                self.changed.wait(0.2)  # a timeout, so Ctrl-C and SIGTERM reach the waiting thread
            return [self.records.get(k) for k in keys]


def payload_for(g: Group, profile: str, pairs: bool = False) -> dict:
    payload = {"backend": g.provider, "steps": steps(g.provider, profile),
               "measure_s": MEASURE_S[profile] if g.provider == "nccl" else CPU_MEASURE_S}
    if pairs:
        kind, count = ranks.pair_units(g.world_size, g.nodes)
        payload["pairs"] = {"units": kind, "count": count, "dtype": ranks.PAIR_DTYPE,
                            "nbytes": ranks.PAIR_BYTES[g.provider]}
    return payload


class State:
    def __init__(self, run):
        self.run = run
        self.sweep: Sweep | None = None


def _info(g: Group, target: Target) -> tuple[dict, bool]:
    """The params every row carries, and whether NVLink SHARP (NVLS) may run."""
    info = {"world_size": g.world_size, "nodes": g.nodes, "ranks_per_node": g.world_size // max(1, g.nodes),
            "launch": g.job.source if g.job else "local"}
    if g.provider != "nccl":
        return {**info, "host_threads": rank_threads(g.world_size)}, False  # each rank's (collective_worker.py)
    info["nccl_version"] = ".".join(map(str, _nccl_version()[:3]))
    info["nccl_env"] = {k: v for k, v in sorted(os.environ.items()) if k.startswith("NCCL_")}
    links, switch = nvlink_state(target.index)
    info["nvlinks_active"] = links  # normalization compares busbw with NVLink on one node with links up
    major = int((target.identity.get("compute_capability") or "0").split(".")[0] or 0)
    algo = os.environ.get("NCCL_ALGO", "").lower()
    # NVLink SHARP: Hopper and later behind NVSwitches, NCCL 2.17+, unless turned off.
    nvls = (major >= 9 and bool(switch) and _nccl_version()[:2] >= (2, 17)
            and os.environ.get("NCCL_NVLS_ENABLE", "1") != "0" and (not algo or "nvls" in algo))
    return info, nvls


def _nccl_version() -> tuple:
    try:
        import torch.cuda.nccl

        v = torch.cuda.nccl.version()
        return tuple(v) if isinstance(v, tuple) else (int(v) // 1000, int(v) % 1000 // 100, int(v) % 100)
    except Exception:  # CPU-only torch has no NCCL
        return ()


def nvlink_state(index: int | None) -> tuple[int | None, bool | None]:
    """(active NVLinks, whether a link ends at an NVSwitch) of CUDA device `index`; None where NVML cannot tell."""
    handle = nvml.handle(index)
    if handle is None:
        return None, None
    active = [link for link in topology.read_nvlinks(nvml.module(), handle) if link.active]
    kinds = [link.remote_type for link in active if link.remote_type]
    # Bindings without the remote-type call: 18 links (all of an SXM board's) mean switches.
    switch = "switch" in kinds if kinds else len(active) >= 18
    return len(active), switch


def _nccl_available() -> bool:
    import torch.distributed as dist

    return dist.is_available() and dist.is_nccl_available()


# ---------------------------------------------------------------- the family's contract


def waive(target: Target, case: Case, state: State) -> tuple[str, str] | None:
    g = group_for(target, state.run)
    if case.name == "group":
        return "skipped", f"measured as one group of {g.world_size} ranks; the rows are on cuda:{g.lead_index}"
    if g.skip:
        return "skipped", g.skip
    if g.provider == "nccl" and not _nccl_available():
        return "unsupported", "this torch build has no NCCL"
    return None


def measure(target: Target, case: Case, state: State) -> Timed | Status:
    """This case's record from the sweep (started by the first case), as soon as it is measured."""
    g = group_for(target, state.run)
    if state.sweep is None:
        info, nvls = _info(g, target)
        state.sweep = Sweep(info, nvls)
        state.sweep.start(g, state.run.profile, getattr(state.run.options, "collective_timeout_s", 300.0),
                          ranks.pairs_mode(state.run))
    if case.name == "peak":
        return _peak(case, g, state.sweep, state.run.profile)
    (rec,) = state.sweep.wait([(case.benchmark, case.dtype, case.name)])
    if rec is None:
        return Status("error", f"not measured: {state.sweep.failure or 'the workers ended without measuring it'}")
    if rec["status"] != "ok":
        return Status(rec["status"], rec["message"], {**state.sweep.info, "elements": rec["elements"]})
    if case.benchmark == ranks.PAIR_BENCHMARK:
        pair = {k: rec[k] for k in ("pair_names", "pair_ranks", "pair_size", "rank_time_median_s") if k in rec}
        return _timed(case, rec, g, state.sweep, {"elements": rec["elements"], **pair}, n=rec["pair_size"])
    return _timed(case, rec, g, state.sweep, {"elements": rec["elements"], **ranks.size_params(rec),
                                              "rank_names": rec.get("rank_names", [])})


def _timed(case: Case, rec: dict, g: Group, sweep: Sweep, params: dict, summary: bool = False,
           n: int | None = None) -> Timed:
    size, factor = rec["size_bytes"], busbw_factor(case.benchmark, n or g.world_size)
    result = timing.Timing(rec["samples_s"], rec["timer"], 1, list(rec.get("notes", [])))
    mean_s = sum(rec["samples_s"]) / len(rec["samples_s"])
    params = {**sweep.info, **params,
              "algbw_gb_per_s": size / result.median_s / 1e9,  # algbw = S / t (nccl-tests)
              "busbw_factor": factor,
              "time_mean_s": mean_s,  # nccl-tests prints the mean time: compare its busbw with busbw_mean_gb_per_s
              "busbw_mean_gb_per_s": size * factor / mean_s / 1e9,
              "ops": rec["ops"], "warmup_ops": rec["warmup_ops"]}
    # value = busbw = S * factor / median time; a peak row is a summary, not a point of the size curve
    measured = replace(case, work=size * factor, size_bytes="" if summary else size)
    notes = [NVLS_NOTE] if sweep.nvls and case.benchmark in ("all_reduce", ranks.PAIR_BENCHMARK) else []
    return Timed(result, params, dict(rec.get("telemetry", {})), notes, measured)


def _peak(case: Case, g: Group, sweep: Sweep, profile: str) -> Timed | Status:
    """Peak busbw of one collective and dtype, with the knee (smallest size at 80% of it) and the latency."""
    wanted = [tuple(s[:3]) for s in steps(g.provider, profile) if tuple(s[:2]) == (case.benchmark, case.dtype)]
    recs = [r for r in sweep.wait(wanted) if r is not None]
    ok = sorted((r for r in recs if r["status"] == "ok"), key=lambda r: r["size_bytes"])
    if len(recs) < len(wanted) or not ok:
        bad = next((r for r in recs if r["status"] == "wrong"), None)
        if len(recs) < len(wanted):
            return Status("error", f"sweep incomplete: {sweep.failure or 'a size is missing'}")
        return Status("wrong", bad["message"]) if bad else Status("skipped", next((r["message"] for r in recs),
                                                                                  "no size ran"))
    factor = busbw_factor(case.benchmark, g.world_size)

    def busbw(r: dict) -> float:
        return r["size_bytes"] * factor / timing.Timing(r["samples_s"], r["timer"]).median_s / 1e9

    best = max(ok, key=busbw)
    knee = next(r for r in ok if busbw(r) >= KNEE_FRACTION * busbw(best))
    smallest = ok[0]
    params = {"elements": best["elements"], "peak_case": best["key"][2], "peak_size_bytes": best["size_bytes"],
              "knee_fraction": KNEE_FRACTION, "knee_case": knee["key"][2], "knee_size_bytes": knee["size_bytes"],
              "knee_busbw_gb_per_s": busbw(knee), "latency_case": smallest["key"][2],
              "latency_size_bytes": smallest["size_bytes"],
              "latency_us": timing.Timing(smallest["samples_s"], smallest["timer"]).median_s * 1e6}
    timed = _timed(case, best, g, sweep, params, summary=True)
    note = ranks.slow_rank_note(recs, best.get("rank_names", []))
    if note:  # the rank the others waited for at most of this collective's sizes
        timed.notes.append(note)
        timed.params["slow_rank"] = ranks.slow_rank(recs)[0]
    return timed


def summary_lines(rows: list[dict]) -> list[str]:
    """Peak, knee and latency per collective; the slow rank; the pairs (bench/families/collective_summary.py)."""
    from .collective_summary import summary_lines as lines

    return lines(rows)


# ---------------------------------------------------------------- joined ranks other than local rank 0


def follow(job: launch.Job, options) -> int:
    """A rank of a torchrun / srun job other than local rank 0: take part in the collectives, write nothing.

    Exits 0 even when the family failed: local rank 0's CSV records why, and a non-zero
    exit would make torchrun stop local rank 0 before its other families ran.
    """
    if options.families and NAME not in options.families:
        print(f"cardbench: rank {job.rank} of a {job.source} job: local rank 0 measures this node")
        return 0
    cpu = options.device == "cpu" or not torch.cuda.is_available()
    try:
        device = "cpu" if cpu else f"cuda:{launch.local_device(job.local_rank, torch.cuda.device_count())}"
    except launch.LaunchError as e:
        print(f"cardbench: rank {job.rank}: {e}", file=sys.stderr)
        return 0
    g = Group("gloo" if cpu else "nccl", job.world_size, job.nodes, [device], job, None)
    import signal

    previous = signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    try:
        launch.run(WORKER, payload_for(g, options.profile, bool(getattr(options, "pairs", False))), job,
                   [{"rank": job.rank, "local_rank": job.local_rank, "device": device}],
                   options.collective_timeout_s, result_rank=None, host_store=False)
    except launch.WorkerFailure as e:
        print(f"cardbench: rank {job.rank}: the collective family ended: {e}", file=sys.stderr)
    finally:
        signal.signal(signal.SIGTERM, previous)
    return 0
