"""What `cardbench accept` prints for each burn check, word for word (the table and the JUnit
carry these texts: a verdict that reads wrong is a wrong verdict to the person reading it), and
each bar at its exact edge: a reading on the bar passes, one step past it fails."""
import json

import pytest

from bench.commands import accept
from bench.commands.accept_burn import burn_checks
from test_burn_accept import POLICY, _card, _row

BAR = {
    "burn-sdc": "<= 0 differing iterations, first result equal to the other GPUs'",
    "burn-memtest": "<= 0 errors over >= 90% of the free memory",
    "burn-ecc": "no new uncorrectable ECC error, no pending or failed remap",
    "burn-stability": "last window within 10% of the first",
    "burn-throttling": "no hw_power_brake_slowdown, hw_slowdown, hw_thermal_slowdown, sw_thermal_slowdown",
    "burn-temperature": "hottest reading <= the card's limits - 0 C",
    "burn-node-spread": ">= 90% of the node's best GPU of the model",
}


def _results(rows, index=0, policy=POLICY):
    mine = [r for r in rows if r["device_index"] == str(index)]
    return [(r.check, r.verdict, r.measured, r.bar, r.reason) for r in burn_checks(policy, mine, rows)]


def _policy(tmp_path, text):
    path = tmp_path / "p.toml"
    path.write_text(text)
    return accept.load_policy(str(path))


def test_a_clean_pair_reads_word_for_word():
    rows = _card(0) + _card(1, soak={"value": 640.0})
    same = [
        ("burn-sdc", "PASS", "0 of 1000 iterations differ", BAR["burn-sdc"], "bf16: identical to 1 other device(s)"),
        ("burn-memtest", "PASS", "0 errors in 130.00 GiB (97.7% of free)", BAR["burn-memtest"], ""),
        ("burn-ecc", "PASS", "0 new uncorrectable, 0 new correctable", BAR["burn-ecc"], ""),
        ("burn-stability", "PASS", "bf16 710.0 -> 700.0 TFLOP/s (-1.4%, windows of 60 s)", BAR["burn-stability"], ""),
        ("burn-throttling", "PASS", "none", BAR["burn-throttling"], "2 burn phases checked"),
        ("burn-temperature", "PASS", "memory 80 C, limit 95 C", BAR["burn-temperature"], ""),
    ]
    assert _results(rows, 0) == same + [
        ("burn-node-spread", "PASS", "bf16 700.0 TFLOP/s = 100.0% of cuda:0", BAR["burn-node-spread"], "")]
    assert _results(rows, 1) == same + [
        ("burn-node-spread", "PASS", "bf16 640.0 TFLOP/s = 91.4% of cuda:0", BAR["burn-node-spread"], "")]


def test_a_sick_card_reads_word_for_word():
    rows = _card(0, soak={"mismatch_iterations": 2, "drop_pct": 10.5, "throughput_last_window": 635.5,
                          "temp_gpu_max_c": 87.5, "reasons": "0x48"},
                 memtest={"coverage": 0.891, "bytes_tested": 900 * 2**20, "ecc_new_correctable": 3,
                          "ecc_after": {"remapped_rows_failure": "yes"}})
    assert _results(rows) == [
        ("burn-sdc", "FAIL", "2 iterations", BAR["burn-sdc"], "bf16: iterations differ from the first"),
        ("burn-memtest", "INCONCLUSIVE", "0 errors in 900.0 MiB (89.1% of free)", BAR["burn-memtest"],
         "the test covered too little of the free memory"),
        ("burn-ecc", "FAIL", "0 new uncorrectable, 3 new correctable", BAR["burn-ecc"],
         "row remapping failed during the burn"),
        ("burn-stability", "FAIL", "bf16 710.0 -> 635.5 TFLOP/s (-10.5%, windows of 60 s)", BAR["burn-stability"],
         "throughput fell as the card heated: cooling or power delivery"),
        ("burn-throttling", "FAIL", "hw_slowdown, hw_thermal_slowdown", BAR["burn-throttling"],
         "hw_slowdown during soak bf16; hw_thermal_slowdown during soak bf16"),
        ("burn-temperature", "FAIL", "GPU 87.5 C, limit 87 C", BAR["burn-temperature"],
         "GPU 87.5 C during soak bf16, the card slows down at 87 C"),
        ("burn-node-spread", "N/A", "", BAR["burn-node-spread"], "one GPU of this model in the burn"),
    ]


@pytest.mark.parametrize("text, card, check, verdicts", [
    # [burn] bar, the card at it and one step past it, the check, the two verdicts
    ("max_mismatches = 2", ({"mismatch_iterations": 2}, {"mismatch_iterations": 3}), "burn-sdc", ("PASS", "FAIL")),
    ("max_throughput_drop_pct = 10", ({"drop_pct": 10.0}, {"drop_pct": 10.01}), "burn-stability", ("PASS", "FAIL")),
    ("temperature_margin_c = 5", ({"temp_gpu_max_c": 82}, {"temp_gpu_max_c": 82.5}), "burn-temperature",
     ("PASS", "FAIL")),
])
def test_soak_bars_hold_at_their_edge(tmp_path, text, card, check, verdicts):
    policy = _policy(tmp_path, f"[burn]\n{text}\n")
    got = tuple(dict((c, v) for c, v, *_ in _results(_card(soak=s), policy=policy))[check] for s in card)
    assert got == verdicts


@pytest.mark.parametrize("text, card, check, verdicts", [
    ("max_memory_errors = 1", ({"errors": 1}, {"errors": 2}), "burn-memtest", ("PASS", "FAIL")),
    ("min_memtest_coverage_pct = 90", ({"coverage": 0.9}, {"coverage": 0.899}), "burn-memtest",
     ("PASS", "INCONCLUSIVE")),
    ("", ({"ecc_new_uncorrectable": 0}, {"ecc_new_uncorrectable": 1}), "burn-ecc", ("PASS", "FAIL")),
    ("", ({"ecc_after": {"remapped_rows_pending": "no"}}, {"ecc_after": {"remapped_rows_pending": "yes"}}), "burn-ecc",
     ("PASS", "FAIL")),
])
def test_memory_bars_hold_at_their_edge(tmp_path, text, card, check, verdicts):
    policy = _policy(tmp_path, f"[burn]\n{text}\n")
    got = tuple(dict((c, v) for c, v, *_ in _results(_card(memtest=m), policy=policy))[check] for m in card)
    assert got == verdicts


def test_a_user_bar_is_the_bar_printed():
    policy = accept.load_policy()
    policy.burn.update(max_mismatches=2, max_memory_errors=1, min_memtest_coverage_pct=95.5,
                       max_throughput_drop_pct=7.5, temperature_margin_c=5, max_behind_best_pct=12.5)
    bars = {c: bar for c, _, _, bar, _ in _results(_card(), policy=policy)}
    assert bars == {**BAR, "burn-sdc": "<= 2 differing iterations, first result equal to the other GPUs'",
                    "burn-memtest": "<= 1 errors over >= 95.5% of the free memory",
                    "burn-stability": "last window within 7.5% of the first",
                    "burn-temperature": "hottest reading <= the card's limits - 5 C",
                    "burn-node-spread": ">= 87.5% of the node's best GPU of the model"}


def test_the_node_spread_bar_holds_at_its_edge():
    at = _card(0, soak={"value": 1000.0}) + _card(1, soak={"value": 900.0})
    past = _card(0, soak={"value": 1000.0}) + _card(1, soak={"value": 899.0})
    assert _results(at, 1)[-1] == ("burn-node-spread", "PASS", "bf16 900.0 TFLOP/s = 90.0% of cuda:0",
                                   BAR["burn-node-spread"], "")
    assert _results(past, 1)[-1] == ("burn-node-spread", "FAIL", "bf16 899.0 TFLOP/s = 89.9% of cuda:0",
                                     BAR["burn-node-spread"],
                                     "cuda:1 falls behind: 89.9% of the node's best (cuda:0, 1,000.0 TFLOP/s)")


def test_the_node_spread_compares_the_same_model_run_host_and_dtype_only():
    rows = _card(0, soak={"value": 1000.0}) + _card(1, soak={"value": 500.0})
    for field, value in (("device_name", "NVIDIA H100"), ("host", "node8"), ("run_id", "r2"), ("dtype", "fp8")):
        other = [dict(r, **{field: value}) if r["device_index"] == "0" else r for r in rows]
        assert _results(other, 1)[-1][1] == "N/A", field
    assert _results(rows, 1)[-1][1] == "FAIL"
    failed = [dict(r, status="error") if r["device_index"] == "0" and r["benchmark"] == "soak" else r for r in rows]
    assert _results(failed, 1)[-1][1] == "N/A"  # a peer's failed soak is no best to compare with


CLEAN = {  # one GPU, nothing wrong: verdict, measured, reason per check
    "burn-sdc": ("PASS", "0 of 1000 iterations differ", "bf16: identical to 1 other device(s)"),
    "burn-memtest": ("PASS", "0 errors in 130.00 GiB (97.7% of free)", ""),
    "burn-ecc": ("PASS", "0 new uncorrectable, 0 new correctable", ""),
    "burn-stability": ("PASS", "bf16 710.0 -> 700.0 TFLOP/s (-1.4%, windows of 60 s)", ""),
    "burn-throttling": ("PASS", "none", "2 burn phases checked"),
    "burn-temperature": ("PASS", "memory 80 C, limit 95 C", ""),
    "burn-node-spread": ("N/A", "", "one GPU of this model in the burn"),
}
NO_SOAK = ("INCONCLUSIVE", "", "no soak long enough to compare its first and last window (3 s at least)")


def _expect(**changes):
    """Every check's full line: CLEAN, but for the checks named (burn_sdc= for burn-sdc)."""
    lines = {**CLEAN, **{k.replace("_", "-"): v for k, v in changes.items()}}
    return [(check, verdict, measured, BAR[check], reason) for check, (verdict, measured, reason) in lines.items()]


def _fp8(index=0, **params):
    return _row(index, "soak", dtype="fp8", **params)


def _broken():
    return _card(soak={"status": "error", "message": "the worker died"},
                 memtest={"status": "error", "message": "allocation failed"})


SCENARIOS = {
    "only a soak": (lambda: _card()[:1], 0, dict(
        burn_memtest=("INCONCLUSIVE", "", "no memory test in this run"),
        burn_ecc=("INCONCLUSIVE", "", "no memory test row (ECC is read around it)"),
        burn_throttling=("PASS", "none", "1 burn phases checked"))),
    "only a memory test": (lambda: _card()[1:], 0, dict(
        burn_sdc=("INCONCLUSIVE", "", "no soak in this run"), burn_stability=NO_SOAK,
        burn_throttling=("PASS", "none", "1 burn phases checked"),
        burn_temperature=("PASS", "GPU 66 C, limit 87 C", ""),
        burn_node_spread=("INCONCLUSIVE", "", "no soak measured"))),
    "CPU mode": (lambda: [dict(r, device_index="") for r in _card(memtest={"coverage": 0.02,
                                                                           "bytes_tested": 64 * 2**20})], "", dict(
        burn_memtest=("INCONCLUSIVE", "0 errors in 64.0 MiB (2.0% of free)",
                      "the test covered too little of the free memory (CPU mode: a small host test)"),
        burn_stability=("INCONCLUSIVE", "bf16 710.0 -> 700.0 TFLOP/s (-1.4%, windows of 60 s)",
                        "CPU mode: the host's throughput moves with its other work and says nothing of cooling"),
        burn_node_spread=("INCONCLUSIVE", "", "CPU mode: no GPUs to compare"))),
    "workers that died": (_broken, 0, dict(
        burn_sdc=("INCONCLUSIVE", "", "bf16 soak error: the worker died"),
        burn_memtest=("INCONCLUSIVE", "", "error: allocation failed"), burn_stability=NO_SOAK,
        burn_node_spread=("INCONCLUSIVE", "", "no soak measured"))),
    "bf16 ran, fp8 failed": (lambda: _card() + [_fp8(status="error", value="", message="the fp8 soak timed out")], 0,
                             dict(burn_sdc=("INCONCLUSIVE", "", "fp8 soak error: the fp8 soak timed out"),
                                  burn_throttling=("PASS", "none", "3 burn phases checked"))),
    "no soak the card runs": (lambda: [dict(_card()[0], status="unsupported", value="", message="no bf16 here"),
                                       _card()[1]], 0, dict(
        burn_sdc=("INCONCLUSIVE", "", "bf16 soak unsupported: no bf16 here"), burn_stability=NO_SOAK,
        burn_node_spread=("INCONCLUSIVE", "", "no soak measured"))),
    "fp8 unsupported": (lambda: _card() + [_fp8(status="unsupported", value="", message="no fp8 here")], 0,
                        dict(burn_throttling=("PASS", "none", "3 burn phases checked"))),
    "one GiB tested": (lambda: _card(memtest={"bytes_tested": 2**30}), 0, dict(
        burn_memtest=("PASS", "0 errors in 1.00 GiB (97.7% of free)", ""))),
    "every ECC finding": (lambda: _card(memtest={"status": "wrong", "ecc_new_uncorrectable": 2, "ecc_after": {
        "remapped_rows_pending": "yes", "remapped_rows_failure": "yes"}}), 0, dict(burn_ecc=(
            "FAIL", "2 new uncorrectable, 0 new correctable",
            "2 new uncorrectable ECC error(s); row remap pending; row remapping failed during the burn"))),
    "a pending remap alone": (lambda: _card(memtest={"ecc_after": {"remapped_rows_pending": "yes",
                                                                   "remapped_rows_failure": "no"}}), 0, dict(
        burn_ecc=("FAIL", "0 new uncorrectable, 0 new correctable", "row remap pending during the burn"))),
    "the worse of two soaks": (lambda: _card(soak={"drop_pct": 2.0}) + [_fp8(
        drop_pct=12.0, throughput_first_window=1400.0, throughput_last_window=1232.0, temp_gpu_max_c=86,
        temp_mem_max_c=90, value=1300.0)], 0, dict(
        burn_sdc=("PASS", "0 of 2000 iterations differ",
                  "bf16: identical to 1 other device(s); fp8: identical to 1 other device(s)"),
        burn_stability=("FAIL", "fp8 1,400.0 -> 1,232.0 TFLOP/s (-12.0%, windows of 60 s)",
                        "throughput fell as the card heated: cooling or power delivery"),
        burn_throttling=("PASS", "none", "3 burn phases checked"),
        burn_temperature=("PASS", "GPU 86 C, limit 87 C", ""))),  # nearest its own limit, not the hottest
    "GPU and memory too hot": (lambda: _card(soak={"temp_gpu_max_c": 88, "temp_mem_max_c": 96}), 0, dict(
        burn_temperature=("FAIL", "GPU 88 C, limit 87 C",
                          "GPU 88 C during soak bf16, the card slows down at 87 C; "
                          "memory 96 C during soak bf16, the card slows down at 95 C"))),
    "the dtype furthest behind": (lambda: _card(0, soak={"value": 1000.0}) + [_fp8(0, value=2000.0)]
                                  + _card(1, soak={"value": 950.0}) + [_fp8(1, value=1700.0)], 1, dict(
        burn_sdc=("PASS", "0 of 2000 iterations differ",
                  "bf16: identical to 1 other device(s); fp8: identical to 1 other device(s)"),
        burn_throttling=("PASS", "none", "3 burn phases checked"),
        burn_node_spread=("FAIL", "fp8 1,700.0 TFLOP/s = 85.0% of cuda:0",
                          "cuda:1 falls behind: 85.0% of the node's best (cuda:0, 2,000.0 TFLOP/s)"))),
    "two dtypes equally behind: the first": (lambda: _card(0, soak={"value": 1000.0}) + [_fp8(0, value=2000.0)]
                                             + _card(1, soak={"value": 950.0}) + [_fp8(1, value=1900.0)], 1, dict(
        burn_sdc=("PASS", "0 of 2000 iterations differ",
                  "bf16: identical to 1 other device(s); fp8: identical to 1 other device(s)"),
        burn_throttling=("PASS", "none", "3 burn phases checked"),
        burn_node_spread=("PASS", "bf16 950.0 TFLOP/s = 95.0% of cuda:0", ""))),
    "a soak that differs": (lambda: _card(soak={"status": "wrong", "message": "silent data corruption on cuda:0"}), 0,
                            dict(burn_sdc=("FAIL", "silent data corruption", "silent data corruption on cuda:0"),
                                 burn_stability=NO_SOAK, burn_node_spread=("INCONCLUSIVE", "", "no soak measured"))),
    "wrong words": (lambda: _card(memtest={"status": "wrong", "errors": 3,
                                           "message": "memory errors on cuda:0: 3 wrong word(s)"}), 0, dict(
        burn_memtest=("FAIL", "3 wrong word(s)", "memory errors on cuda:0: 3 wrong word(s)"))),
    "no NVML": (lambda: [dict(r, clocks_event_reasons="") for r in _card(
        soak={"temp_slowdown_c": None, "temp_mem_limit_c": None}, memtest={"temp_slowdown_c": None})], 0, dict(
        burn_throttling=("INCONCLUSIVE", "", "no clocks-event readings (no NVML)"),
        burn_temperature=("INCONCLUSIVE", "", "no temperature with its limit (no NVML, or the card reports no limit)"))),
}


@pytest.mark.parametrize("name", SCENARIOS)
def test_every_check_reads_word_for_word(name):
    rows, index, changes = SCENARIOS[name]
    assert _results(rows(), index) == _expect(**changes)


def test_without_burn_rows_every_burn_check_says_so():
    rows = [dict(_card()[0], family="memory", benchmark="copy")]
    assert burn_checks(POLICY, rows, rows) == [
        accept.Result(check, "INCONCLUSIVE", "", "", "no burn in this run (cardbench accept --burn-in 10m)")
        for check in BAR]


def test_a_row_whose_params_are_not_json_counts_as_one_without_params():
    rows = _card()
    rows[1]["params"] = "{not json"
    got = {line[0]: line for line in _results(rows)}
    assert got["burn-memtest"] == ("burn-memtest", "INCONCLUSIVE", "", BAR["burn-memtest"],
                                   "ok: the row does not say how much memory was tested")  # no coverage: never a pass
    assert got["burn-ecc"] == ("burn-ecc", "INCONCLUSIVE", "", BAR["burn-ecc"], "no ECC reading")


def test_ecc_not_read_says_why_the_memory_test_gave():
    rows = _card()
    p = json.loads(rows[1]["params"])
    for key in ("ecc_new_uncorrectable", "ecc_new_correctable", "ecc_after"):
        p.pop(key)
    rows[1]["params"] = json.dumps({**p, "ecc": "not read (no NVML, or the card does not report ECC)"})
    assert _results(rows)[2] == ("burn-ecc", "INCONCLUSIVE", "", BAR["burn-ecc"],
                                 "not read (no NVML, or the card does not report ECC)")
