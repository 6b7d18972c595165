"""Transfer family on the CPU: link arithmetic and normalization, the plan and its skip logic, verification,
the link read under load, and rows that the results reader accepts. Real copies: tests/test_transfer_gpu.py."""
import json
import threading
import time

import pytest
import torch

from bench.core import harness, identity, normalize, nvml, placement, specs, telemetry, timing, topology
from bench.core.devices import Target, cpu_target
from bench.core.results import ResultsWriter, read_results
from bench.core.window import observe
from bench.families import transfer, transfer_host
from helpers import make_run
from helpers import measure as run_case
from test_telemetry import H100_IDENTITY, fake_nvml, install

GIB, MIB = 2**30, 2**20
DB = specs.load()
H100_SXM = DB.find("H100 SXM5 80GB")
H100_PCIE = DB.find("H100 PCIe 80GB")


def gpu_like(index=0, identity=None, spec=None, free_bytes=80 * GIB, host_bytes=256 * GIB) -> Target:
    """A Target that looks like a GPU to the planner; nothing is allocated. Plans sized by the GPU alone."""
    t = Target(torch.device("cuda", index), index, dict(identity or H100_IDENTITY), spec, host_memory_bytes=host_bytes)
    t.free_bytes = lambda: free_bytes
    return t


def plan(target, profile="quick", gpus=1):
    """The family's cases for `target` in a run that sees `gpus` GPUs."""
    return transfer.cases(target, make_run([target], profile, visible_gpus=gpus))


def waived(target, case):
    """Why a case is not measured here (the family's waiver), or None."""
    found = transfer.waive(target, case, transfer.State())
    return found[1] if found else None


# ---------------------------------------------------------------- link arithmetic

# PCI-SIG line rates per lane and the share of bits carrying data: 8b/10b (Gen1-2),
# 128b/130b (Gen3-5), FLIT mode 242 of 256 bytes (Gen6).
GT_PER_S = {1: 2.5e9, 2: 5e9, 3: 8e9, 4: 16e9, 5: 32e9, 6: 64e9}
ENCODING = {1: 0.8, 2: 0.8, 3: 128 / 130, 4: 128 / 130, 5: 128 / 130, 6: 242 / 256}


@pytest.mark.parametrize("gen", [1, 2, 3, 4, 5, 6])
@pytest.mark.parametrize("width", [1, 2, 4, 8, 16])
def test_pcie_per_direction_every_generation_and_width(gen, width):
    want = GT_PER_S[gen] * width / 8 * ENCODING[gen]
    assert normalize.pcie_bytes_per_s(gen, width) == pytest.approx(want, rel=1e-12)
    # what a row is normalized against, trained link (derived) and supported link (spec)
    assert normalize.pcie_link(gen, width) == pytest.approx(want, rel=1e-12)
    assert normalize.pcie_link(str(gen), str(width)) == pytest.approx(want, rel=1e-12)  # identity columns are text
    rate, _source, link = normalize.pcie_claim(None, gen, width)
    assert rate == pytest.approx(want) and link == f"Gen{gen} x{width}"
    norm = normalize.link_columns(None, 0.5 * want / 1e9, (rate, _source, link), "pcie_per_direction", want)
    assert norm["spec_value"] == pytest.approx(want / 1e9) and norm["derived_peak"] == pytest.approx(want / 1e9)
    assert norm["pct_of_spec"] == pytest.approx(50.0) and norm["pct_of_derived"] == pytest.approx(50.0)


@pytest.mark.parametrize("gen, width, gb_per_s", [(1, 1, 0.25), (2, 1, 0.5), (3, 16, 15.754), (4, 16, 31.508),
                                                  (5, 16, 63.015), (5, 8, 31.508), (6, 16, 121.0)])
def test_pcie_against_published_figures(gen, width, gb_per_s):
    assert normalize.pcie_bytes_per_s(gen, width) / 1e9 == pytest.approx(gb_per_s, abs=0.001)


def test_unknown_links_give_no_peak():
    assert normalize.pcie_link(7, 16) is None and normalize.pcie_link(5, 0) is None
    assert normalize.pcie_link(None, 16) is None and normalize.pcie_link("", "") is None
    assert normalize.pcie_claim(None, "", "") is None


def test_supported_link_comes_from_the_spec_entry_else_nvml():
    rate, source, link = normalize.pcie_claim(H100_SXM, "4", "16")  # the spec wins over NVML's (slot-limited) maximum
    assert link == "Gen5 x16"
    assert rate == normalize.pcie_bytes_per_s(5, 16) and source == H100_SXM.figures["pcie_gen"].source
    _rate, source, link = normalize.pcie_claim(None, "5", "16")
    assert link == "Gen5 x16" and source.startswith("NVML")


def test_nvlink_claim_and_derived_peak():
    rate, _source = normalize.nvlink_claim(H100_SXM)
    assert rate == 450e9
    rate, source = normalize.nvlink_claim(H100_PCIE)  # only nvlink_bidir (600, bridged pair): half of it
    assert rate == 300e9 and source.startswith("half of nvlink_bidir")
    assert normalize.nvlink_claim(None) is None
    assert normalize.nvlink_peak(18, "9.0", DB) == pytest.approx(450e9)  # 18 links x 25 GB/s (NVLink 4)
    assert normalize.nvlink_peak(12, "9.0", DB) == pytest.approx(300e9)  # an H100 NVL bridge
    assert normalize.nvlink_peak(12, "8.0", DB) == pytest.approx(300e9)  # A100: 12 x 25
    assert normalize.nvlink_peak(4, "8.6", DB) is None  # RTX bridges run slower links: no guess
    assert normalize.nvlink_peak(0, "9.0", DB) is None


def test_bidir_total_is_normalized_against_both_directions():
    claim = normalize.pcie_claim(H100_SXM, 5, 16)
    peak = normalize.pcie_bytes_per_s(5, 16)
    norm = normalize.link_columns(None, 100.0, claim, "pcie_per_direction", peak, directions=2)
    assert norm["spec_figure"] == "pcie_both_directions" and norm["spec_value"] == pytest.approx(2 * peak / 1e9)
    assert norm["pct_of_derived"] == pytest.approx(100.0 * 100e9 / (2 * peak))
    empty = normalize.link_columns(None, None, None, "pcie_per_direction", None)
    assert set(empty) == set(specs.NORMALIZE_KEYS) and not any(empty.values())
    row = {"family": "transfer", "benchmark": "bidir_total", "status": "ok", "value": "100.0", "unit": "GB/s",
           "pcie_gen_max": "5", "pcie_width_max": "16", "pcie_gen_current": "5", "pcie_width_current": "16"}
    assert normalize.columns(row, H100_SXM, DB)["pct_of_derived"] == pytest.approx(norm["pct_of_derived"])


def _p2p_row(params: dict, **row) -> dict:
    return {"family": "transfer", "benchmark": "p2p", "status": "ok", "value": "45.0", "unit": "GB/s",
            "device_name": "NVIDIA H100 80GB HBM3", "params": json.dumps(params), **row}


GEN5_X16, GEN4_X16 = 64 * 128 / 130, 32 * 128 / 130  # GB/s per direction after 128b/130b encoding


def test_an_nvlink_peer_copy_is_normalized_against_nvlink_per_direction_and_its_links():
    cols = normalize.columns(_p2p_row({"nvlinks": 10, "compute_capability": "9.0"}), H100_SXM, DB)
    assert (cols["spec_entry"], cols["spec_figure"], cols["spec_value"], cols["spec_unit"]) == (
        "H100 SXM5 80GB", "nvlink_per_direction", 450.0, "GB/s")
    assert cols["spec_source"] == H100_SXM.figures["nvlink_per_direction"].source
    assert cols["pct_of_spec"] == pytest.approx(10.0)  # 45 of 450
    assert cols["derived_peak"] == pytest.approx(250.0) and cols["pct_of_derived"] == pytest.approx(18.0)  # 10 x 25
    # the compute capability from the row when params lack it; an unknown generation gives no derived peak
    cols = normalize.columns(_p2p_row({"nvlinks": 10}, compute_capability="9.0"), H100_SXM, DB)
    assert cols["derived_peak"] == pytest.approx(250.0)
    cols = normalize.columns(_p2p_row({"nvlinks": 4}, compute_capability="8.6"), None, DB)
    assert cols["derived_peak"] == "" and cols["spec_value"] == "" and cols["spec_entry"] == ""
    cols = normalize.columns(_p2p_row({"nvlinks": 10, "compute_capability": "9.0"}, status="skipped", value=""),
                             H100_SXM, DB)
    assert cols["spec_value"] == 450.0 and cols["pct_of_spec"] == "" and cols["pct_of_derived"] == ""


def test_a_pcie_peer_copy_is_normalized_against_the_slower_of_the_two_links():
    both = {"cuda:0": [5, 16], "cuda:1": [4, 16]}
    same = {"device_name": "NVIDIA H100 80GB HBM3", "pcie_gen_max": "5", "pcie_width_max": "16"}
    row = _p2p_row({"peer": same, "links_under_load": both}, pcie_gen_max="5", pcie_width_max="16")
    cols = normalize.columns(row, H100_SXM, DB)
    assert (cols["spec_figure"], cols["spec_unit"]) == ("pcie_per_direction", "GB/s")
    assert cols["spec_value"] == pytest.approx(GEN5_X16) and cols["pct_of_spec"] == pytest.approx(100 * 45 / GEN5_X16)
    assert cols["spec_source"] == H100_SXM.figures["pcie_gen"].source
    assert cols["derived_peak"] == pytest.approx(GEN4_X16)  # the peer trained at Gen4: the pair's bottleneck
    assert cols["pct_of_derived"] == pytest.approx(100 * 45 / GEN4_X16)
    # a different card on the other end: its own NVML maximum, not this card's spec entry
    other = {"device_name": "NVIDIA L4", "pcie_gen_max": "4", "pcie_width_max": "16"}
    cols = normalize.columns(_p2p_row({"peer": other, "links_under_load": both}), H100_SXM, DB)
    assert cols["spec_value"] == pytest.approx(GEN4_X16) and cols["spec_source"].startswith("NVML")
    # one link read, or a reading that is not [gen, width]: no derived peak
    for under_load in ({"cuda:0": [5, 16]}, {"cuda:0": [5, 16], "cuda:1": "Gen4 x16"}, {"cuda:0": [5, 16], "cuda:1": [5]}):
        cols = normalize.columns(_p2p_row({"peer": same, "links_under_load": under_load}), H100_SXM, DB)
        assert cols["derived_peak"] == "" and cols["spec_value"] == pytest.approx(GEN5_X16)
    # neither card's link known: nothing to compare with
    cols = normalize.columns(_p2p_row({}), None, DB)
    assert cols["spec_value"] == "" and cols["derived_peak"] == ""


def _lab_entry(**figures) -> specs.Entry:
    """A spec entry of a user's own file: figures given as key=(value, unit, source)."""
    return specs.Entry("Lab Card", ["Lab Card"], [], [], {}, {
        key: specs.Figure(key, value, unit, source) for key, (value, unit, source) in figures.items()}, "lab.toml")


def test_the_supported_link_of_an_unknown_card_is_nvml_s_maximum():
    row = {"family": "transfer", "benchmark": "h2d", "status": "ok", "value": "20.0", "unit": "GB/s",
           "pcie_gen_max": "4", "pcie_width_max": "8", "pcie_gen_current": "4", "pcie_width_current": "8"}
    cols = normalize.columns(row, None, DB)
    assert cols["spec_value"] == pytest.approx(GEN4_X16 / 2) and cols["spec_entry"] == ""
    assert cols["spec_source"] == ("NVML: the card's maximum PCIe link (GPU max generation x max width); "
                                   "no spec entry figure")
    # a peer copy: this card's NVML maximum, and the peer's (the same card: this entry, had it one)
    same = {"device_name": "NVIDIA H100 80GB HBM3", "pcie_gen_max": "5", "pcie_width_max": "16"}
    cols = normalize.columns(_p2p_row({"peer": same}, pcie_gen_max="4", pcie_width_max="16"), None, DB)
    assert cols["spec_value"] == pytest.approx(GEN4_X16)
    cols = normalize.columns(_p2p_row({"peer": same}, pcie_gen_max="5", pcie_width_max="8"), None, DB)
    assert cols["spec_value"] == pytest.approx(GEN4_X16)  # Gen5 x8 = Gen4 x16


def test_a_peer_of_the_same_card_is_held_to_the_entry_not_to_its_slot():
    slot_limited = {"device_name": "NVIDIA H100 80GB HBM3", "pcie_gen_max": "4", "pcie_width_max": "8"}
    cols = normalize.columns(_p2p_row({"peer": slot_limited}), H100_SXM, DB)
    assert cols["spec_value"] == pytest.approx(GEN5_X16) and cols["spec_entry"] == "H100 SXM5 80GB"
    cols = normalize.columns(_p2p_row({"peer": dict(slot_limited, device_name="NVIDIA L4")}), H100_SXM, DB)
    assert cols["spec_value"] == pytest.approx(GEN4_X16 / 2)  # another card: its own NVML maximum


def test_equal_links_name_the_first_claim_s_source():
    lab = _lab_entry(pcie_gen=(5, "gen", "zz lab sheet"), pcie_lanes=(16, "lanes", "zz lab sheet"))
    other = {"device_name": "NVIDIA L4", "pcie_gen_max": "5", "pcie_width_max": "16"}
    cols = normalize.columns(_p2p_row({"peer": other}), lab, DB)
    assert cols["spec_value"] == pytest.approx(GEN5_X16) and cols["spec_source"] == "zz lab sheet"


def test_pcie_and_nvlink_claims_from_a_user_entry():
    lab = _lab_entry(pcie_gen=(4, "gen", "gen sheet"), pcie_lanes=(8, "lanes", "lane sheet"),
                     nvlink_per_direction=(400, "GB/s", "nvl sheet"), nvlink_bidir=(900, "GB/s", "bidir sheet"))
    rate, source, link = normalize.pcie_claim(lab, "5", "16")
    assert (rate, source, link) == (pytest.approx(GEN4_X16 / 2 * 1e9), "gen sheet; lane sheet", "Gen4 x8")
    assert normalize.nvlink_claim(lab) == (400e9, "nvl sheet")  # the per-direction figure, not half of bidir
    only_gen = _lab_entry(pcie_gen=(4, "gen", "gen sheet"))  # half a link: NVML's maximum instead
    assert normalize.pcie_claim(only_gen, "5", "16")[2] == "Gen5 x16"
    assert normalize.pcie_claim(None, "7", "16") is None  # a generation nobody knows: no claim
    assert normalize.nvlink_link_bytes_per_s(4, None) is None and normalize.nvlink_link_bytes_per_s(4, DB) == 25e9


def test_impossible_links_are_refused_naming_the_value():
    with pytest.raises(ValueError, match=r"^PCIe generation 7: known are 1, 2, 3, 4, 5, 6$"):
        normalize.pcie_bytes_per_s(7, 16)
    for lanes in (True, 16.0, 0, -4):
        with pytest.raises(ValueError, match=rf"^PCIe lanes {lanes!r}: a positive whole number$"):
            normalize.pcie_bytes_per_s(5, lanes)


# ---------------------------------------------------------------- the plan and skip logic

def test_cpu_plan_is_quick_sizes_and_placeholders():
    cases = plan(cpu_target(), gpus=0)
    host = [c for c in cases if not c.spec.is_p2p]
    assert {(c.spec.memory, c.spec.nbytes) for c in host} == {(k, n) for k in ("pinned", "pageable")
                                                             for n in (256 * MIB, GIB)}
    assert [c.benchmark for c in host[:5]] == ["h2d", "d2h", "h2d_bidir", "d2h_bidir", "bidir_total"]
    assert [c.id for c in cases if c.spec.is_p2p] == ["transfer/p2p/torch/no-peer", "transfer/p2p_bidir/torch/no-peer",
                                                     "transfer/p2p_latency/torch/no-peer"]
    assert host[0].id == "transfer/h2d/torch/pinned-256MiB" and host[-1].name == "pageable-1GiB"
    assert len({c.id for c in cases}) == len(cases) == 23


def test_full_plan_sweeps_1mib_to_1gib():
    cases = plan(gpu_like(), "full", gpus=2)
    sizes = sorted({c.spec.nbytes for c in cases if not c.spec.is_p2p})
    assert sizes == [2**k for k in range(20, 31)]
    assert all(c.spec.buffer_bytes == GIB for c in cases if c.benchmark != "p2p_latency")  # buffers allocated once
    p2p = [c for c in cases if c.benchmark == "p2p"]
    assert [c.name for c in p2p][:2] == ["cuda:0->cuda:1-1MiB", "cuda:0->cuda:1-2MiB"]


def test_gpu_plan_has_every_ordered_pair_from_this_gpu():
    cases = plan(gpu_like(index=2), gpus=4)
    p2p = [c.id for c in cases if c.spec.is_p2p]
    assert p2p == [f"transfer/{b}/torch/cuda:2->cuda:{j}-{s}" for j in (0, 1, 3)
                   for b, s in (("p2p", "256MiB"), ("p2p_bidir", "256MiB"), ("p2p_latency", "16B"))]
    assert all(waived(gpu_like(index=2), c) is None for c in cases)


def test_sizes_above_the_memory_cap_are_skipped_rows_with_the_reason():
    cases = plan(gpu_like(free_bytes=3 * GIB))  # room for 256 MiB copies only
    measured = [c for c in cases if not c.spec.is_p2p and waived(gpu_like(), c) is None]
    assert {c.spec.nbytes for c in measured} == {256 * MIB}
    skipped = [c for c in cases if not c.spec.is_p2p and c not in measured]
    assert {c.name for c in skipped} == {"pinned-1GiB", "pageable-1GiB"} and len(skipped) == 10
    why = waived(gpu_like(), skipped[0])
    assert why == "1GiB copies not measured: free device memory allows 256MiB per copy (buffers take 8x a copy)"
    tiny = plan(gpu_like(free_bytes=64 * MIB))
    assert {c.spec.nbytes for c in tiny if not c.spec.is_p2p and not c.spec.reduced} == {8 * MIB}


def test_host_side_is_sized_from_memtotal_not_memavailable(monkeypatch):
    """A VM whose memory grows as it is used reports little MemAvailable: the 1 GiB copies must stay."""
    monkeypatch.setattr("bench.core.devices.host_available_bytes", lambda: 2 * GIB)  # what the VM shows as free
    cases = plan(gpu_like(host_bytes=128 * GIB))
    assert {c.spec.nbytes for c in cases if not c.spec.is_p2p and not c.spec.reduced} == {256 * MIB, GIB}
    small = [c for c in plan(gpu_like(host_bytes=4 * GIB)) if c.spec.reduced]  # a small host: the reason names it
    assert waived(gpu_like(), small[0]).startswith(
        "1GiB copies not measured: host memory (MemTotal 4.0 GiB) allows 512MiB per copy")


def test_cpu_mode_rows_are_skipped_with_the_reason(tmp_path):
    target = cpu_target()
    rows = [run_case(transfer, target, c) for c in plan(target, gpus=0)]
    assert {r["status"] for r in rows} == {"skipped"}
    assert {r["message"] for r in rows} == {transfer.CPU_REASON}
    assert all(r["family"] == "transfer" and r["provider"] == "torch" and "value" not in r for r in rows)
    writer = ResultsWriter(tmp_path / "run.csv", identity.run_identity())
    for r in rows:
        writer.write(r)
    writer.close()
    back = read_results(tmp_path / "run.csv")
    assert back.complete and len(back.rows) == 23
    assert {(r["metric"], r["unit"]) for r in back.rows} == {("bandwidth", "GB/s"), ("latency", "us")}


def test_one_gpu_skips_peer_copies_with_the_reason():
    target = gpu_like()
    p2p = [c for c in plan(target) if c.spec.is_p2p]
    assert [c.spec.peer for c in p2p] == [None, None, None]
    rows = [run_case(transfer, target, c) for c in p2p]
    assert {r["status"] for r in rows} == {"skipped"}
    assert {r["message"] for r in rows} == {"one GPU visible (cuda:0): peer-to-peer copies need two"}
    assert {r["device_index"] for r in rows} == {0}  # a GPU machine: accept reads this as not applicable


def test_planning_does_no_io_and_the_placement_warning_comes_before_the_first_case(monkeypatch):
    monkeypatch.setattr(transfer, "placement", lambda t, state: placement.Placement(
        1, frozenset(), frozenset(), [0, 1], "far away"))
    monkeypatch.setattr(nvml, "module", lambda: pytest.fail("planning read NVML"))
    plan(gpu_like())
    assert transfer.prepare([gpu_like(), cpu_target()], transfer.State()) == ["cuda:0: far away"]


# ---------------------------------------------------------------- verification

def test_verify_passes_a_copy_and_catches_a_copy_that_did_nothing():
    src = transfer_host.random_bytes(MIB, "cpu")
    dst = torch.zeros(MIB, dtype=torch.uint8)
    assert transfer_host.verify([dst], lambda: dst.copy_(src), [(dst, src, "h2d")], ["cpu"]) is None
    # dst already holds the right bytes; a copy that does nothing must still fail (zeroed first)
    problem = transfer_host.verify([dst], lambda: None, [(dst, src, "h2d")], ["cpu"])
    zeros = int((src == 0).sum())
    assert problem == f"h2d: {MIB - zeros} of {MIB} bytes differ from the source"


def test_verify_catches_a_shifted_copy_and_names_each_direction():
    a, b = transfer_host.random_bytes(MIB, "cpu"), transfer_host.random_bytes(MIB, "cpu")
    da, db = torch.zeros_like(a), torch.zeros_like(b)

    def both():
        da.copy_(a)
        db[1:] = b[:-1]  # off by one byte
    problem = transfer_host.verify([da, db], both, [(da, a, "h2d"), (db, b, "d2h")], ["cpu"])
    assert problem.startswith("d2h: ") and "h2d" not in problem
    assert transfer_host.compare([(da, a, "h2d")]) is None


def test_random_bytes_are_not_constant():
    x = transfer_host.random_bytes(MIB, "cpu")
    assert x.numel() == MIB and x.dtype == torch.uint8
    assert len(torch.unique(x)) == 256  # zeros run faster than data in some paths; never a constant


# ---------------------------------------------------------------- the link under load, through observe()

def loaded_h100(monkeypatch, loaded=(5, 16), replays=(0, 0)):
    """The fake H100 of test_telemetry whose link reads Gen1 at idle and `loaded` while nv.busy is set."""
    nv = fake_nvml()
    nv.busy = threading.Event()
    nv.nvmlDeviceGetCurrPcieLinkGeneration = lambda h: (loaded if nv.busy.is_set() else (1, 16))[0]
    nv.nvmlDeviceGetCurrPcieLinkWidth = lambda h: (loaded if nv.busy.is_set() else (1, 16))[1]
    counter = iter(replays)
    nv.nvmlDeviceGetPcieReplayCounter = lambda h: next(counter)
    install(monkeypatch, nv)
    return nv


def transfer_for(nv, seconds=0.06):
    def fn():
        nv.busy.set()
        time.sleep(seconds)
        nv.busy.clear()
        return "timed"
    return fn


def test_observe_reads_the_link_while_the_copy_runs(monkeypatch):
    nv = loaded_h100(monkeypatch)
    assert telemetry.pcie_link(0) == {"pcie_gen_current": "1", "pcie_width_current": "16"}  # idle: Gen1
    result, window = observe([0], transfer_for(nv))
    assert result == "timed"
    gen, width, readings = window.link[0]
    assert (gen, width) == (5, 16) and readings >= 3
    assert window.replays == {0: 0}
    assert int(window.telemetry[0]["telemetry_samples"]) >= 2
    cols, notes = transfer_host.link_notes(H100_IDENTITY, window.link[0], window.replays[0])
    assert cols == {"pcie_gen_current": "5", "pcie_width_current": "16"} and notes == []


def test_gen4_x8_under_load_is_flagged_on_the_row(monkeypatch):
    nv = loaded_h100(monkeypatch, loaded=(4, 8), replays=(10, 13))
    _, window = observe([0], transfer_for(nv))
    assert window.link[0][:2] == (4, 8) and window.replays == {0: 3}
    cols, notes = transfer_host.link_notes(H100_IDENTITY, window.link[0], window.replays[0])
    assert cols == {"pcie_gen_current": "4", "pcie_width_current": "8"}
    assert notes == ["PCIe link trained at Gen4 x8, the card supports Gen5 x16 (read during this transfer)",
                     "PCIe replays during this transfer: 3"]


def test_observe_without_nvml_is_empty(monkeypatch):
    install(monkeypatch, fake_nvml())
    monkeypatch.setattr(nvml, "_state", False)  # as on a machine without a driver
    result, window = observe([0], lambda: 7)
    assert result == 7 and window.link == {0: (None, None, 0)} and window.replays == {0: None}
    assert transfer_host.link_notes(H100_IDENTITY, window.link[0], None) == (
        {"pcie_gen_current": "", "pcie_width_current": ""}, [])


# ---------------------------------------------------------------- rows

def ok_h2d_row(samples_s, link=(5, 16, 12), identity=None):
    target = gpu_like(identity=identity or {**H100_IDENTITY, "compute_processes": "0"}, spec=H100_SXM)
    copy = transfer.Copy("h2d", "pinned", 256 * MIB, 0, None, GIB)
    cols, notes = transfer_host.link_notes(target.identity, link, 0)
    params = {"direction": "h2d", "memory": "pinned", "bytes": copy.nbytes, "link_under_load": topology.link_text(*link[:2])}
    row = harness.measured_row(transfer.make_case(copy), target, timing.Timing(samples_s, "cuda_events+hold", 1), params,
                               transfer_host.window_columns({}, cols), notes)
    row.update(normalize.columns(row, target.spec, DB))
    return row


def test_ok_row_values_and_both_denominators(tmp_path):
    t = 256 * MIB / 55e9  # 55 GB/s
    row = ok_h2d_row([t * 0.99, t, t * 1.01])
    assert row["value"] == pytest.approx(55.0) and row["unit"] == "GB/s" and row["work"] == 256 * MIB
    assert row["pct_of_spec"] == pytest.approx(100 * 55e9 / normalize.pcie_bytes_per_s(5, 16))
    assert row["pct_of_derived"] == row["pct_of_spec"]  # trained at what the card supports
    assert row["spec_figure"] == "pcie_per_direction" and row["spec_unit"] == "GB/s"
    assert row["message"] == "" and row["case"] == "pinned-256MiB" and row["benchmark"] == "h2d"
    slow = ok_h2d_row([t], link=(4, 8, 9))
    assert slow["pct_of_derived"] == pytest.approx(100 * 55e9 / normalize.pcie_bytes_per_s(4, 8))
    assert slow["pct_of_spec"] == row["pct_of_spec"]  # the claim is the card's, whatever the slot did
    assert slow["message"] == "PCIe link trained at Gen4 x8, the card supports Gen5 x16 (read during this transfer)"
    busy = ok_h2d_row([t], identity=H100_IDENTITY)  # one other process on the card (the fixture's pid 4242)
    assert busy["message"] == "disturbed: 1 other process(es) computing on the card during the measurement"
    writer = ResultsWriter(tmp_path / "r.csv", identity.run_identity())
    writer.write(row)
    writer.write(slow)
    writer.close()
    back = read_results(tmp_path / "r.csv").frame()
    assert list(back["pcie_gen_current"].astype(str)) == ["5", "4"]
    assert json.loads(back["params"][1])["link_under_load"] == "Gen4 x8"


def test_latency_fields_are_microseconds_lower_is_better():
    case = transfer.make_case(transfer.Copy("p2p_latency", "device", 16, 0, 1))
    f = harness.value_fields(timing.Timing([2e-6, 3e-6, 4e-6, 3e-6, 10e-6], "cuda_events+hold", 17), case)
    assert f["value"] == pytest.approx(3.0) and f["time_s"] == pytest.approx(3e-6)
    assert f["p10"] < f["value"] < f["p90"] and f["n_samples"] == 5 and f["calls_per_sample"] == 17
    assert [float(s) for s in f["samples"].split(";")] == pytest.approx([2.0, 3.0, 4.0, 3.0, 10.0])


def test_bidir_total_counts_both_directions():
    m = transfer.make_case(transfer.Copy("bidir_total", "pinned", GIB, 0))
    assert m.work == 2 * GIB and m.size_bytes == 2 * GIB
    lat = transfer.make_case(transfer.Copy("p2p_latency", "device", 16, 0, 1))
    assert (lat.metric, lat.unit, lat.work) == ("latency", "us", 16.0)


def test_a_copy_is_bytes_over_seconds_in_decimal_gb_per_s():
    h2d = transfer.make_case(transfer.Copy("h2d", "pinned", 256 * 2**20, 0))
    assert (h2d.family, h2d.benchmark, h2d.provider, h2d.dtype, h2d.name) == ("transfer", "h2d", "torch", "uint8",
                                                                              "pinned-256MiB")
    assert (h2d.metric, h2d.unit, h2d.scale, h2d.work, h2d.work_unit, h2d.size_bytes) == (
        "bandwidth", "GB/s", 1e9, 256.0 * 2**20, "B", 256 * 2**20)
    lat = transfer.make_case(transfer.Copy("p2p_latency", "device", 16, 0, 1))
    assert (lat.scale, lat.work_unit, lat.dtype) == (1e-6, "B", "uint8")


# ---------------------------------------------------------------- printed summary

def _row(device, benchmark, case, value, size, **extra):
    return {"family": "transfer", "status": "ok", "device_index": device, "benchmark": benchmark, "case": case,
            "value": value, "size_bytes": size, "unit": "GB/s", **extra}


def test_summary_host_table_and_p2p_matrices():
    rows = [_row(0, b, "pinned-1GiB", v, GIB * (2 if b == "bidir_total" else 1), pcie_gen_current="5",
                 pcie_width_current="16", pct_of_derived=v / 0.63015)
            for b, v in (("h2d", 55.1), ("d2h", 55.3), ("h2d_bidir", 50.0), ("d2h_bidir", 51.0), ("bidir_total", 100.9))]
    rows.append(_row(0, "h2d", "pinned-256MiB", 54.0, 256 * MIB))
    rows.append({**rows[0], "status": "skipped", "case": "pageable-1GiB", "value": ""})
    p = {"path": "NV12", "peer_access_torch": True}
    for a, b in ((0, 1), (1, 0)):
        rows.append(_row(a, "p2p", f"cuda:{a}->cuda:{b}-256MiB", 250.5 + a, 256 * MIB,
                         params=json.dumps({**p, "dst": f"cuda:{b}"})))
        rows.append(_row(a, "p2p_latency", f"cuda:{a}->cuda:{b}-16B", 2.345, 16, unit="us",
                         params=json.dumps({**p, "dst": f"cuda:{b}"})))
    text = "\n".join(transfer.summary_lines(rows))
    assert "cuda:0    pinned    1GiB    55.1   55.3   50.0         51.0         100.9          Gen5 x16" in text
    assert "87% / 88%" in text
    assert "p2p one way, GB/s, 256MiB: row = source, column = destination" in text
    assert "cuda:0  -         250.5" in text and "cuda:1  251.5     -" in text
    assert "latency of a 16-byte copy, us" in text and "2.35" in text
    assert "NV12 yes" in text and "legend: X = self" in text


def test_summary_is_empty_without_ok_rows():
    target = cpu_target()
    rows = [run_case(transfer, target, c) for c in plan(target, gpus=0)]
    assert transfer.summary_lines(rows) == []
    assert transfer.summary_lines([]) == []
