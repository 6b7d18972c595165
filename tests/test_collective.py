"""Collective family on the CPU: gloo across 2 and 4 local processes, the CSV a run writes,
joined mode under torchrun, a rank that dies or hangs, and the planning a GPU machine uses
(one GPU, several GPUs, NVLink normalization) with faked targets. GPU tests carry `gpu`.

Every test that starts processes is bounded: the family's own timeouts end a stuck job,
and the subprocess calls have a timeout on top.
"""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from bench.commands import accept
from bench.core import launch, normalize, specs, timing_multi
from bench.core.devices import Target, cpu_target, rank_threads
from bench.core.options import RunOptions
from bench.core.results import read_results
from bench.core.units import human_bytes
from bench.families import collective, collective_worker, memory
from helpers import make_run, measure, shipped_db

REPO = Path(__file__).resolve().parent.parent
KIB = 2**10
SMALL = {"quick": (KIB, 16 * KIB), "full": (KIB, 16 * KIB)}  # two sizes keep the process tests short


def cpu_env() -> dict:
    return dict(os.environ, CUDA_VISIBLE_DEVICES="", PYTHONPATH=str(REPO))


@pytest.fixture
def small_sweep(monkeypatch):
    monkeypatch.setattr(collective, "CPU_SIZES", SMALL)
    monkeypatch.setattr(collective, "CPU_MEASURE_S", 0.01)
    for name in ("WORLD_SIZE", "RANK", "SLURM_STEP_NUM_TASKS", "SLURM_PROCID"):
        monkeypatch.delenv(name, raising=False)
    yield


def run_family(target: Target, ranks: int, timeout_s: float = 60, targets=None) -> list[dict]:
    run = make_run(targets or [target], ranks=ranks, collective_timeout_s=timeout_s)
    return [measure(collective, target, c, run) for c in collective.cases(target, run)]


# ---------------------------------------------------------------- formulas and checks


@pytest.mark.parametrize("n, all_reduce, others", [(2, 1.0, 0.5), (4, 1.5, 0.75), (8, 1.75, 0.875)])
def test_busbw_factors_are_nccl_tests(n, all_reduce, others):
    assert collective.busbw_factor("all_reduce", n) == all_reduce  # 2(n-1)/n
    assert collective.busbw_factor("all_gather", n) == others  # (n-1)/n
    assert collective.busbw_factor("reduce_scatter", n) == others


def test_gather_and_scatter_messages_are_whole_chunks_per_rank():
    assert collective.elements("all_reduce", 8, 2, 8) == 4
    assert collective.elements("all_reduce", 1, 2, 8) == 1  # less than one element: one
    assert collective.elements("all_gather", 8, 2, 8) == 8  # at least one element per rank
    assert collective.elements("reduce_scatter", 1000, 4, 3) == 249  # 250 rounded down to 3 chunks


def expected_output(benchmark: str, rank: int, n: int, count: int, dtype: str) -> torch.Tensor:
    """What rank `rank` must hold after the collective, from its definition: rank q sends q+1
    (reduce-scatter: q+1 + (chunk mod 2) to each chunk)."""
    dt = collective.DTYPES[dtype]
    if benchmark == "all_reduce":
        return torch.full((count,), n * (n + 1) // 2, dtype=dt)
    if benchmark == "all_gather":
        return torch.arange(1, n + 1, dtype=dt).repeat_interleave(count // n)
    return torch.full((count // n,), n * (n + 1) // 2 + n * (rank % 2), dtype=dt)


@pytest.mark.parametrize("n", [2, 4, 21])
@pytest.mark.parametrize("which", collective.BENCHMARKS)
def test_each_rank_sends_rank_plus_one(which, n):
    for rank in (0, n - 1):
        inp = torch.empty(4 * n)
        collective_worker.fill_inputs(which, inp, rank, n)
        chunk_parity = torch.arange(n).repeat_interleave(4) % 2 if which == "reduce_scatter" else 0
        assert torch.equal(inp, rank + 1 + chunk_parity * torch.ones(4 * n))


@pytest.mark.parametrize("n", [2, 4, 8, 21])
@pytest.mark.parametrize("dtype", ["bf16", "fp32"])
@pytest.mark.parametrize("which", collective.BENCHMARKS)
def test_right_results_pass_the_check_exactly_and_wrong_ones_fail(which, dtype, n):
    count = 4 * n
    for rank in range(n):
        assert collective_worker.count_wrong(which, expected_output(which, rank, n, count, dtype), rank, n, dtype) == 0
    bad = expected_output(which, n - 1, n, count, dtype)
    bad[1] += 1  # one element off by one: the sums are exact, so it shows
    assert collective_worker.count_wrong(which, bad, n - 1, n, dtype) == 1
    if which == "all_gather":  # chunks in the wrong order show
        assert collective_worker.count_wrong(which, expected_output(which, 0, n, count, dtype).flip(0), 0, n, dtype) > 0
    if which == "reduce_scatter":  # rank 1's chunk delivered to rank 0 shows
        assert collective_worker.count_wrong(which, expected_output(which, 1, n, count, dtype), 0, n, dtype) == 4


def test_sums_past_the_exact_range_allow_the_ring_s_rounding_and_no_more():
    """bf16 holds integers exactly up to 256: 32 ranks sum to 528, and a ring adding in bf16
    rounds on the way; n unit roundoffs (2^-8 each) of the sum are allowed then, twice that is not."""
    n, dt = 32, collective.DTYPES["bf16"]
    ring = torch.zeros(64, dtype=dt)
    for q in range(n):
        ring += q + 1
    assert float(ring[0]) != n * (n + 1) // 2  # the ring's rounding shows...
    assert collective_worker.count_wrong("all_reduce", ring, 0, n, "bf16") == 0  # ...and is allowed
    bound = n * 2.0**-8 * 528
    assert collective_worker.count_wrong("all_reduce", torch.full((64,), 528 + 0.5 * bound), 0, n, "bf16") == 0
    assert collective_worker.count_wrong("all_reduce", torch.full((64,), 528 + 2 * bound), 0, n, "bf16") == 64
    exact = torch.full((64,), 3.0, dtype=dt)
    assert collective_worker.count_wrong("all_reduce", exact + 2.0**-6, 0, 2, "bf16") == 64  # one bf16 step off: no slack


def test_all_reduce_sum_is_n_times_n_plus_one_over_two():
    assert expected_output("all_reduce", 0, 4, 8, "bf16").tolist() == [10.0] * 8  # ranks send 1, 2, 3, 4
    assert collective_worker.expected_text("all_reduce", 0, 4) == "the sum 10 (rank r sends r+1)"
    assert collective_worker.expected_text("reduce_scatter", 1, 4) == (
        "14 (the sum over ranks of rank+1 + (chunk mod 2))")
    assert collective_worker.expected_text("all_gather", 1, 4) == "chunk q = q+1 (what rank q sent)"


# ---------------------------------------------------------------- launch plumbing


def test_slurm_nodelists_expand():
    assert launch.parse_nodelist("gpu[01-03,07],login2") == ["gpu01", "gpu02", "gpu03", "gpu07", "login2"]
    assert launch.parse_nodelist("node-[8-10]-ib") == ["node-8-ib", "node-9-ib", "node-10-ib"]
    assert launch.parse_tasks_per_node("8(x2),4") == [8, 8, 4]


def test_joined_job_from_torchrun_and_srun_environments():
    torchrun = {"RANK": "3", "WORLD_SIZE": "16", "LOCAL_RANK": "3", "LOCAL_WORLD_SIZE": "8", "MASTER_ADDR": "n1",
                "MASTER_PORT": "29400", "TORCHELASTIC_RUN_ID": "job7", "TORCHELASTIC_USE_AGENT_STORE": "True"}
    job = launch.joined_job(torchrun)
    assert (job.rank, job.world_size, job.local_rank, job.nodes, job.source, job.agent_store) == \
        (3, 16, 3, 2, "torchrun", True)
    srun = {"SLURM_PROCID": "9", "SLURM_STEP_NUM_TASKS": "16", "SLURM_LOCALID": "1", "SLURM_NODEID": "1",
            "SLURM_STEP_NODELIST": "gpu[07-08]", "SLURM_STEP_TASKS_PER_NODE": "8(x2)", "SLURM_JOB_ID": "4242",
            "SLURM_STEP_NUM_NODES": "2"}
    job = launch.joined_job(srun)
    assert (job.rank, job.world_size, job.local_rank, job.local_world_size, job.master_addr, job.master_port) == \
        (9, 16, 1, 8, "gpu07", 20000 + 4242)
    # sbatch's own shell (no srun step) and one-rank jobs are not jobs to join
    assert launch.joined_job({"SLURM_PROCID": "0", "SLURM_NTASKS": "8", "SLURM_JOB_NODELIST": "gpu07"}) is None
    assert launch.joined_job({**torchrun, "WORLD_SIZE": "1", "RANK": "0"}) is None
    assert launch.joined_job({}) is None


def test_each_rank_binds_its_local_rank_gpu():
    assert launch.local_device(3, 8) == 3
    assert launch.local_device(5, 1) == 0  # srun --gpus-per-task=1: each task sees only its own GPU
    with pytest.raises(launch.LaunchError, match="local rank 5"):
        launch.local_device(5, 4)


# ---------------------------------------------------------------- gloo across local processes


@pytest.mark.parametrize("n", [2, 4])
def test_gloo_ranks_sum_correctly_and_busbw_is_algbw_times_the_factor(small_sweep, n):
    rows = run_family(cpu_target(), ranks=n)
    factor = {2: {"all_reduce": 1.0, "other": 0.5}, 4: {"all_reduce": 1.5, "other": 0.75}}[n]
    assert {r["status"] for r in rows} == {"ok"}, [r["message"] for r in rows if r["status"] != "ok"]
    assert len(rows) == len({(r["benchmark"], r["dtype"], r["case"]) for r in rows}) == 3 * 2 * 3
    for r in rows:
        p = json.loads(r["params"])
        f = factor["all_reduce" if r["benchmark"] == "all_reduce" else "other"]
        assert p["world_size"] == n and p["busbw_factor"] == f
        assert p["host_threads"] == rank_threads(n)  # each rank's threads, set in the worker
        assert r["metric"] == "busbw" and r["unit"] == "GB/s" and r["provider"] == "gloo"
        assert r["value"] == pytest.approx(p["algbw_gb_per_s"] * f, rel=1e-12)
        assert r["value"] == pytest.approx(r["work"] / r["time_s"] / 1e9, rel=1e-12)
        samples = [float(s) for s in r["samples"].split(";")]
        assert len(samples) == r["n_samples"] >= timing_multi.MIN_OPS
        if r["case"] != "peak":
            assert p["algbw_gb_per_s"] == pytest.approx(r["size_bytes"] / r["time_s"] / 1e9, rel=1e-12)
            assert r["work"] == r["size_bytes"] * f
    for b in collective.BENCHMARKS:
        for d in collective.DTYPES:
            group = [r for r in rows if r["benchmark"] == b and r["dtype"] == d]
            peak = next(r for r in group if r["case"] == "peak")
            assert peak["value"] == max(r["value"] for r in group) and peak["size_bytes"] == ""
            p = json.loads(peak["params"])
            assert p["latency_case"] == "size-1KiB" and p["latency_us"] > 0
            assert p["knee_busbw_gb_per_s"] >= 0.8 * peak["value"]


def test_cpu_run_writes_one_csv_with_one_row_per_measurement(tmp_path):
    p = subprocess.run([sys.executable, "-m", "bench", "run", "--device", "cpu", "--families", "collective",
                        "--out", str(tmp_path), "--collective-timeout", "60"],
                       cwd=REPO, env=cpu_env(), capture_output=True, text=True, timeout=180)
    assert p.returncode == 0, p.stderr
    (csv,) = tmp_path.glob("*.csv")
    res = read_results(csv)
    assert res.complete and p.stdout.count("results: ") == 1
    keys = [(r["benchmark"], r["dtype"], r["case"]) for r in res.rows]
    assert len(keys) == len(set(keys)) == 3 * 2 * (len(collective.CPU_SIZES["quick"]) + 1)
    assert {r["status"] for r in res.rows} == {"ok"}
    assert {json.loads(r["params"])["world_size"] for r in res.rows} == {2}
    assert "all_reduce fp32, 2 ranks (gloo): peak busbw" in p.stdout


def test_ctrl_c_during_the_collectives_keeps_the_sizes_measured_so_far(tmp_path):
    """Rows reach the disk as each size is measured: an interrupt while rank 1 is stuck in the
    all-gathers leaves every all-reduce row, in a file marked incomplete."""
    from helpers import sigint_default

    script = ("import sys; from bench import cli; from bench.families import collective; "
              "collective.WORKER = 'tests.fake_workers:hanging_worker'; "
              f"collective.CPU_SIZES = {SMALL!r}; collective.CPU_MEASURE_S = 0.01; "
              f"sys.exit(cli.main(['run', '--device', 'cpu', '--families', 'collective', '--out', {str(tmp_path)!r}]))")
    p = subprocess.Popen([sys.executable, "-c", script], cwd=REPO, env=cpu_env(), text=True, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, preexec_fn=sigint_default)
    all_reduce_rows = len(collective.DTYPES) * (len(SMALL["quick"]) + 1)  # each size and the peak
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        files = list(tmp_path.glob("*.csv"))
        if files and files[0].read_text().count("\n") > all_reduce_rows:  # the header, then the rows
            break
        assert p.poll() is None, p.communicate()
        time.sleep(0.05)
    time.sleep(0.5)  # rank 1 is stuck in the first all-gather: no row can come
    p.send_signal(signal.SIGINT)
    _, stderr = p.communicate(timeout=60)
    assert p.returncode == 130, stderr[-3000:]
    res = read_results(files[0])
    assert not res.complete and res.end_message == f"interrupted by SIGINT after {all_reduce_rows} rows"
    assert [(r["benchmark"], r["status"]) for r in res.rows] == [("all_reduce", "ok")] * all_reduce_rows
    assert f"results so far (marked incomplete): {files[0]}" in stderr


def test_torchrun_joined_job_writes_one_csv_from_local_rank_0(tmp_path):
    torchrun = Path(sys.executable).with_name("torchrun")
    if not torchrun.exists():
        pytest.skip("torchrun is not next to this Python")
    p = subprocess.run([str(torchrun), "--standalone", "--nproc-per-node", "2", "-m", "bench", "run",
                        "--device", "cpu", "--families", "transfer,collective", "--out", str(tmp_path),
                        "--collective-timeout", "60"],
                       cwd=REPO, env=cpu_env(), capture_output=True, text=True, timeout=240)
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-3000:]
    (csv,) = tmp_path.glob("*.csv")  # one file: only local rank 0 writes
    res = read_results(csv)
    assert res.complete and p.stdout.count("results: ") == 1
    families = [r["family"] for r in res.rows]
    # the collectives first (the other rank waits for them), then local rank 0 alone measures the rest
    assert families == sorted(families, key=lambda f: f != "collective") and "transfer" in families
    coll = [r for r in res.rows if r["family"] == "collective"]
    keys = [(r["benchmark"], r["dtype"], r["case"]) for r in coll]
    assert len(keys) == len(set(keys)) == 3 * 2 * (len(collective.CPU_SIZES["quick"]) + 1)
    assert {r["status"] for r in coll} == {"ok"}
    assert {(q["launch"], q["world_size"]) for q in map(json.loads, (r["params"] for r in coll))} == {("torchrun", 2)}
    h2d = [r for r in res.rows if r["family"] == "transfer" and r["benchmark"] == "h2d"]
    assert h2d and {r["status"] for r in h2d} == {"skipped"}  # once: rank 1 measured nothing else
    assert len(h2d) == len({r["case"] for r in h2d})


# ---------------------------------------------------------------- failures


def _worker_children() -> list[int]:
    """Worker processes this test process started that are still alive."""
    out = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            continue
        if int(stat.rsplit(")", 1)[1].split()[1]) == os.getpid() and b"bench.core.launch" in cmd:
            out.append(int(pid))
    return out


def test_a_rank_that_exits_ends_the_family_naming_it_and_the_run_keeps_other_rows(small_sweep, monkeypatch,
                                                                                   tmp_path):
    from bench.commands import run

    monkeypatch.setattr(collective, "WORKER", "tests.fake_workers:exit_early_worker")
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    monkeypatch.setattr(memory, "L2_FACTOR", 0)  # a 4 MiB memory plateau: the family only has to run
    monkeypatch.setattr(memory, "CPU_PLATEAU_MIN", 4 * 2**20)
    options = RunOptions(device="cpu", families=("collective", "memory"), out=str(tmp_path), argv=("run",),
                         ranks=2, collective_timeout_s=60)
    t0 = time.monotonic()
    code, path = run.execute(options)
    assert time.monotonic() - t0 < 120
    res = read_results(path)
    assert code == 1 and res.complete
    coll = [r for r in res.rows if r["family"] == "collective"]
    by = {(r["benchmark"], r["dtype"], r["case"]): r for r in coll}
    assert {r["status"] for r in coll if r["benchmark"] == "all_reduce"} == {"ok"}  # measured before: kept
    failed = by[("all_gather", "bf16", "size-1KiB")]
    assert failed["status"] == "error"
    assert f"rank 1 ({os.uname().nodename}) exited with code 3" in failed["message"]
    assert {r["status"] for r in coll if r["benchmark"] != "all_reduce"} == {"error"}
    memory_rows = [r for r in res.rows if r["family"] == "memory" and r["provider"] == "torch"]
    assert memory_rows and {r["status"] for r in memory_rows} == {"ok"}  # the family after it still ran
    assert _worker_children() == []


def test_a_rank_that_sends_a_wrong_value_gives_wrong_rows_without_a_value(small_sweep, monkeypatch):
    monkeypatch.setattr(collective, "WORKER", "tests.fake_workers:wrong_sum_worker")
    rows = run_family(cpu_target(), ranks=2)
    by = {(r["benchmark"], r["dtype"], r["case"]): r for r in rows}
    for dtype in collective.DTYPES:
        for nbytes in SMALL["quick"]:
            row = by[("all_reduce", dtype, f"size-{human_bytes(nbytes)}")]
            count = nbytes // collective.ELEMENT_BYTES[dtype]
            assert row["status"] == "wrong" and "value" not in row
            # every rank sees 1 + 3 = 4 where the sum must be 1 + 2 = 3; the first rank is named
            assert row["message"] == (f"all_reduce {dtype}: rank 0: {count} of {count} output elements differ "
                                      "from the sum 3 (rank r sends r+1)")
        assert by[("all_reduce", dtype, "peak")]["status"] == "wrong"
        # reduce-scatter: only rank 1's chunk is off, and rank 1 is named with what it had to receive
        scatter = by[("reduce_scatter", dtype, "size-1KiB")]
        count = KIB // collective.ELEMENT_BYTES[dtype] // 2
        assert scatter["message"] == (f"reduce_scatter {dtype}: rank 1: {count} of {count} output elements differ "
                                      "from 5 (the sum over ranks of rank+1 + (chunk mod 2))")
    assert {r["status"] for r in rows if r["benchmark"] == "all_gather"} == {"ok"}  # the other collective ran


def test_a_rank_that_hangs_is_named_after_the_timeout_and_no_process_is_left(small_sweep, monkeypatch):
    monkeypatch.setattr(collective, "WORKER", "tests.fake_workers:hanging_worker")
    t0 = time.monotonic()
    rows = run_family(cpu_target(), ranks=2, timeout_s=8)
    assert time.monotonic() - t0 < 60
    failed = next(r for r in rows if r["benchmark"] == "all_gather")
    assert failed["status"] == "error"
    assert "rank 1" in failed["message"] and "stopped making progress" in failed["message"], failed["message"]
    assert _worker_children() == []


# ---------------------------------------------------------------- GPU planning, faked


def fake_gpu(index: int, name: str = "NVIDIA H100 80GB HBM3") -> Target:
    """A Target that looks like a GPU to the planner (nothing runs on it)."""
    t = Target(torch.device("cuda", index), index, {"device_name": name, "device_uuid": f"GPU-fake-{index}",
                                                    "compute_capability": "9.0"})
    t.spec = specs.load().match(name)
    return t


def test_one_gpu_gives_skipped_rows_that_accept_calls_not_applicable(small_sweep):
    gpu = fake_gpu(0)
    rows = run_family(gpu, ranks=2)
    assert len(rows) == 6 and {r["status"] for r in rows} == {"skipped"}
    assert all(r["message"].startswith("collectives need two or more ranks") for r in rows)
    assert {r["provider"] for r in rows} == {"nccl"} and {r["device_index"] for r in rows} == {0}
    check = next(c for c in accept.load_policy().checks if c.name == "allreduce-busbw")
    text_rows = [{k: "" if v is None else str(v) for k, v in r.items()} for r in rows]
    assert accept.judge_check(check, text_rows).verdict == accept.NOT_APPLICABLE


def test_several_gpus_form_one_group_with_rows_on_the_first(small_sweep):
    gpus = [fake_gpu(i) for i in range(4)]
    run = make_run(gpus, ranks=2, collective_timeout_s=60)
    lead = collective.cases(gpus[0], run)
    assert len(lead) == 3 * 2 * (len(collective.GPU_SIZES["quick"]) + 1)
    assert {c.provider for c in lead} == {"nccl"}
    assert collective.GPU_SIZES["quick"][-1] >= 2**30 and collective.GPU_SIZES["full"][-1] >= 2**30
    other = collective.cases(gpus[2], run)
    assert [c.name for c in other] == ["group"] * 3
    row = measure(collective, gpus[2], other[0], run)
    assert row["status"] == "skipped" and "one group of 4 ranks" in row["message"] and "cuda:0" in row["message"]


def fake_sweep(n: int, nvls: bool, info: dict) -> collective.Sweep:
    records = {}
    for k, size in enumerate(collective.GPU_SIZES["quick"]):
        case = f"size-{human_bytes(size)}"
        t = 1e-5 + size / 200e9  # a 10 us latency and 200 GB/s algbw
        records[("all_reduce", "bf16", case)] = {
            "key": ["all_reduce", "bf16", case], "size_bytes": size, "elements": size // 2, "status": "ok",
            "samples_s": [t * 0.99, t, t * 1.01], "timer": "cuda_events+hold", "ops": 3, "warmup_ops": 5}
    return collective.Sweep({**info, "world_size": n, "nodes": 1}, nvls, records, done=True)


def test_busbw_is_normalized_against_nvlink_per_direction_and_nvls_is_noted(small_sweep, monkeypatch):
    gpus = [fake_gpu(i) for i in range(8)]
    run = make_run(gpus, ranks=2, collective_timeout_s=60)
    monkeypatch.setattr(collective, "nvlink_state", lambda index: (18, True))
    monkeypatch.setattr(collective, "_nccl_version", lambda: (2, 27, 3))
    g = collective.group_for(gpus[0], run)
    info, nvls = collective._info(g, gpus[0])
    assert info["nvlinks_active"] == 18 and info["nodes"] == 1 and nvls
    monkeypatch.setattr(collective, "_nccl_available", lambda: True)
    state = collective.State(run)
    state.sweep = fake_sweep(8, nvls, info)
    run.family_states["collective"] = state
    rows = [measure(collective, gpus[0], c, run) for c in collective.cases(gpus[0], run)
            if c.benchmark == "all_reduce" and c.dtype == "bf16"]
    peak = rows[-1]
    assert peak["case"] == "peak" and peak["status"] == "ok"
    assert peak["spec_value"] == 450.0 and peak["spec_figure"] == "nvlink_per_direction"
    size = collective.GPU_SIZES["quick"][-1]
    busbw = size * 1.75 / (1e-5 + size / 200e9) / 1e9
    assert peak["value"] == pytest.approx(busbw) and peak["pct_of_spec"] == pytest.approx(100 * busbw / 450)
    assert collective.NVLS_NOTE in peak["message"]
    p = json.loads(peak["params"])
    assert p["latency_case"] == "size-8B" and p["latency_us"] == pytest.approx(10, rel=1e-3)
    assert p["knee_size_bytes"] == 32 * 2**20  # 8 B and 1 MiB are latency-bound, 32 MiB is at 95%
    check = next(c for c in accept.load_policy().checks if c.name == "allreduce-busbw")
    text_rows = [{k: "" if v is None else str(v) for k, v in r.items()} for r in rows]
    assert accept.judge_check(check, text_rows).verdict == accept.PASS  # 77% of 450 GB/s
    assert any("peak busbw" in line for line in collective.summary_lines(text_rows))
    # Across nodes the bottleneck is the network: no NVLink claim then.
    monkeypatch.setattr(collective.launch, "joined_job", lambda env=None: launch.Job(
        0, 16, 0, 8, 2, "n1", 29400, "torchrun", "x", True))
    across, _ = collective._info(collective.group_for(gpus[0], run), gpus[0])
    assert across["nodes"] == 2
    two_nodes = dict(text_rows[-1], params=json.dumps({**p, "nodes": across["nodes"]}))
    assert normalize.columns(two_nodes, gpus[0].spec, shipped_db())["spec_value"] == ""


# ---------------------------------------------------------------- on a GPU


@pytest.mark.gpu
def test_nccl_worker_runs_the_gpu_timing_path_on_one_rank():
    """One NCCL rank: nothing to compare busbw with, but the CUDA-event timing and the checks run."""
    payload = {"backend": "nccl", "measure_s": 0.02,
               "steps": [[b, d, "size-1MiB", 2**20] for b in collective.BENCHMARKS for d in collective.DTYPES]}
    records = launch.run(collective.WORKER, payload, launch.local_job(1),
                         [{"rank": 0, "local_rank": 0, "device": "cuda:0"}], 120, result_rank=0, host_store=True)
    assert len(records) == 6 and {r["status"] for r in records} == {"ok"}, records
    assert {r["timer"] for r in records} <= {"cuda_events+hold", "cuda_events"}
    assert all(len(r["samples_s"]) >= timing_multi.MIN_OPS and min(r["samples_s"]) > 0 for r in records)


@pytest.mark.gpu
def test_every_visible_gpu_runs_the_family(tmp_path):
    """One GPU: skipped rows naming the reason; two or more: verified NCCL rows with busbw."""
    env = dict(os.environ, PYTHONPATH=str(REPO))
    p = subprocess.run([sys.executable, "-m", "bench", "run", "--families", "collective", "--out", str(tmp_path),
                        "--collective-timeout", "120"], cwd=REPO, env=env, capture_output=True, text=True,
                       timeout=600)
    assert p.returncode == 0, p.stderr[-3000:]
    rows = [r for r in read_results(next(tmp_path.glob("*.csv"))).rows if r["device_index"] == "0"]
    if torch.cuda.device_count() < 2:
        assert {r["status"] for r in rows} == {"skipped"}
        assert "collectives need two or more ranks" in rows[0]["message"]
    else:
        assert {r["status"] for r in rows} == {"ok"}
        assert all(float(r["value"]) > 0 for r in rows)


def test_only_nccl_on_one_node_with_nvlink_up_is_held_to_nvlink():
    entry = specs.load().find("H100 SXM5 80GB")

    def spec_value(provider="nccl", **params):
        row = {"family": "collective", "benchmark": "all_reduce", "provider": provider, "status": "ok",
               "value": "300.0", "unit": "GB/s", "params": json.dumps(params)}
        cols = normalize.columns(row, entry, shipped_db())
        assert cols["spec_entry"] == "H100 SXM5 80GB"  # the card is named, compared or not
        return cols["spec_value"]

    assert spec_value(nvlinks_active=18, nodes=1) == 450.0
    assert spec_value("gloo", nvlinks_active=18, nodes=1) == ""  # host processes: no NVLink in the path
    assert spec_value(nvlinks_active=0, nodes=1) == ""  # links down or none: PCIe, not NVLink
    assert spec_value(nvlinks_active=18, nodes=2) == spec_value(nvlinks_active=18) == ""  # the network decides
