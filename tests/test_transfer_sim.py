"""The transfer family's GPU code paths driven on the CPU through a simulated torch.cuda.

Streams and events are stand-ins (an event records the host clock; a copy runs when
issued), tensors live on the host and "pinned" memory is ordinary memory. What this
checks: buffers, verification, the both-ways measurement shared by three rows, peer
copies, statuses, row contents and the results file. What it cannot check (real
asynchrony, copy engines, event timing, pinned memory): tests/test_transfer_gpu.py.
"""
import contextlib
import json
import time
import types

import pytest
import torch

from bench.core import harness, specs, timing, timing_multi
from bench.core.devices import Target
from bench.core.results import ResultsWriter, read_results
from bench.families import transfer, transfer_host, transfer_p2p
from helpers import make_run
from test_telemetry import H100_IDENTITY

MIB, GIB = 2**20, 2**30
H100_SXM = specs.load().find("H100 SXM5 80GB")


class Event:
    def __init__(self, enable_timing=False):
        self.t = None

    def record(self, stream=None):
        self.t = time.perf_counter()

    def elapsed_time(self, end) -> float:
        return (end.t - self.t) * 1e3  # ms, as torch.cuda.Event

    def query(self) -> bool:
        return False  # the simulated spin kernel always outlasts the host's queueing


class Stream:
    def __init__(self, device=None):
        self.device = device
        self.waits = 0

    def wait_event(self, event):
        self.waits += 1

    def synchronize(self):
        pass


def fake_cuda(gpus: int, peer_access: bool = True) -> types.SimpleNamespace:
    return types.SimpleNamespace(
        Event=Event, Stream=Stream, stream=lambda s: contextlib.nullcontext(), device=lambda d: contextlib.nullcontext(),
        current_stream=lambda device=None: Stream(device),
        synchronize=lambda device=None: None, _sleep=lambda cycles: None, empty_cache=lambda: None,
        can_device_access_peer=lambda a, b: peer_access, is_available=lambda: True, device_count=lambda: gpus)


class SimTorch(types.ModuleType):
    """torch, with a simulated torch.cuda; device tensors on the host; pin_memory ignored."""

    def __getattr__(self, name):
        return getattr(torch, name)


@pytest.fixture
def sim(monkeypatch):
    st = SimTorch("simtorch")
    st.cuda = fake_cuda(2)
    st.device = lambda *args: torch.device("cpu")
    st.empty = lambda *a, pin_memory=False, **k: torch.empty(*a, **k)
    st.zeros = lambda *a, pin_memory=False, **k: torch.zeros(*a, **k)
    for module in (transfer, transfer_host, transfer_p2p):
        monkeypatch.setattr(module, "torch", st)
    monkeypatch.setattr(timing, "torch", st)  # its _sleep is the simulated spin kernel
    monkeypatch.setattr(timing_multi, "torch", st)
    return st


class SimGpu(Target):
    @property
    def is_cuda(self) -> bool:
        return True


def gpu(index=0) -> SimGpu:
    t = SimGpu(torch.device("cpu"), index, dict(H100_IDENTITY), H100_SXM, host_memory_bytes=256 * GIB)
    t.free_bytes = lambda: 80 * GIB
    return t


def case(benchmark, memory="pinned", nbytes=MIB, peer=None, buffer=None, device=0):
    return transfer.make_case(transfer.Copy(benchmark, memory, nbytes, device, peer, buffer or nbytes))


def run_case(target, c, state=None):
    """One case through the harness, in a run of two (simulated) GPUs, sharing `state` if given."""
    run = make_run([target], visible_gpus=2)
    run.family_states["transfer"] = state if state is not None else transfer.State(run)
    run.family_states["transfer"].run = run
    return harness.run_case(transfer, target, c, run)


def ok(row):
    assert row["status"] == "ok", (row["benchmark"], row["case"], row["status"], row["message"])
    return row


@pytest.mark.parametrize("memory", ["pinned", "pageable"])
def test_one_way_rows(sim, memory):
    for b in ("h2d", "d2h"):
        row = ok(run_case(gpu(), case(b, memory)))
        assert row["value"] > 0 and row["work"] == MIB and row["size_bytes"] == MIB
        assert row["case"] == f"{memory}-1MiB" and row["device_index"] == 0
        assert row["spec_figure"] == "pcie_per_direction" and row["spec_value"] == pytest.approx(63.0154, abs=1e-3)
        assert row["pct_of_spec"] == pytest.approx(100 * row["value"] / row["spec_value"])
        assert row["derived_peak"] == ""  # no NVML: no trained link to compare with
        params = json.loads(row["params"])
        assert params["direction"] == b and params["memory"] == memory and params["bidirectional"] is False
        assert params["numa_local"] is True and "process_cpus" in params


def test_both_ways_measured_once_for_three_rows(sim, monkeypatch):
    calls = []
    real = transfer_host._measure_both_ways
    monkeypatch.setattr(transfer_host, "_measure_both_ways", lambda *a: calls.append(1) or real(*a))
    tuned = transfer.State()
    rows = {b: ok(run_case(gpu(), case(b), tuned)) for b in ("h2d_bidir", "d2h_bidir", "bidir_total")}
    assert len(calls) == 1
    assert json.loads(rows["h2d_bidir"]["params"])["direction"] == "h2d"
    assert json.loads(rows["bidir_total"]["params"])["direction"] == "both"
    total = rows["bidir_total"]
    assert total["work"] == 2 * MIB and total["spec_figure"] == "pcie_both_directions"
    assert total["spec_value"] == pytest.approx(2 * 63.0154, abs=1e-3)
    assert total["n_samples"] == rows["h2d_bidir"]["n_samples"] == rows["d2h_bidir"]["n_samples"]
    # per sample, total = 2n / the slower direction's time
    a = [float(x) for x in rows["h2d_bidir"]["samples"].split(";")]
    b = [float(x) for x in rows["d2h_bidir"]["samples"].split(";")]
    t = [float(x) for x in total["samples"].split(";")]
    assert t == pytest.approx([2 * min(x, y) for x, y in zip(a, b)])  # GB/s: 2n / max(t_h2d, t_d2h)


def test_pageable_both_ways_uses_two_threads(sim):
    tuned = transfer.State()
    row = ok(run_case(gpu(), case("h2d_bidir", "pageable"), tuned))
    assert "host threads" in json.loads(row["params"])["timing"]
    assert row["n_samples"] >= 10


def test_a_copy_that_does_nothing_is_wrong(sim, monkeypatch):
    real = transfer_host._copies

    def broken(target, c, tuned):
        b, h2d, d2h = real(target, c, tuned)
        return b, h2d, (lambda: None)
    monkeypatch.setattr(transfer_host, "_copies", broken)
    row = run_case(gpu(), case("d2h"))
    assert row["status"] == "wrong" and row["message"].startswith("d2h: ") and "value" not in row
    assert ok(run_case(gpu(), case("h2d")))  # the other direction still copies
    tuned = transfer.State()
    rows = [run_case(gpu(), case(b), tuned) for b in ("h2d_bidir", "d2h_bidir", "bidir_total")]
    assert [r["status"] for r in rows] == ["wrong"] * 3 and len({r["message"] for r in rows}) == 1


def test_a_copy_that_corrupts_during_timing_is_wrong_after_timing(sim, monkeypatch):
    real = transfer_host._copies

    def flaky(target, c, tuned):
        b, h2d, d2h = real(target, c, tuned)
        n = [0]

        def copy():
            d2h()
            n[0] += 1
            if n[0] > 1:  # fine during the check, corrupt once timed
                b.host_dst[0] ^= 1
        return b, h2d, copy
    monkeypatch.setattr(transfer_host, "_copies", flaky)
    row = run_case(gpu(), case("d2h"))
    assert row["status"] == "wrong" and row["message"].startswith("after timing: d2h: 1 of")


def test_a_crash_is_an_error_row_shared_by_the_three_bidir_rows(sim, monkeypatch):
    def crash(*a):
        raise RuntimeError("CUDA error: an illegal memory access was encountered")
    monkeypatch.setattr(transfer_host, "_copies", crash)
    tuned = transfer.State()
    rows = [run_case(gpu(), case(b), tuned) for b in ("h2d", "h2d_bidir", "d2h_bidir", "bidir_total")]
    assert [r["status"] for r in rows] == ["error"] * 4
    assert rows[1]["message"] == "RuntimeError: CUDA error: an illegal memory access was encountered"


def test_buffers_are_allocated_once_per_kind_and_freed_after_it(sim, monkeypatch):
    made = []
    real = transfer_host.random_bytes
    monkeypatch.setattr(transfer_host, "random_bytes", lambda n, d, pin=False: made.append((n, pin)) or real(n, d, pin))
    tuned = transfer.State()
    plan = [case(b, kind, n, buffer=2 * MIB) for kind in ("pinned", "pageable") for n in (MIB, 2 * MIB)
            for b in transfer.HOST_BENCHMARKS]
    for c in plan:
        ok(run_case(gpu(), c, tuned))
        if c.spec.memory == "pinned":
            assert tuned.buffers.key == ("cpu", "pinned", 2 * MIB)
    assert made == [(2 * MIB, True), (2 * MIB, False), (2 * MIB, False), (2 * MIB, False)]  # host src, device src
    assert tuned.buffers is None  # freed after the last pageable case


def test_peer_copies_and_their_matrices(sim, tmp_path):
    tuned = transfer.State()
    rows = []
    for src, dst in ((0, 1), (1, 0)):
        for b in ("p2p", "p2p_bidir"):
            c = case(b, "device", MIB, dst, MIB, device=src)
            rows.append(ok(run_case(gpu(src), c, tuned)))
        rows.append(ok(run_case(gpu(src), case("p2p_latency", "device", 16, dst, 16, device=src), tuned)))
    assert len([k for k in tuned.shared if k[0] == "p2p_bidir"]) == 1  # one both-ways run for the pair
    p2p = rows[0]
    params = json.loads(p2p["params"])
    assert (params["src"], params["dst"], params["path"], params["peer_access_torch"]) == ("cuda:0", "cuda:1", "?", True)
    assert "gpu_numa_node" in params and "process_cpus" in params
    assert p2p["case"] == "cuda:0->cuda:1-1MiB" and p2p["spec_figure"] == "pcie_per_direction"  # no NVLink seen
    lat = rows[2]
    assert lat["metric"] == "latency" and lat["unit"] == "us" and lat["value"] > 0 and lat["spec_figure"] == ""
    assert lat["case"] == "cuda:0->cuda:1-16B"
    writer = ResultsWriter(tmp_path / "p2p.csv", {})
    for r in rows:
        writer.write(r)
    writer.close()
    assert read_results(tmp_path / "p2p.csv").complete
    text = "\n".join(transfer.summary_lines(rows))
    assert "p2p one way, GB/s, 1MiB" in text and "p2p latency of a 16-byte copy, us" in text
    assert "? yes" in text


def test_no_peer_access_is_noted(sim):
    sim.cuda = fake_cuda(2, peer_access=False)
    row = ok(run_case(gpu(), case("p2p", "device", MIB, 1, MIB)))
    assert "no peer access (torch): the driver stages the copy through host memory" in row["message"]


def test_plan_rows_end_to_end(sim, monkeypatch, tmp_path):
    """A whole (tiny) plan for two simulated GPUs: every row ok, one file, the summary prints."""
    monkeypatch.setattr(transfer, "size_cap", lambda t: (MIB, "the test's cap"))
    tuned = transfer.State()
    rows = [run_case(gpu(i), c, tuned) for i in (0, 1) for c in transfer.cases(gpu(i), make_run([], visible_gpus=2))]
    skipped = [r for r in rows if r["status"] == "skipped"]
    assert {r["status"] for r in rows if r not in skipped} == {"ok"}
    assert {r["message"] for r in skipped} == {f"{s} copies not measured: the test's cap (buffers take 8x a copy)"
                                               for s in ("256MiB", "1GiB")}
    assert len(rows) == 2 * (2 * 5 + 3) + len(skipped) and len(skipped) == 2 * (2 * 2 * 5 + 2)
    writer = ResultsWriter(tmp_path / "run.csv", {})
    for r in rows:
        writer.write(r)
    writer.close()
    df = read_results(tmp_path / "run.csv").frame()
    assert set(df["benchmark"]) == set(transfer.ALL_BENCHMARKS)
    assert transfer.summary_lines(rows)[1].startswith("host<->device copies")


def test_nvlink_pair_is_normalized_against_nvlink(sim, monkeypatch):
    """The H100 NVL bridge pair of the topology fixture, two of GPU0's twelve links down."""
    from test_telemetry import install
    from test_topology import machine_nvml

    def two_down(m):
        for link in m["gpus"][0]["nvlinks"][:2]:
            link["state"] = 0
    install(monkeypatch, machine_nvml("h100_nvl_pair", two_down))
    row = ok(run_case(gpu(0), case("p2p", "device", MIB, 1, MIB)))
    params = json.loads(row["params"])
    assert (params["path"], params["nvlinks"], params["nvlink_generation"]) == ("NV10", 10, 4)
    assert params["p2p_nvml"] == {"read": "ok", "write": "ok", "nvlink": "ok"}
    assert row["spec_figure"] == "nvlink_per_direction" and row["spec_value"] == 450.0  # the entry given (SXM5)
    assert row["derived_peak"] == pytest.approx(250.0)  # 10 links x 25 GB/s
    assert row["pcie_gen_current"] == ""  # NVLink copies do not load the PCIe link
    assert "cuda:0: NVLink: 2 of 12 links down" in row["message"]


def test_pcie_pair_across_sockets_reads_both_links(sim, monkeypatch):
    from test_telemetry import install
    from test_topology import machine_nvml

    install(monkeypatch, machine_nvml("pcie_4_two_sockets"))
    monkeypatch.setattr(transfer.torch, "cuda", fake_cuda(4, peer_access=False))
    row = ok(run_case(gpu(0), case("p2p", "device", MIB, 3, MIB)))
    params = json.loads(row["params"])
    assert (params["path"], params["p2p_nvml"]["read"], params["peer_access_torch"]) == (
        "SYS", "IOH topology not supported", False)
    assert row["spec_figure"] == "pcie_per_direction"
    # the fake's links never train up: the copy is compared with Gen1 x16 and flagged on both cards
    assert row["derived_peak"] == pytest.approx(4.0) and row["pcie_gen_current"] == "1"
    assert params["link_under_load"] == {"cuda:0": "Gen1 x16", "cuda:3": "Gen1 x16"}
    assert "no peer access (torch)" in row["message"]
    assert "PCIe link trained at Gen1 x16, the card supports Gen5 x16 (read during this transfer)" in row["message"]
    assert "cuda:3: PCIe link trained at Gen1 x16" in row["message"]


def test_a_failed_pinned_allocation_measures_smaller_and_says_so(sim):
    """Page-locked memory can fail far below MemTotal: halve until it works, keep the case name, say why."""
    real_zeros = sim.zeros

    def zeros(*a, pin_memory=False, **k):
        n = a[0] if a and isinstance(a[0], int) else 0
        if pin_memory and n > 2 * MIB:
            raise RuntimeError("CUDA error: out of memory (cudaHostAlloc)")
        return real_zeros(*a, **k)
    sim.zeros = zeros
    sim.empty = lambda *a, pin_memory=False, **k: zeros(*a, pin_memory=pin_memory, **k) if pin_memory else torch.empty(*a, **k)
    tuned = transfer.State()
    row = ok(run_case(gpu(), case("h2d", nbytes=8 * MIB), tuned))
    assert row["case"] == "pinned-8MiB" and row["size_bytes"] == 2 * MIB and row["work"] == 2 * MIB
    assert row["message"].startswith("measured at 2MiB, not 8MiB: the pinned host allocation of 2 x 8MiB failed: "
                                     "RuntimeError: CUDA error: out of memory (cudaHostAlloc)")
    assert json.loads(row["params"])["bytes"] == 2 * MIB
    row = ok(run_case(gpu(), case("h2d", "pageable", nbytes=8 * MIB), tuned))
    assert row["size_bytes"] == 8 * MIB and "measured at" not in row["message"]  # pageable memory is not pinned
