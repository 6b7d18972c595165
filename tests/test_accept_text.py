"""What `cardbench accept` prints for each check, word for word, over an H100-shaped run (the
table and the JUnit carry these texts), and each bar at its exact edge: on the bar passes, one
step past it fails."""
import pytest

from bench.commands import accept
from bench.commands.accept_judge import judge_check
from bench.commands.accept_policy import Check
from bench.core.results import read_results
from test_accept import gpu_run

POLICY = accept.load_policy()
ONE_GPU = [
    ("p2p", "N/A", "", ">= 70% of spec", "cuda:0->cuda:1: not applicable here: one GPU: no peer to copy to"),
    ("allreduce-busbw", "N/A", "", ">= 70% of spec",
     "not applicable here: collectives need two or more ranks: one GPU in this run (cuda:0)"),
]
DRIFT_OK = ("config-drift", "PASS", "same on 1 GPU(s)", "same on every GPU of the node",
            "vbios_version, driver_version, ecc_mode, power_limit_w")


def _card(tmp_path, edit=None, policy=POLICY):
    (card,) = accept.judge(read_results(gpu_run(tmp_path / "r.csv", edit)).rows, policy)
    return card


def _texts(card):
    return [(r.check, r.verdict, r.measured, r.bar, r.reason) for r in card.results]


def test_a_healthy_h100_reads_word_for_word(tmp_path):
    card = _card(tmp_path)
    assert card.label == "cuda:0 NVIDIA H100 80GB HBM3 (GPU-0a1b2c3d-test) serial 1650123456789"
    assert card.verdict == "PASS"
    assert _texts(card) == [
        ("memory-copy", "PASS", "3,015.0 GB/s = 90.0%", ">= 80% of spec", "best of 1 (torch plateau)"),
        ("matmul-bf16", "PASS", "780.0 TFLOP/s = 78.8%", ">= 65% of spec", "best of 1 (torch 8192x8192x8192)"),
        ("matmul-fp8", "PASS", "1,380.0 TFLOP/s = 69.7%", ">= 60% of spec", "best of 1 (torch 8192x8192x8192)"),
        ("h2d-pinned", "PASS", "55.0 GB/s = 87.3%", ">= 75% of derived peak", "best of 1 (torch pinned-1GiB)"),
        ("d2h-pinned", "PASS", "56.0 GB/s = 88.9%", ">= 75% of derived peak", "best of 1 (torch pinned-1GiB)"),
        *ONE_GPU,
        ("pcie-link", "PASS", "Gen5 x16 under load", "Gen5 x16", ""),
        ("throttling", "PASS", "none", "no forbidden reason", "14 measurements checked"),
        ("ecc", "PASS", "0 uncorrectable", "<= 0", ""),
        ("row-remap", "PASS", "none pending or failed", "none", ""),
        ("other-processes", "PASS", "0", "<= 0", ""),
        ("temperature", "PASS", "61 C max", "<= 85 C", ""),
        DRIFT_OK,
    ]


def _sick(r):
    r.update(ecc_errors_uncorrected="2", remapped_rows_pending="yes", compute_processes="2", temp_c_max="91.5")
    if r["benchmark"] == "copy":
        r.update(clocks_event_reasons="0x48")
    if r["family"] == "transfer":
        r.update(pcie_gen_current="4", pcie_width_current="8")


def test_a_sick_h100_reads_word_for_word(tmp_path):
    card = _card(tmp_path, _sick)
    assert card.verdict == "FAIL"
    assert _texts(card)[7:] == [
        ("pcie-link", "FAIL", "Gen4 x8 under load", "Gen5 x16",
         "PCIe link trained at Gen4 x8 during transfers; the card supports Gen5 x16"),
        ("throttling", "FAIL", "hw_slowdown, hw_thermal_slowdown", "no forbidden reason",
         "hw_slowdown during memory/copy plateau; hw_thermal_slowdown during memory/copy plateau"),
        ("ecc", "FAIL", "2 uncorrectable", "<= 0", "uncorrectable ECC errors"),
        ("row-remap", "FAIL", "pending yes, failed no", "none", "row remapping pending or failed: the memory needs service"),
        ("other-processes", "FAIL", "2", "<= 0", "other processes were computing on the card: every measurement is disturbed"),
        ("temperature", "FAIL", "91.5 C max", "<= 85 C", "too hot under load: check cooling and airflow"),
        DRIFT_OK,
    ]


NVML_COLUMNS = ("pcie_gen_max", "pcie_width_max", "pcie_gen_current", "pcie_width_current", "clocks_event_reasons",
                "ecc_mode", "ecc_errors_uncorrected", "ecc_errors_uncorrected_aggregate", "remapped_rows_pending",
                "remapped_rows_failure", "compute_processes", "temp_c_max", "vbios_version")


def test_without_nvml_every_health_check_says_what_it_lacks(tmp_path):
    card = _card(tmp_path, lambda r: r.update(dict.fromkeys(NVML_COLUMNS, "")))
    assert card.verdict == "INCONCLUSIVE"
    assert _texts(card)[7:] == [
        ("pcie-link", "INCONCLUSIVE", "", "the card's maximum", "no PCIe link reading (no NVML)"),
        ("throttling", "INCONCLUSIVE", "", "no forbidden reason", "no clocks-event readings (no NVML)"),
        ("ecc", "INCONCLUSIVE", "", "<= 0 uncorrectable", "no ECC reading (no NVML, or not supported)"),
        ("row-remap", "INCONCLUSIVE", "", "none pending or failed", "no row-remapping reading"),
        ("other-processes", "INCONCLUSIVE", "", "<= 0", "no process list (no NVML)"),
        ("temperature", "INCONCLUSIVE", "", "<= 85 C", "no temperature reading (no NVML)"),
        ("config-drift", "INCONCLUSIVE", "", "same on every GPU of the node",
         "no vbios_version, ecc_mode reading (no NVML, or not reported by this board: drop it from [drift] fields)"),
    ]


def _idle(gen, width):
    def edit(r):
        if r["family"] == "transfer":
            r["family"] = "memory"  # no transfer ran: every link reading is an idle one
        r.update(pcie_gen_current=gen, pcie_width_current=width)
    return edit


@pytest.mark.parametrize("gen, width, expected", [
    ("1", "16", ("pcie-link", "INCONCLUSIVE", "Gen1 x16", "Gen5 x16",
                 "only idle readings (idle links train down); run the transfer family to read it under load")),
    ("5", "8", ("pcie-link", "FAIL", "Gen5 x8", "Gen5 x16", "PCIe link width x8; the card supports x16")),
    ("5", "16", ("pcie-link", "PASS", "Gen5 x16", "Gen5 x16", "")),
])
def test_idle_link_readings_judge_the_width_never_the_generation(tmp_path, gen, width, expected):
    results = {r.check: r for r in _card(tmp_path, _idle(gen, width)).results}
    r = results["pcie-link"]
    assert (r.check, r.verdict, r.measured, r.bar, r.reason) == expected


def test_ecc_off_fails_unless_the_policy_allows_it(tmp_path):
    off = lambda r: r.update(ecc_mode="off")  # noqa: E731
    results = {r.check: r for r in _card(tmp_path, off).results}
    r = results["ecc"]
    assert (r.verdict, r.measured, r.bar, r.reason) == (
        "FAIL", "ECC off", "ECC on", "ECC is off (set require_ecc = false for boards without it)")
    policy = accept.load_policy()
    policy.health["require_ecc"] = False
    r = {r.check: r for r in _card(tmp_path, off, policy).results}["ecc"]
    assert (r.verdict, r.measured) == ("PASS", "0 uncorrectable")


@pytest.mark.parametrize("field, bar, limit, at, past, check", [
    ("temp_c_max", "max_temperature_c", 85, "85", "85.5", "temperature"),
    ("compute_processes", "max_other_processes", 1, "1", "2", "other-processes"),
    ("ecc_errors_uncorrected", "max_uncorrectable_ecc", 1, "1", "2", "ecc"),
    ("ecc_errors_uncorrected_aggregate", "max_uncorrectable_ecc", 1, "1", "2", "ecc"),
])
def test_health_bars_hold_at_their_edge(tmp_path, field, bar, limit, at, past, check):
    policy = accept.load_policy()
    policy.health[bar] = limit
    verdict = {v: {r.check: (r.verdict, r.measured) for r in _card(tmp_path, lambda r: r.update({field: v}),
                                                                  policy).results}[check] for v in (at, past)}
    assert {v: verdict[v][0] for v in verdict} == {at: "PASS", past: "FAIL"}
    assert verdict[at][1] == {"temperature": f"{at} C max", "other-processes": at, "ecc": f"{at} uncorrectable"}[check]


@pytest.mark.parametrize("pct, verdict", [("80.0", "PASS"), ("79.99", "FAIL")])
def test_a_measurement_on_the_bar_passes(tmp_path, pct, verdict):
    def edit(r):
        if r["benchmark"] == "copy" and r["status"] == "ok":
            r.update(pct_of_spec=pct)
    r = {r.check: r for r in _card(tmp_path, edit).results}["memory-copy"]
    assert (r.verdict, r.measured) == (verdict, f"3,015.0 GB/s = {float(pct):.1f}%")


@pytest.mark.parametrize("places, reason", [
    (3, "hw_slowdown during memory/copy a, memory/copy b, memory/copy c"),
    (4, "hw_slowdown during memory/copy a, memory/copy b, memory/copy c ..."),
])
def test_a_throttle_names_three_measurements_then_dots(places, reason):
    from bench.commands.accept_judge import health_checks
    rows = [_row("ok", "1", family="memory", benchmark="copy", case=c, clocks_event_reasons="0x8") for c in "abcd"]
    rows = rows[:places] + rows[:places]  # each measurement twice: named once
    r = {r.check: r for r in health_checks(POLICY, rows)}["throttling"]
    assert (r.verdict, r.measured, r.bar, r.reason) == ("FAIL", "hw_slowdown", "no forbidden reason", reason)


def test_a_policy_can_drop_the_link_check_and_allow_a_pending_remap(tmp_path):
    policy = accept.load_policy()
    policy.health.update(pcie_link_at_max=False, allow_row_remap_pending=True)
    results = {r.check: r for r in _card(tmp_path, _sick, policy).results}
    assert "pcie-link" not in results
    assert (results["row-remap"].verdict, results["row-remap"].measured) == ("PASS", "none pending or failed")
    failed = {r.check: r.verdict for r in _card(tmp_path, lambda r: r.update(remapped_rows_failure="yes"),
                                               policy).results}
    assert failed["row-remap"] == "FAIL"  # allowing a pending remap does not allow a failed one


# ---------------------------------------------------------------- one check over chosen rows

def _row(status="ok", value="", **fields):
    from bench.core.results import COLUMNS
    row = dict.fromkeys(COLUMNS, "")
    row.update(family="transfer", benchmark="p2p", provider="torch", dtype="uint8", case="cuda:0->cuda:1-256MiB",
               unit="GB/s", device_index="0", device_name="NVIDIA H100 80GB HBM3", status=status, value=value)
    row.update(fields)
    return row


P2P = Check(name="p2p", title="P2P", select={"family": "transfer", "benchmark": "p2p"}, against="derived",
                   min_pct=70, each=["case", "dtype"])
COPY = Check(name="copy", title="copy", select={"benchmark": "copy"}, against="spec", min_pct=80)


def _judged(check, rows):
    r = judge_check(check, rows)
    return (r.check, r.verdict, r.measured, r.bar, r.reason)


def test_a_check_with_nothing_to_judge_says_what_it_looked_for():
    assert _judged(P2P, [_row(family="memory")]) == (
        "p2p", "INCONCLUSIVE", "", ">= 70% of derived peak", "no transfer measurement in this run")
    assert _judged(COPY, [_row()]) == ("copy", "INCONCLUSIVE", "", ">= 80% of spec", "no measurement in this run")


def test_the_first_wrong_row_is_the_one_named():
    rows = [_row("ok", "300", pct_of_derived="90"),
            _row("wrong", case="cuda:0->cuda:2-256MiB", message="bytes differ at offset 0"),
            _row("wrong", case="cuda:0->cuda:3-256MiB", message="bytes differ at offset 64")]
    assert _judged(P2P, rows) == ("p2p", "FAIL", "", ">= 70% of derived peak",
                                  "verification failed (p2p cuda:0->cuda:2-256MiB): bytes differ at offset 0")


def test_every_pair_is_judged_and_the_worst_reported():
    good = _row("ok", "400", pct_of_derived="88.9")
    error = _row("error", case="cuda:0->cuda:2-256MiB", message="CUDA error: an illegal memory access")
    skipped = _row("skipped", case="cuda:0->cuda:3-256MiB", message="no peer access between these GPUs")
    slow = _row("ok", "200", case="cuda:1->cuda:0-256MiB", pct_of_derived="44.4")
    assert _judged(P2P, [skipped, error, slow, good]) == (
        "p2p", "FAIL", "200.0 GB/s = 44.4%", ">= 70% of derived peak", "cuda:1->cuda:0-256MiB uint8: best of 1 (torch "
                                                                        "cuda:1->cuda:0-256MiB)")
    assert _judged(P2P, [skipped, error, good]) == (
        "p2p", "INCONCLUSIVE", "", ">= 70% of derived peak",
        "cuda:0->cuda:2-256MiB uint8: error: CUDA error: an illegal memory access")
    assert _judged(P2P, [skipped, good]) == (
        "p2p", "PASS", "400.0 GB/s = 88.9%", ">= 70% of derived peak",
        "cuda:0->cuda:1-256MiB uint8: best of 1 (torch cuda:0->cuda:1-256MiB)")
    assert _judged(P2P, [skipped]) == (
        "p2p", "N/A", "", ">= 70% of derived peak",
        "cuda:0->cuda:3-256MiB uint8: not applicable here: no peer access between these GPUs")
    cpu = dict(skipped, device_index="")
    assert _judged(P2P, [cpu])[1] == "INCONCLUSIVE"  # on the CPU a GPU check never becomes N/A


def test_without_a_claim_the_best_value_is_shown_and_what_is_missing_named():
    rows = [_row("ok", "250", benchmark="copy", family="memory", case="plateau"),
            _row("ok", "300", benchmark="copy", family="memory", case="plateau", provider="triton"),
            _row("ok", "280", benchmark="copy", family="memory", case="plateau")]
    assert _judged(COPY, rows) == ("copy", "INCONCLUSIVE", "300.0 GB/s", ">= 80% of spec",
                                   "no spec entry (or no figure) for this card: add one with --specs")
    mig = [dict(r, device_name="NVIDIA H100 80GB HBM3 MIG 1g.10gb") for r in rows]
    assert _judged(COPY, mig)[4] == ("MIG slice: normalized against nothing unless a spec entry names this slice: "
                                     "add one with --specs")
    assert _judged(P2P, [_row("ok", "300")]) == ("p2p", "INCONCLUSIVE", "300.0 GB/s", ">= 70% of derived peak",
                                                 "cuda:0->cuda:1-256MiB uint8: no derived peak (no NVML reading)")


def test_a_link_maximum_half_read_is_no_reading(tmp_path):
    r = {r.check: r for r in _card(tmp_path, lambda r: r.update(pcie_width_max="")).results}["pcie-link"]
    assert (r.verdict, r.measured, r.bar, r.reason) == ("INCONCLUSIVE", "", "the card's maximum",
                                                        "no PCIe link reading (no NVML)")


def test_one_group_reads_without_a_label_and_the_best_percentage_wins():
    error = _row("error", benchmark="copy", family="memory", case="plateau", message="CUDA error: out of memory")
    assert _judged(COPY, [error]) == ("copy", "INCONCLUSIVE", "", ">= 80% of spec", "error: CUDA error: out of memory")
    rows = [_row("ok", "2900", benchmark="copy", family="memory", case="plateau", pct_of_spec="86.6"),
            _row("ok", "3100", benchmark="copy", family="memory", case="plateau", provider="triton", pct_of_spec="92.5"),
            _row("ok", "3000", benchmark="copy", family="memory", case="plateau", pct_of_spec="89.6")]
    assert _judged(COPY, rows) == ("copy", "PASS", "3,100.0 GB/s = 92.5%", ">= 80% of spec",
                                   "best of 3 (triton plateau)")


@pytest.mark.parametrize("first, then, verdict", [
    # a group that cannot be judged does not stop the others from being judged, and the worst is reported
    (_row("ok", "300", case="a"), _row("ok", "100", case="b", pct_of_derived="22.2"), "FAIL"),
    (_row("ok", "300", case="a", pct_of_derived="66.7"), _row("ok", "400", case="b", pct_of_derived="88.9"), "FAIL"),
    (_row("ok", "400", case="a", pct_of_derived="88.9"), _row("error", case="b", message="died"), "INCONCLUSIVE"),
    (_row("ok", "400", case="a", pct_of_derived="88.9"), _row("ok", "300", case="b"), "INCONCLUSIVE"),
    (_row("skipped", case="a", message="no peer"), _row("ok", "400", case="b", pct_of_derived="88.9"), "PASS"),
])
def test_every_group_counts_whatever_comes_first(first, then, verdict):
    assert _judged(P2P, [first, then])[1] == verdict


def test_a_derived_peak_check_is_not_held_to_the_spec_claims_confidence(tmp_path):
    from test_accept import server_run
    rows = [dict(r, pct_of_derived="83.3") for r in read_results(server_run(tmp_path / "r.csv")).rows
            if r["family"] == "matmul" and r["dtype"] == "bf16"]
    check = Check(name="bf16-derived", title="bf16", select={"family": "matmul", "dtype": "bf16"}, against="derived",
                  min_pct=65)
    assert _judged(check, rows)[1:3] == ("PASS", "400.0 TFLOP/s = 83.3%")


def test_ecc_on_without_error_counts_reads_zero_and_a_pending_remap_alone_is_read(tmp_path):
    r = {r.check: r for r in _card(tmp_path, lambda r: r.update(ecc_errors_uncorrected="",
                                                                ecc_errors_uncorrected_aggregate="",
                                                                remapped_rows_failure="")).results}
    assert (r["ecc"].verdict, r["ecc"].measured) == ("PASS", "0 uncorrectable")
    assert (r["row-remap"].verdict, r["row-remap"].measured) == ("PASS", "none pending or failed")


def test_a_claim_from_the_shipped_database_when_none_is_given():
    rows = [_row("ok", "3000", benchmark="copy", family="memory", case="plateau", pct_of_spec="89.6",
                 spec_entry="H100 SXM5 80GB", spec_figure="memory_bandwidth")]
    assert _judged(COPY, rows)[1] == "PASS"


def test_an_unconfirmed_claim_in_one_group_does_not_hide_a_failing_one(tmp_path):
    from test_accept import server_run
    bf16 = [r for r in read_results(server_run(tmp_path / "r.csv")).rows
            if r["family"] == "matmul" and r["dtype"] == "bf16"][0]
    derived = dict(bf16, case="a")
    slow = dict(bf16, case="b", spec_entry="", pct_of_spec="40.0", value="192.0")
    check = Check(name="bf16", title="bf16", select={"family": "matmul", "dtype": "bf16"}, against="spec",
                  min_pct=65, each=["case"])
    r = judge_check(check, [derived])
    assert (r.verdict, r.bar) == ("INCONCLUSIVE", ">= 65% of spec")
    assert judge_check(check, [derived, slow]).verdict == "FAIL"
